"""Hot-plug detection of serial ports by polling.

Theory of operation
-------------------
Every ``interval`` seconds :func:`watch_ports` takes a snapshot of the serial
ports that exist (pyserial's ``comports()``, glob patterns such as
``/dev/ttyACM*``, and every entry of extra directories, where tests drop
symlinks to pseudo-terminals) and compares it with the previous one.  The
diff is pure (:func:`diff_ports`) and reported as :class:`PortAdded` /
:class:`PortRemoved` events on a trio memory channel.

A snapshot maps each path to the identity of the character device behind it
(device number and inode).  A module unplugged and plugged back between two
polls usually comes back as a new device node, so it is reported as removed
then added, and the node re-attaches it.  ``os.stat`` follows symlinks: a
symlink whose pseudo-terminal has gone away counts as removed.

Polling, not udev: it needs no daemon, works in containers and for ptys, and
a module's arrival within half a second is plenty for a stage.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeAlias

import trio
from serial.tools import list_ports

DEFAULT_PATTERNS = ("/dev/ttyACM*", "/dev/ttyUSB*")
DEFAULT_INTERVAL = 0.5

DeviceId: TypeAlias = tuple[int, int]
"""(st_rdev, st_ino) of the character device a path leads to."""
Snapshot: TypeAlias = Mapping[str, DeviceId]


@dataclass(frozen=True, slots=True)
class PortAdded:
    path: str


@dataclass(frozen=True, slots=True)
class PortRemoved:
    path: str


PortEvent: TypeAlias = PortAdded | PortRemoved


def diff_ports(before: Snapshot, after: Snapshot) -> list[PortEvent]:
    """Events turning ``before`` into ``after``: removals first, each sorted by path.

    A path whose device changed is reported removed, then added.
    """
    removed = sorted(p for p, dev in before.items() if after.get(p) != dev)
    added = sorted(p for p, dev in after.items() if before.get(p) != dev)
    return [*map(PortRemoved, removed), *map(PortAdded, added)]


def _device_id(path: str) -> DeviceId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_rdev, st.st_ino) if stat.S_ISCHR(st.st_mode) else None


def scan_ports(
    patterns: Iterable[str] = DEFAULT_PATTERNS,
    directories: Iterable[str | os.PathLike[str]] = (),
    *,
    use_comports: bool = True,
) -> dict[str, DeviceId]:
    """Snapshot of the serial ports present now (blocking: run it in a thread).

    From ``comports()`` only USB ports count (a module is a USB device): probing
    a motherboard UART could disturb whatever is wired to it.
    """
    candidates: set[str] = set()
    if use_comports:
        candidates.update(p.device for p in list_ports.comports() if p.vid is not None)
    for pattern in patterns:
        candidates.update(glob.glob(pattern))
    for directory in directories:
        try:
            with os.scandir(directory) as entries:
                candidates.update(entry.path for entry in entries)
        except OSError:
            continue  # the directory may come and go too
    snapshot: dict[str, DeviceId] = {}
    for path in candidates:
        device = _device_id(path)
        if device is not None:
            snapshot[path] = device
    return snapshot


async def watch_ports(
    send_channel: trio.MemorySendChannel[PortEvent],
    *,
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    directories: Sequence[str | os.PathLike[str]] = (),
    use_comports: bool = True,
    interval: float = DEFAULT_INTERVAL,
    task_status: trio.TaskStatus[frozenset[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Report ports appearing and disappearing until cancelled; use with ``nursery.start``.

    ``started`` receives the ports present at start; they are also sent as
    :class:`PortAdded` events, so a consumer can treat every port alike.
    Returns when the receiving end is closed; closes ``send_channel`` on exit.
    """
    known: Snapshot = {}
    started = False
    async with send_channel:
        while send_channel.statistics().open_receive_channels:
            current = await trio.to_thread.run_sync(
                lambda: scan_ports(patterns, directories, use_comports=use_comports)
            )
            events = diff_ports(known, current)
            known = current
            if not started:
                task_status.started(frozenset(current))
                started = True
            try:
                for event in events:
                    await send_channel.send(event)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            await trio.sleep(interval)
