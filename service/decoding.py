"""Where the gateway decodes images: never on the event loop, never on the model's thread.

Two pools. Threads parse base64 and headers and check each image against the request's
budget (service/instances.py); one request's images are one task, so a request full of costly
images holds one thread, not all of them. The pixel work (decoding, converting, re-encoding)
of images over a few megapixels runs in worker processes, started on first need: Pillow holds
the interpreter lock in parts of it, and a megapixel conversion on a thread would stall the
event loop (and the health probes) for its duration; smaller ones cost milliseconds here.
A process that dies on an image fails that image with a 400, and the pool is rebuilt. The
processes end with the gateway, however it ends (`_worker_start`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from service import priority
from service.errors import BackendTimeout, InvalidInput
from service.instances import DecodeLimits, ImageInput, decode_images, decode_instances
from service.schemas import Instance
from service.settings import GatewaySettings

log = logging.getLogger(__name__)

_INLINE_B64 = 200_000  # ~150 KB: base64 and a header walk of it take well under a millisecond
_JPEG_B64 = "/9j/"  # FF D8 FF, a JPEG's first bytes, in base64
_JPEG = b"\xff\xd8\xff"
_INLINE_RAW = _INLINE_B64 * 3 // 4
_PARENT_POLL_S = 0.5


def _worker_start(parent: int, nice: int) -> None:
    """A decoder process's initializer: lowered as the gateway's worker threads are
    (service/priority.py), and ended with the gateway. A worker waits on a queue whose writing
    end it holds too (spawn pickles both), so it never sees the gateway go: killed, or stopped
    while the pool's shutdown was still under way, the gateway would leave it running,
    orphaned. It watches its parent instead and ends when it is gone (re-parented)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_POLL_S)
        os._exit(0)

    priority.lower_this_thread(nice)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _NeedsPixels(Exception):
    """The quick pass met an image that needs decoding: that is the pool's work."""


def _needs_pixels(fn: Callable[..., Any], *args: Any) -> Any:
    raise _NeedsPixels


class Decoder:
    def __init__(self, settings: GatewaySettings):
        self._settings = settings
        self._limits = DecodeLimits.of(settings)
        self._threads = priority.worker_threads(
            settings.decode_workers, "decode", settings.worker_nice
        )
        self._lock = threading.Lock()
        self._processes: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._processes is None:
                # spawn: a fork of a process running TensorFlow's threads is not safe.
                self._processes = ProcessPoolExecutor(
                    self._settings.decode_workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_worker_start,
                    initargs=(os.getpid(), self._settings.worker_nice),
                )
            return self._processes

    def _run_pixels(self, deadline: float) -> Callable[..., Any]:
        def run(fn: Callable[..., Any], *args: Any) -> Any:
            pool = self._pool()
            future = pool.submit(fn, *args)
            try:
                return future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                # Not started yet: never started. Started: it runs to its end, which the
                # request's pixel budget bounds (a few seconds at most), then frees the worker.
                future.cancel()
                raise BackendTimeout("the images were not decoded within the deadline") from None
            except BrokenProcessPool:
                with self._lock:  # the next image gets fresh workers
                    if self._processes is pool:
                        self._processes = None
                pool.shutdown(wait=False, cancel_futures=True)
                log.warning("an image decoder process died; pool rebuilt")
                raise InvalidInput("the image's decoder failed on it") from None

        return run

    async def decode(self, instances: Sequence[Instance], deadline: float) -> list[ImageInput]:
        """Every instance decoded and checked within the request's deadline (monotonic)."""
        b64 = instances[0].input_image_bytes.b64 if len(instances) == 1 else ""
        if b64.startswith(_JPEG_B64) and len(b64) < _INLINE_B64:
            done = self._quick(decode_instances, list(instances))
            if done is not None:
                return done
        return await self._in_pool(decode_instances, list(instances), deadline)

    def _quick(self, fn: Callable[..., list[ImageInput]], *args: Any) -> list[ImageInput] | None:
        """The common case, one small JPEG passed through untouched, costs a header parse:
        done here, on the event loop, without a thread hop. None when it needs pixel work
        (any other format; PNGs are checked by decoding): the pool's, not parsed twice."""
        first, *rest = args
        quick = self._limits.budget(run=_needs_pixels, run_above_pixels=0)
        try:
            return fn(first, self._limits.image_pixels, quick, *rest)
        except _NeedsPixels:
            return None

    async def decode_bytes(
        self, raws: list[bytes], deadline: float, where: Callable[[int], str]
    ) -> list[ImageInput]:
        """`decode` for images already out of their JSON (TF Serving's tensor forms, v2);
        image i is named `where(i)` in errors. One small JPEG is checked here, as in
        `decode`."""
        if len(raws) == 1 and raws[0][:3] == _JPEG and len(raws[0]) < _INLINE_RAW:
            done = self._quick(decode_images, raws, where)
            if done is not None:
                return done
        return await self._in_pool(decode_images, raws, deadline, where)

    async def _in_pool(
        self, fn: Callable[..., list[ImageInput]], items: Any, deadline: float, *rest: Any
    ) -> list[ImageInput]:
        """`fn(items, max pixels, budget, *rest)` on a decode thread, pixel work in the
        processes, within the deadline."""
        budget = self._limits.budget(run=self._run_pixels(deadline))
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(
            self._threads, fn, items, self._limits.image_pixels, budget, *rest
        )
        timeout = self._settings.request_timeout_s
        try:
            return await asyncio.wait_for(work, max(0.001, deadline - time.monotonic()))
        except (TimeoutError, BackendTimeout):
            raise BackendTimeout(f"no answer within {timeout:g} s (decoding the images)") from None

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            if self._processes is not None:
                self._processes.shutdown(wait=False, cancel_futures=True)
                self._processes = None
