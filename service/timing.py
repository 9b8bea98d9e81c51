"""Where one request's time went, answered with it: W3C `Server-Timing` on HTTP answers and
`server-timing` trailing metadata over gRPC.

A client (or the protocols benchmark) can then tell the model's own time from what the
gateway adds on that very request, with no clock shared between machines and no drift
between two runs, the way Triton's statistics split queue and compute time. Stages:

    decode   checking the request's images (service/decoding.py)
    queue    waiting for the model's turn (service/scheduler.py; the micro-batcher's queue)
    model    the model's call itself: the signature on the version's thread, or the RPC to
             TF Serving; on the labelled path the whole batch the request rode in
    total    from the request's arrival at the gateway's app to its answer's start (HTTP;
             over gRPC, to the answer's return from the handler)

Each stage is the sum of its spans: a request run in pieces reports every piece's model time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token

_current: ContextVar[dict[str, float] | None] = ContextVar("glimpse_timing", default=None)


def begin() -> tuple[dict[str, float], Token]:
    """A fresh record for the request whose task (and the threads it hands work to with its
    context) runs from here."""
    record: dict[str, float] = {}
    return record, _current.set(record)


def end(token: Token) -> None:
    _current.reset(token)


def add(stage: str, seconds: float) -> None:
    """Count `seconds` to `stage` of the current request; nothing outside a request."""
    record = _current.get()
    if record is not None:
        record[stage] = record.get(stage, 0.0) + seconds


@contextmanager
def span(stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        add(stage, time.perf_counter() - started)


def header(record: dict[str, float]) -> str:
    """`decode;dur=0.212, queue;dur=0.004, model;dur=34.1` (milliseconds, as the spec says)."""
    return ", ".join(f"{stage};dur={seconds * 1000:.3f}" for stage, seconds in record.items())


def parse(value: str) -> dict[str, float]:
    """A Server-Timing value back into milliseconds by stage (the benchmark reads it)."""
    out: dict[str, float] = {}
    for entry in value.split(","):
        name, _, rest = entry.strip().partition(";")
        for param in rest.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur" and name:
                out[name] = float(number)
    return out
