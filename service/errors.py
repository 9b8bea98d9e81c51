"""Domain errors. Deep code raises these; app.py maps them to HTTP in one table."""

from __future__ import annotations

import re

# An absolute file-system path (not the `//host/...` of a URL, nor a `gs://` one).
_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.@+-]+/)*[\w.@+-]+")


def redact_paths(text: str) -> str:
    """`text` with absolute paths replaced, for messages that clients may read."""
    return _PATH.sub("<path>", text)


_NOISE = ("Graph execution error", "Detected at node", "<stack traces", "[[", "File ")


def model_error_reason(message: str) -> str:
    """The line of a TensorFlow op error that says what is wrong ("Invalid PNG data, size
    12420"), not its "Graph execution error:" header or node names; paths redacted."""
    for line in message.splitlines():
        text = line.strip()
        if text and not text.startswith(_NOISE):
            return redact_paths(text.split(" [[")[0].split(" [Op:")[0].strip())
    return "the model could not read it"


ECHO_LIMIT = 100  # characters of a client's own string that a message repeats
MESSAGE_LIMIT = 1000  # characters of any message, whatever it repeats


def clip(text: object, limit: int = ECHO_LIMIT) -> str:
    """A client's string as an error message repeats it: at most `limit` characters, and how
    many were left out (a 100 KB id must not come back as a 100 KB message)."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class GlimpseError(Exception):
    """Base class; `message` is safe to show to clients (never a stack trace) and bounded
    (MESSAGE_LIMIT: whatever a message repeats of the request, it stays a message)."""

    def __init__(self, message: str):
        message = clip(message, MESSAGE_LIMIT)
        super().__init__(message)
        self.message = message


class InvalidInput(GlimpseError):
    """The client's request is malformed or an instance is unusable (400)."""


class PayloadTooLarge(GlimpseError):
    """The body is over the configured limit (413)."""


class Unauthorized(GlimpseError):
    """Missing or wrong bearer token (401)."""


class ModelNotFound(GlimpseError):
    """Unknown model name or version (404)."""


class JobNotFound(GlimpseError):
    """Unknown batch job id (404)."""


class Conflict(GlimpseError):
    """The resource exists already, e.g. a job id in use (409)."""


class NotReady(GlimpseError):
    """The model is not loaded or warmed up yet, or the service is shutting down (503)."""


class Overloaded(GlimpseError):
    """The request queue is full (429); retry after a moment."""


class BackendUnavailable(GlimpseError):
    """The model server cannot be reached (503)."""


class BackendTimeout(GlimpseError):
    """The model did not answer within the deadline (504)."""


class BackendError(GlimpseError):
    """The model server failed in a way that is not the client's fault (500)."""
