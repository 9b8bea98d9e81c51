"""Fault injection against real processes: the model server dies under load and comes back;
storage goes away under a job submitted through the jobs API and comes back."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest

from tests.batch_inputs import job_body, mixed_file, wait_state
from tests.conftest import body, encode
from tests.servers import live_server
from tests.test_batch_jobs import JOBS
from tests.tfserving_server import TFServingServer

PREDICT = "/v1/models/saccader:predict"
DEADLINE_S = 3.0


def wait_for(url: str, status: int, timeout: float) -> float:
    """Seconds until GET `url` answers `status`."""
    started = time.monotonic()
    while httpx.get(url, timeout=5).status_code != status:
        assert time.monotonic() - started < timeout, f"{url} never answered {status}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_model_server_killed_mid_load_and_restarted(gateway_settings, tiny_export):
    photo = encode(np.random.default_rng(5).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    model_server = TFServingServer("saccader", tiny_export)
    port = model_server.start()
    settings = gateway_settings(
        backend="tfserving",
        tfserving_address=f"127.0.0.1:{port}",
        tfserving_retries=1,
        request_timeout_s=DEADLINE_S,
    )
    results: list[tuple[float, float, int, str | None]] = []  # start, seconds, status, retry
    stop = threading.Event()

    async def load(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:

            async def worker() -> None:
                while not stop.is_set():
                    started = time.monotonic()
                    r = await client.post(PREDICT, json=body(photo))
                    took = time.monotonic() - started
                    results.append((started, took, r.status_code, r.headers.get("retry-after")))

            await asyncio.gather(*(worker() for _ in range(4)))

    try:
        with live_server(settings) as gateway:
            loader = threading.Thread(target=asyncio.run, args=(load(gateway.url),))
            loader.start()
            time.sleep(1.5)
            model_server.stop()
            killed = time.monotonic()
            red_after = wait_for(gateway.url + "/healthz/ready", 503, timeout=10)
            time.sleep(1.0)  # requests keep arriving while it is down
            model_server.start(port)
            restarted = time.monotonic()
            green_after = wait_for(gateway.url + "/healthz/ready", 200, timeout=15)
            # Predictions recover by themselves too: the next ones succeed.
            deadline = time.monotonic() + 15
            while not any(s >= restarted and code == 200 for s, _, code, _ in results):
                assert time.monotonic() < deadline, "predictions never recovered"
                time.sleep(0.05)
            stop.set()
            loader.join(timeout=30)
            assert httpx.get(gateway.url + "/healthz/live").status_code == 200
    finally:
        stop.set()
        model_server.stop()

    down = [
        (code, retry) for s, t, code, retry in results if killed + 0.5 < s and s + t < restarted
    ]
    slowest = max(t for _, t, _, _ in results)
    print(
        f"\n{len(results)} requests, {len(down)} while down; readiness red after {red_after:.2f} s,"
        f" green {green_after:.2f} s after the restart; slowest request {slowest:.2f} s"
    )
    codes = {code for _, _, code, _ in results}
    before = [code for s, _, code, _ in results if s < killed - 0.2]
    down = [
        (code, retry) for s, t, code, retry in results if killed + 0.5 < s and s + t < restarted
    ]
    assert before and set(before) == {200}
    assert down and all(code == 503 and retry == "5" for code, retry in down), down
    assert codes <= {200, 503}, codes
    assert red_after < 5 and green_after < 10, (red_after, green_after)
    # No request hangs past its deadline (plus the retry backoff and a little slack).
    assert slowest < DEADLINE_S + 2.0


@pytest.mark.slow
def test_job_failed_by_a_storage_outage_resumes_as_a_new_job(
    gcs, bucket, gateway_settings, tmp_path
):
    """Through the jobs API: storage gone for longer than the retry deadline fails the job
    with a reason and no partial output; once storage is back, the same job submitted again
    accounts for every line (lines = predictions + errors)."""
    text, goods, bads = mixed_file(0, 30)
    bucket.blob("in/a.jsonl").upload_from_string(text)
    inputs, out = [f"gs://{bucket.name}/in/*.jsonl"], f"gs://{bucket.name}/out"
    settings = gateway_settings(jobs_db=tmp_path / "jobs.sqlite3", storage_retry_deadline_s=2.0)
    with live_server(settings) as gw:
        gcs.kill()
        try:
            created = httpx.post(gw.url + JOBS, json=job_body("first", inputs, out))
            assert created.status_code == 200, created.text
            failed = wait_state(gw.url + JOBS, "first", {"SUCCEEDED", "FAILED"}, timeout=60)
        finally:
            gcs.start()
        assert failed["state"] == "FAILED" and failed["errorMessage"]
        assert not list(bucket.client.list_blobs(bucket.name, prefix="out/"))

        again = httpx.post(gw.url + JOBS, json=job_body("second", inputs, out))
        assert again.status_code == 200, again.text
        job = wait_state(gw.url + JOBS, "second", {"SUCCEEDED", "FAILED"}, timeout=120)
        assert job["state"] == "SUCCEEDED", job.get("errorMessage")
        counts = job["predictionOutput"]
        assert (counts["predictionCount"], counts["errorCount"]) == (str(goods), str(bads))
        assert int(counts["lineCount"]) == goods + bads
