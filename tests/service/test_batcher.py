"""The dynamic batcher's logic, with a fake process function standing in for the device worker."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

from service.batcher import (
    BatcherClosedError,
    DeadlineExceededError,
    DeviceGate,
    DynamicBatcher,
    QueueFullError,
)

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


class FakeWorker:
    """Records every batch; doubles numbers; raises on "bad"; can be held to keep the queue full."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.delay = 0.0

    def __call__(self, items: list[Any]) -> list[Any]:
        self.entered.set()
        self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        self.batches.append(list(items))
        if "bad" in items:
            raise ValueError("bad item in batch")
        return [x * 2 for x in items]


class Observer:
    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.failures = 0

    def on_batch(self, size: int, run_s: float) -> None:
        self.sizes.append(size)

    def on_failure(self, size: int, error: BaseException) -> None:
        self.failures += 1


def make(worker: FakeWorker, **kw: Any) -> tuple[DynamicBatcher[Any, Any], ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(1)
    batcher: DynamicBatcher[Any, Any] = DynamicBatcher(worker, executor=pool, **kw)
    batcher.start()
    return batcher, pool


def test_concurrent_items_are_batched_up_to_max_batch_size() -> None:
    worker = FakeWorker()
    observer = Observer()

    async def main() -> list[int]:
        batcher, _ = make(worker, max_batch_size=4, max_queue_delay_s=0.2, observer=observer)
        outcomes = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        await batcher.stop()
        return [o.value for o in outcomes]

    assert run(main()) == [2 * i for i in range(10)]
    assert [len(b) for b in worker.batches] == [4, 4, 2]
    assert observer.sizes == [4, 4, 2]
    assert sorted(x for b in worker.batches for x in b) == list(range(10))


def test_full_batch_runs_without_waiting_for_the_delay() -> None:
    worker = FakeWorker()

    async def main() -> float:
        batcher, _ = make(worker, max_batch_size=3, max_queue_delay_s=5.0)
        t0 = time.monotonic()
        await asyncio.gather(*(batcher.submit(i) for i in range(3)))
        elapsed = time.monotonic() - t0
        await batcher.stop()
        return elapsed

    assert run(main()) < 1.0  # the "batch full" event, not the 5 s delay, released the batch
    assert [len(b) for b in worker.batches] == [3]


def test_a_lone_item_waits_at_most_the_queue_delay() -> None:
    worker = FakeWorker()

    async def main() -> tuple[float, int]:
        batcher, _ = make(worker, max_batch_size=8, max_queue_delay_s=0.05)
        t0 = time.monotonic()
        outcome = await batcher.submit(7)
        elapsed = time.monotonic() - t0
        await batcher.stop()
        return elapsed, outcome.batch_size

    elapsed, size = run(main())
    assert 0.04 <= elapsed < 1.0
    assert size == 1


def test_submit_many_keeps_order_and_reports_queue_and_run_time() -> None:
    worker = FakeWorker()
    worker.delay = 0.02

    async def main() -> list[Any]:
        batcher, _ = make(worker, max_batch_size=16, max_queue_delay_s=0.0)
        out = await batcher.submit_many([5, 1, 3])
        await batcher.stop()
        return out

    outcomes = run(main())
    assert [o.value for o in outcomes] == [10, 2, 6]
    assert all(o.run_s >= 0.02 and o.queue_s >= 0 and o.batch_size == 3 for o in outcomes)


def test_an_exception_fails_only_its_own_batch_and_the_loop_lives_on() -> None:
    worker = FakeWorker()
    observer = Observer()

    async def main() -> tuple[list[Any], list[Any]]:
        batcher, _ = make(worker, max_batch_size=2, max_queue_delay_s=0.1, observer=observer)
        first = await asyncio.gather(
            batcher.submit(1),
            batcher.submit("bad"),
            batcher.submit(3),
            batcher.submit(4),
            return_exceptions=True,
        )
        later = await asyncio.gather(batcher.submit(5), batcher.submit(6), return_exceptions=True)
        await batcher.stop()
        return list(first), list(later)

    first, later = run(main())
    assert isinstance(first[0], ValueError) and isinstance(first[1], ValueError)
    assert [o.value for o in first[2:]] == [6, 8]
    assert [o.value for o in later] == [10, 12]
    assert observer.failures == 1


def test_a_wrong_number_of_results_fails_the_batch() -> None:
    async def main() -> Any:
        pool = ThreadPoolExecutor(1)
        batcher: DynamicBatcher[int, int] = DynamicBatcher(lambda items: items[:-1], executor=pool)
        batcher.start()
        out = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        await batcher.stop()
        return out

    out = run(main())
    assert len(out) == 2 and all(isinstance(o, RuntimeError) for o in out)


def test_queue_limit_refuses_whole_requests_that_do_not_fit() -> None:
    worker = FakeWorker()
    worker.gate.clear()  # the worker holds the first batch

    async def main() -> None:
        batcher, _ = make(worker, max_batch_size=1, max_queue_delay_s=0.0, queue_limit=3)
        running = asyncio.ensure_future(batcher.submit(0))
        while not worker.entered.is_set():
            await asyncio.sleep(0.005)
        queued = asyncio.ensure_future(batcher.submit_many([1, 2]))
        await asyncio.sleep(0.01)
        assert batcher.queued == 2
        with pytest.raises(QueueFullError):
            await batcher.submit_many([3, 4])  # 2 + 2 > 3: refused as a whole
        assert batcher.queued == 2
        extra = asyncio.ensure_future(batcher.submit(5))  # 2 + 1 fits
        await asyncio.sleep(0.01)
        worker.gate.set()
        assert (await running).value == 0
        assert [o.value for o in await queued] == [2, 4]
        assert (await extra).value == 10
        await batcher.stop()

    run(main())
    assert sorted(x for b in worker.batches for x in b) == [0, 1, 2, 5]


def test_deadline_passes_and_expired_items_are_never_processed() -> None:
    worker = FakeWorker()
    worker.gate.clear()

    async def main() -> None:
        batcher, _ = make(worker, max_batch_size=1, max_queue_delay_s=0.0)
        blocker = asyncio.ensure_future(batcher.submit(0))
        while not worker.entered.is_set():
            await asyncio.sleep(0.005)
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceededError):
            await batcher.submit(1, deadline=time.monotonic() + 0.05)
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(DeadlineExceededError):
            await batcher.submit(2, deadline=time.monotonic() - 1)  # already past: refused outright
        worker.gate.set()
        await blocker
        assert (await batcher.submit(3)).value == 6
        await batcher.stop()

    run(main())
    assert [b for b in worker.batches] == [[0], [3]]


def test_cancelled_callers_are_skipped() -> None:
    worker = FakeWorker()
    worker.gate.clear()

    async def main() -> None:
        batcher, _ = make(worker, max_batch_size=4, max_queue_delay_s=0.0)
        blocker = asyncio.ensure_future(batcher.submit(0))
        while not worker.entered.is_set():
            await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(batcher.submit_many([1, 2]))
        stays = asyncio.ensure_future(batcher.submit(3))
        await asyncio.sleep(0.01)
        gone.cancel()
        await asyncio.sleep(0.01)
        worker.gate.set()
        await blocker
        assert (await stays).value == 6
        await batcher.stop()

    run(main())
    assert worker.batches == [[0], [3]]


@pytest.mark.parametrize("how", ["cancelled", "expired"])
def test_callers_that_give_up_free_their_queue_slots_at_once_and_are_never_run(how: str) -> None:
    """While the device is busy, a caller that is cancelled (client gone) or whose deadline passes
    frees its queue slots at once: a request that needs them is admitted, not refused with 429."""
    worker = FakeWorker()
    worker.gate.clear()

    async def main() -> None:
        batcher, _ = make(worker, max_batch_size=8, max_queue_delay_s=0.0, queue_limit=4)
        blocker = asyncio.ensure_future(batcher.submit(0))
        while not worker.entered.is_set():
            await asyncio.sleep(0.005)
        deadline = time.monotonic() + 0.05 if how == "expired" else None
        gone = asyncio.ensure_future(batcher.submit_many([1, 2, 3, 4], deadline=deadline))
        await asyncio.sleep(0.01)
        assert batcher.queued == 4
        if how == "cancelled":
            gone.cancel()
        with pytest.raises(asyncio.CancelledError if how == "cancelled" else DeadlineExceededError):
            await gone
        assert batcher.queued == 0  # the device is still busy with the blocker
        later = asyncio.ensure_future(batcher.submit_many([5, 6, 7, 8]))
        await asyncio.sleep(0.01)
        worker.gate.set()
        await blocker
        assert [o.value for o in await later] == [10, 12, 14, 16]
        assert batcher.queued == 0
        await batcher.stop()

    run(main())
    assert worker.batches == [[0], [5, 6, 7, 8]]


def test_stop_drains_admitted_work_then_refuses_new_items() -> None:
    worker = FakeWorker()
    worker.delay = 0.01

    async def main() -> None:
        batcher, _ = make(worker, max_batch_size=2, max_queue_delay_s=0.5)
        pending = [asyncio.ensure_future(batcher.submit(i)) for i in range(5)]
        await asyncio.sleep(0)  # let them queue
        await batcher.stop()
        assert [p.result().value for p in pending] == [0, 2, 4, 6, 8]
        assert not batcher.running
        with pytest.raises(BatcherClosedError):
            await batcher.submit(9)

    run(main())


def test_stop_without_drain_fails_queued_items() -> None:
    worker = FakeWorker()
    worker.gate.clear()

    async def main() -> None:
        batcher, _ = make(worker, max_batch_size=1, max_queue_delay_s=0.0)
        running = asyncio.ensure_future(batcher.submit(0))
        while not worker.entered.is_set():
            await asyncio.sleep(0.005)
        queued = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.01)
        await batcher.stop(drain=False)
        worker.gate.set()
        for fut in (running, queued):
            with pytest.raises(BatcherClosedError):
                await fut
        assert batcher.queued == 0

    run(main())


def test_exactly_one_result_per_item_under_random_concurrency() -> None:
    worker = FakeWorker()
    rng = random.Random(0)

    async def client(batcher: DynamicBatcher[Any, Any], base: int) -> list[int]:
        out = []
        for j in range(10):
            n = rng.randint(1, 3)
            items = [base * 1000 + j * 10 + k for k in range(n)]
            await asyncio.sleep(rng.random() * 0.003)
            outcomes = await batcher.submit_many(items)
            assert [o.value for o in outcomes] == [2 * x for x in items]
            out += items
        return out

    async def main() -> list[int]:
        batcher, _ = make(worker, max_batch_size=8, max_queue_delay_s=0.002, queue_limit=1000)
        results = await asyncio.gather(*(client(batcher, b) for b in range(20)))
        await batcher.stop()
        return [x for r in results for x in r]

    submitted = run(main())
    processed = [x for b in worker.batches for x in b]
    assert sorted(processed) == sorted(submitted)  # each item ran exactly once
    assert max(len(b) for b in worker.batches) > 1  # concurrency produced real batches
    assert all(len(b) <= 8 for b in worker.batches)


def test_invalid_configuration_is_rejected() -> None:
    with pytest.raises(ValueError):
        DynamicBatcher(lambda x: x, executor=ThreadPoolExecutor(1), max_batch_size=0)


def test_a_batch_that_fills_while_the_loop_waits_runs_at_once() -> None:
    """The "batch full" wake-up: items submitted after the loop started waiting for more end the wait
    (a delay of 5 s would otherwise pass first)."""
    worker = FakeWorker()

    async def main() -> tuple[list[int], float]:
        batcher, _ = make(worker, max_batch_size=4, max_queue_delay_s=5.0)
        first = asyncio.ensure_future(batcher.submit(0))
        for _ in range(200):  # until the loop holds item 0 and waits for 3 more
            await asyncio.sleep(0.005)
            if batcher._need == 3:
                break
        assert batcher._need == 3, "the loop never started waiting for the batch to fill"
        t0 = time.monotonic()
        rest = await asyncio.gather(*(batcher.submit(i) for i in (1, 2, 3)))
        elapsed = time.monotonic() - t0
        values = [(await first).value] + [o.value for o in rest]
        await batcher.stop()
        return values, elapsed

    values, elapsed = run(main())
    assert values == [0, 2, 4, 6]
    assert worker.batches == [[0, 1, 2, 3]]
    assert elapsed < 2.0, f"the full batch waited {elapsed:.2f} s for the queue delay"


# -- greedy dispatch: a DeviceGate shared by the batchers of one device ------------------------------
def make_on(
    worker: FakeWorker, pool: ThreadPoolExecutor, gate: DeviceGate, **kw: Any
) -> DynamicBatcher[Any, Any]:
    batcher: DynamicBatcher[Any, Any] = DynamicBatcher(worker, executor=pool, gate=gate, **kw)
    batcher.start()
    return batcher


def test_greedy_a_lone_item_on_an_idle_device_runs_at_once() -> None:
    """The timed batcher holds a lone item for the queue delay; the greedy one does not wait at all."""
    worker = FakeWorker()

    async def main() -> float:
        batcher = make_on(
            worker, ThreadPoolExecutor(1), DeviceGate(), max_batch_size=8, max_queue_delay_s=5.0
        )
        t0 = time.monotonic()
        assert (await batcher.submit(7)).value == 14
        elapsed = time.monotonic() - t0
        await batcher.stop()
        return elapsed

    assert run(main()) < 1.0


def test_greedy_items_arriving_while_the_device_is_busy_form_one_batch() -> None:
    worker = FakeWorker()
    worker.gate.clear()  # the device holds the first batch until released

    async def main() -> list[Any]:
        batcher = make_on(
            worker, ThreadPoolExecutor(1), DeviceGate(), max_batch_size=8, max_queue_delay_s=0.0
        )
        first = asyncio.ensure_future(batcher.submit(0))
        while not worker.entered.is_set():
            await asyncio.sleep(0.005)
        rest = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 6)]
        await asyncio.sleep(0.05)
        assert batcher.queued == 5 and not any(r.done() for r in rest)
        worker.gate.set()
        out = [(await first).value] + [(await r).value for r in rest]
        await batcher.stop()
        return out

    assert run(main()) == [0, 2, 4, 6, 8, 10]
    assert worker.batches == [[0], [1, 2, 3, 4, 5]]


def test_greedy_a_full_batch_does_not_wait_for_the_device() -> None:
    """While stage a holds the device, stage b's batch that fills goes to the executor's queue at
    once (it cannot grow); b's next item waits for the device."""
    worker = FakeWorker()
    worker.gate.clear()

    async def main() -> None:
        pool, gate = ThreadPoolExecutor(1), DeviceGate()
        a = make_on(worker, pool, gate, max_batch_size=2, max_queue_delay_s=0.0, name="a")
        b = make_on(worker, pool, gate, max_batch_size=2, max_queue_delay_s=0.0, name="b")
        first = asyncio.ensure_future(a.submit(0))
        while not worker.entered.is_set():
            await asyncio.sleep(0.005)
        pair = [asyncio.ensure_future(b.submit(i)) for i in (1, 2)]
        await asyncio.sleep(0.05)
        assert gate.busy == 2 and b.queued == 0  # [1, 2] is in the executor's queue
        third = asyncio.ensure_future(b.submit(3))
        await asyncio.sleep(0.05)
        assert gate.busy == 2 and b.queued == 1  # b's loop is still waiting for [1, 2]
        worker.gate.set()
        assert [(await f).value for f in (first, *pair, third)] == [0, 2, 4, 6]
        await a.stop()
        await b.stop()

    run(main())
    assert worker.batches == [[0], [1, 2], [3]]


def test_greedy_the_free_device_goes_to_the_batcher_that_waited_longest() -> None:
    """Two stages on one device: when it frees, the older waiting batch runs first, and a newcomer
    on an idle-looking device cannot take the turn reserved for it."""
    worker = FakeWorker()
    worker.gate.clear()

    async def main() -> None:
        pool, gate = ThreadPoolExecutor(1), DeviceGate()
        stage1 = make_on(worker, pool, gate, max_batch_size=8, max_queue_delay_s=0.0, name="s1")
        stage2 = make_on(worker, pool, gate, max_batch_size=8, max_queue_delay_s=0.0, name="s2")
        blocker = asyncio.ensure_future(stage1.submit(0))
        while not worker.entered.is_set():
            await asyncio.sleep(0.005)
        old = asyncio.ensure_future(stage2.submit(100))  # waits first
        await asyncio.sleep(0.02)
        young = asyncio.ensure_future(stage1.submit(1))
        await asyncio.sleep(0.02)
        worker.gate.set()
        assert [(await f).value for f in (blocker, old, young)] == [0, 200, 2]
        await stage1.stop()
        await stage2.stop()
        assert gate.busy == 0

    run(main())
    assert worker.batches == [[0], [100], [1]]


def test_greedy_a_turn_whose_items_were_all_cancelled_passes_to_the_next_batcher() -> None:
    worker = FakeWorker()
    worker.gate.clear()

    async def main() -> None:
        pool, gate = ThreadPoolExecutor(1), DeviceGate()
        a = make_on(worker, pool, gate, max_batch_size=8, max_queue_delay_s=0.0, name="a")
        b = make_on(worker, pool, gate, max_batch_size=8, max_queue_delay_s=0.0, name="b")
        blocker = asyncio.ensure_future(a.submit(0))
        while not worker.entered.is_set():
            await asyncio.sleep(0.005)
        gone = asyncio.ensure_future(b.submit(50))  # b waits longest, then its caller goes away
        await asyncio.sleep(0.02)
        later = asyncio.ensure_future(a.submit(1))
        await asyncio.sleep(0.02)
        gone.cancel()
        worker.gate.set()
        assert (await blocker).value == 0
        assert (await asyncio.wait_for(later, 5)).value == 2  # no hang on b's unused turn
        await a.stop()
        await b.stop()

    run(main())
    assert worker.batches == [[0], [1]]


def test_greedy_one_result_per_item_under_random_concurrency_on_two_stages() -> None:
    worker = FakeWorker()
    worker.delay = 0.001
    rng = random.Random(1)

    async def client(s1: DynamicBatcher[Any, Any], s2: DynamicBatcher[Any, Any], base: int) -> None:
        for j in range(8):
            items = [base * 1000 + j * 10 + k for k in range(rng.randint(1, 3))]
            await asyncio.sleep(rng.random() * 0.003)
            mid = [o.value for o in await s1.submit_many(items)]
            assert [o.value for o in await s2.submit_many(mid)] == [4 * x for x in items]

    async def main() -> None:
        pool, gate = ThreadPoolExecutor(1), DeviceGate()
        s1 = make_on(worker, pool, gate, max_batch_size=8, queue_limit=1000)
        s2 = make_on(worker, pool, gate, max_batch_size=8, queue_limit=1000)
        await asyncio.gather(*(client(s1, s2, b) for b in range(20)))
        await s1.stop()
        await s2.stop()
        assert gate.busy == 0

    run(main())
    assert max(len(b) for b in worker.batches) > 1  # batches formed while the device was busy
    assert all(len(b) <= 8 for b in worker.batches)
