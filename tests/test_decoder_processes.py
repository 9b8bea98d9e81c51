"""The decoder's worker processes: below the gateway's priority, and ended with it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

pytestmark = pytest.mark.fast

# A process that starts the decoder's pool (as a gateway does on a big image), prints its
# workers' pids and waits to be killed, without closing anything.
_GATEWAY = """
import json, os, sys, time
from service.decoding import Decoder
from service.settings import GatewaySettings

decoder = Decoder(GatewaySettings(decode_workers=2))
pool = decoder._pool()
pids = sorted({pool.submit(os.getpid).result() for _ in range(8)})
print(json.dumps(pids), flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_decoder_processes_end_when_the_gateway_is_killed(how):
    gateway = subprocess.Popen(
        [sys.executable, "-c", _GATEWAY], stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        workers = json.loads(gateway.stdout.readline())
        assert workers and gateway.pid not in workers
        assert all(psutil.Process(w).ppid() == gateway.pid for w in workers)
        # Below the gateway's event loop, as its worker threads (service/priority.py).
        assert all(
            psutil.Process(w).nice() >= os.getpriority(os.PRIO_PROCESS, 0) + 10 for w in workers
        )
    finally:
        gateway.send_signal(how)
        gateway.wait(timeout=30)
    deadline = time.monotonic() + 10
    while not all(_gone(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if not _gone(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, f"decoder processes {left} outlived the gateway"
