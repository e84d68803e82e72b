"""Network namespaces, veth pairs, avahi and discovery agents for the discovery tests.

mDNS in tests must never reach a real interface: the tests use 127.0.0.1 or
namespaces created here, joined by a veth pair created directly inside them
(it never appears in the host's namespace), with addresses from 10/8.
Everything is torn down even when a test fails, including the processes
left inside a namespace, and namespaces left by a run that died are swept.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "talas-"


def require_root() -> None:
    """Namespaces need root: CI runs as root, so there a missing privilege is a failure."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI"):
        pytest.fail("the network-namespace tests need root (CI runs the suite as root)")
    pytest.skip("the network-namespace tests need root")


def ip(*args: str) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


def in_ns(ns: str, *command: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *command]


def _kill_inside(ns: str) -> None:
    with suppress(RuntimeError):
        for pid in ip("netns", "pids", ns).split():
            with suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)


def delete_ns(ns: str) -> None:
    _kill_inside(ns)
    with suppress(RuntimeError):
        ip("netns", "delete", ns)


def sweep_stale() -> None:
    """Delete namespaces left by test runs whose process is gone."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        if len(parts) == 4 and name.startswith(PREFIX) and parts[1].isdigit():
            try:
                os.kill(int(parts[1]), 0)
            except ProcessLookupError:
                delete_ns(name)


@dataclass(frozen=True)
class Side:
    ns: str
    interface: str
    address: str


@dataclass(frozen=True)
class Pair:
    a: Side
    b: Side


@contextmanager
def veth_pair() -> Iterator[Pair]:
    """Two fresh namespaces joined by a veth pair, lo up in both; deleted afterwards."""
    require_root()
    sweep_stale()
    tag = secrets.token_hex(3)
    subnet = f"10.{64 + secrets.randbelow(128)}.{secrets.randbelow(256)}"
    pair = Pair(
        Side(f"{PREFIX}{os.getpid()}-{tag}-a", f"tl{tag}a", f"{subnet}.1"),
        Side(f"{PREFIX}{os.getpid()}-{tag}-b", f"tl{tag}b", f"{subnet}.2"),
    )
    created: list[str] = []
    try:
        for side in (pair.a, pair.b):
            ip("netns", "add", side.ns)
            created.append(side.ns)
        ip("link", "add", pair.a.interface, "netns", pair.a.ns, "type", "veth",
           "peer", "name", pair.b.interface, "netns", pair.b.ns)  # fmt: skip
        for side in (pair.a, pair.b):
            ip("-n", side.ns, "addr", "add", f"{side.address}/24", "dev", side.interface)
            ip("-n", side.ns, "link", "set", "lo", "up")
            ip("-n", side.ns, "link", "set", side.interface, "up")
        yield pair
    finally:
        for ns in created:
            delete_ns(ns)


# -- processes that print JSON lines ---------------------------------------------


@dataclass
class Lines:
    """A process's output, read line by line; JSON lines are parsed."""

    process: trio.Process
    what: str
    text: list[str] = field(default_factory=list)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The last JSON line of each ``event`` kind: the state the process last reported."""
    _buffer: bytes = b""
    _stream_done: bool = False

    async def next_line(self) -> str | None:
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            if self._stream_done:
                return None
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                self._stream_done = True
                if not self._buffer:
                    return None
                self._buffer += b"\n"
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        text = line.decode(errors="replace")
        self.text.append(text)
        return text

    async def wait_for(self, check: Callable[[dict[str, Any]], bool], seconds: float) -> Any:
        """The first reported state ``check`` accepts, the current one included."""
        for event in list(self.latest.values()):
            if check(event):
                return event
        with trio.move_on_after(seconds):
            while (line := await self.next_line()) is not None:
                with suppress(ValueError):
                    event = json.loads(line)
                    if isinstance(event, dict):
                        self.latest[str(event.get("event"))] = event
                        if check(event):
                            return event
        output = "\n".join(self.text[-30:])
        raise AssertionError(f"{self.what}: nothing matched in {seconds} s; output:\n{output}")

    async def wait_text(self, needle: str, seconds: float) -> None:
        with trio.move_on_after(seconds):
            while (line := await self.next_line()) is not None:
                if needle in line:
                    return
        output = "\n".join(self.text[-30:])
        raise AssertionError(f"{self.what}: no {needle!r} in {seconds} s; output:\n{output}")


async def _stop(process: trio.Process, seconds: float = 5.0) -> None:
    if process.returncode is None:
        with suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        with trio.move_on_after(seconds):
            await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


@asynccontextmanager
async def started(
    command: Sequence[str], what: str, env: dict[str, str] | None = None
) -> AsyncIterator[Lines]:
    """Run ``command`` (stderr with stdout); SIGTERM it on the way out, SIGKILL if it lingers."""
    process = await trio.lowlevel.open_process(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    try:
        yield Lines(process, what)
    finally:
        with trio.CancelScope(shield=True):
            await _stop(process)


def agent_command(interface: str, *args: str, ns: str | None = None) -> list[str]:
    """A discovery agent (``python -m node.bench_discovery agent``), in ``ns`` if given."""
    command = [sys.executable, "-m", "node.bench_discovery", "agent", "--interface", interface]
    command += args
    return in_ns(ns, *command) if ns else command


def seen(node_id: str) -> Callable[[dict[str, Any]], bool]:
    """Check for a table line listing ``node_id``."""
    return lambda event: (
        event.get("event") == "table" and any(n["node_id"] == node_id for n in event["nearby"])
    )


def not_seen(node_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: (
        event.get("event") == "table" and all(n["node_id"] != node_id for n in event["nearby"])
    )


# -- avahi inside a namespace ---------------------------------------------------------

DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

AVAHI_CONFIG = """[server]
host-name={host}
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces={interface}
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
[reflector]
enable-reflector=no
"""


@dataclass(frozen=True)
class Avahi:
    ns: str
    env: dict[str, str]
    """DBUS_SYSTEM_BUS_ADDRESS of the private bus: give it to avahi-browse/-publish."""
    host: str
    """Its host name, also in its process title ("avahi-daemon: running [HOST.local]")."""
    log: list[str]
    """What avahi-daemon printed so far."""


@asynccontextmanager
async def avahi(side: Side) -> AsyncIterator[Avahi]:
    """A private D-Bus system bus and avahi-daemon in ``side.ns``, only on its veth.

    The bus socket lives in a fresh directory (not /run/dbus, which the
    namespaces share with the host); avahi-daemon runs in the foreground in
    its own mount namespace with a private /run (pid file) and an empty
    /etc/avahi/services, so it never meets the host's avahi or its services.
    """
    for tool in ("dbus-daemon", "avahi-daemon", "avahi-browse", "avahi-publish", "unshare"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} missing: run scripts/install-system-deps")
    work = Path(tempfile.mkdtemp(prefix="talas-avahi-"))
    socket = work / "bus"
    (work / "dbus.conf").write_text(DBUS_CONFIG.format(socket=socket))
    config = work / "avahi-daemon.conf"
    host = f"talas-test-{secrets.token_hex(4)}"
    config.write_text(AVAHI_CONFIG.format(host=host, interface=side.interface))
    env = {"DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={socket}"}
    daemon = in_ns(side.ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
                   "mount -t tmpfs tmpfs /run && mkdir /run/avahi-daemon"
                   " && mount -t tmpfs tmpfs /etc/avahi/services"
                   ' && exec avahi-daemon --no-drop-root --no-rlimits --no-chroot -f "$0"',
                   str(config))  # fmt: skip
    try:
        async with started(
            in_ns(side.ns, "dbus-daemon", f"--config-file={work / 'dbus.conf'}", "--nofork",
                  "--nopidfile"),
            "dbus-daemon",
        ) as bus:  # fmt: skip
            with trio.fail_after(5):
                while not socket.exists():
                    if bus.process.returncode is not None:
                        raise AssertionError(f"dbus-daemon exited: {bus.text}")
                    await trio.sleep(0.02)
            async with started(daemon, "avahi-daemon", env) as lines, trio.open_nursery() as n:
                await lines.wait_text("Server startup complete", 10)
                n.start_soon(_drain, lines)  # a full pipe would stall avahi
                yield Avahi(side.ns, env, host, lines.text)
                n.cancel_scope.cancel()
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _drain(lines: Lines) -> None:
    while await lines.next_line() is not None:
        pass


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line (or process title) contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with suppress(OSError):
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found
