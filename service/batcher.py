"""Dynamic batching: items from concurrent requests are run together on one device worker.

Modelled on the usual asyncio design (e.g. Ray Serve's ``@serve.batch``): an ``asyncio.Queue``
of entries, each with its own future; a loop takes the first waiting entry, collects more, and runs
``process`` on the batch in the device executor, off the event loop. When a batch is dispatched:

- timed (no ``gate``): when ``max_batch_size`` is reached (a "batch full" event set by ``submit``)
  or ``max_queue_delay`` has passed since its first entry arrived (``time.monotonic()``);
- greedy (a shared ``DeviceGate``): when it is full, or at once when the device is idle. Holding a
  batch back while the device has nothing to do only adds latency; while the device is busy the
  batch keeps growing, so under load batches fill by themselves. Several batchers on one device
  (the cascade's stages) share its gate, which gives the free device to the batcher whose first
  entry has waited longest.

Guarantees:
- exactly one outcome per item: a result, or the exception that failed its batch;
- an exception in ``process`` (or a wrong number of results) fails every future of that batch
  only; the loop lives on and runs the next batch;
- the queue is bounded: a request whose items would not fit is refused at once (QueueFullError),
  all or nothing;
- a request whose deadline passes gets DeadlineExceededError; its items still queued are dropped;
- cancelled callers (client gone, deadline passed) give their queue slots back at once, and their
  items still queued are skipped, never run;
- ``stop()`` refuses new items and, by default, finishes every admitted item first.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from service.waiting import wait_within

__all__ = [
    "BatchObserver",
    "BatcherClosedError",
    "DeadlineExceededError",
    "DeviceGate",
    "DynamicBatcher",
    "Outcome",
    "QueueFullError",
]

T = TypeVar("T")
R = TypeVar("R")


class QueueFullError(RuntimeError):
    """The bounded queue has no room for the request's items."""


class DeadlineExceededError(TimeoutError):
    """The request's deadline passed before all of its items were processed."""


class BatcherClosedError(RuntimeError):
    """The batcher is stopping or stopped and takes no new items."""


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """One item's result and what happened to it."""

    value: R
    queue_s: float  # from submit until its batch started running
    run_s: float  # how long its batch ran
    batch_size: int


class BatchObserver(Protocol):
    def on_batch(self, size: int, run_s: float) -> None: ...

    def on_failure(self, size: int, error: BaseException) -> None: ...


@dataclass(eq=False)
class _Entry(Generic[T, R]):
    item: T
    future: asyncio.Future[Outcome[R]]
    enqueued: float
    deadline: float | None = None
    queued: bool = True  # holds a queue slot (until collected, or until its caller gives up)


class DeviceGate:
    """Batches in flight on one device executor, shared by the greedy batchers that run on it.

    ``busy`` counts batches handed to the executor and not yet finished. When it drops to 0 the gate
    wakes one waiting batcher, the one whose first entry is oldest, and keeps the device for it until
    it dispatches (or passes its turn), so a newcomer cannot take the turn of a batcher that waited.
    Only used on the event loop's thread."""

    def __init__(self) -> None:
        self.busy = 0
        self._waiting: dict[object, tuple[float, asyncio.Event]] = {}
        self._reserved: object | None = None

    def may_run(self, owner: object) -> bool:
        return self.busy == 0 and self._reserved in (None, owner)

    def wait_turn(self, owner: object, since: float, wake: asyncio.Event) -> None:
        self._waiting[owner] = (since, wake)

    def stop_waiting(self, owner: object) -> None:
        self._waiting.pop(owner, None)

    def acquire(self, owner: object) -> None:
        self.busy += 1
        if self._reserved is owner:
            self._reserved = None

    def release(self) -> None:
        self.busy -= 1
        self._hand_on()

    def pass_turn(self, owner: object) -> None:
        """``owner`` was given the device but has nothing to run after all."""
        if self._reserved is owner:
            self._reserved = None
            self._hand_on()

    def _hand_on(self) -> None:
        if self.busy:
            return
        if self._reserved is None and self._waiting:
            self._reserved = min(self._waiting, key=lambda o: self._waiting[o][0])
        if self._reserved in self._waiting:  # (again, if a full batch ran before it could take it)
            self._waiting[self._reserved][1].set()


@dataclass(eq=False)
class _Stop:
    done: asyncio.Event = field(default_factory=asyncio.Event)


class DynamicBatcher(Generic[T, R]):
    """Collects items into batches for ``process`` (run in ``executor``: one thread per device)."""

    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        *,
        executor: Executor,
        max_batch_size: int = 32,
        max_queue_delay_s: float = 0.005,
        queue_limit: int = 256,
        observer: BatchObserver | None = None,
        name: str = "batcher",
        gate: DeviceGate | None = None,
    ) -> None:
        """``gate``: greedy dispatch on that device (``max_queue_delay_s`` then unused); without
        one, timed dispatch."""
        if max_batch_size < 1 or queue_limit < 1 or max_queue_delay_s < 0:
            raise ValueError("max_batch_size and queue_limit must be >= 1, max_queue_delay_s >= 0")
        self._process = process
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_s
        self.queue_limit = queue_limit
        self._observer = observer
        self.name = name
        self._gate = gate
        self._queue: asyncio.Queue[_Entry[T, R] | _Stop] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._need = 0  # entries the forming batch still lacks; submit sets _wake when the queue has them
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._stop_seen = False
        self._depth = 0

    # -- public surface ------------------------------------------------------------------------
    @property
    def queued(self) -> int:
        """Entries waiting (not yet in a running batch)."""
        return self._depth

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"{self.name}-loop")

    async def submit(self, item: T, *, deadline: float | None = None) -> Outcome[R]:
        (outcome,) = await self.submit_many([item], deadline=deadline)
        return outcome

    async def submit_many(self, items: Sequence[T], *, deadline: float | None = None) -> list[Outcome[R]]:
        """Queue ``items`` (all or none) and wait for all their outcomes.

        Args:
            deadline: a ``time.monotonic()`` instant; past it, DeadlineExceededError.
        Raises:
            QueueFullError, BatcherClosedError, DeadlineExceededError, or the exception that failed
            the batch of one of the items.
        """
        if self._closing or self._task is None:
            raise BatcherClosedError(f"{self.name} is not accepting work")
        if not items:
            return []
        if self._depth + len(items) > self.queue_limit:
            raise QueueFullError(f"{self.name}: queue full ({self._depth}/{self.queue_limit})")
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise DeadlineExceededError("deadline passed before queueing")
        entries = [_Entry(item, loop.create_future(), now, deadline) for item in items]
        for entry in entries:
            self._queue.put_nowait(entry)
        futures = [e.future for e in entries]
        self._depth += len(items)
        if self._need and self._queue.qsize() >= self._need:
            self._wake.set()
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            gathered = await wait_within(asyncio.gather(*futures, return_exceptions=True), timeout)
        except TimeoutError:
            self._abandon(entries)
            raise DeadlineExceededError("deadline passed while waiting for inference") from None
        except asyncio.CancelledError:  # the caller is gone (client disconnected, outer timeout)
            self._abandon(entries)
            raise
        outcomes: list[Outcome[R]] = []
        for result in gathered:
            if isinstance(result, BaseException):
                raise result
            outcomes.append(result)
        return outcomes

    async def stop(self, *, drain: bool = True) -> None:
        """Refuse new items; with ``drain``, finish every admitted item first; then end the loop."""
        self._closing = True
        if self._task is None:
            return
        if drain:
            self._queue.put_nowait(_Stop())
            self._wake.set()
            await asyncio.shield(self._task)
        else:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._fail_queued(BatcherClosedError(f"{self.name} stopped"))

    def _abandon(self, entries: list[_Entry[T, R]]) -> None:
        """The caller of ``entries`` gave up: free the slots of those still queued (the loop skips
        them when it meets them) and cancel their futures."""
        for entry in entries:
            if entry.queued:
                entry.queued = False
                self._depth -= 1
            if not entry.future.done():
                entry.future.cancel()

    def _take(self, entry: _Entry[T, R]) -> bool:
        """Take ``entry`` off the queue; False if its caller has already given up (nothing to run)."""
        if entry.queued:
            entry.queued = False
            self._depth -= 1
        return not entry.future.done()

    # -- the loop ------------------------------------------------------------------------------
    async def _collect(self) -> list[_Entry[T, R]] | None:
        if self._stop_seen:
            return None
        while True:
            first = await self._queue.get()
            if isinstance(first, _Stop):
                return None
            if self._take(first):
                break
        batch = [first]
        t_end = first.enqueued + self.max_queue_delay_s
        while True:
            while len(batch) < self.max_batch_size and not self._queue.empty():
                entry = self._queue.get_nowait()
                if isinstance(entry, _Stop):
                    self._stop_seen = True
                    return batch
                if self._take(entry):
                    batch.append(entry)
            if len(batch) >= self.max_batch_size or self._closing:
                return batch
            timeout: float | None = None
            if self._gate is not None:
                if self._gate.may_run(self):
                    return batch
                self._gate.wait_turn(self, first.enqueued, self._wake)
            else:
                timeout = t_end - time.monotonic()
                if timeout <= 0:
                    return batch
            self._need = self.max_batch_size - len(batch)
            self._wake.clear()
            try:
                await wait_within(self._wake.wait(), timeout)
            except TimeoutError:
                pass
            finally:
                self._need = 0
                if self._gate is not None:
                    self._gate.stop_waiting(self)

    async def _loop(self) -> None:
        try:
            await self._run_batches()
        finally:
            if self._gate is not None:  # never leave the device reserved for a batcher that is gone
                self._gate.stop_waiting(self)
                self._gate.pass_turn(self)

    async def _run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if batch is None:
                return
            now = time.monotonic()
            live: list[_Entry[T, R]] = []
            for entry in batch:
                if entry.future.done():  # the caller was cancelled or timed out
                    continue
                if entry.deadline is not None and now >= entry.deadline:
                    entry.future.set_exception(DeadlineExceededError("deadline passed in the queue"))
                    continue
                live.append(entry)
            if not live:
                if self._gate is not None:
                    self._gate.pass_turn(self)
                continue
            start = time.monotonic()
            try:
                results = await self._run_on_device(loop, [e.item for e in live])
                if len(results) != len(live):
                    raise RuntimeError(
                        f"{self.name}: process returned {len(results)} results for {len(live)}"
                    )
            except asyncio.CancelledError:
                for entry in live:
                    if not entry.future.done():
                        entry.future.set_exception(BatcherClosedError(f"{self.name} stopped"))
                raise
            except Exception as exc:
                if self._observer is not None:
                    self._observer.on_failure(len(live), exc)
                for entry in live:
                    if not entry.future.done():
                        entry.future.set_exception(exc)
                continue
            run_s = time.monotonic() - start
            if self._observer is not None:
                self._observer.on_batch(len(live), run_s)
            for entry, value in zip(live, results, strict=True):
                if not entry.future.done():
                    entry.future.set_result(Outcome(value, start - entry.enqueued, run_s, len(live)))

    async def _run_on_device(self, loop: asyncio.AbstractEventLoop, items: list[T]) -> Sequence[R]:
        if self._gate is None:
            return await loop.run_in_executor(self._executor, self._process, items)
        self._gate.acquire(self)
        try:
            return await loop.run_in_executor(self._executor, self._process, items)
        finally:
            self._gate.release()

    def _fail_queued(self, error: BaseException) -> None:
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if isinstance(entry, _Entry) and self._take(entry):
                entry.future.set_exception(error)
