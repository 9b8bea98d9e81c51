"""A real Cloud Storage emulator (gcp-storage-emulator) in its own process on 127.0.0.1.

Data lives on disk, so `restart()` (kill -9, then start again on the same port) behaves like
a storage outage that ends: objects written before are still there.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GcsEmulator:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.port = free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> GcsEmulator:
        exe = Path(sys.executable).parent / "gcp-storage-emulator"
        self.proc = subprocess.Popen(
            [str(exe), "-d", str(self.data_dir), "start", "--host", "127.0.0.1",
             "--port", str(self.port), "-q"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.host + "/", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("storage emulator did not start")

    def kill(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self, down_s: float = 0.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        assert os.environ.get("STORAGE_EMULATOR_HOST") == self.host
        return storage.Client(project="test", credentials=AnonymousCredentials())
