"""Big request bodies are parsed off the event loop, one at a time.

A JSON parser holds the interpreter lock for its whole call, and Python's pure-Python tensor
reading (service/tensor_json.py) gives it up only every few milliseconds: six 1.2 MB float
bodies parsed at once kept `/healthz/live` waiting 90-120 ms (FastAPI parses a body on the
event loop itself). So a body over BIG_BODY is parsed in a worker thread by orjson (~4x the
standard library's speed), and every such parse, and every tensor body's reading, takes one
process-wide slot: the event loop then competes with one parsing thread, never six.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import orjson

BIG_BODY = 64 * 1024
_SLOT = threading.BoundedSemaphore(1)  # a thread that waits for it holds no lock
UNPARSED = object()  # the body is not JSON orjson reads: the framework parses it, and words why

T = TypeVar("T")


def one_at_a_time(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the calling worker thread, alone among the parses. Never call it on the
    event loop: it blocks until the slot is free."""
    with _SLOT:
        return fn(*args)


async def parse_big(body: bytes) -> Any:
    """A big body's JSON, parsed off the loop in the slot; UNPARSED when orjson refuses it
    (NaN literals, integers past 64 bits, bad JSON), for the framework's own parser."""
    try:
        return await asyncio.to_thread(one_at_a_time, orjson.loads, body)
    except orjson.JSONDecodeError:
        return UNPARSED


async def preparse(request: Any) -> None:
    """Before FastAPI reads a route's body: a big one is parsed here and left where
    Starlette's `Request.json()` keeps what it parsed, so FastAPI uses it."""
    body = await request.body()
    if len(body) > BIG_BODY:  # every POST body is read as JSON (service/middleware.py)
        parsed = await parse_big(body)
        if parsed is not UNPARSED:
            request._json = parsed
