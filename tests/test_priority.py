"""The gateway's work runs below its event loop (service/priority.py)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import httpx
import numpy as np
import pytest

from service import priority
from tests.conftest import b64, encode


def _nice(tid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, tid)


def _named_thread(name: str, started: threading.Event, stop: threading.Event) -> None:
    """A thread with an OS name as TensorFlow's pool threads have."""
    Path(f"/proc/self/task/{threading.get_native_id()}/comm").write_text(name)
    started.set()
    stop.wait(30)


@pytest.mark.fast
def test_worker_threads_start_lowered_and_the_caller_is_left_alone():
    caller = _nice(threading.get_native_id())
    pool = priority.worker_threads(2, "lowered", caller + 5)
    try:
        assert pool.submit(lambda: _nice(threading.get_native_id())).result() == caller + 5
    finally:
        pool.shutdown()
    assert _nice(threading.get_native_id()) == caller
    off = priority.worker_threads(1, "as-is", 0)
    try:
        assert off.submit(lambda: _nice(threading.get_native_id())).result() == caller
    finally:
        off.shutdown()


@pytest.mark.fast
def test_tensorflows_threads_are_found_by_name_and_lowered():
    started, stop = [threading.Event(), threading.Event()], threading.Event()
    threads = [
        threading.Thread(target=_named_thread, args=(name, started[i], stop))
        for i, name in enumerate(["tf_Compute", "event_engine"])
    ]
    for t in threads:
        t.start()
    try:
        assert all(e.wait(10) for e in started)
        tf_thread, other = threads
        base = _nice(other.native_id)
        assert priority.lower_model_threads(base + 3) >= 1
        assert _nice(tf_thread.native_id) >= base + 3
        assert _nice(other.native_id) == base  # gRPC's and others' threads stay as they are
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_a_live_gateway_runs_its_work_below_its_event_loop(gateway):
    """After a prediction of a PNG (decoded in the pool, run on the version's thread), the
    model's, decoding's and TensorFlow's threads are 10 below the event loop's thread."""
    png = encode(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8))
    body = {"instances": [{"input_image_bytes": {"b64": b64(png)}}]}
    r = httpx.post(f"{gateway.url}/v1/models/saccader:predict", json=body, timeout=60)
    assert r.status_code == 200, r.text
    loop_nice = _nice(gateway.thread.native_id)
    by_name = {t.name: t.native_id for t in threading.enumerate()}
    workers = [n for n in by_name if n.startswith(("tf-saccader-", "decode"))]
    assert any(n.startswith("tf-saccader-") for n in workers)
    assert any(n.startswith("decode") for n in workers)
    for name in workers:
        assert _nice(by_name[name]) >= loop_nice + 10, name
    tasks = Path("/proc/self/task")
    tf_threads = [t for t in tasks.iterdir() if (t / "comm").read_text().startswith("tf_")]
    assert tf_threads
    for t in tf_threads:
        assert _nice(int(t.name)) >= loop_nice + 10, (t / "comm").read_text()
