"""The Google client libraries users already have, pointed at a live gateway on 127.0.0.1.

google-api-python-client builds AI Platform's `ml` v1 client from the discovery document it
ships (no network), and sends no credentials: the gateway's own bearer token, when set, is
passed as a header the way a user's proxy would add it.
"""

from __future__ import annotations

import httplib2
import pytest
from googleapiclient import discovery
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest


def ml_v1(base_url: str, token: str | None = None):
    """`discovery.build("ml", "v1")` as a user writes it, with the gateway as its endpoint."""
    http = httplib2.Http(timeout=120)
    if token is not None:
        request = http.request

        def with_token(uri, method="GET", body=None, headers=None, **kw):
            headers = dict(headers or {}, authorization=f"Bearer {token}")
            return request(uri, method, body=body, headers=headers, **kw)

        http.request = with_token
    return discovery.build(
        "ml",
        "v1",
        http=http,
        static_discovery=True,
        client_options={"api_endpoint": base_url + "/"},
        requestBuilder=HttpRequest,
        cache_discovery=False,
    )


def refused(call, status: int) -> str:
    """The gateway's message, as the client's HttpError carries it."""
    with pytest.raises(HttpError) as raised:
        call()
    error = raised.value
    assert error.resp.status == status, error
    assert error.reason in str(error)
    return error.reason


def every_page(collection, request, field: str) -> tuple[list[dict], int]:
    """Every page as the client's own pager (`list_next`) walks them: (items, pages)."""
    items, pages = [], 0
    while request is not None:
        response = request.execute()
        items += response.get(field, [])
        pages += 1
        request = collection.list_next(request, response)
    return items, pages
