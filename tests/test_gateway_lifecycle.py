"""Start-up, readiness, load failure and graceful shutdown of the real service."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

from tests.conftest import body, encode
from tests.servers import live_server


def test_ready_only_after_warm_up(gateway_settings):
    with live_server(gateway_settings(), ready=False) as server:
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            live = httpx.get(server.url + "/healthz/live").status_code
            ready = httpx.get(server.url + "/healthz/ready")
            seen.append((live, ready.status_code))
            if ready.status_code == 200:
                break
            assert ready.headers["retry-after"] == "5" and "error" in ready.json()
            time.sleep(0.01)
        assert seen[0] == (200, 503), "the model cannot be ready before it has loaded"
        assert seen[-1] == (200, 200)
        assert all(live == 200 for live, _ in seen)
        assert httpx.get(server.url + "/healthz/startup").status_code == 200
        # The warm-up was real inferences through the batcher, one per signature.
        assert "glimpse_batch_size_count 2.0" in httpx.get(server.url + "/metrics").text


def test_missing_model_is_reported_not_fatal(gateway_settings, tmp_path):
    with live_server(gateway_settings(model_dir=tmp_path), ready=False) as server:
        deadline = time.monotonic() + 30
        while "failed" not in httpx.get(server.url + "/healthz/startup").text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = httpx.get(server.url + "/healthz/ready")
        assert r.status_code == 503
        assert "Could not find any versions of model saccader" in r.json()["error"]
        assert httpx.get(server.url + "/healthz/live").status_code == 200
        predict = httpx.post(
            server.url + "/v1/models/saccader:predict", json={"instances": [{"b64": "aGk="}]}
        )
        assert predict.status_code == 503 and "failed to load" in predict.json()["error"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_finishes_in_flight_requests(tiny_model_dir):
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "GLIMPSE_MODEL_DIR": str(tiny_model_dir),
        # 16 instances = 16 model calls: a request that takes a while.
        "GLIMPSE_MAX_BATCH_SIZE": "1",
        "GLIMPSE_LOG_FORMAT": "text",
        "GLIMPSE_MAX_PAYLOAD_BYTES": "20000000",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(url + "/healthz/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.1)
        rng = np.random.default_rng(0)
        photos = [
            encode(rng.integers(0, 255, (600, 800, 3), dtype=np.uint8), "JPEG") for _ in range(16)
        ]
        result = {}

        def call():
            result["response"] = httpx.post(
                url + "/v1/models/saccader:predict", json=body(*photos), timeout=120
            )

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.5)  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        caller.join(timeout=120)
        response = result["response"]
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 16
        # uvicorn re-raises the signal after its graceful shutdown, so the exit status says
        # "terminated by SIGTERM" as Kubernetes expects; the log shows the shutdown completed.
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
        log = proc.stdout.read()
        assert "Application shutdown complete" in log, log
    finally:
        if proc.poll() is None:
            proc.kill()


if not hasattr(signal, "SIGTERM"):  # pragma: no cover
    pytest.skip("needs POSIX signals", allow_module_level=True)
