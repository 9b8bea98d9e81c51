"""The model's fair scheduler on its own: turns by kind, then by request, one at a time, and
waiters that give up (deadline, cancellation) never lose or keep a turn."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.errors import BackendTimeout
from service.scheduler import FairScheduler, Kind

pytestmark = pytest.mark.fast


def run(coro):
    return asyncio.run(coro)


async def hold(scheduler: FairScheduler) -> tuple[asyncio.Task, asyncio.Event]:
    """The model busy with a micro-batch until the event is set; the turn's task."""
    gate = asyncio.Event()

    async def holder():
        async with scheduler.turn(Kind.INSTANCES, "first"):
            await gate.wait()

    held = asyncio.create_task(holder())
    await asyncio.sleep(0)
    return held, gate


async def _take(scheduler: FairScheduler, kind: Kind, flow: str, order: list, hold: float = 0.0):
    async with scheduler.turn(kind, flow, 1):
        order.append((kind.value, flow))
        await asyncio.sleep(hold)


def test_turns_go_round_the_kinds_then_round_the_requests():
    async def main():
        scheduler = FairScheduler()
        order: list = []
        held, gate = await hold(scheduler)
        # Queued while the model is busy: a big tensor request's 3 pieces first, then a
        # second tensor request, an explanation and a micro-batch.
        waiting = [asyncio.create_task(_take(scheduler, Kind.TENSORS, "big", order)) for _ in "123"]
        await asyncio.sleep(0)
        waiting.append(asyncio.create_task(_take(scheduler, Kind.TENSORS, "small", order)))
        waiting.append(asyncio.create_task(_take(scheduler, Kind.EXPLAIN, "why", order)))
        waiting.append(asyncio.create_task(_take(scheduler, Kind.INSTANCES, "batch", order)))
        await asyncio.sleep(0.01)
        assert scheduler.waiting() == 6 and scheduler.waiting(Kind.TENSORS) == 4
        gate.set()
        await asyncio.gather(held, *waiting)
        return order

    assert run(main()) == [
        ("tensors", "big"),  # the kind after the last served (instances)
        ("explain", "why"),
        ("instances", "batch"),
        ("tensors", "small"),  # the other tensor request before big's second piece
        ("tensors", "big"),
        ("tensors", "big"),
    ]


def test_one_turn_at_a_time_and_free_turns_are_taken_at_once():
    async def main():
        scheduler = FairScheduler()
        running = 0
        most = 0

        async def work(flow: int):
            nonlocal running, most
            async with scheduler.turn(Kind.TENSORS, flow):
                running += 1
                most = max(most, running)
                await asyncio.sleep(0.002)
                running -= 1

        await asyncio.gather(*(work(i) for i in range(20)))
        started = time.perf_counter()
        async with scheduler.turn(Kind.EXPLAIN, "alone") as turn:
            pass
        return most, turn.waited_s, time.perf_counter() - started

    most, waited, took = run(main())
    assert most == 1 and waited < 0.01 and took < 0.05


def test_a_waiter_past_its_deadline_leaves_the_queue():
    async def main():
        scheduler = FairScheduler()
        order: list = []
        held, gate = await hold(scheduler)
        with pytest.raises(BackendTimeout):
            async with scheduler.turn(Kind.TENSORS, "late", deadline=time.monotonic() + 0.05):
                order.append("late ran")
        assert scheduler.waiting() == 0
        after = asyncio.create_task(_take(scheduler, Kind.EXPLAIN, "after", order))
        gate.set()
        await asyncio.gather(held, after)
        return order

    assert run(main()) == [("explain", "after")]


def test_a_cancelled_waiter_passes_on_a_turn_it_was_given():
    """Cancelled in the instant between being given the turn and running: the next waiter
    must still get it (a lost turn would stop the model for good)."""

    async def main():
        scheduler = FairScheduler()
        order: list = []
        held, gate = await hold(scheduler)
        doomed = asyncio.create_task(_take(scheduler, Kind.TENSORS, "doomed", order))
        later = asyncio.create_task(_take(scheduler, Kind.EXPLAIN, "later", order))
        await asyncio.sleep(0.01)
        gate.set()
        await held  # the turn is given to `doomed` now; it is cancelled before it runs
        doomed.cancel()
        await asyncio.gather(doomed, return_exceptions=True)
        await asyncio.wait_for(later, 1.0)
        return order

    assert run(main()) == [("explain", "later")]


def test_threads_take_turns_with_the_event_loop():
    """The explainer's thread waits its turn like any request (turn_blocking)."""

    async def main():
        scheduler = FairScheduler()
        order: list = []
        gate = asyncio.Event()

        async def holder():
            async with scheduler.turn(Kind.INSTANCES, "first"):
                await gate.wait()

        def explain_thread():
            with scheduler.turn_blocking(Kind.EXPLAIN, "thread", 8):
                order.append("explain")

        held = asyncio.create_task(holder())
        await asyncio.sleep(0)
        thread = threading.Thread(target=explain_thread)
        thread.start()
        while not scheduler.waiting():
            await asyncio.sleep(0.001)
        batch = asyncio.create_task(_take(scheduler, Kind.INSTANCES, "batch", order))
        await asyncio.sleep(0.01)
        assert order == []  # both wait while the model is held
        gate.set()
        await asyncio.gather(held, batch)
        await asyncio.to_thread(thread.join, 5)
        with pytest.raises(BackendTimeout):
            async with scheduler.turn(Kind.INSTANCES, "hold"):
                await asyncio.to_thread(
                    lambda: scheduler.turn_blocking(
                        Kind.EXPLAIN, "t", deadline=time.monotonic() + 0.05
                    ).__enter__()
                )
        return order

    assert run(main()) == ["explain", ("instances", "batch")]
