"""Clients that hang up: their own outcome (status 499 in metrics, one log line, no traceback), and the
work of their request dropped.

A client can go away while its body uploads (the route's body read sees ``http.disconnect``) or
while the request is being answered. For the second, :func:`cancel_on_disconnect` runs the request's
work beside a watcher of the ASGI ``receive`` channel: once the whole body has been read, the server
sends nothing more on it until the client disconnects (uvicorn) or the response is complete. The
work is then cancelled: every stage awaiting a thread pool drops its job if it has not started
(``run_in_executor`` futures cancel their pool futures), and the batchers release the request's
queue slots at once and never run its crops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from starlette.types import Receive

__all__ = ["CLIENT_CLOSED_STATUS", "ClientDisconnectedError", "cancel_on_disconnect"]

CLIENT_CLOSED_STATUS = 499  # nginx's "client closed request": never sent, it labels the outcome
log = logging.getLogger("wingmark.service")
T = TypeVar("T")


class ClientDisconnectedError(Exception):
    """The client closed the connection before its answer was ready."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"the client disconnected during {stage}")
        self.stage = stage


async def _disconnected(receive: Receive) -> None:
    """Returns when ``receive`` reports ``http.disconnect`` (call only after the body was read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(receive: Receive, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` until it finishes or the client disconnects; then cancel it and raise
    :class:`ClientDisconnectedError`. ``receive`` must have delivered the whole body already."""
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:  # the server itself cancelled us: take the work down too
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task  # its stages unwind now; threads already running finish their one job
    raise ClientDisconnectedError("processing")
