"""vlserve's exception tree. The gateway maps each type to one HTTP status.

VlserveError                      base; `type` is the wire name, `param` the offending field
├── InvalidInputError             400  bad parameter or text
│   ├── TextTooLongError          400  text over the model's position limit (refused, not truncated)
│   ├── InvalidImageError         415  unreadable, undecodable, empty (0×0) or unsupported image
│   └── ImageTooLargeError        413  more pixels than allowed (decompression-bomb guard)
├── UnsupportedTaskError          400  the model's weights do not hold the graphs a task needs
└── CheckpointError               --   a model folder cannot be loaded (missing/unexpected keys, …)
"""

from __future__ import annotations


class VlserveError(Exception):
    type = "vlserve_error"

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidInputError(VlserveError):
    type = "invalid_input"


class TextTooLongError(InvalidInputError):
    type = "text_too_long"


class InvalidImageError(InvalidInputError):
    type = "invalid_image"


class ImageTooLargeError(InvalidInputError):
    type = "image_too_large"


class UnsupportedTaskError(VlserveError):
    type = "unsupported_task"


class CheckpointError(VlserveError):
    type = "checkpoint_error"
