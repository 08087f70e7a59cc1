"""Every exception the SDK raises, in one tree.

VlserveError                        base of all of them
├── APIConnectionError              no response came back (refused, reset, closed early)
│   └── APITimeoutError             the client's own timeout passed first
├── APIStatusError                  the server answered an error status; carries its
│   │                               `status_code`, error `type`, `message`, `param`, `response`
│   ├── BadRequestError             400  invalid_input, text_too_long, unsupported_task, …
│   ├── AuthenticationError         401  unauthorized: missing or wrong API key
│   ├── NotFoundError               404  model_not_found (or no such route)
│   ├── PayloadTooLargeError        413  payload_too_large, image_too_large
│   ├── UnsupportedMediaTypeError   415  invalid_image, unsupported_media_type
│   ├── UnprocessableEntityError    422  invalid_request: the body does not match the schema
│   ├── InternalServerError         500 and any other 5xx not named here
│   ├── ServiceUnavailableError     503  queue_full, not_ready; `retry_after` in seconds
│   └── DeadlineExceededError       504  deadline_exceeded: the request's deadline passed
└── ImageFetchError                 an http(s) image the client was asked to download failed

Unsupported image objects raise TypeError and unreadable paths OSError, as Python does.
"""

from __future__ import annotations

import httpx


class VlserveError(Exception):
    """Base of every error the SDK raises."""


class APIConnectionError(VlserveError):
    def __init__(self, message: str, *, request: httpx.Request | None = None):
        super().__init__(message)
        self.request = request


class APITimeoutError(APIConnectionError):
    pass


class APIStatusError(VlserveError):
    """An error response. `type`, `message` and `param` are the server's `{"error": {...}}`."""

    def __init__(self, response: httpx.Response, *, type: str | None, message: str, param: str | None):
        super().__init__(f"{response.status_code} {type or 'error'}: {message}"
                         + (f" (param: {param})" if param else ""))
        self.response = response
        self.status_code = response.status_code
        self.type = type
        self.message = message
        self.param = param


class BadRequestError(APIStatusError):
    pass


class AuthenticationError(APIStatusError):
    pass


class NotFoundError(APIStatusError):
    pass


class PayloadTooLargeError(APIStatusError):
    pass


class UnsupportedMediaTypeError(APIStatusError):
    pass


class UnprocessableEntityError(APIStatusError):
    pass


class InternalServerError(APIStatusError):
    pass


class ServiceUnavailableError(APIStatusError):
    @property
    def retry_after(self) -> float | None:
        from ._retry import parse_retry_after

        return parse_retry_after(self.response.headers.get("retry-after"))


class DeadlineExceededError(APIStatusError):
    pass


class ImageFetchError(VlserveError):
    def __init__(self, url: str, reason: str):
        super().__init__(f"could not download image {url}: {reason}")
        self.url = url


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError, 401: AuthenticationError, 404: NotFoundError, 413: PayloadTooLargeError,
    415: UnsupportedMediaTypeError, 422: UnprocessableEntityError, 503: ServiceUnavailableError,
    504: DeadlineExceededError,
}


def error_for(response: httpx.Response) -> APIStatusError:
    """The typed exception for an error response (which must have been read)."""
    kind, message, param = None, response.text[:500] or response.reason_phrase, None
    try:
        body = response.json()["error"]
        kind, message, param = body.get("type"), body.get("message", message), body.get("param")
    except (ValueError, KeyError, TypeError, AttributeError):
        pass  # not vlserve's JSON (a proxy's page, say): keep the raw text
    cls = _BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalServerError if response.status_code >= 500 else APIStatusError
    return cls(response, type=kind, message=message, param=param)
