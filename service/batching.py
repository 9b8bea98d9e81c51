"""Dynamic micro-batching: concurrent requests share one model call.

Instances from all requests wait in one bounded queue; a single worker takes up to
`max_batch` of them, waiting at most `max_wait` after the first arrived, and runs the batch.
One model call at a time keeps TensorFlow's own thread pools from fighting each other, and the
bound turns overload into an immediate 429 instead of a growing tail latency.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from service.errors import NotReady, Overloaded

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    index: int  # its place in its own request, to name the instance when it alone fails
    enqueued: float = field(default_factory=time.perf_counter)

    def fail(self, error: BaseException, alone: bool) -> None:
        """An error that belongs to this item alone is tagged with its index (serving names
        `instances[i]`); one shared by a whole batch names no instance."""
        if alone:
            error.item_index = self.index  # type: ignore[attr-defined]
        self.future.set_exception(error)


@dataclass
class BatchStats:
    size: int
    queue_seconds: list[float]
    run_seconds: float


class MicroBatcher(Generic[Item, Result]):
    """One queue, one worker, batches of at most `max_batch` items."""

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Awaitable[list[Result | BaseException]]],
        max_batch: int,
        max_wait_s: float,
        queue_limit: int,
        on_batch: Callable[[BatchStats], None] | None = None,
    ):
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._limit = queue_limit
        self._on_batch = on_batch
        self._queue: deque[_Pending[Item, Result]] = deque()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._closing = False
        self._busy = False

    def start(self) -> None:
        self._worker = asyncio.create_task(self._loop(), name="micro-batcher")

    @property
    def queued(self) -> int:
        return len(self._queue)

    async def submit(self, items: list[Item]) -> list[Result]:
        """Queue every item of one request (all or none) and wait for their results."""
        if self._closing:
            raise NotReady("the service is shutting down")
        if len(self._queue) + len(items) > self._limit:
            raise Overloaded(f"request queue is full ({self._limit} instances); retry shortly")
        loop = asyncio.get_running_loop()
        pending = [_Pending(item, loop.create_future(), i) for i, item in enumerate(items)]
        self._queue.extend(pending)
        self._wake.set()
        try:
            results = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
        except BaseException:
            for p in pending:  # timed out or cancelled: the worker skips these
                p.future.cancel()
            raise
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    async def _take_batch(self) -> list[_Pending[Item, Result]]:
        while not self._queue:
            self._wake.clear()
            await self._wake.wait()
        deadline = self._queue[0].enqueued + self._max_wait
        while len(self._queue) < self._max_batch and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                break
        batch = []
        while self._queue and len(batch) < self._max_batch:
            p = self._queue.popleft()
            if not p.future.done():
                batch.append(p)
        return batch

    async def _loop(self) -> None:
        while True:
            batch = await self._take_batch()
            if not batch:
                continue
            started = time.perf_counter()
            self._busy = True
            try:
                results = await self._run_batch([p.item for p in batch])
            except Exception as e:  # noqa: BLE001 - delivered to every waiting request
                for p in batch:
                    if not p.future.done():
                        p.fail(e, alone=len(batch) == 1)
                continue
            finally:
                self._busy = False
            finished = time.perf_counter()
            for p, r in zip(batch, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(r, BaseException):  # one bad item fails only its own request
                    p.fail(r, alone=True)
                else:
                    p.future.set_result(r)
            if self._on_batch:
                self._on_batch(
                    BatchStats(
                        len(batch), [started - p.enqueued for p in batch], finished - started
                    )
                )

    async def close(self, grace_s: float) -> None:
        """Refuse new work, let the queue drain for up to `grace_s`, then stop the worker."""
        self._closing = True
        self._wake.set()
        deadline = time.perf_counter() + grace_s
        while (self._queue or self._busy) and time.perf_counter() < deadline:
            await asyncio.sleep(0.01)
        if self._worker:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
        for p in self._queue:
            if not p.future.done():
                p.future.set_exception(NotReady("the service shut down before this ran"))


def batcher_for(settings, run_batch, on_batch=None) -> MicroBatcher:
    """The batcher every backend uses, sized by the gateway settings."""
    return MicroBatcher(
        run_batch,
        max_batch=settings.max_batch_size,
        max_wait_s=settings.max_batch_wait_ms / 1000.0,
        queue_limit=settings.queue_limit,
        on_batch=on_batch,
    )
