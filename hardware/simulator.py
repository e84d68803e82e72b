"""``talas-mic-sim``: a simulated Talas microphone module for tests and demos.

It is the device side of specs/mic-module.md, faithful enough that the driver
cannot tell it from hardware: settings persist for the life of the process
(across TCP clients and serial reopenings), level meters follow a moving
source through the gain, pattern, low-cut, phantom and mute settings, the
self-test takes a while and fails the parts given with ``--fail``.

Transports::

    talas-mic-sim --pty [--link PATH]      # prints the pseudo-terminal's path
    talas-mic-sim --tcp HOST:PORT [--mdns-interface ADDR ...] [--name NAME]
                                           # prints tcp://HOST:PORT (port 0: the bound one)

The first line on stdout is always the target to give ``open_mic``.  The
simulator keeps its own descriptor on the pty's slave end open, so a host may
close and reopen the port (as after a replug) without the master seeing EIO.
mDNS runs only on the interfaces given with ``--mdns-interface``.  SIGINT and
SIGTERM stop it cleanly (withdrawing the mDNS advertisement).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import random
import signal
import socket
import sys
import termios
import tty
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

import trio

from hardware.connection import NEED_DATA, BadRequest, DeviceConnection
from hardware.errors import InvalidSetting
from hardware.messages import (
    FLOOR_DBFS,
    MAX_ERROR_MESSAGE_BYTES,
    Ack,
    ChangeSettings,
    ChannelLevel,
    Command,
    DeviceError,
    ErrorCode,
    GetInfo,
    GetSettings,
    Identify,
    LevelReport,
    LevelsStarted,
    LowCut,
    ModuleInfo,
    Part,
    PartCheck,
    PartStatus,
    Pattern,
    Ping,
    Reply,
    SelfTest,
    SelfTestResult,
    Settings,
    Slot,
    StartLevels,
    StopLevels,
)

SERVICE_TYPE = "_talas-mic._tcp.local."
MODEL = "Talas TM-2"
FIRMWARE = "1.4.2"
CHANNELS = 2
"""Dual-diaphragm capsule: channel 1 is the front diaphragm, channel 2 the rear one."""
SELF_TEST_SECONDS = 0.3
DEFAULT_SETTINGS = Settings(
    gain_db=24.0, pattern=Pattern.CARDIOID, phantom=True, low_cut=LowCut.OFF, mute=False
)

# Rear-diaphragm level relative to the front one for a source on axis, per pattern.
_REAR_DB = {
    Pattern.CARDIOID: -18.0,
    Pattern.SUPERCARDIOID: -10.0,
    Pattern.OMNI: 0.0,
    Pattern.FIGURE8: 0.0,
}
# Room sound picked up on top of the direct sound, per pattern (omni hears most room).
_ROOM_DB = {
    Pattern.CARDIOID: 0.0,
    Pattern.SUPERCARDIOID: -0.8,
    Pattern.OMNI: 2.5,
    Pattern.FIGURE8: 0.5,
}
_LOWCUT_DB = {LowCut.OFF: 0.0, LowCut.HZ_80: -0.6, LowCut.HZ_160: -1.8}
_SOURCE_DBFS = -62.0
"""A singer a foot away, as the capsule delivers it before any gain."""
_SELF_NOISE_DBFS = -126.0
"""Preamp noise before gain (its equivalent input noise, in the module's full scale)."""

_FAULTS = {
    Slot.CAPSULE: (0x0101, "capsule polarisation voltage out of range"),
    Slot.PREAMP: (0x0201, "preamp gain stage not responding"),
    Slot.BODY: (0x0301, "body connector contact resistance high"),
    Slot.FIRMWARE: (0x0401, "firmware image checksum mismatch"),
}


def _power_sum(*levels_db: float) -> float:
    total = sum(10 ** (level / 10) for level in levels_db if level > -math.inf)
    return 10 * math.log10(total) if total > 0 else -math.inf


@dataclass
class SimulatedModule:
    """The module's state and behaviour, shared by every connection to it."""

    serial: str
    model: str = MODEL
    firmware: str = FIRMWARE
    failed: frozenset[Slot] = frozenset()
    capsule_serial: str | None = None
    """A replacement capsule's serial (simulates a repair); default derives from ``serial``."""
    settings: Settings = DEFAULT_SETTINGS
    seed: int | None = None
    identify_until: float = 0.0
    self_test_running: bool = False
    log: Callable[[str], None] = field(default=lambda _: None)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)  # noqa: S311 (meter noise, not security)
        self.info()  # validates serial, model and firmware against the protocol's bounds

    def info(self) -> ModuleInfo:
        parts = (
            Part(Slot.CAPSULE, "TC-2D dual 1in", self.capsule_serial or f"C-{self.serial}", "B"),
            Part(Slot.PREAMP, "TP-60 class A", f"P-{self.serial}", "3"),
            Part(Slot.BODY, "TB-1 brass", f"B-{self.serial}", "A"),
            Part(Slot.FIRMWARE, "talas-mic-fw", f"F-{self.serial}", self.firmware),
        )
        return ModuleInfo(self.serial, self.model, self.firmware, CHANNELS, parts)

    def handle(self, command: Command, now: float) -> Reply:
        """Carry out an immediate command (not SELF_TEST, not the level stream)."""
        match command:
            case Ping():
                return Ack()
            case Identify(seconds=seconds):
                self.identify_until = now + seconds
                self.log(f"identify: LED blinking for {seconds} s" if seconds else "identify off")
                return Ack()
            case GetInfo():
                return self.info()
            case GetSettings():
                return self.settings
            case ChangeSettings():
                return self._change(command)
        return DeviceError(ErrorCode.UNKNOWN_COMMAND, f"{type(command).__name__} not immediate")

    def _change(self, change: ChangeSettings) -> Reply:
        if self.self_test_running:
            return DeviceError(ErrorCode.BUSY, "self-test running")
        if change.gain_db is not None and Slot.PREAMP in self.failed:
            return DeviceError(ErrorCode.HARDWARE_FAULT, _FAULTS[Slot.PREAMP][1])
        if change.pattern is not None and Slot.CAPSULE in self.failed:
            return DeviceError(ErrorCode.HARDWARE_FAULT, _FAULTS[Slot.CAPSULE][1])
        new = change.apply_to(self.settings)
        if new != self.settings:
            self.log(f"settings: {new.as_dict()}")
        self.settings = new
        return new

    def self_test(self) -> SelfTestResult:
        checks = []
        for part in self.info().parts:
            if part.slot in self.failed:
                code, detail = _FAULTS[part.slot]
                checks.append(PartCheck(part.slot, PartStatus.FAIL, code, detail))
            else:
                checks.append(PartCheck(part.slot, PartStatus.PASS))
        return SelfTestResult(tuple(checks))

    def levels(self, counter: int, now: float) -> LevelReport:
        """Meters at time ``now``: a source that breathes and phrases, through the settings."""
        s = self.settings
        if s.mute:
            floor = ChannelLevel(FLOOR_DBFS, FLOOR_DBFS)
            return LevelReport(counter & 0xFFFF, True, (floor,) * CHANNELS)
        rng = self._rng
        phrase = 7 * math.sin(2 * math.pi * now / 3.1) + 3 * math.sin(2 * math.pi * now / 0.7)
        source = _SOURCE_DBFS + phrase + rng.gauss(0, 1.2)
        powered = s.phantom and Slot.CAPSULE not in self.failed
        amplified = Slot.PREAMP not in self.failed
        channels = []
        for rear in (False, True):
            signal_db = -math.inf
            if powered and amplified:
                signal_db = source + s.gain_db + _ROOM_DB[s.pattern] + _LOWCUT_DB[s.low_cut]
                signal_db += (_REAR_DB[s.pattern] if rear else 0.0) + rng.gauss(0, 0.4)
            noise_db = _SELF_NOISE_DBFS + s.gain_db + rng.gauss(0, 0.3)
            rms = min(0.0, max(FLOOR_DBFS, _power_sum(signal_db, noise_db)))
            crest = rng.uniform(9.0, 14.0) if signal_db > noise_db else rng.uniform(3.0, 4.5)
            peak = min(0.0, rms + crest)
            channels.append(ChannelLevel(round(peak, 2), round(rms, 2)))
        return LevelReport(counter & 0xFFFF, False, tuple(channels))


def _error_text(reason: str) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in reason)
    return text.encode()[:MAX_ERROR_MESSAGE_BYTES].decode(errors="ignore")


async def serve_stream(stream: trio.abc.Stream, module: SimulatedModule) -> None:
    """Speak the device side of the protocol on ``stream`` until it ends or breaks."""
    conn = DeviceConnection()
    send_lock = trio.Lock()

    async def send(data: bytes) -> None:
        async with send_lock:
            await stream.send_all(data)

    async def stream_levels(scope: trio.CancelScope, interval_ms: int) -> None:
        counter = 0
        deadline = trio.current_time()
        with scope, suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                deadline += interval_ms / 1000
                await trio.sleep_until(deadline)
                report = module.levels(counter, trio.current_time())
                counter = (counter + 1) & 0xFFFF
                await send(conn.send_levels(report))

    async def run_self_test(seq: int) -> None:
        if module.self_test_running:
            await send(conn.reply(seq, DeviceError(ErrorCode.BUSY, "self-test running")))
            return
        module.self_test_running = True
        try:
            module.log("self-test running")
            await trio.sleep(SELF_TEST_SECONDS)
            result = module.self_test()
        finally:
            module.self_test_running = False
        module.log(f"self-test {'passed' if result.passed else 'FAILED'}")
        await send(conn.reply(seq, result))

    levels_scope: trio.CancelScope | None = None
    async with trio.open_nursery() as nursery:
        try:
            while data := await stream.receive_some(4096):
                conn.receive_data(data)
                while (event := conn.next_event()) is not NEED_DATA:
                    if isinstance(event, BadRequest):
                        error = DeviceError(event.code, _error_text(event.reason))
                        await send(conn.reply(event.seq, error))
                        continue
                    command, seq = event.command, event.seq
                    if isinstance(command, SelfTest):
                        await run_self_test(seq)
                    elif isinstance(command, StartLevels | StopLevels):
                        if levels_scope is not None:
                            levels_scope.cancel()
                            levels_scope = None
                        if isinstance(command, StopLevels):
                            await send(conn.reply(seq, Ack()))
                            continue
                        # The reply goes out before the first report, as the spec requires.
                        await send(conn.reply(seq, LevelsStarted(command.interval_ms)))
                        levels_scope = trio.CancelScope()
                        nursery.start_soon(stream_levels, levels_scope, command.interval_ms)
                    else:
                        await send(conn.reply(seq, module.handle(command, trio.current_time())))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the host went away: nothing to answer
        finally:
            nursery.cancel_scope.cancel()


def _parse_tcp(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"want HOST:PORT, not {value!r}")
    number = int(port)
    if number > 65535:
        raise argparse.ArgumentTypeError(f"port {number} out of range")
    return host.strip("[]"), number


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="talas-mic-sim", description="A simulated Talas microphone module."
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--pty", action="store_true", help="serve on a new pseudo-terminal")
    where.add_argument("--tcp", type=_parse_tcp, metavar="HOST:PORT", help="serve TCP clients")
    parser.add_argument("--link", metavar="PATH", help="with --pty: symlink PATH to the pty")
    parser.add_argument(
        "--mdns-interface",
        action="append",
        default=[],
        metavar="ADDR",
        help="with --tcp: advertise _talas-mic._tcp on this IPv4 interface (repeatable)",
    )
    parser.add_argument("--name", help="mDNS instance name (default: 'Talas mic SERIAL')")
    parser.add_argument("--serial", default="TM2-000001", help="module serial number")
    parser.add_argument(
        "--fail",
        action="append",
        default=[],
        choices=[slot.value for slot in Slot],
        help="simulate a failed part (repeatable)",
    )
    parser.add_argument("--firmware", default=FIRMWARE, help="firmware version to report")
    parser.add_argument(
        "--capsule-serial", help="serial of a replacement capsule (simulates a repair)"
    )
    parser.add_argument("--seed", type=int, help="seed for the meters' randomness")
    parser.add_argument("--quiet", action="store_true", help="no activity log on stderr")
    args = parser.parse_args(argv)
    if args.link and not args.pty:
        parser.error("--link needs --pty")
    if args.mdns_interface and not args.tcp:
        parser.error("--mdns-interface needs --tcp")
    for address in args.mdns_interface:
        try:
            ipaddress.IPv4Address(address)
        except ValueError:
            parser.error(f"--mdns-interface wants an IPv4 address, not {address!r}")
    args.name = args.name or f"Talas mic {args.serial}"
    if not 0 < len(args.name.encode()) <= 63 or "." in args.name:
        parser.error("--name must be 1..63 bytes without dots (a DNS-SD instance label)")
    try:
        args.module = SimulatedModule(
            serial=args.serial,
            firmware=args.firmware,
            capsule_serial=args.capsule_serial,
            failed=frozenset(Slot(value) for value in args.fail),
            seed=args.seed,
            log=(lambda _: None) if args.quiet else _log,
        )
    except InvalidSetting as exc:
        parser.error(str(exc))
    return args


def _log(line: str) -> None:
    print(f"talas-mic-sim: {line}", file=sys.stderr, flush=True)


def _announce(target: str) -> None:
    print(target, flush=True)


async def _serve_pty(args: argparse.Namespace) -> None:
    master, slave = os.openpty()
    stream = trio.lowlevel.FdStream(master)  # owns master from here on
    linked = False
    try:
        for fd in (master, slave):
            tty.setraw(fd, termios.TCSANOW)
        path = os.ttyname(slave)
        if args.link:
            os.symlink(path, args.link)
            linked = True
        _announce(path)
        # Our slave descriptor stays open: the host may close and reopen the port.
        await serve_stream(stream, args.module)
    finally:
        stream.close()  # not aclose(): its checkpoint would raise Cancelled right here
        os.close(slave)
        if linked:
            with suppress(OSError):
                os.unlink(args.link)


def _mdns_register(
    interfaces: list[str], name: str, addresses: list[str], port: int, module: SimulatedModule
) -> Callable[[], None]:
    """Register the service (blocking ~1.6 s of probing); returns the blocking withdraw."""
    from zeroconf import IPVersion, ServiceInfo, Zeroconf

    zc = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
    host_label = "".join(ch if ch.isalnum() else "-" for ch in module.serial).lower()
    info = ServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton(address) for address in addresses],
        port=port,
        properties={
            "serial": module.serial,
            "model": module.model,
            "firmware": module.firmware,
            "proto": "1",
        },
        server=f"talas-mic-{host_label}.local.",
    )
    try:
        zc.register_service(info)
    except BaseException:
        zc.close()
        raise

    def withdraw() -> None:
        try:
            zc.unregister_service(info)
        finally:
            zc.close()

    return withdraw


async def _serve_tcp(args: argparse.Namespace) -> None:
    host, port = args.tcp
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound_host, bound_port = listeners[0].socket.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    _announce(f"tcp://{shown}:{bound_port}")
    module: SimulatedModule = args.module

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            await serve_stream(stream, module)

    withdraw: Callable[[], None] | None = None
    try:
        if args.mdns_interface:
            unspecified = ipaddress.ip_address(bound_host).is_unspecified
            addresses = args.mdns_interface if unspecified else [bound_host]
            withdraw = await trio.to_thread.run_sync(
                _mdns_register, args.mdns_interface, args.name, addresses, bound_port, module
            )
            module.log(f"advertised {args.name!r} as {SERVICE_TYPE}")
        await trio.serve_listeners(handle, listeners)
    finally:
        if withdraw is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(3):
                await trio.to_thread.run_sync(withdraw, abandon_on_cancel=True)


async def _run(args: argparse.Namespace) -> None:
    serve: Callable[[argparse.Namespace], Awaitable[None]] = _serve_pty if args.pty else _serve_tcp
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def serve_then_stop() -> None:
                await serve(args)
                nursery.cancel_scope.cancel()

            nursery.start_soon(serve_then_stop)
            async for signum in signals:
                args.module.log(f"{signal.Signals(signum).name}: stopping")
                nursery.cancel_scope.cancel()
                break


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``talas-mic-sim``."""
    args = _parse_args(argv)
    try:
        trio.run(_run, args)
    except BaseExceptionGroup as group:
        failures, others = group.split(OSError)
        if failures is None or others is not None:
            raise
        for exc in failures.exceptions:
            print(f"talas-mic-sim: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
