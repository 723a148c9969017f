"""``LoopSink``: a ``ResponseSink`` (results.py) that hands a streamed response to an
asyncio event loop. The invocation runs on a pool thread and calls ``begin``/``chunk``
there; the request handler on the loop reads ``queue``: ``("begin", content_type)``,
then ``("chunk", bytes)`` in order. Used by InvokeWithResponseStream (server.py) and
streaming function URLs (triggers/http.py)."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

__all__ = ["LoopSink"]


class LoopSink:
    """Never blocks the invoking thread (Lambda's 20 MiB limit bounds what can queue)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def _put(self, item: tuple[str, Any]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
        except RuntimeError:
            pass                    # the loop is closed: serve is stopping

    def begin(self, content_type: str) -> None:
        self._put(("begin", content_type))

    def chunk(self, data: bytes) -> None:
        self._put(("chunk", data))

    async def relay_until(self, done: asyncio.Future,
                          relay: Callable[[tuple[str, Any]], Awaitable[None]]) -> None:
        """``relay`` every item, in order, until the invocation (``done``) has ended and
        what it queued before ending is relayed too."""
        while not done.done():
            getter = asyncio.ensure_future(self.queue.get())
            await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
            if getter.done():
                await relay(getter.result())
            else:
                getter.cancel()
        while not self.queue.empty():      # queued before the invoke returned
            await relay(self.queue.get_nowait())
