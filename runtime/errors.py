"""Typed errors of the runtime; one exception handler per app (runtime/app.py) maps them to HTTP.

The same error renders as OpenAI's envelope ``{"error": {"message", "type", "param", "code"}}`` on ``/v1/*``
routes and as TGI's ``{"error", "error_type"}`` on TGI routes; handlers never build error JSON themselves.

    RuntimeAPIError
    ├── InvalidRequest        400  unknown/unsupported parameter, malformed body
    ├── ValidationError       422  a value out of range or over a limit (names the parameter and the numbers)
    ├── TemplateError         422  no chat template / template failed to render
    ├── Unauthorized          401
    ├── PayloadTooLarge       413
    ├── UnsupportedMediaType  415  a body declared as something else than JSON
    ├── Overloaded            429  (Retry-After)
    ├── NotReady              503  model still loading
    ├── RoutingError          404 / 405 from the router: no such route, or not with this method
    ├── GenerationFailed      500  the engine failed mid-request
    └── ClientGone            499  the client disconnected (nobody reads the answer; nginx's code)

One error is not an HTTP answer: :class:`ModelLoadError`, a model this runtime cannot serve at all (a GGUF file of
an unsupported quantization, a file that is not GGUF). The server logs its message as one line, without a
traceback, and exits 3; the supervisor turns that last log line into the endpoint's `failed` message.
"""

from __future__ import annotations


class RuntimeAPIError(Exception):
    status_code = 500
    openai_type = "internal_error"
    tgi_type = "generation"

    def __init__(self, message: str, *, param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        # A message or param may quote client input; a lone surrogate in it would make the JSON encoder of the
        # error response fail, so such characters are written as escapes.
        self.message = _printable(message)
        self.param = _printable(param) if param is not None else None
        self.headers = headers or {}

    def openai_body(self) -> dict:
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.status_code,
            }
        }

    def tgi_body(self) -> dict:
        return {"error": self.message, "error_type": self.tgi_type}


class InvalidRequest(RuntimeAPIError):
    status_code = 400
    openai_type = "invalid_request_error"
    tgi_type = "validation"


class ValidationError(RuntimeAPIError):
    status_code = 422
    openai_type = "invalid_request_error"
    tgi_type = "validation"


class TemplateError(RuntimeAPIError):
    status_code = 422
    openai_type = "invalid_request_error"
    tgi_type = "template_error"


class Unauthorized(RuntimeAPIError):
    status_code = 401
    openai_type = "authentication_error"
    tgi_type = "authentication"


class PayloadTooLarge(RuntimeAPIError):
    status_code = 413
    openai_type = "invalid_request_error"
    tgi_type = "validation"


class UnsupportedMediaType(RuntimeAPIError):
    status_code = 415
    openai_type = "invalid_request_error"
    tgi_type = "validation"


class Overloaded(RuntimeAPIError):
    status_code = 429
    openai_type = "rate_limit_error"
    tgi_type = "overloaded"


class NotReady(RuntimeAPIError):
    status_code = 503
    openai_type = "service_unavailable"
    tgi_type = "healthcheck"


class GenerationFailed(RuntimeAPIError):
    status_code = 500
    openai_type = "internal_error"
    tgi_type = "generation"


class NotFound(RuntimeAPIError):
    status_code = 404
    openai_type = "not_found_error"
    tgi_type = "not_found"


class RoutingError(RuntimeAPIError):
    """The router's own 404 / 405, carried in our envelope; the status is the router's."""

    def __init__(self, status_code: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message, headers=headers)
        self.status_code = status_code
        found = status_code != 404
        self.openai_type = "invalid_request_error" if found else NotFound.openai_type
        self.tgi_type = "validation" if found else NotFound.tgi_type


class ClientGone(RuntimeAPIError):
    status_code = 499
    openai_type = "client_closed_request"
    tgi_type = "client_closed_request"


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ModelLoadError(Exception):
    """The model cannot be served; the message says why in one line (see the module docstring)."""
