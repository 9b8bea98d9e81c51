"""The message of an error answer, after checking its shape: `{"error": "..."}` on TF Serving's
routes, a google.rpc.Status on Google's (`/v1/projects/...`)."""

from __future__ import annotations

from urllib.parse import urlsplit

from service.error_body import RPC_STATUS, is_google_route


def error_message(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert list(body) == ["error"], response.text
    url = response.request.url  # httpx: a URL; requests: a string
    path = url.path if hasattr(url, "path") else urlsplit(url).path
    if not is_google_route(path):
        assert isinstance(body["error"], str), response.text
        return body["error"]
    rpc = body["error"]
    assert rpc == {"code": status, "message": rpc["message"], "status": RPC_STATUS[status]}, rpc
    return rpc["message"]
