"""``wait_within``: a bounded wait that returns, times out, or passes a cancellation on, never dropping
one (Python 3.11's ``asyncio.wait_for`` drops a cancellation that arrives in the same turn as the result)."""

from __future__ import annotations

import asyncio

import pytest

from service.waiting import wait_within


def test_a_cancellation_in_the_turn_the_result_arrives_is_not_dropped() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        step = loop.create_future()  # e.g. a decode in a worker thread, or a batch's results
        went_on = []

        async def request() -> None:
            await wait_within(step, 10.0)
            went_on.append(True)  # the next stage of a request whose client has gone

        task = asyncio.ensure_future(request())
        await asyncio.sleep(0)  # the request waits on its step
        step.set_result(None)  # the step finishes ...
        task.cancel()  # ... in the turn in which the client hangs up
        with pytest.raises(asyncio.CancelledError):
            await task
        assert went_on == []

    asyncio.run(main())


def test_returns_the_result_or_times_out_and_cancels_the_wait() -> None:
    async def main() -> None:
        assert await wait_within(asyncio.sleep(0.01, "done"), 5.0) == "done"
        assert await wait_within(asyncio.sleep(0.01, "no limit"), None) == "no limit"
        slow = asyncio.get_running_loop().create_future()
        with pytest.raises(TimeoutError):
            await wait_within(slow, 0.02)
        assert slow.cancelled()

    asyncio.run(main())
