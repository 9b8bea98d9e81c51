"""Run the real gateway with uvicorn on a free 127.0.0.1 port, in a background thread."""

from __future__ import annotations

import asyncio
import threading
import time
from contextlib import contextmanager

import httpx
import uvicorn

from service.app import create_app
from service.settings import GatewaySettings


class LiveServer:
    def __init__(self, settings: GatewaySettings, backend=None):
        self.app = create_app(settings, backend)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=0,
            log_config=None,
            lifespan="on",
            loop="asyncio",
            **settings.server_options(),
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("gateway did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def wait_ready(self, timeout: float = 120.0) -> LiveServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if httpx.get(f"{self.url}/healthz/ready").status_code == 200:
                return self
            time.sleep(0.05)
        raise RuntimeError("gateway never became ready")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def live_server(settings: GatewaySettings, backend=None, ready: bool = True):
    server = LiveServer(settings, backend).start()
    try:
        if ready:
            server.wait_ready()
        yield server
    finally:
        server.stop()


@contextmanager
def explainer_held(server: LiveServer):
    """The live gateway's explainer with its one worker thread busy until the block ends:
    explanations admitted meanwhile stay pending, so limits on them are tested without
    racing the clock. Yields the explainer (its `pending` count)."""
    explainer = server.app.state.plane.model("saccader").default().explainer
    gate = threading.Event()
    explainer._executor.submit(gate.wait)
    try:
        yield explainer
    finally:
        gate.set()


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never met"
        time.sleep(0.01)
