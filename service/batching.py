"""Dynamic micro-batching: concurrent requests share one model call.

Instances from all requests wait in one bounded queue; a single worker waits for the model's
turn (service/scheduler.py: other kinds of work take theirs in between), then takes up to
`max_batch` instances, waiting at most `max_wait` after the first arrived, and runs them as one
call. Instances are taken round-robin over the requests that wait, so a one-photo request
behind a 64-photo one rides in the next batch instead of after all of it. The bound turns
overload into an immediate 429 instead of a growing tail latency.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Generic, TypeVar

from service import timing
from service.errors import NotReady, Overloaded
from service.scheduler import FairScheduler, Kind

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    index: int  # its place in its own request, to name the instance when it alone fails
    enqueued: float = field(default_factory=time.perf_counter)
    waited: float = 0.0  # in the queue, then in the batch's model call (service/timing.py)
    ran: float = 0.0

    def fail(self, error: BaseException, alone: bool) -> None:
        """An error that belongs to this item alone is tagged with its index (the data plane
        names `instances[i]`); one shared by a whole batch names no instance."""
        if alone:
            error.item_index = self.index  # type: ignore[attr-defined]
        self.future.set_exception(error)


@dataclass
class BatchStats:
    size: int
    queue_seconds: list[float]
    run_seconds: float


class MicroBatcher(Generic[Item, Result]):
    """One queue, one worker, batches of at most `max_batch` items, one model turn each."""

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Awaitable[list[Result | BaseException]]],
        scheduler: FairScheduler,
        max_batch: int,
        max_wait_s: float,
        queue_limit: int,
        on_batch: Callable[[BatchStats], None] | None = None,
        kind: Kind = Kind.INSTANCES,
    ):
        self._run_batch = run_batch
        self._kind = kind
        self._scheduler = scheduler
        self._max_batch = max_batch
        self._max_wait = max_wait_s
        self._limit = queue_limit
        self._on_batch = on_batch
        # Waiting items by request, requests in arrival order (taken round-robin).
        self._queue: OrderedDict[int, deque[_Pending[Item, Result]]] = OrderedDict()
        self._queued = 0
        self._ids = count()
        self._wake = asyncio.Event()
        self._worker: asyncio.Task | None = None
        self._closing = False
        self._busy = False

    def start(self) -> None:
        self._worker = asyncio.create_task(self._loop(), name="micro-batcher")

    async def submit(self, items: list[Item]) -> list[Result]:
        """Queue every item of one request (all or none) and wait for their results."""
        if self._closing:
            raise NotReady("the service is shutting down")
        if self._queued + len(items) > self._limit:
            raise Overloaded(f"request queue is full ({self._limit} instances); retry shortly")
        loop = asyncio.get_running_loop()
        pending = [_Pending(item, loop.create_future(), i) for i, item in enumerate(items)]
        self._queue[next(self._ids)] = deque(pending)
        self._queued += len(pending)
        self._wake.set()
        try:
            results = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
        except BaseException:
            for p in pending:  # timed out or cancelled: the worker skips these
                p.future.cancel()
            raise
        timing.add("queue", max(p.waited for p in pending))
        timing.add("model", max(p.ran for p in pending))
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return results  # type: ignore[return-value]

    def _take(self) -> list[_Pending[Item, Result]]:
        """Up to max_batch live items, one per waiting request per round."""
        batch: list[_Pending[Item, Result]] = []
        while self._queue and len(batch) < self._max_batch:
            for request in list(self._queue):
                waiting = self._queue[request]
                p = waiting.popleft()
                self._queued -= 1
                if not waiting:
                    del self._queue[request]
                if not p.future.done():
                    batch.append(p)
                if len(batch) == self._max_batch:
                    break
        return batch

    async def _gather_mates(self) -> None:
        """With a wait set, give batch-mates up to max_wait after the oldest item arrived."""
        oldest = min(q[0].enqueued for q in self._queue.values())
        deadline = oldest + self._max_wait
        while self._queued < self._max_batch and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    async def _loop(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            if self._max_wait > 0:  # the model stays free for other work meanwhile
                await self._gather_mates()
            # The turn, then the batch: what arrives while other work runs joins it.
            async with self._scheduler.turn(self._kind, self) as turn:
                batch = self._take()
                turn.rows = len(batch)
                if batch:
                    await self._run(batch)

    async def _run(self, batch: list[_Pending[Item, Result]]) -> None:
        started = time.perf_counter()
        self._busy = True
        try:
            results = await self._run_batch([p.item for p in batch])
        except Exception as e:  # noqa: BLE001 - delivered to every waiting request
            for p in batch:
                if not p.future.done():
                    p.fail(e, alone=len(batch) == 1)
            return
        finally:
            self._busy = False
        finished = time.perf_counter()
        for p, r in zip(batch, results, strict=True):
            p.waited, p.ran = started - p.enqueued, finished - started
            if p.future.done():
                continue
            if isinstance(r, BaseException):  # one bad item fails only its own request
                p.fail(r, alone=True)
            else:
                p.future.set_result(r)
        if self._on_batch:
            queued = [started - p.enqueued for p in batch]
            self._on_batch(BatchStats(len(batch), queued, finished - started))

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
        for waiting in self._queue.values():
            for p in waiting:
                if not p.future.done():
                    p.future.set_exception(NotReady("the service shut down before this ran"))
        self._queue.clear()
        self._queued = 0
