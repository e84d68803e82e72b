"""Discovery: parsing hostile records, pairing codes, and live mDNS on 127.0.0.1 only.

Every live test browses a service type unique to the run, so other processes
on the host advertising ``_talas._tcp`` cannot interfere (nor see us).
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
import trio
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from node.discovery import (
    MAX_ADDRESSES,
    AdvertisementError,
    Discovery,
    _confine,
    _on_loop,
    clean_name,
    instance_label,
    lan_interfaces,
    pairing_code,
    parse_advertisement,
    parse_mic,
    txt_record,
)
from node.errors import LocalError
from tests.netns import agent_command, started

ID_A = "a" * 64
ID_B = "0123456789abcdef" * 4
LOOPBACK = "127.0.0.1"


def txt(**fields: str | bytes | None) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() if isinstance(v, str) else v for k, v in fields.items()}


def good(**changes: str | bytes | None) -> dict[bytes, bytes | None]:
    fields: dict[str, str | bytes | None] = {
        "id": ID_A, "v": "1", "name": "Studio", "http": "8765", "p2p": "8766",
    }  # fmt: skip
    fields.update(changes)
    return txt(**{k: v for k, v in fields.items() if v != "<drop>"})


# -- parsing ----------------------------------------------------------------------


def test_own_record_reads_back() -> None:
    ad = parse_advertisement(
        {k.encode(): v.encode() for k, v in txt_record(ID_B, "Band", 8765, None).items()},
        [LOOPBACK],
        8765,
    )
    assert (ad.node_id, ad.version, ad.name, ad.http_port, ad.p2p_port) == (
        ID_B, 1, "Band", 8765, None,
    )  # fmt: skip
    assert ad.addresses == (LOOPBACK,)


def test_good_record() -> None:
    ad = parse_advertisement(good(), ["10.0.0.7", "fe80::1", "10.0.0.7", "junk"], 8765)
    assert ad.p2p_port == 8766
    assert ad.addresses == ("10.0.0.7",)  # IPv4 only, deduplicated, junk dropped


HOSTILE: list[tuple[str, dict[bytes, bytes | None]]] = [
    ("no id", good(id="<drop>")),
    ("short id", good(id="ab" * 31)),
    ("upper-case id", good(id="A" * 64)),
    ("non-hex id", good(id="g" * 64)),
    ("id without a value", good(id=None)),
    ("no version", good(v="<drop>")),
    ("version 0", good(v="0")),
    ("signed version", good(v="+1")),
    ("version with space", good(v=" 1")),
    ("leading zero", good(http="08765")),
    ("port too big", good(http="65536")),
    ("negative port", good(p2p="-1")),
    ("exponent port", good(http="1e3")),
    ("non-ASCII digits", good(http="٨٧٦٥")),
    ("http port 0", good(http="0")),
    ("no p2p", good(p2p="<drop>")),
    ("oversize value", good(name="x" * 300)),
    ("name not UTF-8", good(name=b"\xff\xfe")),
    ("key twice", {**good(), b"ID": ID_B.encode()}),
    ("too many keys", {**good(), **{f"k{i}".encode(): b"1" for i in range(40)}}),
    ("non-ASCII key", {**good(), "ключ".encode(): b"1"}),
]


@pytest.mark.parametrize(("label", "record"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_records_refused(label: str, record: dict[bytes, bytes | None]) -> None:
    with pytest.raises(AdvertisementError):
        parse_advertisement(record, ["10.0.0.7"], 8765)


def test_values_of_the_wrong_type_refused() -> None:
    record: Any = {"id": ID_A}
    with pytest.raises(AdvertisementError):
        parse_advertisement(record, ["10.0.0.7"], 8765)


@pytest.mark.parametrize(
    "addresses", [[], ["224.0.0.251"], ["0.0.0.0"], ["255.255.255.255"], ["::1"], ["nope"]]
)
def test_no_usable_address_refused(addresses: list[str]) -> None:
    with pytest.raises(AdvertisementError, match="address"):
        parse_advertisement(good(), addresses, 8765)


@pytest.mark.parametrize("port", [0, 65536, None, -1])
def test_bad_srv_port_refused(port: int | None) -> None:
    with pytest.raises(AdvertisementError):
        parse_advertisement(good(), ["10.0.0.7"], port)


def test_addresses_capped() -> None:
    many = [f"10.0.0.{i}" for i in range(1, 50)]
    assert len(parse_advertisement(good(), many, 1).addresses) == MAX_ADDRESSES


def test_names_sanitised_and_bounded() -> None:
    hostile = "Evil\u202e\u0000\nBand\u200b\u00a0 \ue000" + "x" * 500
    ad = parse_advertisement(good(name=hostile[:200]), ["10.0.0.7"], 1)
    assert ad.name.startswith("EvilBand x")
    assert len(ad.name) == 64
    assert all(c.isprintable() for c in ad.name)
    assert parse_advertisement(good(name="\u202e\t"), ["10.0.0.7"], 1).name == "node aaaaaaaa"
    assert clean_name("  a \u2028 b  ") == "a b"


def test_instance_label_fits_a_dns_label() -> None:
    label = instance_label("Ünïcödé.Band\\" * 20, ID_B)
    assert len(label.encode()) <= 63 - len("-20")
    assert label.endswith(" 01234567")
    assert "." not in label and "\\" not in label
    assert instance_label("\u202e", ID_B) == "talas 01234567"


def test_mic_records() -> None:
    mic = parse_mic(txt(serial="SN-0042", model="Talas Mic\u202e One", firmware="1.2.3+b4"),
                    ["10.0.0.9"], 7000)  # fmt: skip
    assert (mic.serial, mic.model, mic.firmware, mic.port) == ("SN-0042", "Talas Mic One",
                                                               "1.2.3+b4", 7000)  # fmt: skip
    for bad in (
        txt(serial="../../etc", model="m", firmware="1"),
        txt(serial="SN 1", model="m", firmware="1"),
        txt(serial="S" * 65, model="m", firmware="1"),
        txt(serial="SN1", model="\u0000", firmware="1"),
        txt(serial="SN1", model="m", firmware="1;rm"),
        txt(serial="SN1", model="m"),
    ):
        with pytest.raises(AdvertisementError):
            parse_mic(bad, ["10.0.0.9"], 7000)
    with pytest.raises(AdvertisementError):
        parse_mic(txt(serial="SN1", model="m", firmware="1"), ["10.0.0.9"], 0)


def test_lan_interfaces_lists_only_non_loopback_ipv4() -> None:
    """Listing only: the tests never run mDNS on these."""
    for address in lan_interfaces():
        assert socket.inet_aton(address) and not address.startswith("127.")


# -- pairing codes ----------------------------------------------------------------


def test_pairing_code() -> None:
    code = pairing_code(ID_A, ID_B)
    assert re.fullmatch(r"\d{3} \d{3}", code)
    assert code == pairing_code(ID_B, ID_A)  # both people see the same
    assert code == "098 496"  # pinned: other implementations must agree
    assert pairing_code(ID_A, "b" * 64) != code
    assert pairing_code(ID_A, ID_B, binding=b"nonces") != code
    codes = {pairing_code(ID_A, secrets.token_hex(32)) for _ in range(200)}
    assert len(codes) > 190  # spread over the million codes
    for bad in ("A" * 64, "ab", ID_A + "00"):
        with pytest.raises(ValueError):
            pairing_code(ID_A, bad)


# -- live, on 127.0.0.1 -----------------------------------------------------------


def unique_types() -> tuple[str, str]:
    tag = secrets.token_hex(4)
    return f"_talas-{tag}._tcp.local.", f"_tmic-{tag}._tcp.local."


def make(name: str, types: tuple[str, str], node_id: str | None = None, **kw: Any) -> Discovery:
    return Discovery(
        node_id=node_id or secrets.token_hex(32),
        name=name,
        http_port=kw.pop("http_port", 8765),
        p2p_port=kw.pop("p2p_port", None),
        interfaces=[LOOPBACK],
        service_type=types[0],
        mic_service_type=types[1],
        **kw,
    )


async def until(check: Callable[[], bool], seconds: float) -> None:
    with trio.fail_after(seconds):
        while not check():  # noqa: ASYNC110 - checks span several tables
            await trio.sleep(0.02)


def ids(discovery: Discovery) -> set[str]:
    return {n.node_id for n in discovery.nearby()}


async def test_two_nodes_see_each_other_and_one_leaves() -> None:
    types = unique_types()
    a = make("alpha", types, p2p_port=8766)
    b = make("beta", types, http_port=9000)
    b_scope = trio.CancelScope()

    async def run_b(task_status: trio.TaskStatus[None]) -> None:
        with b_scope:
            await b.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        began = time.perf_counter()
        await nursery.start(a.run)
        assert time.perf_counter() - began < 0.5  # started while registration goes on
        assert a.service_name is None
        await nursery.start(run_b)
        await until(lambda: ids(a) == {b.node_id} and ids(b) == {a.node_id}, 5)
        (seen_b,) = a.nearby()
        assert (seen_b.name, seen_b.http_port, seen_b.p2p_port) == ("beta", 9000, None)
        assert seen_b.addresses == (LOOPBACK,)
        assert seen_b.version == 1
        assert seen_b.service == await b.wait_registered()
        assert seen_b.service == f"beta {b.node_id[:8]}.{types[0]}"
        assert seen_b.first_seen_ms <= seen_b.last_seen_ms
        assert b.nearby()[0].p2p_port == 8766
        b_scope.cancel()  # b says goodbye
        await until(lambda: not a.nearby(), 3)
        nursery.cancel_scope.cancel()


async def test_mics_listed_and_hostile_records_ignored() -> None:
    types = unique_types()
    listener = make("listener", types)
    tag = secrets.token_hex(3)

    def info(service_type: str, label: str, properties: dict[str, str]) -> ServiceInfo:
        return ServiceInfo(service_type, f"{label}.{service_type}", port=7000,
                           properties=properties, addresses=[socket.inet_aton(LOOPBACK)],
                           server=f"t-{tag}.local.")  # fmt: skip

    mic = info(types[1], "mic", {"serial": "SN-0042", "model": "Mic One", "firmware": "1.0"})
    hostile = [
        info(types[1], "bad mic", {"serial": "../x", "model": "m", "firmware": "1"}),
        info(types[0], "bad id", {"id": "zz", "v": "1", "http": "1", "p2p": "0"}),
        info(types[0], "bad port", {"id": ID_A, "v": "1", "http": "99999", "p2p": "0"}),
    ]
    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.run)
            async with trio.open_nursery() as registering:
                for record in [*hostile, mic]:  # no probing: names unique to the run
                    register = partial(zc.register_service, record, cooperating_responders=True)
                    registering.start_soon(trio.to_thread.run_sync, register)
            await until(lambda: bool(listener.mics()) and len(listener._refused) == 3, 5)
            (seen,) = listener.mics()
            assert (seen.serial, seen.model, seen.firmware, seen.port) == (
                "SN-0042", "Mic One", "1.0", 7000,
            )  # fmt: skip
            assert seen.addresses == (LOOPBACK,)
            assert len(listener.mics()) == 1
            assert listener.nearby() == []
            await trio.to_thread.run_sync(zc.unregister_service, mic)
            await until(lambda: not listener.mics(), 3)
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(zc.close)


async def test_silent_node_expires_and_is_listed_again_when_back() -> None:
    """SIGKILL sends no goodbye: the entry expires after the TTL, not 75 min later."""
    types = unique_types()
    listener = make("listener", types, ttl_s=1.0, refresh_s=0.2)
    node_id = secrets.token_hex(32)
    command = agent_command(LOOPBACK, "--node-id", node_id, "--name", "crashy",
                            "--service-type", types[0], "--mic-service-type", types[1])  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        async with started(command, "agent") as agent:
            await until(lambda: node_id in ids(listener), 10)
            await trio.sleep(2.5)  # > 2 TTLs: refresh queries keep a live node listed
            assert node_id in ids(listener)
            agent.process.kill()
            await until(lambda: node_id not in ids(listener), 1.0 + 0.2 + 1)
        # Same name again: zeroconf still caches the old pointer and reports
        # nothing new; the records themselves bring it back.
        async with started(command, "agent again"):
            await until(lambda: node_id in ids(listener), 10)
        nursery.cancel_scope.cancel()


async def test_loopback_discovery_is_confined_to_lo() -> None:
    """Nothing from another interface reaches a loopback-only zeroconf: it answers none there."""
    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    )
    try:
        await _on_loop(zc, _confine(zc, True))
        wildcard = [r.sock for r in zc.engine.readers if r.sock.getsockname()[0] == "0.0.0.0"]
        assert wildcard
        for sock in wildcard:
            assert (
                sock.getsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, 16).rstrip(b"\0")
                == b"lo"
            )
            assert sock.getsockopt(socket.IPPROTO_IP, 49) == 0  # IP_MULTICAST_ALL
    finally:
        await trio.to_thread.run_sync(zc.close)


async def test_bad_configuration_refused() -> None:
    types = unique_types()
    for interfaces in ([], ["eth0"], ["::1"]):
        with pytest.raises(ValueError):
            Discovery(node_id=ID_A, name="x", http_port=1, p2p_port=None, interfaces=interfaces)
    with pytest.raises(ValueError):
        make("x", ("_nope._tcp.local", types[1]))
    with pytest.raises(ValueError):
        make("x", (types[0], types[0]))
    absent = Discovery(node_id=ID_A, name="x", http_port=1, p2p_port=None,
                       interfaces=["10.255.254.253"], service_type=types[0])  # fmt: skip
    with pytest.raises(LocalError, match=r"10\.255\.254\.253"):
        await absent.run()
