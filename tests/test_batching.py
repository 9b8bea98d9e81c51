"""The micro-batcher on its own: grouping, limits, isolation, cancellation, draining."""

from __future__ import annotations

import asyncio

import pytest

from service.batching import BatchStats, MicroBatcher
from service.errors import NotReady, Overloaded
from service.scheduler import FairScheduler

pytestmark = pytest.mark.fast


def run(coro):
    return asyncio.run(coro)


def make(delay: float = 0.0, fail=(), **kw):
    seen: list[list[int]] = []
    stats: list[BatchStats] = []

    async def square(items: list[int]):
        seen.append(list(items))
        await asyncio.sleep(delay)
        return [ValueError(f"bad {i}") if i in fail else i * i for i in items]

    defaults = {"max_batch": 4, "max_wait_s": 0.05, "queue_limit": 100}
    scheduler = kw.pop("scheduler", None) or FairScheduler()
    batcher = MicroBatcher(square, scheduler, on_batch=stats.append, **{**defaults, **kw})
    return batcher, seen, stats


def test_concurrent_requests_share_batches():
    async def main():
        b, seen, stats = make()
        b.start()
        results = await asyncio.gather(*(b.submit([i]) for i in range(10)))
        await b.close(1.0)
        return results, seen, stats

    results, seen, stats = run(main())
    assert results == [[i * i] for i in range(10)]
    assert [len(s) for s in seen] == [4, 4, 2]
    assert sum(s.size for s in stats) == 10


def test_a_lone_request_waits_at_most_max_wait():
    async def main():
        b, _, _ = make(max_wait_s=0.02)
        b.start()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await b.submit([3])
        elapsed = loop.time() - start
        await b.close(1.0)
        return elapsed

    assert run(main()) < 0.5


def test_full_queue_is_overloaded_and_refuses_whole_requests():
    async def main():
        b, _, _ = make(delay=0.2, queue_limit=3, max_batch=1)
        b.start()
        first = asyncio.create_task(b.submit([1, 2, 3]))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded):
            await b.submit([4])
        assert await first == [1, 4, 9]
        await b.close(1.0)

    run(main())


def test_one_bad_item_fails_only_its_request():
    async def main():
        b, _, _ = make(fail={2})
        b.start()
        results = await asyncio.gather(
            b.submit([1]), b.submit([2]), b.submit([3]), return_exceptions=True
        )
        await b.close(1.0)
        return results

    ok1, bad, ok3 = run(main())
    assert ok1 == [1] and ok3 == [9]
    assert isinstance(bad, ValueError) and str(bad) == "bad 2"


def test_cancelled_requests_are_skipped():
    async def main():
        b, seen, _ = make(delay=0.1, max_batch=1)
        b.start()
        running = asyncio.create_task(b.submit([1]))
        await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.submit([2]), 0.01)
        assert await running == [1]
        await asyncio.sleep(0.15)
        await b.close(1.0)
        return seen

    assert run(main()) == [[1]]


def test_close_drains_then_refuses():
    async def main():
        b, _, _ = make(delay=0.05, max_batch=1)
        b.start()
        pending = [asyncio.create_task(b.submit([i])) for i in range(3)]
        await asyncio.sleep(0)
        await b.close(5.0)
        with pytest.raises(NotReady):
            await b.submit([9])
        return [await p for p in pending]

    assert run(main()) == [[0], [1], [4]]


def test_a_small_request_rides_in_the_next_batch_behind_a_big_one():
    """Instances are taken round-robin over the waiting requests, not first come first
    served: one photo behind 8 waits for one batch, not for two."""

    async def main():
        b, seen, _ = make(delay=0.05, max_wait_s=0.0)
        b.start()
        first = asyncio.create_task(b.submit([100]))
        await asyncio.sleep(0.01)  # the worker runs it; the next two wait
        big = asyncio.create_task(b.submit(list(range(8))))
        await asyncio.sleep(0)
        small = asyncio.create_task(b.submit([50]))
        await asyncio.gather(first, big, small)
        await b.close(1.0)
        return seen

    assert run(main()) == [[100], [0, 50, 1, 2], [3, 4, 5, 6], [7]]
