"""The trio <-> asyncio bridge that hosts aiortc: calls, errors, cancellation, events, shutdown."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
import trio

from node.rtc_bridge import RtcLoop, RtcLoopClosed, open_rtc_loop

if TYPE_CHECKING:
    from aiortc import RTCDataChannel


async def test_run_returns_the_result_computed_on_the_loop_thread() -> None:
    async with open_rtc_loop() as rtc:

        async def where() -> tuple[int, asyncio.AbstractEventLoop]:
            await asyncio.sleep(0)
            return threading.get_ident(), asyncio.get_running_loop()

        ident, loop = await rtc.run(where)
        assert ident != threading.get_ident()
        assert loop is rtc.loop
        assert await rtc.run(lambda: asyncio.sleep(0.01, result=42)) == 42


async def test_exceptions_propagate_to_trio() -> None:
    async with open_rtc_loop() as rtc:

        async def fail() -> None:
            await asyncio.sleep(0)
            raise ValueError("from asyncio")

        with pytest.raises(ValueError, match="from asyncio"):
            await rtc.run(fail)
        # The loop survives a failed call.
        assert await rtc.run(lambda: asyncio.sleep(0, result="still up")) == "still up"


async def test_trio_cancellation_cancels_the_asyncio_task_and_waits_for_it() -> None:
    unwound = threading.Event()
    started = trio.Event()

    async with open_rtc_loop() as rtc:
        token = trio.lowlevel.current_trio_token()

        async def forever() -> None:
            token.run_sync_soon(started.set)
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                await asyncio.sleep(0.05)  # cleanup that takes a while
                unwound.set()
                raise

        scope = trio.CancelScope()

        async def caller() -> None:
            with scope:
                await rtc.run(forever)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(caller)
            await started.wait()
            scope.cancel()
        # run() returned only after the asyncio side finished unwinding.
        assert scope.cancelled_caught and unwound.is_set()

        # Cancelled before the call: nothing starts on the asyncio side.
        ran = threading.Event()

        async def never() -> None:
            ran.set()

        with trio.CancelScope() as early:
            early.cancel()
            await rtc.run(never)
        assert early.cancelled_caught and not ran.is_set()


async def test_events_flow_from_asyncio_to_trio_in_order() -> None:
    async with open_rtc_loop() as rtc:

        async def produce() -> None:
            for i in range(5):
                rtc.emit(("tick", i))
                await asyncio.sleep(0)

        await rtc.run(produce)
        got = [await rtc.events.receive() for _ in range(5)]
        assert got == [("tick", i) for i in range(5)]
        assert rtc.dropped_events == 0

        rtc.call_soon(rtc.emit, ("from call_soon", threading.current_thread().name))
        with trio.fail_after(5):
            assert await rtc.events.receive() == ("from call_soon", "MainThread")


async def test_a_full_event_channel_drops_and_counts() -> None:
    async with open_rtc_loop(event_buffer=2) as rtc:

        async def flood() -> None:
            for i in range(5):
                rtc.emit(i)

        # Deliveries queue on the trio token before run() wakes us, in order.
        await rtc.run(flood)
        assert [rtc.events.receive_nowait() for _ in range(2)] == [0, 1]
        assert rtc.dropped_events == 3


async def test_cleanups_run_newest_first_and_unregister_works() -> None:
    order: list[str] = []
    async with open_rtc_loop() as rtc:

        def cleanup(name: str) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                order.append(name)

            return run

        rtc.register_cleanup(cleanup("first"))
        forget = rtc.register_cleanup(cleanup("forgotten"))
        rtc.register_cleanup(cleanup("last"))
        forget()
        loop = rtc.loop
    assert order == ["last", "first"]
    assert loop.is_closed()
    with pytest.raises(RtcLoopClosed):
        await rtc.run(lambda: asyncio.sleep(0))


async def test_a_call_still_running_at_exit_fails_with_rtc_loop_closed() -> None:
    outcomes: list[str] = []
    async with trio.open_nursery() as nursery, open_rtc_loop() as rtc:
        started = trio.Event()
        token = trio.lowlevel.current_trio_token()

        async def forever() -> None:
            token.run_sync_soon(started.set)
            await asyncio.sleep(3600)

        async def caller() -> None:
            try:
                await rtc.run(forever)
            except RtcLoopClosed:
                outcomes.append("closed")

        nursery.start_soon(caller)
        await started.wait()
    assert outcomes == ["closed"]


async def test_a_peer_connection_closed_early_is_forgotten() -> None:
    async with open_rtc_loop() as rtc:

        async def open_and_close() -> int:
            pc = await rtc.create_peer_connection()
            pc.createDataChannel("x")
            await pc.setLocalDescription(await pc.createOffer())
            before = len(rtc._cleanups)
            await pc.close()
            return before - len(rtc._cleanups)

        assert await rtc.run(open_and_close) == 1
        assert not rtc._cleanups


async def _connect_data_channel(rtc: RtcLoop) -> str:
    """Two peer connections on this host, left open for the loop's cleanups to close."""
    offerer = await rtc.create_peer_connection()
    answerer = await rtc.create_peer_connection()
    channel = offerer.createDataChannel("chat")
    received: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @answerer.on("datachannel")
    def on_channel(remote: RTCDataChannel) -> None:
        @remote.on("message")
        def on_message(message: str) -> None:
            rtc.emit(("message", message))
            if not received.done():
                received.set_result(message)

    @channel.on("open")
    def on_open() -> None:
        channel.send("hello over webrtc")

    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    return await asyncio.wait_for(received, 20)


async def test_peer_connections_close_cleanly_at_exit(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    async with open_rtc_loop() as rtc:
        assert await rtc.run(lambda: _connect_data_channel(rtc)) == "hello over webrtc"
        assert await rtc.events.receive() == ("message", "hello over webrtc")
        assert len(rtc._cleanups) == 2
        thread_names = {t.name for t in threading.enumerate()}
        assert "talas-rtc" in thread_names
    # The pcs were closed on the loop before it stopped (warnings are errors here).
    assert rtc.loop.is_closed()
    assert "talas-rtc" not in {t.name for t in threading.enumerate()}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    with pytest.raises(trio.EndOfChannel):
        await rtc.events.receive()


def test_importing_the_node_does_not_import_aiortc() -> None:
    code = (
        "import sys, node.daemon, node.rtc_bridge, node.jitter, node.bench_audio\n"
        "loaded = [m for m in ('aiortc', 'aioice', 'pylibsrtp') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
