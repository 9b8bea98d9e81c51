"""Big bodies are parsed off the event loop, one at a time (service/body_parsing.py): the
answers are what FastAPI's own parse gives, and what orjson refuses is left to it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service import body_parsing
from service.app import create_app
from service.settings import GatewaySettings
from tests.conftest import body, encode
from tests.fake_backend import FakeBackend

pytestmark = pytest.mark.fast


def test_parses_take_turns():
    def slow() -> float:
        time.sleep(0.1)
        return time.monotonic()

    ends: list[float] = []
    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda: ends.append(body_parsing.one_at_a_time(slow)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(ends) - started >= 0.3  # one after another, never together


@pytest.fixture
def client(tmp_path):
    settings = GatewaySettings(model_dir=tmp_path, log_format="text", jobs_enabled=False)
    with TestClient(create_app(settings, FakeBackend())) as c:
        deadline = time.monotonic() + 10
        while c.get("/healthz/startup").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        yield c


def test_a_big_body_answers_as_a_small_one(client, monkeypatch):
    rng = np.random.default_rng(1)
    photo = encode(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8), "JPEG")
    payload = body(photo, top_k=2)
    parsed = []
    real = body_parsing.orjson.loads
    monkeypatch.setattr(body_parsing.orjson, "loads", lambda b: parsed.append(len(b)) or real(b))
    big = client.post("/v1/models/saccader:predict", json=payload)
    assert big.status_code == 200, big.text
    assert parsed and parsed[0] > body_parsing.BIG_BODY  # parsed by orjson, off the loop
    monkeypatch.setattr(body_parsing, "BIG_BODY", 10**9)  # the framework's own parse
    small = client.post("/v1/models/saccader:predict", json=payload)
    assert small.json() == big.json()


def test_what_orjson_refuses_is_the_frameworks_to_word(client):
    pad = "A" * 70_000
    text = '{"signature_name": "double", "inputs": {"x": [[NaN, 1.0]]}, "pad": "' + pad + '"}'
    r = client.post("/v1/models/saccader:predict", content=text.encode())
    assert r.status_code == 400  # parsed by json (NaN literal), then refused as TF Serving does
    r = client.post("/v1/models/saccader:predict", content=b'{"instances": [' + b" " * 70_000)
    assert r.status_code == 400 and r.json()["error"].startswith("JSON Parse error")


def test_a_small_v2_body_never_waits_for_a_big_parse(client):
    """The slot is taken only in worker threads: a small body, read on the event loop, is
    answered while a big parse holds the slot (waiting for it there would stall the loop)."""
    held = threading.Event()

    def big_parse() -> None:
        body_parsing.one_at_a_time(lambda: (held.set(), time.sleep(1.5)))

    worker = threading.Thread(target=big_parse)
    worker.start()
    held.wait(5)
    started = time.monotonic()
    r = client.post(
        "/v2/models/saccader/infer",
        json={
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}],
            "parameters": {"signature_name": "double"},
        },
    )
    took = time.monotonic() - started
    worker.join()
    assert r.status_code == 200, r.text
    assert took < 0.75, took  # not behind the 1.5 s parse
