"""The event loop before the work: threads that run the model, decode images or parse bodies
run at a lower CPU priority (a higher nice value) than the thread of the event loop.

Under load the model's threads keep every core busy, and the event loop (health probes, small
requests, answers) waited its turn among them like any other thread: `/healthz/live` reached
70-134 ms in the soak on 2 cores. Linux keeps a nice value per thread (setpriority on a
thread id), and a thread starts with its creator's, so each worker pool lowers its threads as
they start, and TensorFlow's own pools (threads named `tf_*`) are lowered once a model is
loaded; what they start later inherits it. An unprivileged process may raise a nice value,
never lower it, so only the workers are touched, never the event loop's thread.
`GLIMPSE_WORKER_NICE` (default 10) is the nice value the workers run at (the event loop's
thread keeps the process's, normally 0); 0 leaves every thread as it is.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

log = logging.getLogger(__name__)

_MODEL_THREADS = "tf_"  # TensorFlow names its intra- and inter-op threads so
_TASKS = Path("/proc/self/task")


def _lower(tid: int, nice: int) -> None:
    """At least `nice` for thread `tid`, never less than it has."""
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) < nice:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as e:  # the thread ended meanwhile, or a platform without per-thread nice
        log.debug("could not lower thread %s to nice %s: %s", tid, nice, e)


def lower_this_thread(nice: int) -> None:
    """A worker pool's initializer (threads or processes)."""
    if nice > 0 and hasattr(os, "setpriority"):
        _lower(threading.get_native_id(), nice)


def worker_threads(max_workers: int, prefix: str, nice: int) -> ThreadPoolExecutor:
    """A thread pool whose threads start lowered by `nice`."""
    return ThreadPoolExecutor(
        max_workers, thread_name_prefix=prefix, initializer=lower_this_thread, initargs=(nice,)
    )


def lower_model_threads(nice: int) -> int:
    """TensorFlow's thread pools, started with the first model call on whichever thread made
    it, lowered by `nice`; how many threads were."""
    if nice <= 0 or not _TASKS.is_dir():
        return 0
    lowered = 0
    for task in _TASKS.iterdir():
        try:
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        if name.startswith(_MODEL_THREADS):
            _lower(int(task.name), nice)
            lowered += 1
    return lowered
