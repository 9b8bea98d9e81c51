"""Who runs on a model next: fair turns for every kind of work, one piece at a time.

Each served model has one `FairScheduler`. Every model call takes a turn from it: the labelled
path's micro-batches, each piece of a tensor-form request, each model call of an explanation.
A turn is given round-robin to the kinds that wait, and within a kind round-robin to the
requests (flows) that wait, so no kind starves another and a big request, run in pieces of
bounded rows, waits its turn between pieces instead of holding the model for its length: a
one-photo :predict behind four 64-photo tensor requests waits for one piece, not for all of
them (docs/reliability.md has the measurement).

Turns are taken from the event loop (`turn`) or from a worker thread (`turn_blocking`: the
explainer's), so the state is guarded by a lock, and a waiter that gives up (timeout,
cancellation) leaves the queue, or passes on a turn it was just given.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

from service import timing
from service.errors import BackendTimeout


class Kind(StrEnum):
    INSTANCES = "instances"  # the labelled path's micro-batches (:predict, Vertex, batch jobs)
    TENSORS = "tensors"  # tensor-form requests (TF Serving's columnar or signature_name)
    EXPLAIN = "explain"  # the model calls of explanations


@dataclass
class Turn:
    """One model call's turn; `rows` (model rows it ran) may be set while holding it."""

    kind: Kind
    flow: Hashable
    rows: int
    granted: bool = False
    waited_s: float = 0.0
    _wake: Callable[[], None] = field(default=lambda: None, repr=False)
    _enqueued: float = field(default_factory=time.perf_counter, repr=False)


class FairScheduler:
    """One turn held at a time: one model call at a time, as TensorFlow parallelises each op
    over the cores itself."""

    def __init__(self, on_turn: Callable[[Turn], None] | None = None):
        self._lock = threading.Lock()
        self._held = False
        self._waiting: dict[Kind, OrderedDict[Hashable, deque[Turn]]] = {
            kind: OrderedDict() for kind in Kind
        }
        self._kinds = list(Kind)
        self._last = len(self._kinds) - 1  # the kind served last: the search starts after it
        self._on_turn = on_turn

    def waiting(self, kind: Kind | None = None) -> int:
        """Turns waiting (of one kind, or all)."""
        with self._lock:
            kinds = [kind] if kind else self._kinds
            return sum(len(q) for k in kinds for q in self._waiting[k].values())

    # -- the queue, under the lock --------------------------------------------------------

    def _enter(self, turn: Turn) -> bool:
        """Queue `turn`; True if it was granted at once (a free slot, nobody waiting)."""
        with self._lock:
            if not self._held and not any(self._waiting.values()):
                self._held = True
                turn.granted = True
                self._last = self._kinds.index(turn.kind)
                return True
            self._waiting[turn.kind].setdefault(turn.flow, deque()).append(turn)
            return False

    def _next(self) -> Turn | None:
        for step in range(1, len(self._kinds) + 1):
            index = (self._last + step) % len(self._kinds)
            flows = self._waiting[self._kinds[index]]
            if not flows:
                continue
            flow, queue = next(iter(flows.items()))
            turn = queue.popleft()
            if queue:
                flows.move_to_end(flow)  # round-robin among this kind's requests
            else:
                del flows[flow]
            self._last = index
            return turn
        return None

    def _release(self) -> None:
        with self._lock:
            turn = self._next()
            if turn is None:
                self._held = False
                return
            turn.granted = True
        turn._wake()

    def _leave(self, turn: Turn) -> bool:
        """A waiter gives up: out of the queue; True if it had been granted meanwhile (it
        must pass the turn on)."""
        with self._lock:
            if turn.granted:
                return True
            queue = self._waiting[turn.kind].get(turn.flow)
            if queue is not None and turn in queue:
                queue.remove(turn)
                if not queue:
                    del self._waiting[turn.kind][turn.flow]
            return False

    def _done(self, turn: Turn) -> None:
        self._release()
        if self._on_turn is not None:
            self._on_turn(turn)

    # -- taking turns ---------------------------------------------------------------------

    @asynccontextmanager
    async def turn(
        self, kind: Kind, flow: Hashable, rows: int = 0, deadline: float | None = None
    ) -> AsyncIterator[Turn]:
        """Hold the model for one call, from the event loop. `deadline` (monotonic): give
        up waiting then (BackendTimeout)."""
        loop = asyncio.get_running_loop()
        granted = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: granted.done() or granted.set_result(None))

        turn = Turn(kind, flow, rows, _wake=wake)
        if not self._enter(turn):
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait_for(granted, timeout)
            except BaseException as e:
                if self._leave(turn):
                    self._release()
                if isinstance(e, TimeoutError):
                    raise BackendTimeout("no turn on the model within the deadline") from None
                raise
        turn.waited_s = time.perf_counter() - turn._enqueued
        timing.add("queue", turn.waited_s)
        try:
            yield turn
        finally:
            self._done(turn)

    @contextmanager
    def turn_blocking(
        self, kind: Kind, flow: Hashable, rows: int = 0, deadline: float | None = None
    ) -> Iterator[Turn]:
        """`turn` for a worker thread (never the event loop's)."""
        event = threading.Event()
        turn = Turn(kind, flow, rows, _wake=event.set)
        if not self._enter(turn):
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            event.wait(timeout)
            if not self._leave(turn):  # not granted by the deadline: out of the queue
                raise BackendTimeout("no turn on the model within the deadline")
        turn.waited_s = time.perf_counter() - turn._enqueued
        timing.add("queue", turn.waited_s)
        try:
            yield turn
        finally:
            self._done(turn)
