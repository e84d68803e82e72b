"""Hot-plug detection: the pure diff, then the poller on pseudo-terminals in a temp dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import suppress
from functools import partial
from pathlib import Path

import pytest
import trio

from hardware.driver import open_mic
from hardware.hotplug import (
    PortAdded,
    PortEvent,
    PortRemoved,
    diff_ports,
    scan_ports,
    watch_ports,
)
from tests.test_mic_simulator import simulator


def test_diff_reports_removals_then_additions_sorted() -> None:
    before = {"/dev/ttyACM0": (1, 10), "/dev/ttyACM1": (2, 11), "/dev/ttyUSB0": (3, 12)}
    after = {"/dev/ttyACM1": (2, 11), "/dev/ttyUSB0": (3, 99), "/dev/ttyACM2": (4, 13)}
    assert diff_ports(before, after) == [
        PortRemoved("/dev/ttyACM0"),
        PortRemoved("/dev/ttyUSB0"),  # same path, new device node: replugged
        PortAdded("/dev/ttyACM2"),
        PortAdded("/dev/ttyUSB0"),
    ]
    assert diff_ports(after, after) == []
    assert diff_ports({}, {"/b": (1, 1), "/a": (2, 2)}) == [PortAdded("/a"), PortAdded("/b")]


@pytest.fixture
def ptys() -> Iterator[list[tuple[int, int]]]:
    """Pseudo-terminal pairs opened by the test; closed at the end if still open."""
    pairs: list[tuple[int, int]] = []
    yield pairs
    for pair in pairs:
        for fd in pair:
            with suppress(OSError):
                os.close(fd)


def new_pty(pairs: list[tuple[int, int]]) -> str:
    pair = os.openpty()
    pairs.append(pair)
    return os.ttyname(pair[1])


def test_scan_counts_only_character_devices(tmp_path: Path, ptys: list[tuple[int, int]]) -> None:
    (tmp_path / "mic").symlink_to(new_pty(ptys))
    (tmp_path / "file").write_text("not a port")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    snapshot = scan_ports((), [tmp_path, tmp_path / "missing"], use_comports=False)
    assert list(snapshot) == [str(tmp_path / "mic")]
    assert isinstance(scan_ports(), dict)  # the real defaults run (whatever this host has)


async def test_watch_reports_ports_coming_and_going(
    tmp_path: Path, ptys: list[tuple[int, int]]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(new_pty(ptys))
    send, receive = trio.open_memory_channel[PortEvent](16)
    watch = partial(
        watch_ports, send, patterns=(), directories=[tmp_path], use_comports=False, interval=0.02
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            initial = await nursery.start(watch)
            assert initial == frozenset({str(a)})
            assert await receive.receive() == PortAdded(str(a))

            b.symlink_to(new_pty(ptys))
            assert await receive.receive() == PortAdded(str(b))

            a.unlink()
            assert await receive.receive() == PortRemoved(str(a))

            b.unlink()  # the same name now leads to another device
            b.symlink_to(os.ttyname(ptys[0][1]))
            assert [await receive.receive(), await receive.receive()] == [
                PortRemoved(str(b)),
                PortAdded(str(b)),
            ]

            for fd in ptys[0]:  # the pty behind b goes away: b dangles
                os.close(fd)
            ptys.pop(0)
            assert await receive.receive() == PortRemoved(str(b))
            nursery.cancel_scope.cancel()


async def test_watch_stops_when_nobody_listens(tmp_path: Path) -> None:
    send, receive = trio.open_memory_channel[PortEvent](0)
    receive.close()
    with trio.fail_after(5):
        await watch_ports(send, patterns=(), directories=[tmp_path], use_comports=False)


async def test_simulated_module_plugged_in_and_unplugged(tmp_path: Path) -> None:
    """The node's loop in miniature: port appears → attach → process dies → both notice."""
    link = tmp_path / "ttyTalas0"
    send, receive = trio.open_memory_channel[PortEvent](16)
    watch = partial(
        watch_ports, send, patterns=(), directories=[tmp_path], use_comports=False, interval=0.05
    )
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(watch) == frozenset()
            async with simulator("--pty", "--link", str(link), "--serial", "HOT-1") as (proc, _):
                event = await receive.receive()
                assert event == PortAdded(str(link))
                async with open_mic(event.path, heartbeat=None) as mic:
                    assert mic.last_info is not None and mic.last_info.serial == "HOT-1"
                    proc.kill()
                    with trio.fail_after(1):
                        await mic.wait_disconnected()
                    assert await receive.receive() == PortRemoved(str(link))
            nursery.cancel_scope.cancel()
