"""Live chat between real nodes on loopback, over real WebRTC data channels.

Nodes federate as in tests/test_federation.py; aiortc's host candidates are
pinned to 127.0.0.1 (aioice leaves loopback out by default), so ICE, DTLS
and SCTP all run on loopback.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from node import peerstore
from node.daemon import now_ms
from node.errors import LinkBroken, LinkError
from node.live import LiveManager, channels
from node.live.chat import (
    MAX_TEXT,
    BadChatFrame,
    Batch,
    ChatMessage,
    Frame,
    Join,
    Want,
    encode_frame,
    parse_frame,
    save_room,
    store_remote,
)
from node.replication import MAX_INVALID_SIGNALS, SIGNAL_OUTBOX, SessionStats
from node.store import Store
from protocol.keys import SigningKey
from protocol.messages import FramingError, Ping, Pong, SignalMessage, chunks, decode, encode
from protocol.signalling import MAX_SIGNAL_BYTES, SignalKind, sign_signal
from tests.processes import running_node
from tests.test_federation import raw_link
from tests.webapp import WebNode, web_node

ROOM = "collective"


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"])


def live(web: WebNode) -> LiveManager:
    federation = web.node.federation
    assert federation is not None and federation.live is not None
    return federation.live


def node_id(web: WebNode) -> str:
    return web.node.node_id


async def wait_until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    with trio.fail_after(seconds):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.02)


def linked(a: WebNode, b: WebNode) -> bool:
    fa, fb = a.node.federation, b.node.federation
    return (
        fa is not None
        and fb is not None
        and node_id(b) in fa.sessions
        and node_id(a) in fb.sessions
    )


async def peer(a: WebNode, b: WebNode) -> None:
    """``a`` dials ``b`` (kept in ``a``'s database); wait for the link."""
    address = b.node.addresses["p2p"]
    await trio.to_thread.run_sync(peerstore.add_peer, a.node.store, address, None, now_ms())
    await wait_until(partial(linked, a, b))


@asynccontextmanager
async def owner(web: WebNode) -> AsyncIterator[httpx.AsyncClient]:
    async with web.client(headers={"Authorization": f"Bearer {web.node.api_token}"}) as client:
        yield client


async def say(client: httpx.AsyncClient, text: str, room: str = ROOM) -> dict[str, Any]:
    response = await client.post(f"/api/v1/chat/rooms/{room}/messages", json={"text": text})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def history(client: httpx.AsyncClient, room: str = ROOM) -> list[dict[str, Any]]:
    """The whole history, read page by page with the ``after`` cursor."""
    items: list[dict[str, Any]] = []
    after = ""
    for _ in range(100):
        response = await client.get(
            f"/api/v1/chat/rooms/{room}/messages", params={"after": after, "limit": 3}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items += page["items"]
        if page["next"] is None:
            return items
        after = page["next"]
    raise AssertionError("history did not end")


def summary(items: list[dict[str, Any]]) -> list[tuple[int, str, str, str]]:
    return [(m["lamport"], m["author"], m["id"], m["text"]) for m in items]


async def texts_of(client: httpx.AsyncClient, room: str = ROOM) -> set[str]:
    """The texts held in ``room``; none while the node is not in it (yet)."""
    rooms = (await client.get("/api/v1/chat/rooms")).json()["rooms"]
    if room not in {r["room"] for r in rooms}:
        return set()
    return {m["text"] for m in await history(client, room)}


async def wait_for_texts(
    client: httpx.AsyncClient, texts: set[str], seconds: float = 10, room: str = ROOM
) -> None:
    with trio.fail_after(seconds):
        while not texts <= await texts_of(client, room):  # noqa: ASYNC110 - another node's state
            await trio.sleep(0.05)


async def same_history(*clients: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every node holds the same messages in the same order, each once."""
    histories = [summary(await history(client)) for client in clients]
    first = histories[0]
    for other in histories[1:]:
        assert other == first
    assert first == sorted(first), "not in (lamport, author, id) order"
    assert len({entry[2] for entry in first}) == len(first), "a message is held twice"
    return await history(clients[0])


# -- two nodes ------------------------------------------------------------------------


async def test_two_nodes_chat_over_a_data_channel(tmp_path: Path) -> None:
    async with (
        web_node(tmp_path, "a", p2p=True) as a,
        web_node(tmp_path, "b", p2p=True) as b,
        owner(a) as ca,
        owner(b) as cb,
    ):
        assert not live(a).channels.rtc_started  # nothing live yet: aiortc not loaded
        stranger = "ab" * 32
        refused = await ca.post("/api/v1/chat/rooms", json={"room": ROOM, "peers": [stranger]})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "offline"
        await peer(a, b)
        for bad in ({"room": "No Caps"}, {"room": ROOM, "peers": "x"}, {"room": ""}):
            assert (await ca.post("/api/v1/chat/rooms", json=bad)).status_code == 400
        created = await ca.post("/api/v1/chat/rooms", json={"room": ROOM, "peers": [node_id(b)]})
        assert created.status_code == 201, created.text
        assert {m["node_id"] for m in created.json()["members"]} == {node_id(a), node_id(b)}

        first = await say(ca, "hello <b>B</b> & co")
        await wait_for_texts(cb, {"hello <b>B</b> & co"})
        assert live(a).channels.is_open(node_id(b)) and live(b).channels.is_open(node_id(a))
        rooms = (await cb.get("/api/v1/chat/rooms")).json()["rooms"]
        assert [r["room"] for r in rooms] == [ROOM]  # B joined when A added it
        assert all(m["connected"] for m in rooms[0]["members"])

        for i in range(4):
            await say(cb, f"from b {i}")
            await say(ca, f"from a {i}")
        await wait_for_texts(ca, {f"from b {i}" for i in range(4)})
        await wait_for_texts(cb, {f"from a {i}" for i in range(4)})
        items = await same_history(ca, cb)
        assert len(items) == 9 and items[0]["id"] == first["id"]
        assert items[0]["text"] == "hello <b>B</b> & co"  # JSON carries it as-is
        lamports = [m["lamport"] for m in items]
        assert lamports == sorted(lamports) and lamports[-1] >= 5  # clocks advanced on receive

        # The DTLS peer of each side is the certificate the other side signed.
        for web in (a, b):
            stats = live(web).channels.stats
            assert stats.opened == 1 and stats.fingerprint_mismatches == 0

        # Validation and errors, in the API's shape.
        too_long = await ca.post(
            f"/api/v1/chat/rooms/{ROOM}/messages", json={"text": "x" * (MAX_TEXT + 1)}
        )
        assert too_long.status_code == 400
        assert (
            await ca.post(f"/api/v1/chat/rooms/{ROOM}/messages", json={"text": " "})
        ).status_code == 400
        missing = await ca.get("/api/v1/chat/rooms/nowhere/messages")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        assert (await ca.get(f"/api/v1/chat/rooms/{ROOM}/messages?after=zz")).status_code == 400
        async with a.client() as anonymous:
            assert (await anonymous.get("/api/v1/chat/rooms")).status_code == 401

        # Per-user rate limit; a guest may read but not post.
        await a.add_user("mia", "member")
        await a.add_user("gus", "guest")
        async with a.token_client("mia") as mia, a.token_client("gus") as gus:
            statuses = [
                (await mia.post(f"/api/v1/chat/rooms/{ROOM}/messages", json={"text": f"{i}"}))
                for i in range(25)
            ]
            codes = [r.status_code for r in statuses]
            assert codes[:20] == [201] * 20 and 429 in codes[20:]
            assert statuses[0].json()["author_name"] == "mia"
            assert (await gus.get(f"/api/v1/chat/rooms/{ROOM}/messages")).status_code == 200
            denied = await gus.post(f"/api/v1/chat/rooms/{ROOM}/messages", json={"text": "hi"})
            assert denied.status_code == 403
            await say(ca, "owner is not limited by mia")
        await wait_for_texts(cb, {"19", "owner is not limited by mia"})
        await same_history(ca, cb)


async def test_chat_needs_the_peer_to_peer_listener(tmp_path: Path) -> None:
    async with web_node(tmp_path, "solo") as solo, owner(solo) as client:
        response = await client.get("/api/v1/chat/rooms")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "not_federating"


# -- three nodes ----------------------------------------------------------------------


async def test_three_nodes_share_a_room_and_survive_one_leaving(tmp_path: Path) -> None:
    async with (
        web_node(tmp_path, "a", p2p=True) as a,
        web_node(tmp_path, "b", p2p=True) as b,
        owner(a) as ca,
        owner(b) as cb,
    ):
        async with web_node(tmp_path, "c", p2p=True) as c, owner(c) as cc:
            await peer(a, b)
            await peer(a, c)
            await peer(b, c)
            jam = "jam-42"
            response = await ca.post(
                "/api/v1/chat/rooms", json={"room": jam, "peers": [node_id(b), node_id(c)]}
            )
            assert response.status_code == 201
            await say(ca, "a opens the jam", jam)
            for client in (cb, cc):  # each joined when A's join reached it
                await wait_for_texts(client, {"a opens the jam"}, room=jam)
            # B and C learn of each other from A's join and connect directly.
            await wait_until(lambda: live(b).channels.is_open(node_id(c)))
            await say(cb, "b here", jam)
            await say(cc, "c here", jam)
            for client in (ca, cb, cc):
                await wait_for_texts(client, {"a opens the jam", "b here", "c here"}, room=jam)
            histories = [summary(await history(client, jam)) for client in (ca, cb, cc)]
            assert histories[0] == histories[1] == histories[2] == sorted(histories[0])
        # C left (its node stopped): A and B chat on.
        await wait_until(lambda: not live(a).channels.is_open(node_id(c)))
        await say(ca, "c left", jam)
        await say(cb, "still here", jam)
        for client in (ca, cb):
            await wait_for_texts(client, {"c left", "still here"}, room=jam)
        after = [summary(await history(client, jam)) for client in (ca, cb)]
        assert after[0] == after[1] and len(after[0]) == 5
        assert live(a).channels.is_open(node_id(b))


# -- reconnects -----------------------------------------------------------------------


async def test_messages_sent_while_the_channel_is_down_arrive_once_in_order(
    tmp_path: Path,
) -> None:
    async with (
        web_node(tmp_path, "a", p2p=True) as a,
        web_node(tmp_path, "b", p2p=True) as b,
        owner(a) as ca,
        owner(b) as cb,
    ):
        await peer(a, b)
        for web in (a, b):
            live(web).channels.ring_timeout = 0.5
            live(web).channels.open_timeout = 1.0
        await ca.post("/api/v1/chat/rooms", json={"room": ROOM, "peers": [node_id(b)]})
        await say(ca, "before")
        await wait_for_texts(cb, {"before"})

        # Cut the data channel and keep it down: no signal leaves either node.
        def cut(wire: bytes) -> bytes | None:
            return None

        for web in (a, b):
            live(web).channels.wire_hook = cut
        live(a).channels.disconnect(node_id(b))
        await wait_until(lambda: not live(b).channels.is_open(node_id(a)))
        sent = [await say(ca, "a while down 1"), await say(cb, "b while down")]
        sent.append(await say(ca, "a while down 2"))
        # The nodes try to reconnect, and fail while no signal gets through.
        await wait_until(lambda: any(live(web).channels.stats.failed >= 1 for web in (a, b)))
        assert "a while down 1" not in await texts_of(cb)

        for web in (a, b):
            live(web).channels.wire_hook = None
        await wait_for_texts(cb, {"a while down 1", "a while down 2"}, seconds=15)
        await wait_for_texts(ca, {"b while down"}, seconds=15)
        items = await same_history(ca, cb)
        assert [m["text"] for m in items].count("a while down 1") == 1
        # A's two messages keep their order; B's concurrent one sorts the same everywhere.
        texts = [m["text"] for m in items]
        assert texts.index("a while down 1") < texts.index("a while down 2")
        assert {m["id"] for m in sent} <= {m["id"] for m in items}


async def test_messages_sent_while_the_peer_is_offline_arrive_after_it_returns(
    tmp_path: Path,
) -> None:
    async with web_node(tmp_path, "a", p2p=True) as a, owner(a) as ca:
        async with web_node(tmp_path, "b", p2p=True) as b, owner(b) as cb:
            await peer(b, a)  # B dials A: B finds A again after a restart
            await ca.post("/api/v1/chat/rooms", json={"room": ROOM, "peers": [node_id(b)]})
            await say(ca, "a before")
            await wait_for_texts(cb, {"a before"})
            await say(cb, "b before")
            await wait_for_texts(ca, {"b before"})
            b_id = node_id(b)
        # B is gone: its link and its data channel with it.
        await wait_until(lambda: not live(a).channels.is_open(b_id))
        offline = [await say(ca, f"while b is offline {i}") for i in range(3)]
        async with web_node(tmp_path, "b", p2p=True) as b, owner(b) as cb:
            await wait_for_texts(cb, {m["text"] for m in offline}, seconds=15)
            await say(cb, "b is back")
            await wait_for_texts(ca, {"b is back"})
            items = await same_history(ca, cb)
            expected = ["a before", "b before", *(m["text"] for m in offline), "b is back"]
            assert [m["text"] for m in items] == expected
            assert [m["lamport"] for m in items] == [1, 2, 3, 4, 5, 6]


# -- tampering ------------------------------------------------------------------------


def flip_fingerprint(wire: bytes) -> bytes:
    """One hex digit of the SDP's fingerprint changed; still a well-formed fingerprint."""
    found = re.search(rb"a=fingerprint:sha-256 ([0-9A-F])", wire)
    if found is None:
        return wire  # a bye
    digit = found.group(1)
    swapped = b"0" if digit != b"0" else b"1"
    return wire[: found.start(1)] + swapped + wire[found.end(1) :]


def flip_and_note(tampered: list[bytes], wire: bytes) -> bytes:
    """A wire hook: flip a fingerprint digit in every offer/answer, noting what was sent."""
    changed = flip_fingerprint(wire)
    if changed != wire:
        tampered.append(changed)
    return changed


async def test_a_tampered_signal_is_refused_and_makes_no_connection(tmp_path: Path) -> None:
    async with (
        web_node(tmp_path, "a", p2p=True) as a,
        web_node(tmp_path, "b", p2p=True) as b,
        owner(a) as ca,
        owner(b) as cb,
    ):
        await peer(a, b)
        live(a).channels.ring_timeout = 0.5
        tampered: list[bytes] = []
        live(a).channels.wire_hook = partial(flip_and_note, tampered)
        await ca.post("/api/v1/chat/rooms", json={"room": ROOM, "peers": [node_id(b)]})
        await say(ca, "sent over a tampered offer")
        await wait_until(lambda: live(a).channels.stats.failed >= 1, seconds=10)

        federation = b.node.federation
        assert federation is not None
        session = federation.sessions[node_id(a)]
        assert tampered and session.stats.invalid_signals == len(
            tampered
        )  # counted as misbehaviour
        assert live(b).channels.stats.offers_received == 0  # never reached a call
        assert not live(b).channels.rtc_started  # no peer connection was even made
        assert (await cb.get("/api/v1/chat/rooms")).json()["rooms"] == []

        # The same path untouched connects and delivers what waited.
        live(a).channels.wire_hook = None
        live(a).channels.connect(node_id(b))
        await wait_for_texts(cb, {"sent over a tampered offer"}, seconds=15)


async def test_a_fingerprint_swapped_before_signing_carries_no_media(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A validly signed SDP naming another certificate: DTLS fails, nothing flows."""
    async with (
        web_node(tmp_path, "a", p2p=True) as a,
        web_node(tmp_path, "b", p2p=True) as b,
        owner(a) as ca,
        owner(b) as cb,
    ):
        await peer(a, b)
        for web in (a, b):
            live(web).channels.open_timeout = 1.5
        swapped = ":".join(["AB"] * 32)
        live(a).channels.sdp_hook = partial(
            re.sub, r"a=fingerprint:sha-256 [0-9A-F:]+", f"a=fingerprint:sha-256 {swapped}"
        )
        await ca.post("/api/v1/chat/rooms", json={"room": ROOM, "peers": [node_id(b)]})
        await say(ca, "never delivered this way")
        # B's DTLS refuses A's certificate; B hangs up, so A gives up at once too.
        await wait_until(lambda: all(live(w).channels.stats.failed >= 1 for w in (a, b)))
        assert live(b).channels.stats.offers_received >= 1  # the signature was fine
        assert live(b).channels.stats.opened == 0 and live(a).channels.stats.opened == 0
        assert (await cb.get("/api/v1/chat/rooms")).json()["rooms"] == []

        # Had DTLS let another certificate through, each side's own check closes the channel.
        live(a).channels.sdp_hook = None
        with monkeypatch.context() as patched:
            patched.setattr(channels, "peer_certificate_fingerprint", lambda pc: swapped)
            live(a).channels.connect(node_id(b))
            # The first side to check hangs up (a bye), so the other may not get to check.
            await wait_until(
                lambda: any(live(w).channels.stats.fingerprint_mismatches for w in (a, b))
            )
            assert live(a).channels.stats.opened == live(b).channels.stats.opened == 0
            assert (await cb.get("/api/v1/chat/rooms")).json()["rooms"] == []
        live(a).channels.connect(node_id(b))
        await wait_for_texts(cb, {"never delivered this way"})


# -- aiortc stays out of an idle node -------------------------------------------------


def test_importing_the_node_web_app_and_live_layer_does_not_import_aiortc() -> None:
    code = (
        "import sys, node.daemon, node.live, webui.app, webui.chat_api\n"
        "loaded = [m for m in ('aiortc', 'aioice', 'av', 'pylibsrtp') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr


async def test_an_idle_running_node_has_not_loaded_aiortc(tmp_path: Path) -> None:
    async with running_node(tmp_path / "idle") as running, httpx.AsyncClient() as client:
        with trio.fail_after(10):
            assert (await client.get(running.url + "api/v1/node")).status_code == 200
        maps = await trio.Path(f"/proc/{running.process.pid}/maps").read_text()
        assert "pylibsrtp" not in maps and "/av/" not in maps, "aiortc's libraries are loaded"


# -- the chat protocol without a network ------------------------------------------------


def message(oseq: int, lamport: int, text: str = "x", origin: str = "cd" * 32) -> ChatMessage:
    return ChatMessage(ROOM, origin, oseq, f"{oseq:032x}", "ef" * 32, "n", 0, lamport, text)


def test_frames_round_trip_and_bad_ones_are_refused() -> None:
    frames: list[Frame] = [
        Join(ROOM, frozenset({"ab" * 32, "cd" * 32})),
        Want(ROOM, 7),
        Batch(ROOM, (message(1, 1, "hé \u2603").wire(),), more=True, reply=True),
    ]
    for frame in frames:
        assert parse_frame(encode_frame(frame)) == frame
    bad = [
        "", "[]", '{"t":"want","room":"r","after":-1}', '{"t":"want","room":"R","after":1}',
        '{"t":"want","room":"r","after":1.5}', '{"t":"gossip","room":"r"}',
        '{"t":"join","room":"r","members":[]}', '{"t":"join","room":"r","members":["AB"]}',
        '{"t":"msgs","room":"r","msgs":[1],"more":false,"reply":false}',
        '{"t":"msgs","room":"r","msgs":[],"more":0,"reply":false}',
        '{"t":"want","room":"r","after":1,"after":2}', '{"t":"want","room":"r","after":NaN}',
        '{"t":"want","room":"r","after":1,"x":"\\ud800"}', "x" * 70_000,
    ]  # fmt: skip
    for text in bad:
        with pytest.raises(BadChatFrame):
            parse_frame(text)


def test_store_remote_keeps_origin_order_skips_duplicates_and_stops_at_gaps(
    tmp_path: Path,
) -> None:
    store = Store(tmp_path / "db.sqlite")
    try:
        origin = "cd" * 32
        save_room(store, ROOM, ["ab" * 32, origin], 0)
        first = store_remote(store, ROOM, origin, [message(1, 1), message(2, 2)], 0)
        assert [m.oseq for m in first.stored] == [1, 2] and first.have == 2 and not first.gap
        again = store_remote(store, ROOM, origin, [message(2, 2), message(4, 4)], 0)
        assert again.stored == [] and again.gap and again.have == 2
        jump = store_remote(store, ROOM, origin, [message(3, 10**9)], 0)
        assert jump.refused and jump.have == 2
        reused = ChatMessage(ROOM, origin, 3, message(1, 1).id, "ef" * 32, "n", 0, 3, "x")
        assert store_remote(store, ROOM, origin, [reused], 0).refused
    finally:
        store.close()


# -- the signal message on the peer link ---------------------------------------------------


def test_the_signal_message_frames_envelope_bytes_untouched() -> None:
    envelope = b'{"not": "parsed here"}'
    assert decode(encode(SignalMessage(envelope))) == SignalMessage(envelope)
    assert encode(SignalMessage(envelope))[0] == 0x03
    for bad in (b"", b"x" * (MAX_SIGNAL_BYTES + 1)):
        with pytest.raises(FramingError):
            encode(SignalMessage(bad))
        with pytest.raises(FramingError):
            decode(b"\x03" + bad)
    biggest = encode(SignalMessage(b"x" * MAX_SIGNAL_BYTES))
    assert len(list(chunks(biggest))) <= 3


async def test_signals_are_checked_against_the_link_and_the_replay_cache_outlives_it(
    tmp_path: Path,
) -> None:
    stranger, impostor = SigningKey(os.urandom(32)), SigningKey(os.urandom(32))
    async with web_node(tmp_path, "a", p2p=True) as a:
        federation = a.node.federation
        assert federation is not None
        me = node_id(a)

        def bye(key: SigningKey) -> bytes:
            signal = sign_signal(
                key, kind=SignalKind.BYE, session=secrets.token_hex(16), to=me, sdp="",
                nonce=secrets.token_hex(16), now_ms=now_ms(),
            )  # fmt: skip
            return signal.wire_bytes()

        def stats() -> SessionStats | None:
            session = federation.sessions.get(stranger.id)
            return session.stats if session is not None else None

        genuine = bye(stranger)
        async with raw_link(a.node, stranger) as link:
            await link.send(SignalMessage(genuine))
            await wait_until(lambda: (s := stats()) is not None and s.signals_received == 1)
            assert (s := stats()) is not None and s.invalid_signals == s.dropped_signals == 0
        await wait_until(lambda: stranger.id not in federation.sessions)
        async with raw_link(a.node, stranger) as link:
            await link.send(SignalMessage(genuine))  # a replay on a new link: Replayed
            await wait_until(lambda: (s := stats()) is not None and s.dropped_signals == 1)
            await link.send(SignalMessage(bye(impostor)))  # signed by another node: WrongSender
            await wait_until(lambda: (s := stats()) is not None and s.invalid_signals == 1)
            session = federation.sessions[stranger.id]
            with trio.fail_after(10), pytest.raises(LinkError):  # misbehaviour ends the link
                for _ in range(25):
                    await link.send(SignalMessage(b"{garbage"))
                while True:
                    await link.receive()
        await wait_until(lambda: stranger.id not in federation.sessions)
        assert session.stats.invalid_signals == MAX_INVALID_SIGNALS + 1
        assert not live(a).channels.rtc_started  # no signal ever reached a call


async def test_signals_queue_on_the_link_and_leave_whole(tmp_path: Path) -> None:
    """Sending never blocks the caller nor gets cut half-way when the caller is cancelled."""
    stranger = SigningKey(os.urandom(32))
    async with web_node(tmp_path, "a", p2p=True) as a:
        federation = a.node.federation
        assert federation is not None
        async with raw_link(a.node, stranger) as link:
            await wait_until(lambda: stranger.id in federation.sessions)
            largest = b"x" * MAX_SIGNAL_BYTES  # three chunks on the link
            for delay in range(SIGNAL_OUTBOX):  # the peer reads nothing meanwhile

                async def call(delay: int = delay) -> None:
                    for _ in range(delay):
                        await trio.lowlevel.checkpoint()
                    federation.send_signal(stranger.id, largest)
                    await trio.sleep_forever()  # a call waiting for its answer...

                with trio.move_on_after(0.01):  # ...and given up on
                    await call()
            sent = SIGNAL_OUTBOX
            with pytest.raises(LinkBroken):  # bounded: the outbox, once socket buffers fill
                for _ in range(200):
                    federation.send_signal(stranger.id, largest)
                    sent += 1
                    await trio.sleep(0.001)
            await link.send(Ping(7))
            received, ponged = 0, False
            with trio.fail_after(10):  # every signal arrives whole, and the link still answers
                while received < sent or not ponged:
                    message = await link.receive()
                    ponged = ponged or isinstance(message, Pong)
                    if isinstance(message, SignalMessage):
                        assert message.envelope == largest
                        received += 1
            assert received == sent
