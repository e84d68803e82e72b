"""The composition root: everything a running node does, in one trio nursery.

``open_node`` owns the node's resources (the data dir lock, the store, the
keys); ``serve_node`` starts the services inside a nursery with
``nursery.start`` so the caller learns the bound addresses only once they
accept connections.  The store watcher notices events written by other
processes on the same data dir (``talas post`` while the node runs) through
SQLite's arrival cursor, within a poll interval.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import ExitStack, asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from importlib import metadata
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import hypercorn.config
import hypercorn.trio
import trio

from node.accounts import PasswordPolicy
from node.blobs import BlobStore
from node.datadir import DataDir
from node.errors import LocalError, StoreError
from node.identity import Identity
from node.ingest import VerifyPool
from node.store import EventRef, Store
from protocol.keys import SigningKey

if TYPE_CHECKING:
    from node.discovery import Discovery
    from node.federation import Federation
    from node.mics import MicManager

WATCH_INTERVAL = 0.2


def talas_version() -> str:
    try:
        return metadata.version("talas")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def now_ms() -> int:
    return int(time.time() * 1000)


def split_host_port(value: str, *, default_port: int) -> tuple[str, int]:
    """Parse ``HOST:PORT``, ``[v6]:PORT`` or ``HOST``; raise ValueError on junk."""
    host, sep, port_text = value.rpartition(":")
    if not sep or host.endswith(":"):  # "HOST" or a bare IPv6 address
        host, port_text = value, str(default_port)
    host = host.strip("[]")
    if not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port_text)


@dataclass
class Node:
    """The running node's shared state: what the services read and update."""

    data: DataDir
    store: Store
    identity: Identity
    node_id: str
    name: str
    blobs: BlobStore
    node_key: SigningKey
    addresses: dict[str, str] = field(default_factory=dict)
    latest: EventRef | None = None
    event_count: int = 0
    started_ms: int = field(default_factory=now_ms)
    federation: Federation | None = None
    discovery: Discovery | None = None
    mics: MicManager | None = None
    passphrase: bytes | None = None
    api_token: str = ""
    http_rate: float = 1000.0
    """Requests per second allowed to each HTTP client (burst: twice that)."""
    password_policy: PasswordPolicy | None = None
    _listeners: list[Callable[[list[EventRef]], None]] = field(default_factory=list)
    _poke: trio.Event = field(default_factory=trio.Event)

    def info(self) -> dict[str, Any]:
        latest = None
        if self.latest is not None:
            ref = self.latest
            latest = {
                "id": ref.id,
                "author": ref.author,
                "seq": ref.seq,
                "kind": ref.kind,
                "arrival": ref.arrival,
            }
        return {
            "node_id": self.node_id,
            "name": self.name,
            "version": talas_version(),
            "addresses": dict(self.addresses),
            "authors": [
                {"name": n, "id": self.identity.author_info(n).public.hex()}
                for n in self.identity.author_names()
            ],
            "events": {"count": self.event_count, "latest": latest},
            "started_ms": self.started_ms,
        }

    def author_key(self, name: str = "default") -> SigningKey:
        """One of this node's author keys, unlocked with the passphrase given at start."""
        return self.identity.author_key(name, self.passphrase)

    def add_listener(self, listener: Callable[[list[EventRef]], None]) -> None:
        """Call ``listener`` (synchronously; it must not block) with each run of new events."""
        self._listeners.append(listener)

    def poke(self) -> None:
        """Something was stored: look at the store now rather than at the next tick."""
        self._poke.set()

    async def wait_for_poke(self, longest: float) -> None:
        with trio.move_on_after(longest):
            await self._poke.wait()
        self._poke = trio.Event()

    def observe(self, events: list[EventRef]) -> None:
        self.latest = events[-1]
        self.event_count += len(events)
        for listener in list(self._listeners):
            listener(events)


def _lock_data_dir(data: DataDir) -> int:
    fd = os.open(data.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as exc:
        os.close(fd)
        raise LocalError(
            f"another talas node is already running on {data.root} (lock {data.lock_file})"
        ) from exc
    return fd


@asynccontextmanager
async def open_node(
    data: DataDir, *, passphrase: bytes | None = None, name: str | None = None
) -> AsyncIterator[Node]:
    """Lock the data dir, initialise it on first run, check it, and open it."""
    data.ensure()
    lock_fd = _lock_data_dir(data)
    store: Store | None = None
    try:
        identity = Identity(data.root)
        if not identity.exists():
            await trio.to_thread.run_sync(
                lambda: identity.create(name=name or "talas", passphrase=passphrase)
            )
        identity.check_permissions()
        node_key = identity.node_key(passphrase)
        store = await trio.to_thread.run_sync(Store, data.database)
        problems = await trio.to_thread.run_sync(store.integrity_problems)
        if problems:
            raise StoreError(f"database {data.database} failed its integrity check: {problems[:5]}")
        blobs = BlobStore(data.blobs)
        await trio.to_thread.run_sync(blobs.cleanup)
        node = Node(
            data=data,
            store=store,
            identity=identity,
            node_id=node_key.id,
            name=identity.node_info().label,
            blobs=blobs,
            event_count=await trio.to_thread.run_sync(store.count),
            node_key=node_key,
            passphrase=passphrase,
            api_token=ensure_api_token(data),
        )
        latest = await trio.to_thread.run_sync(store.latest_arrival)
        if latest:
            found = await trio.to_thread.run_sync(partial(store.refs_since, latest - 1, limit=1))
            node.latest = found[0] if found else None
        yield node
    finally:
        if store is not None:
            store.close()
        with suppress(OSError):
            data.runtime_file.unlink()
        os.close(lock_fd)


async def watch_store(node: Node, *, task_status: trio.TaskStatus[None]) -> None:
    """Notice events stored by any process on this data dir, in arrival order."""
    last = await trio.to_thread.run_sync(node.store.latest_arrival)
    task_status.started()
    while True:
        await node.wait_for_poke(WATCH_INTERVAL)
        while fresh := await trio.to_thread.run_sync(
            partial(node.store.refs_since, last, limit=2000)
        ):
            last = fresh[-1].arrival
            node.observe(fresh)


async def serve_http(
    node: Node, host: str, port: int, *, task_status: trio.TaskStatus[str]
) -> None:
    """Serve the web app until cancelled; reports the bound URL."""
    from webui.app import create_app  # the web stack loads only when serving

    config = hypercorn.config.Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.include_server_header = False
    app = create_app(node, bind_host=host)
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(hypercorn.trio.serve, app, config)
            task_status.started(binds[0] + "/")
    except OSError as exc:
        raise LocalError(f"cannot listen for HTTP on {host}:{port}: {exc.strerror}") from exc


def ensure_api_token(data: DataDir) -> str:
    """The API token, created (0600, random) on first use."""
    path = data.api_token_file
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        token = path.read_text().strip()
        if len(token) >= 32 and (path.stat().st_mode & 0o077) == 0:
            return token
        raise LocalError(
            f"API token file {path} is invalid or readable by others; delete it to renew"
        ) from None
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return token


def _discovery(node: Node, interfaces: Sequence[str], service: str | None) -> Discovery:
    from node.discovery import SERVICE_TYPE, Discovery

    http_port = urlsplit(node.addresses["http"]).port
    p2p = node.addresses.get("p2p")
    assert http_port is not None
    return Discovery(
        node_id=node.node_id,
        name=node.name,
        http_port=http_port,
        p2p_port=urlsplit(p2p).port if p2p else None,
        interfaces=interfaces,
        service_type=service or SERVICE_TYPE,
    )


def write_runtime_file(node: Node) -> None:
    """Tell ``talas id`` where this node listens (owner-only, atomic)."""
    path = node.data.runtime_file
    tmp = path.with_suffix(".tmp")
    payload = {"pid": os.getpid(), "addresses": node.addresses, "started_ms": node.started_ms}
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle)
    os.replace(tmp, path)


def read_runtime_addresses(data: DataDir) -> dict[str, str]:
    """Addresses of the node running on ``data``, or {} when none is."""
    try:
        payload = json.loads(data.runtime_file.read_text())
        pid = int(payload["pid"])
        os.kill(pid, 0)
        addresses = payload["addresses"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {str(k): str(v) for k, v in addresses.items()} if isinstance(addresses, dict) else {}


async def serve_node(
    node: Node,
    *,
    http: tuple[str, int],
    p2p: tuple[str, int] | None = None,
    verify_workers: int = 0,
    discovery: Sequence[str] | None = None,
    discovery_service: str | None = None,
    serial_directories: Sequence[str] = (),
    ice_addresses: Sequence[str] | None = None,
    task_status: trio.TaskStatus[dict[str, str]],
) -> None:
    """Start every service of ``node``; report its addresses once all listen.

    ``discovery`` lists the interface addresses mDNS runs on (None: no
    discovery); ``discovery_service`` overrides the service type (tests).
    ``serial_directories`` are watched for serial ports besides the USB ones.
    ``ice_addresses`` pins the host addresses WebRTC gathers (None: aioice's own).
    """
    from node.federation import Federation  # imports daemon: keep the cycle lazy
    from node.live import serve_live
    from node.mics import MicManager

    with ExitStack() as resources:
        pool = resources.enter_context(VerifyPool(verify_workers)) if verify_workers else None
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_store, node)
            if p2p is not None:
                federation = Federation(node, pool=pool)
                node.federation = federation
                node.addresses["p2p"] = await nursery.start(federation.serve, *p2p)
                await nursery.start(federation.supervise)
                # aiortc loads on first live use
                await nursery.start(partial(serve_live, federation, ice_addresses=ice_addresses))
            node.mics = MicManager(node, port_directories=serial_directories)
            await nursery.start(node.mics.run)
            node.addresses["http"] = await nursery.start(serve_http, node, *http)
            if discovery:
                node.discovery = _discovery(node, discovery, discovery_service)
                await nursery.start(node.discovery.run)
            await trio.to_thread.run_sync(write_runtime_file, node)
            task_status.started(dict(node.addresses))
