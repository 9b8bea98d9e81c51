"""Commands that a test only checks, started as soon as the session knows it will run that
test: a minute of `glimpse train` in its own process then overlaps the rest of the suite,
which leaves one of the two cores idle most of the time (95% of one core over `make test`),
instead of adding its whole duration to the wall clock.

conftest.py's `pytest_collection_finish` calls `start_selected`; the test asks `finished` for
its command's result (starting it then if the session did not, e.g. under `-k`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXAMPLE = SHARED / "superclasses-train.csv"


@dataclass
class Early:
    process: subprocess.Popen
    folder: Path


def _example_training() -> Early:
    """`glimpse train` on the example import file, as users run it (real backbone)."""
    folder = Path(tempfile.mkdtemp(prefix="glimpse-example-train-"))
    cmd = [sys.executable, "-m", "service.cli", "train", str(EXAMPLE), "--model-name",
           "superclasses", "--model-base", str(folder / "models"), "--cache-dir",
           str(folder / "cache"), "--quiet"]  # fmt: skip
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "120"}
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    return Early(process, folder)


EXAMPLE_TRAINING = "test_the_example_import_file_trains_through_the_cli"
COMMANDS = {EXAMPLE_TRAINING: _example_training}  # the test's name -> what to start for it
_started: dict[str, Early] = {}


def start_selected(items: list[pytest.Item]) -> None:
    for item in items:
        name = item.name
        if name in COMMANDS and name not in _started and EXAMPLE.exists():
            _started[name] = COMMANDS[name]()


def finished(name: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, Path]:
    """The command's exit status and output, and the folder it wrote in."""
    early = _started.get(name) or _started.setdefault(name, COMMANDS[name]())
    out, err = early.process.communicate(timeout=timeout)
    done = subprocess.CompletedProcess(early.process.args, early.process.returncode, out, err)
    return done, early.folder


def stop_all() -> None:
    """Session end: nothing left running, nothing left on disk."""
    import shutil

    for early in _started.values():
        if early.process.poll() is None:
            early.process.kill()
            early.process.communicate()
        shutil.rmtree(early.folder, ignore_errors=True)
    _started.clear()
