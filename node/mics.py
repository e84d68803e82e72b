"""Attached mic modules: one supervisor task each, reconnecting, never fatal.

Theory of operation.  ``MicManager.run`` owns a nursery; attaching a target
(a serial device path or ``tcp://HOST:PORT``) records it in the database and
starts a supervisor task for it.  The supervisor opens the module with the
driver, reads its identity, settings and inventory, brings its passport up
to date (a ``hardware`` event the first time, ``repair`` events when a part
or the firmware changed since), starts level meters and keeps the latest
report.  When the module is unplugged, stops answering or misbehaves, the
supervisor marks it offline with the reason and tries again with backoff
(0.5 s doubling to 5 s): plugging it back in (the same path, or the same
address) brings it back online without anyone acting.  Nothing a module
does can end the node: every driver error is caught at the supervisor.

Commands from the API (set, identify, self-test) go to the live module and
fail with :class:`MicOffline` when there is none.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from hardware.driver import MicModule, open_mic
from hardware.errors import MicError, MicLocalError
from hardware.hotplug import PortAdded, PortEvent, watch_ports
from hardware.messages import LowCut, Pattern
from node import passport
from node.daemon import Node, now_ms
from node.errors import TalasError
from protocol.errors import ProtocolError
from protocol.event import Event

RETRY_FIRST = 0.5
RETRY_MAX = 5.0
LEVEL_INTERVAL_MS = 100
ATTACH_WAIT = 3.0
_TCP_TARGET = re.compile(r"tcp://[A-Za-z0-9.\-\[\]:]{1,255}:\d{1,5}\Z")


class MicOffline(TalasError):
    """The module is attached but not answering right now."""


class UnknownMic(TalasError, KeyError):
    """No module with that serial (or target) is attached."""


def check_target(target: str) -> str:
    """A serial device path or ``tcp://HOST:PORT``; ValueError otherwise."""
    if _TCP_TARGET.match(target):
        return target
    if target.startswith("/") and "\x00" not in target and len(target) <= 4096:
        return target
    raise ValueError("a mic target is a serial device path (/dev/ttyACM0) or tcp://HOST:PORT")


@dataclass
class AttachedMic:
    target: str
    attached_by: str
    attached_ms: int
    serial: str | None = None
    online: bool = False
    info: dict[str, Any] | None = None
    settings: dict[str, Any] | None = None
    levels: dict[str, Any] | None = None
    levels_ms: int | None = None
    self_test: dict[str, Any] | None = None
    last_error: str | None = None
    last_seen_ms: int | None = None
    connects: int = 0
    module: MicModule | None = field(default=None, repr=False)
    plugged: trio.Event = field(default_factory=trio.Event, repr=False)
    """Set when its serial port (re)appears: the supervisor retries at once."""
    changed: trio.Event = field(default_factory=trio.Event, repr=False)
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope, repr=False)

    def as_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "serial": self.serial,
            "online": self.online,
            "info": self.info,
            "settings": self.settings,
            "levels": self.levels,
            "self_test": self.self_test,
            "last_error": self.last_error,
            "last_seen": self.last_seen_ms,
            "attached_by": self.attached_by,
            "attached": self.attached_ms,
        }

    def notify(self) -> None:
        """Wake whoever waits for news of this module (level streams, attach)."""
        self.changed.set()
        self.changed = trio.Event()


class MicManager:
    """The node's attached modules; start :meth:`run` in the node's nursery."""

    def __init__(
        self,
        node: Node,
        *,
        retry_max: float = RETRY_MAX,
        port_directories: Sequence[str] = (),
        watch_serial: bool = True,
    ) -> None:
        self.node = node
        self.retry_max = retry_max
        self.mics: dict[str, AttachedMic] = {}
        self.ports: set[str] = set()
        """Serial ports present now (USB serial devices, and ``port_directories``)."""
        self._port_directories = port_directories
        self._watch_serial = watch_serial
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        rows = await trio.to_thread.run_sync(
            self.node.store.query,
            "SELECT target, attached_by, attached FROM mics ORDER BY attached",
        )
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for target, by, attached in rows:
                self._start(AttachedMic(str(target), str(by), int(str(attached))))
            if self._watch_serial:
                send, receive = trio.open_memory_channel[PortEvent](64)
                await nursery.start(partial(watch_ports, send, directories=self._port_directories))
                nursery.start_soon(self._follow_ports, receive)
            task_status.started()
            await trio.sleep_forever()

    async def _follow_ports(self, receive: trio.MemoryReceiveChannel[PortEvent]) -> None:
        """Hot plug: keep the port list; a returning port wakes its module's supervisor."""
        async with receive:
            async for event in receive:
                if isinstance(event, PortAdded):
                    self.ports.add(event.path)
                    mic = self.mics.get(event.path)
                    if mic is not None:
                        mic.plugged.set()
                else:
                    self.ports.discard(event.path)

    def _start(self, mic: AttachedMic) -> None:
        assert self._nursery is not None, "MicManager.run is not running"
        self.mics[mic.target] = mic
        self._nursery.start_soon(self._supervise, mic)

    # -- lookups --------------------------------------------------------------

    def find(self, key: str) -> AttachedMic:
        """A module by serial or by target."""
        if key in self.mics:
            return self.mics[key]
        for mic in self.mics.values():
            if mic.serial == key:
                return mic
        raise UnknownMic(f"no attached mic module {key!r}")

    def live(self, key: str) -> MicModule:
        mic = self.find(key)
        if mic.module is None or not mic.online:
            raise MicOffline(f"mic module {key} is offline: {mic.last_error or 'connecting'}")
        return mic.module

    # -- attach / detach -------------------------------------------------------

    async def attach(self, target: str, *, by: str) -> AttachedMic:
        """Attach ``target`` (idempotent); waits briefly for the first connection."""
        target = check_target(target)
        mic = self.mics.get(target)
        if mic is None:
            mic = AttachedMic(target, by, now_ms())
            await trio.to_thread.run_sync(
                partial(
                    _execute,
                    self.node,
                    "INSERT OR REPLACE INTO mics (target, serial, attached_by, attached)"
                    " VALUES (?, NULL, ?, ?)",
                    (target, by, mic.attached_ms),
                )
            )
            self._start(mic)
        with trio.move_on_after(ATTACH_WAIT):
            while not mic.online and mic.last_error is None:
                await mic.changed.wait()
        return mic

    async def detach(self, key: str) -> AttachedMic:
        mic = self.find(key)
        mic.cancel.cancel()
        self.mics.pop(mic.target, None)
        await trio.to_thread.run_sync(
            partial(_execute, self.node, "DELETE FROM mics WHERE target = ?", (mic.target,))
        )
        return mic

    # -- commands --------------------------------------------------------------

    async def change(self, key: str, values: dict[str, Any]) -> dict[str, Any]:
        """Apply settings given as JSON values; returns the module's new settings."""
        changes = parse_settings(values)
        mic = self.find(key)
        settings = await self._command(key, lambda m: m.set(**changes))
        mic.settings = settings.as_dict()
        mic.notify()
        return mic.settings

    async def identify(self, key: str, seconds: int) -> None:
        await self._command(key, lambda m: m.identify(seconds))

    async def self_test(self, key: str) -> dict[str, Any]:
        mic = self.find(key)
        result = await self._command(key, lambda m: m.self_test())
        mic.self_test = result.as_dict()
        mic.notify()
        return mic.self_test

    async def _command(self, key: str, call: Callable[[MicModule], Any]) -> Any:
        module = self.live(key)
        try:
            return await call(module)
        except MicLocalError as exc:
            raise ValueError(str(exc)) from exc
        except MicError as exc:
            raise MicOffline(f"mic module {key}: {exc}") from exc

    # -- the supervisor --------------------------------------------------------

    async def _supervise(self, mic: AttachedMic) -> None:
        delay = RETRY_FIRST
        with mic.cancel:
            while True:
                try:
                    async with open_mic(mic.target) as module:
                        delay = RETRY_FIRST
                        await self._serve(mic, module)
                except MicError as exc:
                    mic.last_error = str(exc) or type(exc).__name__
                except (TalasError, ProtocolError, ValueError) as exc:
                    mic.last_error = f"passport: {exc}"
                finally:
                    mic.module = None
                    mic.online = False
                    mic.notify()
                with trio.move_on_after(delay):
                    await mic.plugged.wait()  # hot plug: the port came back
                mic.plugged = trio.Event()
                delay = min(self.retry_max, delay * 2)

    async def _serve(self, mic: AttachedMic, module: MicModule) -> None:
        info = await module.info()
        settings = await module.settings()
        mic.module = module
        mic.serial = info.serial
        mic.info = info.as_dict()
        mic.settings = settings.as_dict()
        mic.online = True
        mic.last_error = None
        mic.connects += 1
        mic.last_seen_ms = now_ms()
        mic.notify()
        await trio.to_thread.run_sync(
            partial(
                _execute,
                self.node,
                "UPDATE mics SET serial = ? WHERE target = ?",
                (info.serial, mic.target),
            )
        )
        await self._update_passport(mic, info.as_dict())
        await module.start_levels(LEVEL_INTERVAL_MS)
        async for report in module.levels():
            mic.levels = report.as_dict()
            mic.levels_ms = mic.last_seen_ms = now_ms()
            mic.notify()

    async def _update_passport(self, mic: AttachedMic, info: dict[str, Any]) -> None:
        serial = str(info["serial"])
        entries = await trio.to_thread.run_sync(passport_entries, self.node, serial)
        state = passport.fold(serial, entries)
        if state is None:
            bodies = [("hardware", passport.registration(info))]
        else:
            repairs = passport.changes(state, info, by=mic.attached_by, when=now_ms())
            bodies = [("repair", body) for body in repairs]
        for kind, body in bodies:
            await publish_passport(self.node, kind, body)


def parse_settings(values: dict[str, Any]) -> dict[str, Any]:
    """JSON settings (gain_db, pattern, phantom, low_cut_hz, mute) to driver values."""
    known = {"gain_db", "pattern", "phantom", "low_cut_hz", "mute"}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(known)}")
    out: dict[str, Any] = {}
    if "gain_db" in values:
        gain = values["gain_db"]
        if isinstance(gain, bool) or not isinstance(gain, int | float):
            raise ValueError("gain_db must be a number of dB")
        out["gain_db"] = float(gain)
    if "pattern" in values:
        try:
            out["pattern"] = Pattern(values["pattern"])
        except ValueError:
            names = ", ".join(p.value for p in Pattern)
            raise ValueError(f"pattern must be one of {names}") from None
    if "low_cut_hz" in values:
        try:
            out["low_cut"] = LowCut(values["low_cut_hz"])
        except ValueError:
            raise ValueError("low_cut_hz must be 0 (off), 80 or 160") from None
    for flag in ("phantom", "mute"):
        if flag in values:
            if not isinstance(values[flag], bool):
                raise ValueError(f"{flag} must be true or false")
            out[flag] = values[flag]
    if not out:
        raise ValueError("give at least one setting to change")
    return out


def passport_entries(node: Node, serial: str) -> list[Event]:
    """Every hardware/repair event about ``serial`` that this node holds, any author."""
    from node.timeline import trusted_event

    rows = node.store.query(
        "SELECT id, author, seq, prev, kind, created, raw FROM events"
        " WHERE kind IN ('hardware', 'repair') AND deleted = 0"
        " AND json_extract(raw, '$.body.serial') = ?",
        (serial,),
    )
    return passport.ordered(trusted_event(row) for row in rows)


async def publish_passport(node: Node, kind: str, body: dict[str, Any]) -> Event:
    """Sign a passport entry with the collective's key: the owner's feed."""
    key = await trio.to_thread.run_sync(node.author_key, "default")
    event = await trio.to_thread.run_sync(
        partial(node.store.append_local, key, kind=kind, body=body, now_ms=now_ms())
    )
    node.poke()
    return event


def _execute(node: Node, sql: str, params: tuple[object, ...]) -> None:
    with node.store.transaction() as conn:
        conn.execute(sql, params)
