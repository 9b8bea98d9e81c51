"""JSON-lines inputs for batch tests: good photos mixed with every kind of bad line."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np

from tests.conftest import b64, encode


def photo(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    return encode(np.kron(small, np.ones((12, 12, 1), dtype=np.uint8)), "JPEG")


def good_line(seed: int, bare: bool = False) -> str:
    if bare:
        return json.dumps({"b64": b64(photo(seed)), "key": f"k{seed}"})
    return json.dumps({"input_image_bytes": {"b64": b64(photo(seed))}, "key": f"k{seed}"})


BAD_LINES = {
    "empty_line": "",
    "not_json": "{not json",
    "invalid_image": json.dumps({"input_image_bytes": {"b64": "@@@"}, "key": "bad-b64"}),
    "invalid_instance": json.dumps({"input_image_bytes": 3, "key": "wrong-type"}),
}


def not_an_image_line() -> str:
    return json.dumps({"b64": b64(b"just some text, not an image"), "key": "not-image"})


def truncated_jpeg_line() -> str:
    return json.dumps({"b64": b64(photo(999)[:300]), "key": "truncated"})


def mixed_file(first_seed: int, goods: int) -> tuple[str, int, int]:
    """(text, good lines, bad lines): good lines interleaved with one of each bad kind."""
    bad = [*BAD_LINES.values(), not_an_image_line(), truncated_jpeg_line()]
    lines: list[str] = []
    for i in range(goods):
        lines.append(good_line(first_seed + i, bare=i % 2 == 1))
        if i < len(bad):
            lines.append(bad[i])
    for extra in bad[goods:]:
        lines.append(extra)
    return "\n".join(lines) + "\n", goods, len(bad)


def job_body(job_id: str, inputs: list[str], output: str, **extra) -> dict:
    """A jobs API create body for a JSON-lines prediction job."""
    given = {"dataFormat": "JSON", "inputPaths": inputs, "outputPath": output, **extra}
    return {"jobId": job_id, "predictionInput": given}


def wait_state(jobs_url: str, job_id: str, states: set[str], timeout: float = 120) -> dict:
    """The job once it is in one of `states` (polled over HTTP); fails past `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = httpx.get(f"{jobs_url}/{job_id}").json()
        if job["state"] in states:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} stuck in {job['state']}")
