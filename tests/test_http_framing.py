"""HTTP framing below the app (service/http_protocol.py), over raw sockets to a live gateway:
what the HTTP parser refuses is answered in the API's JSON shape, and a connection whose
headers do not arrive in time is answered 408 and closed, so no silent client holds a
connection slot for long."""

from __future__ import annotations

import json
import socket
import time

import pytest

from tests.servers import live_server


@pytest.fixture(scope="module")
def service(gateway_settings):
    with live_server(gateway_settings(header_timeout_s=1.0, keep_alive_s=5.0)) as server:
        yield server


def _connect(service) -> socket.socket:
    host, port = service.url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    return s


def _answer(s: socket.socket) -> tuple[int, dict, float]:
    """The status, JSON body and when the server closed (seconds from now)."""
    started = time.monotonic()
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    assert b"content-type: application/json" in head.lower(), head
    return status, json.loads(body), time.monotonic() - started


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /v1/models/saccader:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Content-Length: 7\r\n\r\n{}",
        b"POST /v1/models/saccader:predict HTTP/1.1\r\nHost: x\r\nContent-Length: -3\r\n\r\n",
        b"GET /healthz/live HTTP/1.1\r\nHost: x\r\nbad header\r\n\r\n",
        b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n" + b"X-Big: a\r\n" * 20_000 + b"\r\n",
        b"GET /healthz/live HTTP/1.1\r\nX-Huge: " + b"a" * 8_000_000 + b"\r\n\r\n",
    ],
    ids=[
        "duplicate-length",
        "negative-length",
        "malformed-header",
        "headers-past-the-buffer",
        "an-8mb-header",  # answered, then the rest read and dropped: no reset
    ],
)
def test_what_the_parser_refuses_is_a_json_400(service, request_bytes):
    with _connect(service) as s:
        s.sendall(request_bytes)
        status, body, _ = _answer(s)
    assert status == 400 and body["error"].startswith("Invalid HTTP request")


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n"],
    ids=["nothing", "stalled-in-headers"],
)
def test_headers_that_do_not_arrive_in_time_are_408_and_closed(service, sent):
    with _connect(service) as s:
        s.sendall(sent)
        status, body, waited = _answer(s)
    assert status == 408 and "did not arrive within 1 s" in body["error"]
    assert waited < 5


def test_a_keep_alive_connection_gets_the_same_timer_for_its_next_request(service):
    with _connect(service) as s:
        s.sendall(b"GET /healthz/live HTTP/1.1\r\nHost: x\r\n\r\n")
        first = s.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        time.sleep(1.5)  # idle past the header timeout: still open (keep-alive's to close)
        s.sendall(b"GET /healthz/live HTTP/1.1\r\n")  # then nothing
        status, _, waited = _answer(s)
    assert status == 408 and waited < 5


def test_a_slow_but_steady_client_is_answered(service):
    """Headers that arrive in pieces within the limit are read; the timer is for the whole
    header section, not between bytes."""
    with _connect(service) as s:
        for piece in (b"GET /healthz/live HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"):
            s.sendall(piece)
            time.sleep(0.2)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
