"""trio transport for Talas microphone modules: serial (USB CDC) or TCP.

Theory of operation
-------------------
:func:`open_mic` opens the link and yields a :class:`MicModule`; the module
owns one reader task that feeds a sans-IO :class:`HostConnection` and routes
its events: replies wake the request waiting on that sequence number, level
reports go to a small latest-wins buffer, protocol violations fail the
request they name.  Senders take a lock, so frames never interleave; requests
themselves are pipelined (each waits on its own sequence number).

Failure is state, not a crash.  When the link ends (end of file, unplugged
USB device, reset TCP connection) the reader marks the module *disconnected*
and every waiting request fails with :class:`MicDisconnected`; the context
manager still exits cleanly.  A request that gets no answer in time raises
:class:`MicTimeout` and marks the module *offline*; any later frame from the
module marks it online again.  An optional heartbeat pings an idle module so
a silent one is noticed without anyone asking it anything.

Serial ports are opened with pyserial (exclusive, 115200 baud), switched to
raw mode with VMIN=1/VTIME=0 (pyserial leaves VMIN=0, which makes an idle read
return b"" and trio take it for end of file) and read through
``trio.lowlevel.FdStream`` on a duplicate of the descriptor.  pyserial itself
is never used to read or write once the stream exists.
"""

from __future__ import annotations

import logging
import os
import termios
import tty
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar
from urllib.parse import urlsplit

import serial
import trio

from hardware.connection import (
    NEED_DATA,
    HostConnection,
    ProtocolViolation,
    Response,
)
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
from hardware.framing import LinkStats
from hardware.messages import (
    Ack,
    ChangeSettings,
    Command,
    DeviceError,
    GetInfo,
    GetSettings,
    Identify,
    LevelReport,
    LevelsStarted,
    LowCut,
    ModuleInfo,
    Pattern,
    Ping,
    Reply,
    SelfTest,
    SelfTestResult,
    Settings,
    StartLevels,
    StopLevels,
)

log = logging.getLogger(__name__)

BAUDRATE = 115200
DEFAULT_TIMEOUT = 1.0
SELF_TEST_TIMEOUT = 5.0
"""Self-tests measure the hardware; the spec gives a device up to 3 s to answer one."""
DEFAULT_HEARTBEAT = 2.0
LEVEL_BUFFER = 64
"""Level reports kept for a slow consumer; older ones are dropped first (meters want fresh)."""
RECEIVE_SIZE = 4096
STOP_GRACE = 0.2
"""Seconds a closing module may spend telling the device to stop its level stream."""
TCP_PREFIX = "tcp://"

_R = TypeVar("_R")


class InvalidTarget(InvalidSetting):
    """A target that is neither a device path nor ``tcp://HOST:PORT``."""


class _Waiter:
    """One outstanding request: set once, by the reader, with a reply or an error."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: Reply | MicError | None = None

    def finish(self, result: Reply | MicError) -> None:
        if not self.done.is_set():
            self.result = result
            self.done.set()


class LevelStream:
    """``async for report in module.levels()``: ends when the module is closed.

    Raises :class:`MicDisconnected` when the link breaks instead of ending, so a
    consumer can tell an unplugged module from a finished session.
    """

    def __init__(self, module: MicModule) -> None:
        self._module = module

    def __aiter__(self) -> LevelStream:
        return self

    async def __anext__(self) -> LevelReport:
        try:
            return await self._module.next_level()
        except MicClosed:
            raise StopAsyncIteration from None


class MicModule:
    """One attached microphone module; create with :func:`open_mic` or :func:`open_mic_stream`.

    Every method raises a :class:`~hardware.errors.MicError` subclass:
    :class:`InvalidSetting` before sending anything out of range,
    :class:`MicTimeout`, :class:`MicDisconnected`, :class:`MicClosed`,
    :class:`MicRejected` (ERROR reply) or :class:`MicProtocolError`.
    """

    def __init__(
        self, stream: trio.abc.Stream, *, target: str, request_timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.target = target
        self.request_timeout = request_timeout
        self.last_info: ModuleInfo | None = None
        """The last GET_INFO reply (set by :func:`open_mic` when it probes)."""
        self.levels_dropped = 0
        """Level reports dropped: buffer overflow, or received while not streaming."""
        self._stream = stream
        self._conn = HostConnection()
        self._send_lock = trio.Lock()
        self._waiters: dict[int, _Waiter] = {}
        self._online = True
        self._closed = False
        self._disconnect_reason: str | None = None
        self._last_seen = trio.current_time()
        self._state_changed = trio.lowlevel.ParkingLot()
        self._levels: deque[LevelReport] = deque(maxlen=LEVEL_BUFFER)
        self._levels_wanted = False
        self._levels_ready = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        state = "online" if self.online else "offline"
        return f"<MicModule {self.target} {state}>"

    # ------------------------------------------------------------------ state

    @property
    def online(self) -> bool:
        """Connected, and answered its last request (or sent a frame since)."""
        return self._online and not self.disconnected

    @property
    def disconnected(self) -> bool:
        """The link broke (unplugged, end of file); this object will not recover."""
        return self._disconnect_reason is not None

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def last_seen(self) -> float:
        """``trio.current_time()`` of the last intact frame from the module."""
        return self._last_seen

    @property
    def stats(self) -> LinkStats:
        """Framing counters: discarded bytes, CRC failures, rejected frames..."""
        return self._conn.stats

    async def wait_disconnected(self) -> None:
        """Return once the link has broken (or the module was closed)."""
        while not (self.disconnected or self._closed):
            await self._state_changed.park()

    async def wait_online(self, online: bool = True) -> None:
        """Return once ``self.online == online``.

        Waiting for online on a disconnected (or closed) module raises, since it
        can never come back on this link.
        """
        while self.online != online:
            self._check_usable()
            await self._state_changed.park()

    def _set_online(self, online: bool) -> None:
        if online != self._online:
            self._online = online
            log.info("%s is %s", self.target, "online" if online else "offline")
            self._state_changed.unpark_all()

    def _seen(self) -> None:
        self._last_seen = trio.current_time()
        self._set_online(True)

    def _mark_disconnected(self, reason: str) -> None:
        if self._disconnect_reason is not None or self._closed:
            return
        self._disconnect_reason = reason
        log.info("%s disconnected: %s", self.target, reason)
        for waiter in self._waiters.values():
            waiter.finish(MicDisconnected(f"{self.target}: {reason}"))
        self._waiters.clear()
        self._state_changed.unpark_all()
        self._levels_ready.unpark_all()

    def _mark_closed(self) -> None:
        if self._closed:
            return
        self._closed = True
        for waiter in self._waiters.values():
            waiter.finish(MicClosed(f"{self.target} was closed"))
        self._waiters.clear()
        self._state_changed.unpark_all()
        self._levels_ready.unpark_all()

    def _check_usable(self) -> None:
        if self._closed:
            raise MicClosed(f"{self.target} was closed")
        if self._disconnect_reason is not None:
            raise MicDisconnected(f"{self.target}: {self._disconnect_reason}")

    # ------------------------------------------------------------------ commands

    async def ping(self) -> float:
        """Round-trip time in seconds."""
        start = trio.current_time()
        await self._request(Ping(), Ack)
        return trio.current_time() - start

    async def identify(self, seconds: int = 5) -> None:
        """Blink the module's LED for ``seconds`` (0..60; 0 stops), to find it on a stage."""
        await self._request(Identify(seconds), Ack)

    async def info(self) -> ModuleInfo:
        """Serial, model, firmware version, meter channels and parts inventory."""
        info = await self._request(GetInfo(), ModuleInfo)
        self.last_info = info
        return info

    async def settings(self) -> Settings:
        return await self._request(GetSettings(), Settings)

    async def set(
        self,
        *,
        gain_db: float | None = None,
        pattern: Pattern | None = None,
        phantom: bool | None = None,
        low_cut: LowCut | None = None,
        mute: bool | None = None,
    ) -> Settings:
        """Change the given settings at once (all or nothing); returns the new settings."""
        change = ChangeSettings(gain_db, pattern, phantom, low_cut, mute)
        return await self._request(change, Settings)

    async def self_test(self) -> SelfTestResult:
        """Test every part; a failed part is a result (``.passed`` False), not an exception."""
        limit = max(self.request_timeout, SELF_TEST_TIMEOUT)
        return await self._request(SelfTest(), SelfTestResult, limit)

    async def start_levels(self, interval_ms: int = 100) -> int:
        """Start level reports every ``interval_ms`` (10..1000); returns the interval granted."""
        command = StartLevels(interval_ms)
        self._levels_wanted = True
        started = await self._request(command, LevelsStarted)
        return started.interval_ms

    async def stop_levels(self) -> None:
        self._levels_wanted = False
        self._levels.clear()
        await self._request(StopLevels(), Ack)

    def levels(self) -> LevelStream:
        """Async iterator of level reports (one consumer at a time)."""
        return LevelStream(self)

    async def next_level(self) -> LevelReport:
        """The oldest buffered level report, waiting for one if need be."""
        while not self._levels:
            self._check_usable()
            await self._levels_ready.park()
        return self._levels.popleft()

    async def _request(
        self, command: Command, expected: type[_R], seconds: float | None = None
    ) -> _R:
        self._check_usable()
        limit = self.request_timeout if seconds is None else seconds
        waiter = _Waiter()
        seq: int | None = None
        with trio.move_on_after(limit) as scope:
            try:
                async with self._send_lock:
                    self._check_usable()
                    seq, data = self._conn.send(command)
                    self._waiters[seq] = waiter
                    await self._send(data)
                await waiter.done.wait()
            finally:
                if seq is not None and not waiter.done.is_set():
                    self._waiters.pop(seq, None)
                    self._conn.forget(seq)
        if scope.cancelled_caught and not waiter.done.is_set():
            self._set_online(False)
            name = type(command).__name__
            raise MicTimeout(f"{self.target}: no answer to {name} within {limit} s")
        result = waiter.result
        if isinstance(result, MicError):
            raise result
        if isinstance(result, DeviceError):
            raise MicRejected(result.code, result.message)
        if not isinstance(result, expected):  # the connection checks reply types already
            raise MicProtocolError(f"{self.target}: unexpected reply {result!r}")
        return result

    async def _send(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except trio.ClosedResourceError as exc:
            raise MicClosed(f"{self.target} was closed") from exc
        except (trio.BrokenResourceError, OSError) as exc:
            self._mark_disconnected(f"write failed: {exc!r}")
            raise MicDisconnected(f"{self.target}: write failed") from exc

    async def _stop_levels_quietly(self) -> None:
        """On close: a serial module would stream on into the void (spec §2.1), so stop it.

        Best effort, without waiting for the reply: the link may be half gone.
        """
        if not self._levels_wanted or self.disconnected or self._closed:
            return
        self._levels_wanted = False
        with suppress(MicError):
            async with self._send_lock:
                seq, data = self._conn.send(StopLevels())
                self._conn.forget(seq)
                await self._send(data)

    # ------------------------------------------------------------------ tasks

    async def _read_loop(self) -> None:
        """The one reader: bytes → HostConnection → waiters and level buffer."""
        try:
            while True:
                data = await self._stream.receive_some(RECEIVE_SIZE)
                if not data:
                    self._mark_disconnected("end of file")
                    return
                frames = self.stats.frames
                self._conn.receive_data(data)
                if self.stats.frames != frames:
                    self._seen()  # any intact frame proves the module alive, even a late reply
                self._dispatch()
        except trio.ClosedResourceError:
            self._mark_closed()
        except (trio.BrokenResourceError, OSError) as exc:
            self._mark_disconnected(f"read failed: {exc!r}")

    def _dispatch(self) -> None:
        while (event := self._conn.next_event()) is not NEED_DATA:
            if isinstance(event, Response):
                waiter = self._waiters.pop(event.seq, None)
                if waiter is not None:
                    waiter.finish(event.message)
            elif isinstance(event, ProtocolViolation):
                log.debug("%s: %s", self.target, event.reason)
                if event.seq is not None and (waiter := self._waiters.pop(event.seq, None)):
                    waiter.finish(MicProtocolError(f"{self.target}: {event.reason}"))
            elif self._levels_wanted:
                if len(self._levels) == LEVEL_BUFFER:
                    self.levels_dropped += 1
                self._levels.append(event)
                self._levels_ready.unpark_all()
            else:
                self.levels_dropped += 1

    async def _heartbeat(self, interval: float) -> None:
        """Ping when nothing was heard for ``interval`` s: marks a silent module offline."""
        while True:
            idle_until = self._last_seen + interval
            if trio.current_time() < idle_until:
                await trio.sleep_until(idle_until)
                continue
            if self._waiters:
                # A request is out (a self-test may take seconds): its own timeout decides,
                # and a ping queued behind it would time out and mark the module offline.
                await trio.sleep(interval)
                continue
            try:
                await self.ping()
            except (MicDisconnected, MicClosed):
                return
            except MicError:
                await trio.sleep(interval)  # offline (or confused): try again later


def _unwrap(group: BaseExceptionGroup[Any]) -> BaseException:
    """The one real exception of a nursery group, else the group itself.

    Our tasks never raise on their own; when the caller's scope is cancelled
    while the body fails (a module unplugged during shutdown), the group holds
    the body's error beside the tasks' ``Cancelled``.  The error is what the
    caller must see; the cancellation is re-delivered at its next checkpoint.
    """
    _, rest = group.split(trio.Cancelled)
    exc: BaseException = group if rest is None else rest
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


@asynccontextmanager
async def open_mic_stream(
    stream: trio.abc.Stream,
    *,
    target: str = "stream",
    request_timeout: float = DEFAULT_TIMEOUT,
    heartbeat: float | None = DEFAULT_HEARTBEAT,
    probe: bool = True,
) -> AsyncIterator[MicModule]:
    """A :class:`MicModule` over any trio stream (the transport seam; tests use memory streams).

    ``probe`` asks for GET_INFO first, so ``last_info`` is set and a device that
    is not a Talas module fails here (:class:`MicTimeout`, :class:`MicProtocolError`).
    The stream is closed on exit.
    """
    module = MicModule(stream, target=target, request_timeout=request_timeout)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(module._read_loop)
            if heartbeat is not None:
                nursery.start_soon(module._heartbeat, heartbeat)
            try:
                if probe:
                    await module.info()
                yield module
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(STOP_GRACE):
                    await module._stop_levels_quietly()
                module._mark_closed()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _unwrap(group) from None
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


def _open_serial(path: str, baudrate: int) -> tuple[serial.Serial, int]:
    """Open ``path`` exclusively, raw, VMIN=1/VTIME=0; return the port and a dup of its fd."""
    port = serial.Serial(path, baudrate=baudrate, exclusive=True)
    try:
        fd = port.fileno()
        tty.setraw(fd, termios.TCSANOW)
        attrs = termios.tcgetattr(fd)
        attrs[6][termios.VMIN] = 1
        attrs[6][termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        return port, os.dup(fd)
    except BaseException:
        port.close()
        raise


@asynccontextmanager
async def _open_transport(target: str, baudrate: int) -> AsyncIterator[trio.abc.Stream]:
    if target.startswith(TCP_PREFIX):
        try:
            parts = urlsplit(target)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise InvalidTarget(f"bad target {target!r}: {exc}") from exc
        if not host or port is None or parts.path not in ("", "/"):
            raise InvalidTarget(f"bad target {target!r}: want tcp://HOST:PORT")
        try:
            stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise MicConnectError(f"cannot connect to {target}: {exc}") from exc
        yield stream
        return
    if "://" in target:
        raise InvalidTarget(f"bad target {target!r}: want a device path or tcp://HOST:PORT")
    try:
        port_, fd = await trio.to_thread.run_sync(_open_serial, target, baudrate)
    except (OSError, termios.error, serial.SerialException) as exc:
        raise MicConnectError(f"cannot open {target}: {exc}") from exc
    try:
        yield trio.lowlevel.FdStream(fd)
    finally:
        port_.close()


@asynccontextmanager
async def open_mic(
    target: str,
    *,
    request_timeout: float = DEFAULT_TIMEOUT,
    heartbeat: float | None = DEFAULT_HEARTBEAT,
    probe: bool = True,
    baudrate: int = BAUDRATE,
) -> AsyncIterator[MicModule]:
    """Attach the module at ``target``: a serial device path or ``tcp://HOST:PORT``.

    Raises :class:`MicConnectError` when the port or address cannot be opened.
    Inside the block, an unplugged or silent module is state (``online``,
    ``disconnected``), never an exception escaping from the block on its own.
    """
    async with (
        _open_transport(target, baudrate) as stream,
        open_mic_stream(
            stream,
            target=target,
            request_timeout=request_timeout,
            heartbeat=heartbeat,
            probe=probe,
        ) as module,
    ):
        yield module
