"""Real nodes on loopback federating in one trio test: sync, relay, live push, hostile peers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio_websocket

from node import peerstore
from node.daemon import Node, now_ms, open_node, serve_node
from node.datadir import DataDir
from node.errors import LinkBroken, LinkError, PeerMisbehaved
from node.peerlink import PeerLink, WebSocketTransport, establish, open_websocket_client
from protocol.canonical import JSONValue
from protocol.event import Event, parse_event, sign_event
from protocol.keys import SigningKey
from protocol.messages import (
    Events,
    Goodbye,
    InSync,
    Interest,
    NeedInterest,
    NeedVector,
    Vector,
    Want,
)

LOOPBACK = ("127.0.0.1", 0)


@asynccontextmanager
async def running(root: Path, name: str, p2p_port: int = 0) -> AsyncIterator[Node]:
    """A node with its web and p2p listeners on loopback (port 0 unless told)."""
    async with (
        open_node(DataDir(root / name), name=name) as node,
        trio.open_nursery() as nursery,
    ):
        p2p = ("127.0.0.1", p2p_port)
        await nursery.start(partial(serve_node, node, http=LOOPBACK, p2p=p2p))
        yield node
        nursery.cancel_scope.cancel()


def author_of(node: Node) -> SigningKey:
    return node.author_key("default")


async def post(node: Node, text: str, kind: str = "post", **body: JSONValue) -> Event:
    payload: dict[str, JSONValue] = {"text": text, **body} if kind == "post" else dict(body)
    event = await trio.to_thread.run_sync(
        partial(node.store.append_local, author_of(node), kind=kind, body=payload, now_ms=now_ms())
    )
    node.poke()
    return event


async def follow(node: Node, author: str) -> None:
    await trio.to_thread.run_sync(peerstore.set_follow, node.store, author, True, now_ms())


async def connect(node: Node, other: Node, pinned: str | None = None) -> str:
    address = other.addresses["p2p"]
    await trio.to_thread.run_sync(peerstore.add_peer, node.store, address, pinned, now_ms())
    return address


async def wait_until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll state another task or process changes (the store has no change events)."""
    with trio.fail_after(seconds):
        while not check():  # noqa: ASYNC110
            await trio.sleep(0.02)


def holds(node: Node, event_id: str) -> bool:
    return node.store.get(event_id) is not None


async def test_three_nodes_relay_every_kind_and_tombstone_deletes(tmp_path: Path) -> None:
    async with (
        running(tmp_path, "a") as a,
        running(tmp_path, "b") as b,
        running(tmp_path, "c") as c,
    ):
        c_author, b_author = author_of(c).id, author_of(b).id
        # A follows B and C but only knows B; B follows C and knows C.
        for author in (b_author, c_author):
            await follow(a, author)
        await follow(b, c_author)
        await connect(a, b)
        await connect(b, c)

        track: dict[str, JSONValue] = {
            "title": "Spring drone", "blob": "ab" * 32, "size": 1234, "mime": "audio/wav",
            "duration_ms": 5000, "sample_rate": 48000, "channels": 2,
        }  # fmt: skip
        made = [
            await post(c, "from C, relayed through B"),
            await post(
                c,
                "",
                kind="offer",
                title="SM57",
                category="gear",
                offered="mic",
                wanted="a reverb pedal",
                condition="good",
            ),
            await post(
                c,
                "",
                kind="course",
                title="Mic placement",
                lessons=[{"title": "Distance"}, {"title": "Angle"}],
            ),
            await post(c, "", kind="track", **track),
            await post(b, "from B directly"),
        ]
        liked = await post(b, "", kind="like", target=made[0].id)
        doomed = await post(c, "this one will be deleted")
        for event in [*made, liked, doomed]:
            await wait_until(partial(holds, a, event.id))
        stored = a.store.get(made[0].id)
        assert stored is not None and stored.event.author == c_author
        # A never spoke to C, yet C's signature verifies on A.
        assert c.node_id not in (a.federation.sessions if a.federation else {})

        delete = await post(c, "", kind="delete", target=doomed.id)
        await wait_until(partial(holds, a, delete.id))
        for replica in (a, b, c):
            tomb = replica.store.get(doomed.id)
            assert tomb is not None and tomb.deleted and tomb.event.body is None
            parse_event(tomb.event.wire_bytes())  # still a verifiable envelope


async def test_live_push_resume_and_identical_resync(tmp_path: Path) -> None:
    async with running(tmp_path, "b") as b:
        for i in range(300):
            await post(b, f"backlog {i}")
        async with running(tmp_path, "a") as a:
            await follow(a, author_of(b).id)
            await connect(a, b)
            head = b.store.head(author_of(b).id)
            assert head is not None
            await wait_until(lambda: holds(a, head.id))
            live = await post(b, "live")
            await wait_until(partial(holds, a, live.id), seconds=2)
        # A restarts: both hold the same events, so the link reports InSync.
        async with running(tmp_path, "a") as a:
            await wait_until(
                lambda: b.federation is not None and a.node_id in b.federation.sessions
            )
            assert b.federation is not None
            session = b.federation.sessions[a.node_id]
            await wait_until(lambda: session.their_scope is not None)
            await trio.sleep(0.3)
            assert session.stats.events_sent == 0
            assert session.link.bytes_sent + session.link.bytes_received < 10_000
            assert a.store.count() == 301


async def test_partition_and_heal(tmp_path: Path) -> None:
    async with running(tmp_path, "a") as a, running(tmp_path, "c") as c:
        await follow(a, author_of(c).id)
        await follow(c, author_of(a).id)
        async with running(tmp_path, "b") as b:
            await follow(b, author_of(c).id)
            await follow(b, author_of(a).id)
            address = await connect(a, b)
            await connect(c, b)
            first = await post(c, "before the partition")
            await wait_until(partial(holds, a, first.id))
        # B is gone: A and C are partitioned.
        during = [await post(c, f"during {i}") for i in range(5)]
        from_a = await post(a, "A during the partition")
        await trio.sleep(0.5)
        assert not holds(a, during[-1].id)
        async with running(tmp_path, "b", p2p_port=int(address.rsplit(":", 1)[1])):
            for event in during:
                await wait_until(partial(holds, a, event.id), seconds=15)
            await wait_until(partial(holds, c, from_a.id), seconds=15)


async def test_pinned_peer_mismatch_fails_loudly(tmp_path: Path) -> None:
    async with running(tmp_path, "a") as a, running(tmp_path, "b") as b:
        wrong = SigningKey(bytes(32)).id
        address = await connect(a, b, pinned=wrong)

        def refused() -> bool:
            record = peerstore.get_peer(a.store, address)
            return record is not None and record.state == "refused"

        await wait_until(refused)
        record = peerstore.get_peer(a.store, address)
        assert record is not None and record.last_error is not None
        assert "expected node" in record.last_error and b.node_id in record.last_error
        assert a.federation is not None and b.node_id not in a.federation.sessions


async def test_blocked_node_is_refused_and_blocked_author_not_replicated(tmp_path: Path) -> None:
    async with running(tmp_path, "a") as a, running(tmp_path, "b") as b:
        await trio.to_thread.run_sync(peerstore.block, b.store, a.node_id, "node", now_ms())
        address = await connect(a, b)

        def refused_as_blocked() -> bool:
            record = peerstore.get_peer(a.store, address)
            return record is not None and "blocked" in (record.last_error or "")

        await wait_until(refused_as_blocked)
        assert b.federation is not None and a.node_id not in b.federation.sessions
        # Unblock the node but block B's author on A: the link works, the feed does not flow.
        await trio.to_thread.run_sync(peerstore.unblock, b.store, a.node_id)
        await follow(a, author_of(b).id)
        await trio.to_thread.run_sync(peerstore.block, a.store, author_of(b).id, "author", now_ms())
        # As the API does (another process's block is read on the next refresh tick).
        assert a.federation is not None
        await a.federation.refresh()
        hidden = await post(b, "you should not see this")
        await wait_until(lambda: b.federation is not None and a.node_id in b.federation.sessions)
        await trio.sleep(0.5)
        assert not holds(a, hidden.id)
        assert author_of(b).id not in peerstore.follows(a.store)


# -- a hostile peer speaking the protocol by hand ------------------------------------


@asynccontextmanager
async def raw_link(node: Node, key: SigningKey) -> AsyncIterator[PeerLink]:
    url = node.addresses["p2p"] + peerstore.P2P_PATH
    async with open_websocket_client(url) as ws:
        yield await establish(WebSocketTransport(ws), initiator=True, node_key=key)


def chain(key: SigningKey, count: int, start: int = 1, prev: str | None = None) -> list[Event]:
    events = []
    for seq in range(start, start + count):
        event = sign_event(
            key, seq=seq, prev=prev, kind="post", created=seq, body={"text": f"{seq}"}
        )
        events.append(event)
        prev = event.id
    return events


async def test_hostile_peer_cannot_store_anything_invalid(tmp_path: Path) -> None:
    victim_author = SigningKey(os.urandom(32))
    stranger = SigningKey(os.urandom(32))
    async with running(tmp_path, "a") as a:
        await follow(a, victim_author.id)
        assert a.federation is not None
        await a.federation.refresh()
        good = chain(victim_author, 3)
        forged = sign_event(stranger, seq=4, prev=good[-1].id, kind="post", created=4,
                            body={"text": "forged"})  # fmt: skip
        forged_wire = forged.wire_bytes().replace(stranger.id.encode(), victim_author.id.encode())
        twin = sign_event(victim_author, seq=2, prev=good[0].id, kind="post", created=99,
                          body={"text": "fork"})  # fmt: skip
        gap = chain(victim_author, 1, start=7, prev="ee" * 32)[0]
        unsolicited = chain(stranger, 5)
        async with raw_link(a, SigningKey(os.urandom(32))) as link:
            await link.send(Events([e.wire_bytes() for e in good]))
            await link.send(Events([forged_wire, b"{garbage", gap.wire_bytes()]))
            await wait_until(lambda: a.store.count("pending") == 1)  # the gap event waits
            await link.send(Events([e.wire_bytes() for e in unsolicited]))
            await link.send(Events([twin.wire_bytes()]))
            await wait_until(lambda: bool(a.store.forks(victim_author.id)))
        assert [h.seq for h in a.store.heads() if h.author == victim_author.id] == [3]
        head = a.store.head(victim_author.id)
        assert head is not None and head.frozen
        assert a.store.count("pending") == 0  # freezing drops what waited for the gap
        assert all(not holds(a, e.id) for e in unsolicited)
        assert victim_author.id not in a.federation.scope  # a frozen feed is not requested again
        # The node still serves an honest peer.
        async with running(tmp_path, "b") as b:
            await follow(b, author_of(a).id)
            await connect(b, a)
            fine = await post(a, "still alive")
            await wait_until(partial(holds, b, fine.id))


async def test_peer_sending_many_invalid_events_is_disconnected(tmp_path: Path) -> None:
    victim_author = SigningKey(os.urandom(32))
    async with running(tmp_path, "a") as a:
        await follow(a, victim_author.id)
        assert a.federation is not None
        await a.federation.refresh()
        bad = [e.wire_bytes().replace(b'"text":"', b'"text":"x') for e in chain(victim_author, 150)]
        async with raw_link(a, SigningKey(os.urandom(32))) as link:
            await link.send(Events(bad))
            with trio.fail_after(10):
                while True:
                    message = await link.receive()
                    if isinstance(message, Goodbye):
                        assert "invalid" in message.reason
                        break
        assert a.store.count() == 0


async def test_flooding_peer_does_not_starve_an_honest_one(tmp_path: Path) -> None:
    flood_author = SigningKey(os.urandom(32))
    flood = [e.wire_bytes() for e in chain(flood_author, 8000)]
    async with running(tmp_path, "a") as a, running(tmp_path, "b") as b:
        await follow(a, flood_author.id)
        await follow(a, author_of(b).id)
        assert a.federation is not None
        await a.federation.refresh()
        delivered_at: list[float] = []

        async def flooder() -> None:
            async with raw_link(a, SigningKey(os.urandom(32))) as link:
                for start in range(0, len(flood), 500):
                    await link.send(Events(flood[start : start + 500]))
                await wait_until(lambda: a.store.count() >= 8000, seconds=60)
            delivered_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flooder)
            await wait_until(lambda: a.store.count() > 500)
            await connect(a, b)
            honest = await post(b, "honest news during a flood")
            await wait_until(partial(holds, a, honest.id), seconds=30)
            honest_at = trio.current_time()
        assert delivered_at and honest_at < delivered_at[0], "honest event waited for the flood"


async def test_identity_proof_is_required(tmp_path: Path) -> None:
    """A client that speaks WebSocket but not the handshake never gets a session."""
    async with running(tmp_path, "a") as a:
        url = a.addresses["p2p"] + peerstore.P2P_PATH
        async with open_websocket_client(url) as ws:
            await ws.send_message(b"\x00" * 32)  # not a Noise message 1
            with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed):
                await ws.get_message()
        assert a.federation is not None and not a.federation.sessions


async def test_want_digest_flow_messages(tmp_path: Path) -> None:
    """The wire conversation: unknown scope -> NeedVector; after a Vector -> InSync."""
    author = SigningKey(os.urandom(32))
    async with running(tmp_path, "a") as a:
        await follow(a, author.id)
        assert a.federation is not None
        await a.federation.refresh()
        events = chain(author, 4)
        await trio.to_thread.run_sync(partial(a.store.ingest, events, now_ms=0))
        me = SigningKey(os.urandom(32))
        scope = [author.id]
        scope_digest = peerstore.scope_hash(scope)
        async with raw_link(a, me) as link:
            await link.send(Want(scope_digest, "00" * 32))
            seen: list[object] = []
            with trio.fail_after(5):
                while not any(isinstance(m, NeedVector) for m in seen):
                    seen.append(await link.receive())
            await link.send(Vector({author.id: 1}))
            received: list[bytes] = []
            with trio.fail_after(5):
                while len(received) < 3:
                    message = await link.receive()
                    if isinstance(message, Events):
                        received += message.events
            assert [parse_event(r).seq for r in received] == [2, 3, 4]
        from node.replication import vector_hash

        heads = a.store.heads_for(scope)
        async with raw_link(a, me) as link:
            await link.send(Want(scope_digest, vector_hash(heads, scope)))
            with trio.fail_after(5):
                while not isinstance(await link.receive(), InSync):
                    pass


async def test_link_refused_for_bad_peer_does_not_crash_node(tmp_path: Path) -> None:
    async with running(tmp_path, "a") as a:
        url = a.addresses["p2p"] + "/wrong/path"
        with pytest.raises(LinkBroken):
            async with open_websocket_client(url):
                pass
        with pytest.raises(PeerMisbehaved):
            async with raw_link(a, a.node_key):  # claims A's own node id
                pass
        info = a.info()
        assert info["node_id"] == a.node_id


async def test_unrequested_vector_is_refused_and_not_stored(tmp_path: Path) -> None:
    async with running(tmp_path, "a") as a:
        before = len(a.store.query("SELECT hash FROM scopes"))
        async with raw_link(a, SigningKey(os.urandom(32))) as link:
            await link.send(Vector({SigningKey(os.urandom(32)).id: 1}))
            with trio.fail_after(5), pytest.raises(LinkError):
                while True:
                    await link.receive()
        assert len(a.store.query("SELECT hash FROM scopes")) == before


async def test_interest_is_asked_for_by_digest_relayed_and_only_taken_when_asked(
    tmp_path: Path,
) -> None:
    relayed_author = SigningKey(os.urandom(32)).id
    async with running(tmp_path, "a") as a:
        assert a.federation is not None
        interest = [relayed_author]
        digest = peerstore.scope_hash(interest)
        async with raw_link(a, SigningKey(os.urandom(32))) as link:
            await link.send(Want(peerstore.scope_hash([]), "00" * 32, digest))
            with trio.fail_after(5):
                while not isinstance(await link.receive(), NeedInterest):
                    pass
            await link.send(Interest(frozenset(interest)))
            await wait_until(lambda: relayed_author in a.federation.scope)  # type: ignore[union-attr]
            assert relayed_author not in a.federation.interest  # relayed, not followed
            # The digest is remembered: a second link announcing it is not asked again.
        async with raw_link(a, SigningKey(os.urandom(32))) as link:
            await link.send(Want(peerstore.scope_hash([]), "00" * 32, digest))
            await link.send(Interest(frozenset(interest)))  # unasked: refused
            with trio.fail_after(5), pytest.raises(LinkError):
                while True:
                    assert not isinstance(await link.receive(), NeedInterest)
        # When no link wants it any more, the author leaves the scope.
        await wait_until(lambda: relayed_author not in a.federation.scope)  # type: ignore[union-attr]
