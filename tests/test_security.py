"""Security: the bearer token guards every route but the public ones, limits hold before any
decoding, and error bodies never carry stack traces, paths or settings.

Public without a token, on purpose: liveness, startup and readiness (the kubelet cannot send a
secret header; their bodies hold no paths or settings), the demo page, its scripts and its
config (static files; the page must load before it can ask for a token, and every API call it
makes still needs one), and the OpenAPI document and its viewers (the public contract).
"""

from __future__ import annotations

import re
import socket
import sqlite3

import httpx
import pytest
from fastapi.routing import APIRoute
from starlette.routing import Route

from tests.conftest import body
from tests.errors import error_message
from tests.servers import live_server

TOKEN = "s3cret-token-value"
PUBLIC = {
    "/healthz/live",
    "/healthz/startup",
    "/healthz/ready",
    "/v2/health/live",
    "/v2/health/ready",
    "/",
    "/demo/config.json",
    "/demo/{name}",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
}
PATH_VALUES = {
    "model": "saccader",
    "version": "1",
    "project": "demo",
    "job": "j1",
    "name": "api.js",
    "location": "us-central1",
    "endpoint": "saccader",
    "evaluation": "1",
}


def all_routes(routes) -> list[tuple[str, str]]:
    """(method, path) of every endpoint, through FastAPI's included-router wrappers."""
    found: list[tuple[str, str]] = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found += all_routes(inner.routes)
        elif isinstance(route, APIRoute | Route):
            found += [(m, route.path) for m in sorted(route.methods or []) if m != "HEAD"]
    return found


@pytest.fixture(scope="module")
def guarded(gateway_settings, tmp_path_factory):
    db = tmp_path_factory.mktemp("jobs") / "jobs.sqlite3"
    with live_server(gateway_settings(auth_token=TOKEN, jobs_db=db)) as server:
        yield server, db


def test_every_route_but_the_public_ones_needs_the_token(guarded):
    server, _ = guarded
    routes = all_routes(server.app.routes)
    paths = {path for _, path in routes}
    assert len(routes) >= 25 and PUBLIC <= paths, sorted(paths)
    assert "/metrics" in paths
    guarded_routes = [(m, p) for m, p in routes if p not in PUBLIC]
    assert len(guarded_routes) >= 17
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for method, path in routes:
            url = re.sub(r"{(\w+)}", lambda m: PATH_VALUES[m.group(1)], path)
            payload = {"instances": [{"b64": "aGk="}]} if method == "POST" else None
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
                r = client.request(method, url, json=payload, headers=headers)
                if path in PUBLIC:
                    assert r.status_code != 401, (method, path)
                    continue
                assert error_message(r, 401) == "missing or invalid bearer token", (method, path)
            if path not in PUBLIC:  # and the right token gets past the check
                r = client.request(
                    method, url, json=payload, headers={"Authorization": f"Bearer {TOKEN}"}
                )
                assert r.status_code != 401, (method, path)


def test_limits_hold_before_any_decoding(gateway_settings):
    settings = gateway_settings(max_instances=4, max_payload_bytes=64 * 1024)
    with live_server(settings) as server, httpx.Client(base_url=server.url, timeout=30) as c:
        # Not base64 at all: had anything been decoded, the error would be about base64.
        many = {"instances": [{"b64": "!!not base64!!"}] * 5}
        for verb in ("predict", "explain"):
            r = c.post(f"/v1/models/saccader:{verb}", json=many)
            assert r.status_code == 400 and "over the limit of 4" in r.json()["error"], r.text

        # Over the body limit, streamed without a Content-Length: cut off at the limit.
        def chunks():
            yield b'{"instances": [{"b64": "'
            for _ in range(100):
                yield b"A" * 1024
            yield b'"}]}'

        r = c.post(
            "/v1/models/saccader:predict",
            content=chunks(),
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 413 and "over the limit of 65536 bytes" in r.json()["error"]
        # A declared length over the limit is refused before a byte of the body is read.
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(
                b"POST /v1/models/saccader:predict HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 99999999\r\n\r\n"
            )
            assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")


def assert_no_leak(response: httpx.Response, *secrets: str) -> None:
    text = response.text
    assert set(response.json()) == {"error"}, text
    for leak in ("Traceback", 'File "', "site-packages", "/tmp/", "/work/", *secrets):
        assert leak not in text, (leak, text)


def test_internal_errors_say_nothing_about_the_inside(guarded):
    server, db = guarded
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # A real internal failure: the jobs table disappears under the running gateway.
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE jobs")
    r = httpx.get(server.url + "/v1/projects/demo/jobs", headers=auth)
    message = error_message(r, 500)
    assert message == "internal error (OperationalError); see the server log"
    assert_no_leak(r, "no such table", str(db), TOKEN)


def test_a_model_that_fails_to_load_is_reported_without_paths(gateway_settings, tmp_path):
    broken = tmp_path / "saccader" / "1"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    with live_server(gateway_settings(model_dir=tmp_path), ready=False) as server:
        for probe in ("/healthz/startup", "/healthz/ready"):
            r = httpx.get(server.url + probe)
            while "failed" not in r.text:
                assert r.status_code == 503
                r = httpx.get(server.url + probe)
            assert r.status_code == 503 and "model failed to load" in r.json()["error"]
            assert_no_leak(r, str(tmp_path))
        predict = httpx.post(server.url + "/v1/models/saccader:predict", json=body(b"x"))
        assert predict.status_code == 503
        assert_no_leak(predict, str(tmp_path))


def test_client_errors_do_not_echo_settings(gateway_settings, tiny_model_dir):
    with live_server(gateway_settings(auth_token=TOKEN)) as server:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        for r in (
            httpx.post(server.url + "/v1/models/saccader:predict", json=body(b"x"), headers=auth),
            httpx.post(server.url + "/v1/models/other:predict", json=body(b"x"), headers=auth),
            httpx.get(server.url + "/v1/models/saccader/versions/9", headers=auth),
            httpx.post(server.url + "/v1/models/saccader:predict", json=body(b"x")),
            httpx.get(server.url + "/nowhere", headers=auth),
        ):
            assert 400 <= r.status_code < 500
            assert_no_leak(r, TOKEN, str(tiny_model_dir))


def test_demo_page_sends_security_headers(gateway):
    for path in ("/", "/demo/demo.js", "/demo/config.json"):
        r = httpx.get(gateway.url + path)
        assert r.status_code == 200
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
    assert httpx.get(gateway.url + "/demo/..%2Fapp.py").status_code == 404
