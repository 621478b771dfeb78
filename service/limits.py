"""Bounds on one request's share of the shared threads: its work runs in turns, so that a request with
many faces (or a hostile one: 32 whole-image boxes on a 40-megapixel image) cannot hold a thread while
other requests wait behind it.

The crop thread is a FIFO: :func:`in_turns` hands it one request's faces a few at a time
(``WINGMARK_CROP_CHUNK_FACES``), each turn queued behind the turns other requests queued meanwhile.
Since crops sample only the pixels they need (``model_store.cascade.crop``), a turn costs about
``chunk * S * S`` pixel reads whatever the image and boxes, which bounds how long another request can
wait for the thread; a request's whole crop work is bounded by ``WINGMARK_MAX_FACES`` turns' worth.
Each turn is awaited separately, so a request that is gone (deadline passed, client disconnected)
stops between turns, and its turns not yet started are cancelled with it. The faces then enter the
inference batches in the same turns (``LandmarkService._submit_in_turns``), each turn queued once the
previous one is answered, so that one request's many faces never fill a batch that everyone waits behind.
At a last stage that crops each face several times (a request's ``views``), a turn takes ``chunk // views``
faces (at least one), so that a turn holds about as many crops as at the other stages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["in_turns"]

T = TypeVar("T")
R = TypeVar("R")


async def in_turns(
    run: Callable[[Callable[[], R]], Awaitable[R]],
    work: Callable[[Sequence[T]], R],
    items: Sequence[T],
    chunk: int,
) -> list[R]:
    """``work`` over consecutive chunks of at most ``chunk`` items, one ``run`` (a thread-pool call) per
    chunk, each awaited before the next is queued. Returns the chunks' results in order (one empty
    chunk when there are no items)."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    starts = range(0, len(items), chunk) if len(items) else range(1)
    results: list[R] = []
    for start in starts:
        part = items[start : start + chunk]
        results.append(await run(lambda part=part: work(part)))  # type: ignore[misc]
    return results
