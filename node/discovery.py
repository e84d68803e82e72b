"""Nodes and mic modules nearby, found with mDNS / DNS-SD.

A node advertises ``_talas._tcp.local.`` (TXT: node id, protocol version,
name, ports) on the interfaces it is given and browses for the others;
networked mic modules advertise ``_talas-mic._tcp.local.``.  mDNS is
unauthenticated: anything on the LAN can claim any node id, so an
advertisement is only an address hint.  Who answers at that address is proven
by the Noise handshake; ``pairing_code`` lets two people confirm it.

zeroconf runs its own asyncio loop in a thread.  Everything that touches it
runs on that loop (``_on_loop``: trio cancellation cancels the coroutine
there), and what it reports comes back through the trio token into a bounded
channel, so a LAN flooding us with records costs dropped events, not memory.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import ipaddress
import logging
import secrets
import socket
import sys
import time
import unicodedata
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Literal, TypeVar

import ifaddr
import trio
from zeroconf import (
    BadTypeInNameException,
    IPVersion,
    RecordUpdate,
    RecordUpdateListener,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
)
from zeroconf import Error as ZeroconfError
from zeroconf._dns import DNSPointer, DNSQuestion
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf._utils.name import service_type_name
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo

from node.errors import LocalError
from protocol.event import is_hex32

log = logging.getLogger(__name__)

SERVICE_TYPE = "_talas._tcp.local."
MIC_SERVICE_TYPE = "_talas-mic._tcp.local."
PROTOCOL_VERSION = 1

MAX_NAME_CHARS = 64
MAX_VALUE_BYTES = 255  # one TXT string holds at most 255 bytes, key included
MAX_TXT_KEYS = 32
MAX_ADDRESSES = 8
MAX_NODES = 256
MAX_MICS = 64
TTL_S = 90.0
"""An entry nobody has answered for within this long is dropped (a node that crashed)."""
REFRESH_S = 15.0
"""How often the table is checked; entries older than TTL/2 trigger one query."""
RESOLVE_TIMEOUT_MS = 3000
RESOLVE_CONCURRENCY = 8
RETRY_MS = 30_000
"""A record we refused (or our own) is resolved again only after this long."""
EVENT_BUFFER = 1024
CLOSE_TIMEOUT_S = 3.0

# RFC 6762 §8.1: wait 0-250 ms, send three probes 250 ms apart, announce if
# nobody objected 250 ms after the last.  zeroconf's own probing spaces them
# 500 ms apart, which lists a new node ~0.45 s later than the RFC allows.
PROBE_INTERVAL_S = 0.25
PROBES = 3
MAX_RENAMES = 20

_TYPE_PTR, _TYPE_TXT, _TYPE_SRV, _CLASS_IN, _FLAGS_QUERY = 12, 16, 33, 1, 0
_IP_MULTICAST_ALL = 49  # Linux; not exported by Python's socket module
_PAIRING_DOMAIN = b"talas pairing code v1\x00"

T = TypeVar("T")
TxtRecord = Mapping[bytes, bytes | None]
EventKind = Literal["added", "updated", "seen", "gone"]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class AdvertisementError(ValueError):
    """A record from the LAN we refuse: hostile or broken, never trusted."""


# -- parsing (pure) ---------------------------------------------------------------


@dataclass(frozen=True)
class Advertisement:
    """What a ``_talas._tcp`` record claims; unauthenticated until a handshake."""

    node_id: str
    version: int
    name: str
    http_port: int
    p2p_port: int | None
    """None when the node does not federate."""
    addresses: tuple[str, ...]


@dataclass(frozen=True)
class MicAdvertisement:
    """A networked mic module's record: where to reach it and what it says it is."""

    serial: str
    model: str
    firmware: str
    addresses: tuple[str, ...]
    port: int


def clean_name(raw: str, limit: int = MAX_NAME_CHARS) -> str:
    """Display-safe text: no control, format (bidi) or private-use characters, one-line."""
    kept = []
    for char in raw:
        category = unicodedata.category(char)
        if category[0] == "C" or category in ("Zl", "Zp"):
            continue
        kept.append(" " if category == "Zs" else char)
    return " ".join("".join(kept).split())[:limit].rstrip()


def _txt(txt: TxtRecord) -> dict[str, bytes | None]:
    """The TXT record with ASCII lower-case keys; refuse anything ambiguous or oversize."""
    if len(txt) > MAX_TXT_KEYS:
        raise AdvertisementError(f"{len(txt)} TXT keys (at most {MAX_TXT_KEYS})")
    out: dict[str, bytes | None] = {}
    for key, value in txt.items():
        if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
            raise AdvertisementError("TXT keys and values must be bytes")
        if not key or len(key) + len(value or b"") + 1 > MAX_VALUE_BYTES or not key.isascii():
            raise AdvertisementError(f"bad or oversize TXT entry {key[:20]!r}")
        name = key.decode("ascii").lower()
        if name in out:
            raise AdvertisementError(f"TXT key {name!r} given twice")
        out[name] = value
    return out


def _required(txt: dict[str, bytes | None], key: str) -> bytes:
    value = txt.get(key)
    if not value:
        raise AdvertisementError(f"TXT {key!r} missing or empty")
    return value


def _number(value: bytes, what: str, *, low: int, high: int) -> int:
    """A plain decimal (no sign, spaces or leading zeros) in [low, high]."""
    leading_zero = value.startswith(b"0") and value != b"0"
    if not value.isascii() or not value.isdigit() or len(value) > 5 or leading_zero:
        raise AdvertisementError(f"{what} is not a plain number: {value[:8]!r}")
    number = int(value)
    if not low <= number <= high:
        raise AdvertisementError(f"{what} {number} out of range {low}..{high}")
    return number


def _text(value: bytes, what: str, limit: int) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        raise AdvertisementError(f"{what} is not UTF-8") from None
    return clean_name(text, limit)


def _token(value: bytes, what: str, limit: int, extra: bytes = b"") -> str:
    """An identifier-like value: ASCII letters, digits and ``._-`` (+ ``extra``) only."""
    allowed = b"._-" + extra
    if len(value) > limit or not all(c < 128 and (chr(c).isalnum() or c in allowed) for c in value):
        raise AdvertisementError(f"bad {what} {value[:20]!r}")
    return value.decode("ascii")


def _addresses(addresses: Iterable[str]) -> tuple[str, ...]:
    """Usable unicast IPv4 addresses, deduplicated and capped; refuse when none are."""
    kept: list[str] = []
    for text in addresses:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            continue
        if (
            address.version != 4
            or address.is_unspecified
            or address.is_multicast
            or address.is_reserved  # 240/4, and the broadcast address
        ):
            continue
        if str(address) not in kept:
            kept.append(str(address))
        if len(kept) == MAX_ADDRESSES:
            break
    if not kept:
        raise AdvertisementError("no usable IPv4 address")
    return tuple(kept)


def _srv_port(port: int | None) -> int:
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise AdvertisementError(f"bad SRV port {port!r}")
    return port


def parse_advertisement(
    txt: TxtRecord, addresses: Iterable[str], port: int | None
) -> Advertisement:
    """Read a node's record; raise AdvertisementError for anything malformed."""
    fields = _txt(txt)
    node_id = _required(fields, "id").decode("ascii", "replace")
    if not is_hex32(node_id):
        raise AdvertisementError(f"bad node id {node_id[:20]!r}")
    version = _number(_required(fields, "v"), "protocol version", low=1, high=999)
    http = _number(_required(fields, "http"), "http port", low=1, high=65535)
    p2p = _number(_required(fields, "p2p"), "p2p port", low=0, high=65535)
    _srv_port(port)
    name = _text(fields.get("name") or b"", "name", MAX_NAME_CHARS) or f"node {node_id[:8]}"
    return Advertisement(
        node_id=node_id,
        version=version,
        name=name,
        http_port=http,
        p2p_port=p2p or None,
        addresses=_addresses(addresses),
    )


def parse_mic(txt: TxtRecord, addresses: Iterable[str], port: int | None) -> MicAdvertisement:
    """Read a mic module's record; raise AdvertisementError for anything malformed."""
    fields = _txt(txt)
    serial = _token(_required(fields, "serial"), "serial", 64)
    model = _text(_required(fields, "model"), "model", MAX_NAME_CHARS)
    if not model:
        raise AdvertisementError("empty model")
    firmware = _token(_required(fields, "firmware"), "firmware", 32, extra=b"+")
    return MicAdvertisement(
        serial=serial,
        model=model,
        firmware=firmware,
        addresses=_addresses(addresses),
        port=_srv_port(port),
    )


def txt_record(node_id: str, name: str, http_port: int, p2p_port: int | None) -> dict[str, str]:
    """The TXT record this node advertises (``parse_advertisement`` reads it back)."""
    short = clean_name(name)
    while len(f"name={short}".encode()) > MAX_VALUE_BYTES:  # only for names of wide characters
        short = short[:-1]
    return {
        "id": node_id,
        "v": str(PROTOCOL_VERSION),
        "name": short,
        "http": str(http_port),
        "p2p": str(p2p_port or 0),
    }


def instance_label(name: str, node_id: str) -> str:
    """``<name> <short id>``: readable in other tools, unique per node, within 63 bytes.

    Room is left for the ``-N`` suffix a rename after a name conflict adds.
    """
    base = " ".join(clean_name(name).replace(".", " ").replace("\\", " ").split())
    while len(base.encode()) > 50:
        base = base[:-1].rstrip()
    return f"{base or 'talas'} {node_id[:8]}"


def pairing_code(local_node_id: str, remote_node_id: str, *, binding: bytes = b"") -> str:
    """Six digits (``"123 456"``) both people read out to confirm who they connected to.

    SHA-256 over a domain tag and the two node ids, sorted: both sides get the
    same code.  The ids are proven by the Noise handshake before the code is
    shown, so a spoofed advertisement alone cannot produce a matching code: an
    attacker in the middle holds a key of its own, so each side sees a code
    over the attacker's id instead.  The attacker *can* search for a key whose
    code matches (about 10^6 key generations for six digits): for pairing that
    must resist an active attacker, pass as ``binding`` values both sides
    committed to before seeing the other's (commit-then-reveal nonces, in the
    same order on both sides), so no search can help.
    """
    for node_id in (local_node_id, remote_node_id):
        if not is_hex32(node_id):
            raise ValueError(f"not a node id: {node_id[:20]!r}")
    first, second = sorted((local_node_id, remote_node_id))
    digest = hashlib.sha256(
        _PAIRING_DOMAIN + bytes.fromhex(first) + bytes.fromhex(second) + binding
    ).digest()
    number = int.from_bytes(digest[:8], "big") % 1_000_000
    return f"{number // 1000:03d} {number % 1000:03d}"


def lan_interfaces() -> list[str]:
    """This machine's non-loopback IPv4 addresses: where discovery runs by default."""
    found = [ip.ip for a in ifaddr.get_adapters() for ip in a.ips if isinstance(ip.ip, str)]
    return list(dict.fromkeys(a for a in found if not ipaddress.ip_address(a).is_loopback))


def _local_ipv4() -> set[str]:
    return {ip.ip for a in ifaddr.get_adapters() for ip in a.ips if isinstance(ip.ip, str)}


# -- the table ----------------------------------------------------------------


@dataclass(frozen=True)
class NearbyNode:
    """A node seen on the LAN: an address hint, not a verified peer."""

    node_id: str
    name: str
    version: int
    addresses: tuple[str, ...]
    http_port: int
    p2p_port: int | None
    first_seen_ms: int
    last_seen_ms: int
    service: str
    """The DNS-SD instance name, as other mDNS tools show it."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "name": self.name,
            "version": self.version,
            "addresses": list(self.addresses),
            "http_port": self.http_port,
            "p2p_port": self.p2p_port,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "service": self.service,
        }


@dataclass(frozen=True)
class NearbyMic:
    """A networked mic module seen on the LAN."""

    serial: str
    model: str
    firmware: str
    addresses: tuple[str, ...]
    port: int
    first_seen_ms: int
    last_seen_ms: int
    service: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "model": self.model,
            "firmware": self.firmware,
            "addresses": list(self.addresses),
            "port": self.port,
            "first_seen_ms": self.first_seen_ms,
            "last_seen_ms": self.last_seen_ms,
            "service": self.service,
        }


# -- bridging zeroconf's loop and trio -------------------------------------------------


async def _on_loop(zc: Zeroconf, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on zeroconf's asyncio loop; cancelling the caller cancels it there."""
    loop = zc.loop
    if loop is None or not loop.is_running():
        coro.close()
        raise LocalError("zeroconf's event loop is not running")
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()

    def wake(_: object) -> None:
        with suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    future = asyncio.run_coroutine_threadsafe(coro, loop)
    future.add_done_callback(wake)
    try:
        await done.wait()
    finally:
        future.cancel()  # a no-op once done
    try:
        return future.result()
    except concurrent.futures.CancelledError:  # zeroconf shut down under it
        raise LocalError("zeroconf stopped") from None


class _Forward:
    """Hands zeroconf's reports (from its thread) to the trio task, dropping on overflow."""

    def __init__(self, send: trio.MemorySendChannel[tuple[EventKind, str, str]]) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._send = send

    def __call__(self, kind: EventKind, service_type: str, name: str) -> None:
        with suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._deliver, (kind, service_type, name))

    def _deliver(self, item: tuple[EventKind, str, str]) -> None:
        with suppress(trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(item)

    def on_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """ServiceBrowser handler (keyword arguments, on zeroconf's loop)."""
        kinds: dict[ServiceStateChange, EventKind] = {
            ServiceStateChange.Added: "added",
            ServiceStateChange.Updated: "updated",
            ServiceStateChange.Removed: "gone",
        }
        self(kinds[state_change], service_type, name)


class _Liveness(RecordUpdateListener):
    """Sees every record that arrives, so refreshed entries stay listed.

    The browser reports a service once; whether it still answers shows only in
    the records themselves (answers to anyone's queries count).
    """

    def __init__(self, types: Sequence[str], forward: _Forward) -> None:
        super().__init__()
        self._types = {t.lower(): t for t in types}
        self._forward = forward
        self._batch: dict[tuple[str, str], EventKind] = {}

    def _type_of(self, instance: str) -> str | None:
        _, _, rest = instance.lower().partition(".")
        while rest:
            if rest in self._types:
                return self._types[rest]
            _, _, rest = rest.partition(".")
        return None

    def async_update_records(self, zc: Zeroconf, now: float, records: list[RecordUpdate]) -> None:
        for update in records:
            record = update.new
            if record.type == _TYPE_PTR and isinstance(record, DNSPointer):
                service_type = self._types.get(record.name.lower())
                if service_type is not None and self._type_of(record.alias) == service_type:
                    kind: EventKind = "gone" if record.ttl == 0 else "seen"
                    self._batch[(service_type, record.alias)] = kind
            elif record.type in (_TYPE_TXT, _TYPE_SRV) and record.ttl:
                service_type = self._type_of(record.name)
                if service_type is not None:
                    self._batch.setdefault((service_type, record.name), "seen")

    def async_update_records_complete(self) -> None:
        batch, self._batch = self._batch, {}
        for (service_type, name), kind in batch.items():
            self._forward(kind, service_type, name)


async def _confine(zc: Zeroconf, loopback_only: bool) -> None:
    """Keep the shared wildcard socket to the chosen interfaces (runs on zeroconf's loop).

    zeroconf receives on 0.0.0.0:5353 and answers a unicast question through the
    socket it came in on, so a query from elsewhere could be answered on an
    interface we were not told to use.  IP_MULTICAST_ALL=0 keeps multicast to
    the groups this socket joined; bound to ``lo``, nothing else reaches it.
    """
    await zc.async_wait_for_start()
    if sys.platform != "linux":
        if loopback_only:
            log.warning("cannot confine mDNS to loopback on %s", sys.platform)
        return
    for reader in zc.engine.readers:
        sock = reader.sock
        if (
            sock.family != socket.AF_INET
            or not ipaddress.ip_address(sock.getsockname()[0]).is_unspecified
        ):
            continue
        try:
            sock.setsockopt(socket.IPPROTO_IP, _IP_MULTICAST_ALL, 0)
            if loopback_only:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo")
        except OSError as exc:
            if loopback_only:
                raise LocalError(f"cannot confine mDNS to loopback: {exc.strerror}") from exc
            log.debug("IP_MULTICAST_ALL not set: %s", exc)


async def _start_browser(zc: Zeroconf, types: list[str], forward: _Forward) -> AsyncServiceBrowser:
    return AsyncServiceBrowser(zc, types, handlers=[forward.on_change])


async def _fetch(zc: Zeroconf, service_type: str, name: str) -> AsyncServiceInfo | None:
    info = AsyncServiceInfo(service_type, name)
    return info if await info.async_request(zc, RESOLVE_TIMEOUT_MS) else None


async def _probe_and_announce(zc: Zeroconf, info: ServiceInfo) -> str:
    """Claim ``info.name`` (renaming ``name-2``, ``-3``... on conflict), then announce it.

    Runs on zeroconf's loop; returns the name registered.
    """
    await zc.async_wait_for_start()
    await asyncio.sleep(secrets.randbelow(251) / 1000)
    base = info.name[: -len(info.type) - 1]
    suffix = 2
    probes = 0
    while True:
        if zc.cache.current_entry_with_name_and_alias(info.type, info.name):
            if suffix > MAX_RENAMES:
                raise LocalError(f"no free DNS-SD name near {base!r}")
            info.name = f"{base}-{suffix}.{info.type}"
            suffix += 1
            probes = 0
            continue
        if probes == PROBES:
            break
        zc.async_send(zc.generate_service_query(info))
        probes += 1
        await asyncio.sleep(PROBE_INTERVAL_S)
    broadcast = asyncio.ensure_future(
        await zc.async_register_service(info, cooperating_responders=True)
    )
    try:
        await broadcast
    except asyncio.CancelledError:
        broadcast.cancel()  # no announcement may follow the goodbye
        raise
    return info.name


def _query(service_type: str) -> DNSOutgoing:
    """A question without known answers: every responder of the type answers."""
    out = DNSOutgoing(_FLAGS_QUERY)
    out.add_question(DNSQuestion(service_type, _TYPE_PTR, _CLASS_IN))
    return out


def _check_service_type(service_type: str) -> str:
    try:
        service_type_name(service_type)
    except BadTypeInNameException as exc:
        raise ValueError(f"bad service type {service_type!r}: {exc}") from None
    return service_type


# -- the service ----------------------------------------------------------------


class Discovery:
    """Advertise this node and keep the tables of nodes and mics nearby.

    ``interfaces`` are IPv4 addresses of this machine (``lan_interfaces()``
    for real use; 127.0.0.1 or namespace addresses in tests).  ``http_port`` is
    also the SRV port; ``p2p_port`` None means the node does not federate.
    """

    def __init__(
        self,
        *,
        node_id: str,
        name: str,
        http_port: int,
        p2p_port: int | None,
        interfaces: Sequence[str],
        service_type: str = SERVICE_TYPE,
        mic_service_type: str = MIC_SERVICE_TYPE,
        clock: Callable[[], int] = wall_ms,
        ttl_s: float = TTL_S,
        refresh_s: float = REFRESH_S,
        advertise: bool = True,
    ) -> None:
        if not is_hex32(node_id):
            raise ValueError(f"not a node id: {node_id[:20]!r}")
        if not 1 <= http_port <= 65535 or not 0 <= (p2p_port or 0) <= 65535:
            raise ValueError(f"bad ports {http_port}, {p2p_port}")
        if not interfaces:
            raise ValueError("discovery needs at least one interface address")
        parsed = [ipaddress.IPv4Address(a) for a in interfaces]  # ValueError on junk
        if service_type.lower() == mic_service_type.lower():
            raise ValueError("the node and mic service types must differ")
        self.node_id = node_id
        self.name = name
        self.http_port = http_port
        self.p2p_port = p2p_port
        self.interfaces = [str(a) for a in parsed]
        self.service_type = _check_service_type(service_type)
        self.mic_service_type = _check_service_type(mic_service_type)
        self.advertise = advertise
        self._clock = clock
        self._ttl_ms = int(ttl_s * 1000)
        self._refresh_s = refresh_s
        self._loopback_only = all(a.is_loopback for a in parsed)
        self._nodes: dict[str, NearbyNode] = {}
        self._mics: dict[str, NearbyMic] = {}
        self._pending: dict[str, object] = {}
        self._refused: dict[str, int] = {}
        self._limiter = trio.CapacityLimiter(RESOLVE_CONCURRENCY)
        self._changed = trio.Event()
        self._registered = trio.Event()
        self.service_name: str | None = None
        """The instance name registered (after any rename), once registered."""
        self.registration_error: str | None = None

    # -- what the rest of the node reads

    def nearby(self) -> list[NearbyNode]:
        return sorted(self._nodes.values(), key=lambda n: (n.name.casefold(), n.node_id))

    def mics(self) -> list[NearbyMic]:
        return sorted(self._mics.values(), key=lambda m: (m.model.casefold(), m.serial))

    async def wait_changed(self) -> None:
        """Return at the next change of either table (a refreshed last-seen counts)."""
        await self._changed.wait()

    async def wait_registered(self) -> str:
        await self._registered.wait()
        assert self.service_name is not None
        return self.service_name

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- the service

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Browse (reported started at once), register in the background, until cancelled."""
        if not self._loopback_only:
            local = await trio.to_thread.run_sync(_local_ipv4)
            missing = [a for a in self.interfaces if a not in local]
            if missing:
                raise LocalError(f"no network interface has the address {missing[0]}")
        try:
            zc = await trio.to_thread.run_sync(
                partial(Zeroconf, interfaces=list(self.interfaces), ip_version=IPVersion.V4Only)
            )
        except OSError as exc:
            raise LocalError(f"cannot start mDNS on {self.interfaces}: {exc}") from exc
        send, receive = trio.open_memory_channel[tuple[EventKind, str, str]](EVENT_BUFFER)
        forward = _Forward(send)
        types = [self.service_type, self.mic_service_type]
        liveness = _Liveness(types, forward)
        browser: AsyncServiceBrowser | None = None
        try:
            await _on_loop(zc, _confine(zc, self._loopback_only))
            zc.add_listener(liveness, None)
            browser = await _on_loop(zc, _start_browser(zc, types, forward))
            async with trio.open_nursery() as nursery:
                if self.advertise:
                    nursery.start_soon(self._register, zc)
                nursery.start_soon(self._maintain, zc)
                task_status.started()
                async with receive:
                    async for kind, service_type, name in receive:
                        self._handle(nursery, zc, kind, service_type, name)
        finally:
            send.close()
            with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT_S):
                if browser is not None:
                    with suppress(LocalError):
                        await _on_loop(zc, browser.async_cancel())
                with suppress(RuntimeError):  # the loop is already gone
                    zc.remove_listener(liveness)
                # Sends the goodbyes (~0.4 s), then stops zeroconf's thread.
                await trio.to_thread.run_sync(zc.close, abandon_on_cancel=True)

    async def _register(self, zc: Zeroconf) -> None:
        info = ServiceInfo(
            self.service_type,
            f"{instance_label(self.name, self.node_id)}.{self.service_type}",
            port=self.http_port,
            properties=txt_record(self.node_id, self.name, self.http_port, self.p2p_port),
            addresses=[socket.inet_aton(a) for a in self.interfaces],
            server=f"talas-{self.node_id[:16]}.local.",
        )
        try:
            self.service_name = await _on_loop(zc, _probe_and_announce(zc, info))
        except (ZeroconfError, LocalError, OSError) as exc:
            # Browsing goes on: this node only stays unlisted elsewhere.
            self.registration_error = f"{type(exc).__name__}: {exc}"
            log.warning("mDNS registration failed: %s", self.registration_error)
            return
        self._registered.set()

    def _table(self, service_type: str) -> tuple[dict[str, Any], int]:
        if service_type == self.mic_service_type:
            return self._mics, MAX_MICS
        return self._nodes, MAX_NODES

    def _handle(
        self, nursery: trio.Nursery, zc: Zeroconf, kind: EventKind, service_type: str, name: str
    ) -> None:
        table, limit = self._table(service_type)
        key = name.lower()
        if self.service_name is not None and key == self.service_name.lower():
            return  # our own records, echoed back
        if kind == "gone":
            self._pending.pop(key, None)
            self._refused.pop(key, None)
            if table.pop(key, None) is not None:
                self._notify()
            return
        now = self._clock()
        entry = table.get(key)
        if entry is not None:
            table[key] = replace(entry, last_seen_ms=now)
            self._notify()
            if kind != "updated":  # an update may carry new ports or a new name
                return
        elif len(table) + len(self._pending) >= limit:
            return
        refused = self._refused.get(key)
        if key in self._pending or (kind == "seen" and refused and now - refused < RETRY_MS):
            return
        self._pending[key] = token = object()
        nursery.start_soon(self._resolve, zc, service_type, name, key, token)

    async def _resolve(
        self, zc: Zeroconf, service_type: str, name: str, key: str, token: object
    ) -> None:
        info: AsyncServiceInfo | None = None
        async with self._limiter:
            try:
                with trio.move_on_after(RESOLVE_TIMEOUT_MS / 1000 + 1):
                    info = await _on_loop(zc, _fetch(zc, service_type, name))
            except (ZeroconfError, ValueError, LocalError) as exc:  # hostile names among them
                log.debug("cannot resolve %r: %s", name, exc)
        if self._pending.get(key) is not token:
            return  # gone meanwhile, or resolved again
        del self._pending[key]
        now = self._clock()
        table, _ = self._table(service_type)
        try:
            if info is None:
                raise AdvertisementError("no answer")
            addresses = info.parsed_addresses(IPVersion.V4Only)
            entry: NearbyNode | NearbyMic
            if service_type == self.mic_service_type:
                mic = parse_mic(info.properties, addresses, info.port)
                old = table.get(key)
                entry = NearbyMic(
                    serial=mic.serial,
                    model=mic.model,
                    firmware=mic.firmware,
                    addresses=mic.addresses,
                    port=mic.port,
                    first_seen_ms=old.first_seen_ms if old else now,
                    last_seen_ms=now,
                    service=name,
                )
            else:
                ad = parse_advertisement(info.properties, addresses, info.port)
                if ad.node_id == self.node_id:
                    raise AdvertisementError("this node")
                old = table.get(key)
                entry = NearbyNode(
                    node_id=ad.node_id,
                    name=ad.name,
                    version=ad.version,
                    addresses=ad.addresses,
                    http_port=ad.http_port,
                    p2p_port=ad.p2p_port,
                    first_seen_ms=old.first_seen_ms if old else now,
                    last_seen_ms=now,
                    service=name,
                )
        except AdvertisementError as exc:
            log.debug("ignoring %r: %s", name, exc)
            self._refused[key] = now
            if table.pop(key, None) is not None:
                self._notify()
            return
        self._refused.pop(key, None)
        table[key] = entry
        self._notify()

    async def _maintain(self, zc: Zeroconf) -> None:
        """Drop entries that stopped answering; ask again before they would."""
        while True:
            await trio.sleep(self._refresh_s)
            now = self._clock()
            for service_type in (self.service_type, self.mic_service_type):
                table, _ = self._table(service_type)
                dead = [k for k, e in table.items() if now - e.last_seen_ms > self._ttl_ms]
                for key in dead:
                    del table[key]
                if dead:
                    self._notify()
                if any(now - e.last_seen_ms > self._ttl_ms // 2 for e in table.values()):
                    zc.send(_query(service_type))
            self._refused = {k: t for k, t in self._refused.items() if now - t < RETRY_MS}
