"""Waiting with a time limit without ever losing a cancellation.

On Python 3.11 ``asyncio.wait_for(aw, t)`` returns ``aw``'s result when ``aw`` finishes in the same
turn of the event loop in which the waiting task is cancelled, and the cancellation is dropped (fixed
in 3.12 by building ``wait_for`` on ``asyncio.timeout``). For the service that meant: a request whose
client hung up just as one of its steps (a decode, a crop, a batch) finished went on to run its faces
anyway, and a batcher loop stopped at the moment it was woken kept running. ``asyncio.timeout`` awaits
in the caller's own task, so a cancellation always arrives as :class:`asyncio.CancelledError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["wait_within"]

T = TypeVar("T")


async def wait_within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """``await awaitable``, raising :class:`TimeoutError` after ``timeout`` seconds (None: no limit).

    On timeout the awaitable is cancelled (as ``asyncio.wait_for`` does); a cancellation of the caller
    is never turned into a result.
    """
    async with asyncio.timeout(timeout):
        return await awaitable
