"""vlserve's exception tree. The gateway maps each type to one HTTP status.

VlserveError                      base; `type` is the wire name, `param` the offending field
├── InvalidInputError             400  bad parameter or text
│   ├── TextTooLongError          400  text over the model's position limit (refused, not truncated)
│   ├── InvalidImageError         415  unreadable, undecodable, empty (0×0) or unsupported image
│   └── ImageTooLargeError        413  more pixels than allowed (decompression-bomb guard)
├── UnsupportedTaskError          400  the model's weights do not hold the graphs a task needs
├── ModelNotFoundError            404  no model of that name, or none serves the task
├── UnauthorizedError             401  missing or wrong API key
├── UnsupportedMediaError         415  a request body that is neither JSON nor multipart
├── PayloadTooLargeError          413  body, image count, image bytes or pixels over the limits
├── RequestTimeoutError           408  the client did not send its body in time
├── UnavailableError              503  (+ Retry-After) the server cannot take the work now
│   ├── QueueFullError                 a bounded queue is full
│   ├── NotReadyError                  the model is still loading, or the server drains
├── ModelFailedError              500  the model failed to load or its worker stopped (not retryable)
├── DeadlineExceededError         504  the request's deadline passed before its work ran
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


class ModelNotFoundError(VlserveError):
    type = "model_not_found"


class UnsupportedMediaError(VlserveError):
    type = "unsupported_media_type"


class PayloadTooLargeError(VlserveError):
    type = "payload_too_large"


class UnavailableError(VlserveError):
    type = "unavailable"
    retry_after_s = 1


class QueueFullError(UnavailableError):
    type = "queue_full"


class NotReadyError(UnavailableError):
    type = "not_ready"


class RequestTimeoutError(VlserveError):
    type = "request_timeout"


class ModelFailedError(VlserveError):
    type = "model_failed"


class DeadlineExceededError(VlserveError):
    type = "deadline_exceeded"


class UnauthorizedError(VlserveError):
    type = "unauthorized"
