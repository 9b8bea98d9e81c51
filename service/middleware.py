"""One ASGI middleware for what every request needs: id, body limit, metrics, an access log.

Pure ASGI (not BaseHTTPMiddleware) so the body limit is enforced while the body streams in,
for chunked uploads too, before anything is parsed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid

from service import timing
from service.error_body import error_body
from service.log_config import request_id
from service.metrics import Metrics

log = logging.getLogger("glimpse.access")


class GatewayMiddleware:
    def __init__(
        self,
        app,
        metrics: Metrics,
        max_body: int,
        body_timeout_s: float,
        max_header_bytes: int,
    ):
        self.app = app
        self.metrics = metrics
        self.max_body = max_body
        self.body_timeout_s = body_timeout_s  # between two chunks of a body: slow clients
        # The HTTP server bounds headers only roughly (what it buffers between reads); this
        # is the exact limit, answered in the API's error shape.
        self.max_header_bytes = max_header_bytes

    async def _reply(self, send, scope, status: int, message: str, rid: str) -> None:
        body = json.dumps(error_body(scope["path"], status, message)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"x-request-id", rid.encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _too_large(self, size: str = "") -> str:
        return f"request body {size}is over the limit of {self.max_body} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or uuid.uuid4().hex
        token = request_id.set(rid)
        started = time.perf_counter()
        spent, clock = timing.begin()  # answered as Server-Timing (service/timing.py)
        status = {"code": 500}
        self.metrics.in_flight.inc()

        header_bytes = sum(len(k) + len(v) + 4 for k, v in scope["headers"])
        if header_bytes > self.max_header_bytes:
            status["code"] = 431
            message = f"request headers are over the limit of {self.max_header_bytes} bytes"
            await self._reply(send, scope, 431, message, rid)
            return self._finish(scope, status, started, token, clock)

        if scope["method"] == "POST":
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body:
                status["code"] = 413
                too_large = self._too_large(f"of {int(length)} bytes ")
                await self._reply(send, scope, 413, too_large, rid)
                return self._finish(scope, status, started, token, clock)
            # Every body this API takes is JSON, and TF Serving reads it as JSON whatever the
            # Content-Type says (its docs' `curl -d`, `requests.post(data=...)` send none or a
            # form type): so does the gateway. A body that is not JSON is a 400 naming the
            # parse error, from the route.
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"] + [
                (b"content-type", b"application/json")
            ]

        received = 0
        failed: tuple[int, str] | None = None  # the body could not be read: why

        async def limited_receive():
            nonlocal received, failed
            try:
                async with asyncio.timeout(self.body_timeout_s):  # no task per chunk
                    message = await receive()
            except TimeoutError:
                failed = (408, f"request body stalled for {self.body_timeout_s:g} s")
                raise _BodyUnreadable() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    failed = (413, self._too_large())
                    raise _BodyUnreadable()
            return message

        replaced = False

        async def tracking_send(message):
            nonlocal replaced
            if failed:  # the app saw a broken body stream; the client deserves the real reason
                if message["type"] == "http.response.start" and not replaced:
                    replaced = True
                    status["code"] = failed[0]
                    await self._reply(send, scope, *failed, rid)
                return
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                message.setdefault("headers", [])
                spent["total"] = time.perf_counter() - started
                message["headers"] = [
                    *message["headers"],
                    (b"x-request-id", rid.encode()),
                    (b"server-timing", timing.header(spent).encode()),
                ]
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyUnreadable:
            if failed and not replaced:
                await self._reply(send, scope, *failed, rid)
        finally:
            if failed:
                status["code"] = failed[0]
            self._finish(scope, status, started, token, clock)

    def _finish(self, scope, status, started, token, clock) -> None:
        elapsed = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        self.metrics.in_flight.dec()
        self.metrics.requests.labels(route, scope["method"], str(status["code"])).inc()
        self.metrics.latency.labels(route).observe(elapsed)
        log.info(
            "%s %s %s",
            scope["method"],
            scope["path"],
            status["code"],
            extra={
                "fields": {"status": status["code"], "ms": round(elapsed * 1000, 1), "route": route}
            },
        )
        request_id.reset(token)
        timing.end(clock)


class _BodyUnreadable(Exception):
    """The body stream was cut (too large, or stalled); `failed` in __call__ says why."""
