"""The body of an error answer, in the shape each family of clients parses.

TF Serving's routes (`/v1/models/...`) answer `{"error": "<message>"}`, as TF Serving does.
Google's routes (`/v1/projects/...`: AI Platform ml v1 and Vertex AI) answer a
`google.rpc.Status` as JSON, `{"error": {"code": 404, "message": ..., "status": "NOT_FOUND"}}`:
google-api-core builds its exception from `error.message` (and its class from the HTTP code),
google-api-python-client's `HttpError` shows that message, and both fail on a bare string.
"""

from __future__ import annotations

from typing import Any

GOOGLE_PREFIX = "/v1/projects/"

# HTTP code -> the google.rpc.Code name that Google's APIs answer with it
# (google/rpc/code.proto lists the HTTP mapping of each code).
RPC_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",  # no rpc code means "method not allowed"; the route has no such verb
    408: "DEADLINE_EXCEEDED",
    409: "ALREADY_EXISTS",
    411: "INVALID_ARGUMENT",
    413: "INVALID_ARGUMENT",  # Google's own APIs answer an oversized request this way
    429: "RESOURCE_EXHAUSTED",
    431: "INVALID_ARGUMENT",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def is_google_route(path: str) -> bool:
    return path.startswith(GOOGLE_PREFIX)


def error_body(path: str, status: int, message: str) -> dict[str, Any]:
    """What an error answer on `path` carries: the same message for every client."""
    if not is_google_route(path):
        return {"error": message}
    fallback = "INVALID_ARGUMENT" if 400 <= status < 500 else "UNKNOWN"
    return {
        "error": {"code": status, "message": message, "status": RPC_STATUS.get(status, fallback)}
    }
