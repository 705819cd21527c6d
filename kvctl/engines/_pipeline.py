"""Reader/writer over a bounded queue: the engines' way of overlapping source and destination I/O.

A reader task pulls items (scan pages) from an async iterator into an ``asyncio.Queue`` of at most
``depth`` items; the caller's consumer drains it.  Memory is bounded by ``depth`` pages whatever
the key count.  A failure on either side stops both: a reader error is re-raised in the consumer
loop, and a consumer error (or a cancellation, e.g. Ctrl-C) cancels the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Generic, TypeVar

from ._gc import rare_collections

T = TypeVar("T")


class _End:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException | None) -> None:
        self.exc = exc


class Prefetch(Generic[T]):
    """Read ahead of the consumer: ``await next()`` returns the next item or None at the end."""

    def __init__(self, source: AsyncIterator[T], depth: int = 4) -> None:
        self._source = source
        self._queue: asyncio.Queue[T | _End] = asyncio.Queue(max(1, depth))
        self._task: asyncio.Task[None] | None = None
        self._done = False

    async def _read(self) -> None:
        try:
            async for item in self._source:
                await self._queue.put(item)
                # Woken by room in the queue, go to the back of the loop's line before reading
                # on: a read is a long step, and a write the consumer has just handed to a
                # driver task should reach the socket first, so the server works meanwhile.
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the consumer, which re-raises it
            await self._queue.put(_End(exc))
            return
        finally:
            aclose = getattr(self._source, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        await self._queue.put(_End(None))

    def start(self) -> Prefetch[T]:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._read())
        return self

    async def next(self) -> T | None:
        if self._done:
            return None
        self.start()
        item = await self._queue.get()
        if isinstance(item, _End):
            self._done = True
            if item.exc is not None:
                raise item.exc
            return None
        return item

    async def close(self) -> None:
        task, self._task = self._task, None
        self._done = True
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Prefetch[T]:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# While this thread makes the next batch ready, a store's worker thread doing the write needs
# the GIL back after each step of its I/O (a send, a read of the replies, the wake-up of the event
# loop), and at the default interval of 5 ms it waits up to that long each time: the write, and
# the server with it, waits for the client.  Measured 15-20% of the wall time of a snapshot
# restore into Redis.
QUICK_SWITCH_INTERVAL = 0.0005


@contextlib.contextmanager
def quick_switches() -> Iterator[None]:
    """Hand the GIL over at most every QUICK_SWITCH_INTERVAL seconds inside the block."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(min(before, QUICK_SWITCH_INTERVAL))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


async def pump(source: AsyncIterator[T], consume: Callable[[T], Awaitable[None]], depth: int = 4) -> None:
    """Feed every item of ``source`` to ``consume`` in order, reading up to ``depth`` items ahead.
    A cancellation (Ctrl-C) stops it between items: see :func:`to_the_end`."""
    with rare_collections():
        async with Prefetch(source, depth) as ahead:
            while (item := await ahead.next()) is not None:
                await to_the_end(consume(item))


Ready = Callable[[], Awaitable[None]]  # an item made ready: calling it starts its step


async def pump_ready(source: AsyncIterator[T], ready: Callable[[T], Ready], depth: int = 4) -> None:
    """As :func:`pump`, but each item is made ready by ``ready(item)`` (client CPU, in this
    thread) while the step of the item before it is still under way, and its step (what
    ``ready`` returns) is run after that one has ended.

    So the steps still run one at a time, in order, and a failure stops the next before it
    starts; what overlaps is one batch's preparation with the previous batch's I/O.  Whatever
    stops the loop (a failure of the source or of a preparation, a cancellation), the step under
    way is awaited to its end first; a batch made ready and not started is dropped, unwritten."""
    with rare_collections(), quick_switches():
        async with Prefetch(source, depth) as ahead:
            flight: asyncio.Future[None] | None = None
            try:
                while (item := await ahead.next()) is not None:
                    step = ready(item)
                    if flight is not None:
                        running, flight = flight, None
                        await to_the_end(running)
                    flight = asyncio.ensure_future(step())
                    # let the step reach its driver (a thread, a socket) before the next item
                    # is made ready: the two are meant to overlap
                    await asyncio.sleep(0)
            except BaseException:
                # what stopped the loop is the error to report; the step under way still ends first
                if flight is not None:
                    with contextlib.suppress(Exception):
                        await to_the_end(flight)
                raise
            if flight is not None:
                await to_the_end(flight)


async def to_the_end(step: Awaitable[None]) -> None:
    """Await ``step`` to its end even if the caller is cancelled meanwhile, then re-raise the
    cancellation.

    A batch a driver has started to send may still be committed after a cancellation (its
    thread or the server carries on), so a consumer stopped half-way would count, and checkpoint,
    one batch less than the destination holds.  Finished, the batch is counted and saved.  A
    second Ctrl-C still stops at once: asyncio.run raises KeyboardInterrupt for it."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # the step's own failure is not what stopped us
            await task
        raise
