"""The trio driver over the transport seam (memory streams), in-process and fast.

Scripted devices misbehave on purpose: silence, errors, wrong replies, late
replies, floods of level reports, hang-ups and fuzzed bytes.  Timing tests run
on trio's autojump clock, so a 1 s timeout costs no real time.  The driver
against the simulator over a real pseudo-terminal and TCP is in
test_mic_simulator.py.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from hardware.connection import NEED_DATA, BadRequest, DeviceConnection, Request
from hardware.driver import InvalidTarget, MicModule, open_mic, open_mic_stream
from hardware.errors import (
    InvalidSetting,
    MicClosed,
    MicConnectError,
    MicDisconnected,
    MicError,
    MicProtocolError,
    MicRejected,
    MicTimeout,
)
from hardware.framing import encode_frame
from hardware.messages import (
    Ack,
    ChannelLevel,
    DeviceError,
    ErrorCode,
    GetSettings,
    LevelReport,
    LevelsStarted,
    LowCut,
    Pattern,
    Ping,
    Reply,
    SelfTest,
    SelfTestResult,
    StartLevels,
    StopLevels,
)
from hardware.simulator import SimulatedModule, serve_stream
from tests.test_mic_protocol import mutate

Device = Callable[[trio.abc.Stream], Awaitable[None]]
Answer = Callable[[Request], Awaitable[Reply | None]]


@asynccontextmanager
async def attached(device: Device, **options: Any) -> AsyncIterator[MicModule]:
    """A MicModule talking to ``device`` over an in-memory stream pair."""
    host_end, device_end = trio.testing.memory_stream_pair()

    async def run_device() -> None:
        # The host hangs up on exit (after a best-effort STOP_LEVELS): not the device's bug.
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            await device(device_end)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_device)
        options.setdefault("heartbeat", None)
        async with open_mic_stream(host_end, target="memory", **options) as mic:
            yield mic
        nursery.cancel_scope.cancel()


def scripted(answer: Answer, *, sent: list[Request] | None = None) -> Device:
    """A device answering each request with ``answer(request)`` (None: stay silent)."""

    async def device(stream: trio.abc.Stream) -> None:
        conn = DeviceConnection()
        with suppress(trio.ClosedResourceError, trio.BrokenResourceError):  # unplugged
            while data := await stream.receive_some(4096):
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    if isinstance(event, BadRequest):
                        await stream.send_all(conn.reply(event.seq, DeviceError(event.code)))
                        continue
                    if sent is not None:
                        sent.append(event)
                    reply = await answer(event)
                    if reply is not None:
                        await stream.send_all(conn.reply(event.seq, reply))

    return device


def simulated(module: SimulatedModule | None = None) -> Device:
    module = module or SimulatedModule(serial="MEM-1", seed=1)

    async def device(stream: trio.abc.Stream) -> None:
        async with stream:
            await serve_stream(stream, module)

    return device


async def polite(request: Request) -> Reply:
    """The right reply to anything, at once."""
    match request.command:
        case SelfTest():
            return SelfTestResult(())
        case StartLevels(interval_ms=interval):
            return LevelsStarted(interval)
        case StopLevels():
            return Ack()
    return SimulatedModule(serial="SCRIPT-1").handle(request.command, 0.0)


# --------------------------------------------------------------------------- the happy path


async def test_every_command_against_the_simulated_module() -> None:
    with trio.fail_after(10):
        async with attached(simulated()) as mic:
            assert mic.last_info is not None and mic.last_info.serial == "MEM-1"
            assert mic.online and not mic.disconnected
            assert await mic.ping() >= 0
            await mic.identify(3)
            info = await mic.info()
            assert [part.slot.value for part in info.parts] == [
                "capsule",
                "preamp",
                "body",
                "firmware",
            ]
            before = await mic.settings()
            after = await mic.set(gain_db=12.5, pattern=Pattern.FIGURE8, low_cut=LowCut.HZ_160)
            assert (after.gain_db, after.pattern, after.low_cut) == (
                12.5,
                Pattern.FIGURE8,
                LowCut.HZ_160,
            )
            assert (after.phantom, after.mute) == (before.phantom, before.mute)
            assert await mic.settings() == after
            assert (await mic.self_test()).passed
            assert await mic.start_levels(10) == 10
            counters = []
            async for report in mic.levels():
                assert len(report.channels) == info.channels
                counters.append(report.counter)
                if len(counters) == 3:
                    break
            assert counters == [0, 1, 2]
            await mic.stop_levels()
            assert mic.stats.discarded_bytes == 0 and mic.stats.rejected == 0


async def test_requests_are_pipelined_and_matched_by_sequence_number() -> None:
    """Four concurrent requests, answered in reverse order, each reach the right caller."""
    # The scripted device answers one request at a time, so run the script per request.
    host_end, device_end = trio.testing.memory_stream_pair()
    conn = DeviceConnection()

    async def device(stream: trio.abc.Stream) -> None:
        pending: list[Request] = []
        while data := await stream.receive_some(4096):
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, Request)
                pending.append(event)
            if len(pending) == 4:
                for request in reversed(pending):
                    reply = await polite(request)
                    await stream.send_all(conn.reply(request.seq, reply))
                pending.clear()

    results: dict[str, Any] = {}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(device, device_end)
            async with (
                open_mic_stream(host_end, heartbeat=None, probe=False) as mic,
                trio.open_nursery() as callers,
            ):

                async def call(name: str, fn: Callable[[], Awaitable[Any]]) -> None:
                    results[name] = await fn()

                callers.start_soon(call, "info", mic.info)
                callers.start_soon(call, "settings", mic.settings)
                callers.start_soon(call, "levels", partial(mic.start_levels, 250))
                callers.start_soon(call, "test", mic.self_test)
            nursery.cancel_scope.cancel()
    assert results["info"].serial == "SCRIPT-1"
    assert results["settings"].gain_db == 24.0
    assert results["levels"] == 250
    assert isinstance(results["test"], SelfTestResult)


# --------------------------------------------------------------------------- faults


async def test_silent_module_times_out_goes_offline_and_comes_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answering = True

    async def moody(request: Request) -> Reply | None:
        return await polite(request) if answering else None

    async with attached(scripted(moody), request_timeout=1.0) as mic:
        assert mic.last_info is not None  # probed: it answered
        answering = False
        start = trio.current_time()
        with pytest.raises(MicTimeout):
            await mic.settings()
        assert trio.current_time() - start == pytest.approx(1.0, abs=0.01)
        assert not mic.online and not mic.disconnected
        answering = True
        await mic.ping()
        assert mic.online


async def test_heartbeat_notices_silence_without_requests(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answering = True

    async def moody(request: Request) -> Reply | None:
        return await polite(request) if answering else None

    async with attached(scripted(moody), request_timeout=0.5, heartbeat=2.0) as mic:
        answering = False
        start = trio.current_time()
        with trio.fail_after(10):
            await mic.wait_online(False)
        assert 2.0 <= trio.current_time() - start <= 3.0  # idle 2 s, then a 0.5 s ping
        answering = True
        with trio.fail_after(10):
            await mic.wait_online(True)


async def test_a_long_self_test_does_not_look_like_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The heartbeat must not queue a PING behind a 3 s self-test and time it out."""

    async def thorough(request: Request) -> Reply | None:
        if isinstance(request.command, SelfTest):
            await trio.sleep(3.0)
        return await polite(request)

    async with attached(scripted(thorough), request_timeout=1.0, heartbeat=1.0) as mic:
        went_offline = False

        async def watch() -> None:
            nonlocal went_offline
            await mic.wait_online(False)
            went_offline = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            assert isinstance(await mic.self_test(), SelfTestResult)
            nursery.cancel_scope.cancel()
        assert not went_offline


async def test_late_reply_is_dropped_but_proves_life(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def slow(request: Request) -> Reply | None:
        if isinstance(request.command, GetSettings):
            await trio.sleep(1.5)
        return await polite(request)

    async with attached(scripted(slow), request_timeout=1.0) as mic:
        with pytest.raises(MicTimeout):
            await mic.settings()
        assert not mic.online
        await trio.sleep(1)
        assert mic.stats.unexpected == 1
        assert mic.online


async def test_unplugged_module_fails_waiters_and_is_not_fatal() -> None:
    hang_up = trio.Event()

    async def hanging(request: Request) -> Reply | None:
        if isinstance(request.command, GetSettings):
            hang_up.set()
            return None
        return await polite(request)

    host_end, device_end = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scripted(hanging), device_end)
            async with open_mic_stream(host_end, heartbeat=None) as mic:
                await mic.start_levels(100)

                async def unplug() -> None:
                    await hang_up.wait()
                    await device_end.aclose()

                nursery.start_soon(unplug)
                with pytest.raises(MicDisconnected):
                    await mic.settings()
                assert mic.disconnected and not mic.online
                await mic.wait_disconnected()
                with pytest.raises(MicDisconnected):
                    await mic.ping()
                with pytest.raises(MicDisconnected):
                    await mic.next_level()
                with pytest.raises(MicDisconnected):
                    async for _ in mic.levels():
                        pass
                with pytest.raises(MicDisconnected):
                    await mic.wait_online(True)
            nursery.cancel_scope.cancel()
    with pytest.raises(MicClosed):
        await mic.ping()


async def test_device_errors_become_mic_rejected() -> None:
    async def busy(request: Request) -> Reply:
        if isinstance(request.command, SelfTest):
            return DeviceError(ErrorCode.BUSY, "self-test running")
        return await polite(request)

    with trio.fail_after(5):
        async with attached(scripted(busy)) as mic:
            with pytest.raises(MicRejected) as caught:
                await mic.self_test()
            assert caught.value.code == ErrorCode.BUSY
            assert "self-test running" in str(caught.value)
            assert mic.online


async def test_wrong_reply_is_a_protocol_error_and_the_link_goes_on() -> None:
    conn = DeviceConnection()

    async def device(stream: trio.abc.Stream) -> None:
        while data := await stream.receive_some(4096):
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, Request)
                if isinstance(event.command, GetSettings):
                    await stream.send_all(encode_frame(0x81, event.seq, b""))  # a PING reply
                else:
                    await stream.send_all(conn.reply(event.seq, await polite(event)))

    with trio.fail_after(5):
        async with attached(device) as mic:
            with pytest.raises(MicProtocolError, match="reply type 0x81"):
                await mic.settings()
            assert (await mic.info()).serial == "SCRIPT-1"
            assert mic.stats.rejected == 1


async def test_out_of_range_settings_are_refused_before_sending() -> None:
    sent: list[Request] = []
    with trio.fail_after(5):
        async with attached(scripted(polite, sent=sent), probe=False) as mic:
            for bad in (
                mic.set(gain_db=61),
                mic.set(gain_db=10.25),
                mic.identify(61),
                mic.start_levels(5),
            ):
                with pytest.raises(InvalidSetting):
                    await bad
            await mic.ping()
    assert [type(r.command) for r in sent] == [Ping]


# --------------------------------------------------------------------------- levels


def _report(counter: int) -> LevelReport:
    return LevelReport(counter, False, (ChannelLevel(-10.0, -20.0),))


async def test_slow_level_consumer_loses_the_oldest_reports() -> None:
    conn = DeviceConnection()
    flooded = trio.Event()

    async def flooding(stream: trio.abc.Stream) -> None:
        while data := await stream.receive_some(4096):
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, Request)
                await stream.send_all(conn.reply(event.seq, await polite(event)))
                if isinstance(event.command, StartLevels):
                    await stream.send_all(
                        b"".join(conn.send_levels(_report(i)) for i in range(100))
                    )
                    flooded.set()

    with trio.fail_after(5):
        async with attached(flooding) as mic:
            # Reports before START_LEVELS are not wanted: dropped and counted.
            await mic.start_levels(10)
            await flooded.wait()
            await mic.ping()  # the flood has been read by now
            first = await mic.next_level()
            assert first.counter == 36
            assert mic.levels_dropped == 36


async def test_closing_stops_a_running_level_stream() -> None:
    stopped = trio.Event()

    async def watching(request: Request) -> Reply:
        if isinstance(request.command, StopLevels):
            stopped.set()
        return await polite(request)

    host_end, device_end = trio.testing.memory_stream_pair()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(scripted(watching), device_end)
            async with open_mic_stream(host_end, heartbeat=None) as mic:
                await mic.start_levels(100)
            await stopped.wait()
            nursery.cancel_scope.cancel()


async def test_unrequested_level_reports_are_dropped() -> None:
    conn = DeviceConnection()

    async def chatty(stream: trio.abc.Stream) -> None:
        await stream.send_all(conn.send_levels(_report(1)) * 3)
        while data := await stream.receive_some(4096):
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                assert isinstance(event, Request)
                await stream.send_all(conn.reply(event.seq, await polite(event)))

    with trio.fail_after(5):
        async with attached(chatty) as mic:
            await mic.ping()
            assert mic.levels_dropped == 3


async def test_level_iteration_ends_when_the_module_is_closed() -> None:
    got: list[LevelReport] = []
    two = trio.Event()
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery, attached(simulated()) as mic:
            await mic.start_levels(10)

            async def consume() -> None:
                async for report in mic.levels():
                    got.append(report)
                    if len(got) == 2:
                        two.set()

            nursery.start_soon(consume)
            await two.wait()
    assert len(got) >= 2


# --------------------------------------------------------------------------- fuzzing


async def test_driver_survives_a_fuzzed_device(autojump_clock: trio.testing.MockClock) -> None:
    """Replies mangled like a noisy line: every request ends in a result or a MicError."""
    rng = random.Random(7)
    module = SimulatedModule(serial="FUZZ-1", seed=2)
    conn = DeviceConnection()

    async def noisy(stream: trio.abc.Stream) -> None:
        while data := await stream.receive_some(4096):
            conn.receive_data(data)
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, BadRequest):
                    continue
                command = event.command
                reply: Reply = (
                    module.self_test()
                    if isinstance(command, SelfTest)
                    else module.handle(command, 0.0)
                )
                frame = conn.reply(event.seq, reply)
                if rng.random() < 0.05:
                    frame = encode_frame(0x88, event.seq, b"")  # a truncated SELF_TEST reply
                report = conn.send_levels(module.levels(rng.randrange(99), 0.0))
                await stream.send_all(
                    mutate(rng, report) + mutate(rng, frame) + rng.randbytes(rng.randrange(40))
                )

    outcomes: dict[str, int] = {}
    with trio.fail_after(600):  # virtual seconds: only a real hang (CPU spin) could trip it
        async with attached(noisy, request_timeout=0.2, probe=False) as mic:
            calls: list[Callable[[], Awaitable[object]]] = [
                mic.ping,
                mic.info,
                mic.settings,
                mic.self_test,
                partial(mic.set, mute=True),
            ]
            for i in range(300):
                try:
                    await calls[i % len(calls)]()
                    outcome = "ok"
                except MicError as exc:
                    outcome = type(exc).__name__
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
            assert not mic.disconnected
    print("driver fuzz outcomes:", outcomes)
    assert outcomes["ok"] > 50
    assert set(outcomes) <= {"ok", "MicTimeout", "MicProtocolError", "MicRejected"}


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    "target", ["tcp://127.0.0.1", "tcp://:80", "udp://127.0.0.1:9", "tcp://h:1/x"]
)
async def test_bad_targets_are_refused(target: str) -> None:
    with pytest.raises(InvalidTarget):
        async with open_mic(target):
            pass


async def test_unreachable_targets_raise_connect_error(tmp_path: Any) -> None:
    with pytest.raises(MicConnectError):
        async with open_mic(str(tmp_path / "ttyACM9")):
            pass
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with trio.fail_after(5), pytest.raises(MicConnectError):
        async with open_mic(f"tcp://127.0.0.1:{port}"):
            pass


async def test_a_silent_serial_device_is_not_a_module() -> None:
    """Hot-plugged ports are probed: a tty that never answers fails open_mic quickly."""
    master, slave = os.openpty()
    try:
        with trio.fail_after(5), pytest.raises(MicTimeout):
            async with open_mic(os.ttyname(slave), request_timeout=0.2):
                pass
    finally:
        os.close(master)
        os.close(slave)


async def test_serial_module_in_process_over_a_real_pty() -> None:
    """serve_stream on the pty master, open_mic on the slave path: the real tty code path."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_stream, trio.lowlevel.FdStream(master), simulated_module())
            async with open_mic(path) as mic:
                assert (await mic.set(gain_db=3.0)).gain_db == 3.0
                assert mic.last_info is not None and mic.last_info.serial == "PTY-1"
            nursery.cancel_scope.cancel()
    os.close(slave)


def simulated_module() -> SimulatedModule:
    return SimulatedModule(serial="PTY-1", seed=3)
