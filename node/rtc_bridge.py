"""aiortc on its own asyncio loop in a dedicated thread, bridged to trio.

aiortc is asyncio-only.  Rather than run asyncio inside trio, live features
get a private asyncio event loop in one thread owned by :func:`open_rtc_loop`:
aiortc's timers, Opus and SRTP work stay off the trio loop, and trio code
talks to it through three doors:

* :meth:`RtcLoop.run` runs a coroutine on the asyncio loop and returns its
  result to the awaiting trio task (exceptions propagate; trio cancellation
  cancels the asyncio task and waits until it has unwound);
* :meth:`RtcLoop.call_soon` schedules a plain function on the asyncio loop;
* :meth:`RtcLoop.emit` (asyncio side) delivers an event into the bounded trio
  channel :attr:`RtcLoop.events`; a full channel drops the event and counts it.

aiortc itself is imported only inside the functions that need it, so a node
that never starts a live session never loads it (~34 MB of RSS with PyAV).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import TYPE_CHECKING, Any, TypeVar

import outcome
import trio

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

log = logging.getLogger(__name__)

T = TypeVar("T")

EVENT_BUFFER = 256
"""Events the trio side may leave unread before new ones are dropped."""
CLEANUP_TIMEOUT_S = 5.0
"""Bound on each registered cleanup (closing a peer connection takes milliseconds)."""
JOIN_TIMEOUT_S = 5.0
"""Bound on the wait for the loop thread to end at exit."""


class RtcLoopClosed(RuntimeError):
    """The asyncio loop is shut down (or shutting down): no new work is accepted."""


class _Call:
    """One :meth:`RtcLoop.run` in flight: the asyncio task and the trio task waiting on it.

    The asyncio task is created on the loop thread, and a cancel request hops
    there too (``call_soon_threadsafe`` keeps their order), so ``cancel`` always
    finds the task.  The trio task is woken only once the asyncio task is done:
    no work is left behind on the asyncio side when ``run`` returns or raises.
    """

    __slots__ = ("cancel_requested", "factory", "raise_cancel", "task", "token", "trio_task")

    def __init__(
        self,
        factory: Callable[[], Awaitable[Any]],
        token: trio.lowlevel.TrioToken,
        trio_task: trio.lowlevel.Task,
    ) -> None:
        self.factory = factory
        self.token = token
        self.trio_task = trio_task
        self.task: asyncio.Task[Any] | None = None
        self.cancel_requested = False
        self.raise_cancel: Callable[[], Any] | None = None

    async def _invoke(self) -> Any:
        return await self.factory()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:  # on the loop thread
        self.task = loop.create_task(self._invoke())
        self.task.add_done_callback(self._done)

    def cancel(self) -> None:  # on the loop thread
        if self.task is not None:
            self.task.cancel()

    def _done(self, task: asyncio.Task[Any]) -> None:  # on the loop thread
        result: outcome.Outcome[Any] | None
        if task.cancelled():
            result = None  # decided on the trio side: our cancel, or the loop's shutdown
        elif (exc := task.exception()) is not None:
            result = outcome.Error(exc)
        else:
            result = outcome.Value(task.result())
        with suppress(trio.RunFinishedError):  # nobody is waiting any more
            self.token.run_sync_soon(self._wake, result)

    def _wake(self, result: outcome.Outcome[Any] | None) -> None:  # on the trio thread
        if result is None:
            if self.cancel_requested and self.raise_cancel is not None:
                result = outcome.capture(self.raise_cancel)
            else:
                result = outcome.Error(RtcLoopClosed("the asyncio task was cancelled"))
        trio.lowlevel.reschedule(self.trio_task, result)


class RtcLoop:
    """Handle on the asyncio loop thread; get one from :func:`open_rtc_loop`."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        token: trio.lowlevel.TrioToken,
        events: trio.MemoryReceiveChannel[object],
        send: trio.MemorySendChannel[object],
    ) -> None:
        self.loop = loop
        self.events = events
        """Events sent from the asyncio side with :meth:`emit`, in order."""
        self.dropped_events = 0
        """Events dropped because :attr:`events` was full or closed."""
        self._token = token
        self._send = send
        self._closing = False
        self._cleanups: dict[int, Callable[[], Awaitable[object]]] = {}
        self._next_cleanup = 0
        self._lock = threading.Lock()

    # -- trio side -------------------------------------------------------------

    async def run(self, coro_factory: Callable[[], Awaitable[T]]) -> T:
        """Run ``coro_factory()`` on the asyncio loop and return its result to trio.

        The factory is called on the loop thread, so asyncio objects it makes
        belong to that loop.  Cancelling the trio caller cancels the asyncio
        task and returns once it has finished (a task that swallows the
        cancellation delays the caller until it ends, as in trio).
        """
        if self._closing:
            raise RtcLoopClosed("the rtc loop is closed")
        return await self._run(coro_factory)

    async def _run(self, coro_factory: Callable[[], Awaitable[T]]) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()  # already cancelled: start nothing
        call = _Call(coro_factory, self._token, trio.lowlevel.current_task())
        try:
            self.loop.call_soon_threadsafe(call.start, self.loop)
        except RuntimeError as exc:  # loop closed under us
            raise RtcLoopClosed("the rtc loop is closed") from exc

        def abort(raise_cancel: Callable[[], Any]) -> trio.lowlevel.Abort:
            call.cancel_requested = True
            call.raise_cancel = raise_cancel
            try:
                self.loop.call_soon_threadsafe(call.cancel)
            except RuntimeError:  # loop already gone: the task will never report
                return trio.lowlevel.Abort.SUCCEEDED
            # Woken by _Call._wake once the asyncio task has really ended.
            return trio.lowlevel.Abort.FAILED

        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        """Schedule ``fn(*args)`` on the asyncio loop (thread-safe, fire and forget)."""
        if self._closing:
            raise RtcLoopClosed("the rtc loop is closed")
        self.loop.call_soon_threadsafe(fn, *args)

    # -- either side ------------------------------------------------------------

    def register_cleanup(self, cleanup: Callable[[], Awaitable[object]]) -> Callable[[], None]:
        """Run ``await cleanup()`` on the asyncio loop before it stops; returns an unregister.

        Cleanups run newest first, each bounded by :data:`CLEANUP_TIMEOUT_S`;
        a failing one is logged and the others still run.
        """
        with self._lock:
            key = self._next_cleanup
            self._next_cleanup += 1
            self._cleanups[key] = cleanup

        def unregister() -> None:
            with self._lock:
                self._cleanups.pop(key, None)

        return unregister

    # -- asyncio side -------------------------------------------------------------

    def emit(self, item: object) -> None:
        """Deliver ``item`` to :attr:`events` (call from any thread; never blocks)."""
        try:
            self._token.run_sync_soon(self._deliver, item)
        except trio.RunFinishedError:
            self.dropped_events += 1

    def _deliver(self, item: object) -> None:  # on the trio thread
        try:
            self._send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped_events += 1

    async def create_peer_connection(
        self, ice_servers: list[str] | None = None
    ) -> RTCPeerConnection:
        """A new RTCPeerConnection, closed at loop exit unless closed before (asyncio side).

        Imports aiortc on first use.  ``ice_servers`` are STUN/TURN URLs;
        the default is none (host candidates only).
        """
        from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

        servers = [RTCIceServer(urls=url) for url in ice_servers or []]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        unregister = self.register_cleanup(pc.close)

        @pc.on("connectionstatechange")
        def _forget_when_closed() -> None:
            if pc.connectionState == "closed":
                unregister()

        return pc

    # -- shutdown -----------------------------------------------------------------

    async def _shutdown_on_loop(self) -> None:
        """Cleanups, then every other task, then asyncgens and the default executor."""
        with self._lock:
            cleanups = [self._cleanups[key] for key in sorted(self._cleanups, reverse=True)]
            self._cleanups.clear()
        for cleanup in cleanups:
            try:
                await asyncio.wait_for(cleanup(), CLEANUP_TIMEOUT_S)
            except Exception:
                log.exception("rtc loop cleanup %r failed", cleanup)
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        if others:  # a close begun elsewhere (the cleanup found it closing) may finish first
            _, pending = await asyncio.wait(others, timeout=SETTLE_S)
            others = list(pending)
        for _ in range(CANCEL_ROUNDS):  # a cancelled task may start another (aioice's consent)
            if not others:
                break
            for task in others:
                task.cancel()
            await asyncio.wait(others, timeout=CLEANUP_TIMEOUT_S)
            others = [task for task in asyncio.all_tasks() if task is not current]
        loop = asyncio.get_running_loop()
        await loop.shutdown_asyncgens()
        await loop.shutdown_default_executor()


CANCEL_ROUNDS = 3
SETTLE_S = 1.0
"""At shutdown, how long tasks still running after the cleanups get before they are cancelled."""


def _thread_main(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


@asynccontextmanager
async def open_rtc_loop(*, event_buffer: int = EVENT_BUFFER) -> AsyncIterator[RtcLoop]:
    """Start the asyncio loop thread; at exit run the cleanups, stop the loop, join the thread.

    Exit is shielded from cancellation and bounded (cleanups, then
    :data:`JOIN_TIMEOUT_S` for the thread), so a stuck peer connection cannot
    hang a node's shutdown; the thread is a daemon in case it does not end.
    """
    loop = asyncio.new_event_loop()
    send, receive = trio.open_memory_channel[object](event_buffer)
    rtc = RtcLoop(loop, trio.lowlevel.current_trio_token(), receive, send)
    thread = threading.Thread(target=_thread_main, args=(loop,), name="talas-rtc", daemon=True)
    thread.start()
    try:
        yield rtc
    finally:
        rtc._closing = True
        with trio.CancelScope(shield=True):
            # Generous: each cleanup is bounded on the asyncio side already.
            with trio.move_on_after(CLEANUP_TIMEOUT_S * (1 + len(rtc._cleanups)) + 5):
                try:
                    await rtc._run(rtc._shutdown_on_loop)
                except Exception:
                    log.exception("rtc loop shutdown failed")
            with suppress(RuntimeError):  # the loop already closed (its thread died)
                loop.call_soon_threadsafe(loop.stop)
            await trio.to_thread.run_sync(thread.join, JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("rtc loop thread did not stop within %.0f s", JOIN_TIMEOUT_S)
            await send.aclose()
