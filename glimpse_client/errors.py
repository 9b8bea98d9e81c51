"""Errors the client raises: one class per thing a caller would handle differently.

The gateway and TF Serving both answer errors as `{"error": "..."}`; the message is kept
verbatim (it names the instance or parameter at fault), and the class says what kind of
failure it was, so callers can `except Overloaded` instead of comparing status codes.
"""

from __future__ import annotations

import httpx


class GlimpseError(Exception):
    """Base class. `status` is the HTTP status (None when no answer came back)."""

    status: int | None = None

    def __init__(self, message: str, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.status else self.message


class InvalidRequest(GlimpseError):
    """400: the request, an instance (not an image, truncated, too many pixels) or a
    parameter is wrong; the message names which. Retrying the same request cannot help."""

    status = 400


class Unauthorized(GlimpseError):
    """401: no bearer token, or the wrong one (`Client(token=...)`)."""

    status = 401


class NotFound(GlimpseError):
    """404: unknown model, model version or batch job."""

    status = 404


class Conflict(GlimpseError):
    """409: the batch job id is taken."""

    status = 409


class PayloadTooLarge(GlimpseError):
    """413: the body is over the service's limit (1.5 MB by default); send fewer or smaller
    images per request."""

    status = 413


class UnsupportedMediaType(GlimpseError):
    """415: the body was not JSON (a client bug, never the caller's)."""

    status = 415


class Overloaded(GlimpseError):
    """429: the service's queue is full; `retry_after` says when to try again."""

    status = 429


class ServerError(GlimpseError):
    """500 (or another 5xx without its own class): the service failed."""

    status = 500


class Unavailable(GlimpseError):
    """503: the model is loading, the service is shutting down, or its backend is down."""

    status = 503


class Timeout(GlimpseError):
    """504 from the service, or no answer within the client's own timeout."""

    status = 504


class ConnectionFailed(GlimpseError):
    """Nothing answered at the URL (refused, DNS, TLS, connection dropped)."""


class Unsupported(GlimpseError):
    """The endpoint cannot do this: explanations and batch jobs need the Glimpse gateway,
    a plain TF Serving endpoint only predicts."""


class JobTimeout(GlimpseError):
    """`wait_job` gave up before the job ended; the job itself carries on."""


_BY_STATUS: dict[int, type[GlimpseError]] = {
    cls.status: cls  # type: ignore[misc]
    for cls in (
        InvalidRequest,
        Unauthorized,
        NotFound,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        Overloaded,
        ServerError,
        Unavailable,
        Timeout,
    )
}


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds; the HTTP-date form is not used by either server."""
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def from_response(response: httpx.Response) -> GlimpseError:
    """The error for a >= 400 answer, with the server's own message when it sent one."""
    try:
        body = response.json()
        message = body.get("error") if isinstance(body, dict) else None
        if isinstance(message, dict):  # Google's routes answer a google.rpc.Status
            message = message.get("message")
    except ValueError:
        message = None
    if not message:
        message = response.text.strip()[:500] or response.reason_phrase
    status = response.status_code
    cls = _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else InvalidRequest
    return cls(str(message), status=status, retry_after=_retry_after(response))


def from_transport(exc: httpx.TransportError, url: str) -> GlimpseError:
    """httpx's transport failures, named after what the caller can do about them."""
    if isinstance(exc, httpx.TimeoutException):
        error = Timeout(f"no answer from {url} within the client's timeout ({type(exc).__name__})")
        error.status = None  # the service never answered; 504 would claim it did
        return error
    return ConnectionFailed(f"cannot reach {url}: {exc or type(exc).__name__}")
