"""The peer link over real transports (node.peerlink), under trio.

Most tests run :func:`establish` on both ends of ``trio.testing.memory_stream_pair``
through :class:`StreamTransport`; some use real WebSockets on 127.0.0.1.  Hostile
peers drive :class:`protocol.handshake.Handshake` (or bare ``noiseprotocol``) by
hand so they can send whatever bytes they like.  The last tests run replication
(:class:`node.replication.PeerSession`, then whole nodes) over links: batch limits
and the containment of one link's failure show only there.  Every wait on the
network is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing
import trio_websocket
from noise.connection import Keypair, NoiseConnection

from node import peerstore, replication
from node.daemon import Node, now_ms, open_node, serve_node
from node.datadir import DataDir
from node.errors import LinkBroken, LinkClosed, LinkError, PeerMisbehaved
from node.peerlink import (
    HANDSHAKE_TIMEOUT,
    WEBSOCKET_MAX_MESSAGE,
    MessageTransport,
    PeerLink,
    StreamTransport,
    WebSocketTransport,
    establish,
    open_websocket_client,
)
from node.peerstore import P2P_PATH, scope_hash
from node.replication import BATCH_BYTES, BATCH_EVENTS, PeerSession
from protocol.canonical import MAX_EVENT_BYTES
from protocol.handshake import (
    MAX_NOISE_MESSAGE,
    MAX_PAYLOAD,
    NOISE_PROTOCOL_NAME,
    PROLOGUE,
    Established,
    Handshake,
)
from protocol.keys import SigningKey
from protocol.messages import (
    CHUNK_PLAINTEXT,
    MAX_MESSAGE,
    Events,
    Goodbye,
    InSync,
    Message,
    NeedVector,
    Ping,
    Pong,
    Vector,
    Want,
    encode,
)

ALICE = SigningKey(hashlib.sha256(b"test peerlink: alice").digest())
BOB = SigningKey(hashlib.sha256(b"test peerlink: bob").digest())
MALLORY = SigningKey(hashlib.sha256(b"test peerlink: mallory").digest())
WAIT = 5.0  # the longest any single test waits on the network


def hex32(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


def transports() -> tuple[StreamTransport, StreamTransport]:
    left, right = trio.testing.memory_stream_pair()
    return StreamTransport(left), StreamTransport(right)


async def link_pair(
    *, alice: SigningKey = ALICE, bob: SigningKey = BOB
) -> tuple[PeerLink, PeerLink]:
    """Alice dials, Bob answers; both establish over a memory stream."""
    left, right = transports()
    links: dict[bool, PeerLink] = {}

    async def side(transport: StreamTransport, initiator: bool, key: SigningKey) -> None:
        links[initiator] = await establish(transport, initiator=initiator, node_key=key)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, left, True, alice)
            nursery.start_soon(side, right, False, bob)
    return links[True], links[False]


async def raw_handshake(
    transport: MessageTransport, *, initiator: bool, key: SigningKey
) -> Established:
    """Our own end of a handshake, driven by hand: the test keeps the Noise session."""
    handshake = Handshake(initiator=initiator, node_key=key, static_private=os.urandom(32))
    if initiator:
        await transport.send(handshake.start())
    while not handshake.done:
        reply = handshake.receive(await transport.receive())
        if reply is not None:
            await transport.send(reply)
    return handshake.established()


async def outcome_of(work: Callable[[], Awaitable[Any]], into: list[object]) -> None:
    """Run ``work``; record what it returned or the exception it raised."""
    try:
        into.append(await work())
    except Exception as exc:
        into.append(exc)


EVERY_MESSAGE: list[Message] = [
    Want(hex32("scope"), hex32("heads")),
    NeedVector(),
    Vector({hex32("a"): 3, hex32("b"): 0}),
    InSync(),
    Events([b'{"an":"event"}', b"", bytes(300)]),
    Ping(1),
    Pong(1),
    Goodbye("see you"),
]


# -- establishing and carrying messages ------------------------------------------------


async def test_establish_over_a_memory_stream() -> None:
    alice, bob = await link_pair()
    assert alice.peer_id == BOB.id and bob.peer_id == ALICE.id
    # The handshake's bytes are counted: e (32) | m2 | m3.
    assert alice.bytes_sent == bob.bytes_received > 32
    assert bob.bytes_sent == alice.bytes_received > 32
    assert alice.messages_sent == bob.messages_sent == 0


async def test_every_message_type_both_ways() -> None:
    alice, bob = await link_pair()
    with trio.fail_after(WAIT):
        for message in EVERY_MESSAGE:
            await alice.send(message)
            assert await bob.receive() == message
            await bob.send(message)
            assert await alice.receive() == message
    assert alice.messages_sent == bob.messages_sent == len(EVERY_MESSAGE)
    assert alice.bytes_sent == bob.bytes_received and bob.bytes_sent == alice.bytes_received


async def test_a_3_mib_events_batch_crosses_in_chunks() -> None:
    alice, bob = await link_pair()
    events = [bytes([i]) * MAX_EVENT_BYTES for i in range(48)]  # exactly 3 MiB of events
    batch = Events(events)
    size = len(encode(batch))
    assert 3 * 1024 * 1024 < size <= MAX_MESSAGE
    before = alice.bytes_sent
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(alice.send, batch)
            assert await bob.receive() == batch
    pieces = -(-size // CHUNK_PLAINTEXT)
    assert pieces == 49
    # Each chunk: a flag byte, the piece, a 16-byte tag.
    assert alice.bytes_sent - before == size + pieces * (1 + 16)
    assert bob.bytes_received == alice.bytes_sent


async def test_concurrent_senders_never_interleave_chunks() -> None:
    alice, bob = await link_pair()
    big = [Events([bytes([n]) * 60_000] * 20) for n in range(4)]
    received: list[Message] = []
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            for message in big:
                nursery.start_soon(alice.send, message)
            for _ in big:
                received.append(await bob.receive())
    assert sorted(received, key=repr) == sorted(big, key=repr)


async def test_a_send_cut_off_mid_message_breaks_the_link_for_good() -> None:
    """Sealing advanced the Noise nonce: after a half-sent message nothing else may go out."""
    left, right = trio.testing.lockstep_stream_pair()  # sends block until the peer reads
    links: dict[bool, PeerLink] = {}

    async def side(transport: StreamTransport, initiator: bool, key: SigningKey) -> None:
        links[initiator] = await establish(transport, initiator=initiator, node_key=key)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, StreamTransport(left), True, ALICE)
            nursery.start_soon(side, StreamTransport(right), False, BOB)
    alice = links[True]
    big = Events([bytes([1]) * MAX_EVENT_BYTES] * 4)  # several chunks
    with trio.move_on_after(0.2) as cut:
        await alice.send(big)  # Bob never reads: stuck inside the message
    assert cut.cancelled_caught
    with pytest.raises(LinkBroken, match="cut off"):
        await alice.send(Ping(1))
    # A send cancelled before it sealed anything leaves a healthy link usable.
    fresh_alice, fresh_bob = await link_pair()
    with trio.CancelScope() as scope:
        scope.cancel()
        await fresh_alice.send(Ping(2))
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fresh_alice.send, Ping(3))
            assert await fresh_bob.receive() == Ping(3)


# -- stalls, garbage and closing -----------------------------------------------------


async def test_a_peer_that_never_answers_times_out() -> None:
    left, _silent = transports()
    with trio.fail_after(WAIT), pytest.raises(LinkBroken, match="timed out"):
        await establish(left, initiator=True, node_key=ALICE, handshake_seconds=0.2)


async def test_a_peer_that_never_starts_times_out() -> None:
    _silent, right = transports()
    with trio.fail_after(WAIT), pytest.raises(LinkBroken, match="timed out"):
        await establish(right, initiator=False, node_key=BOB, handshake_seconds=0.2)


async def test_a_peer_that_stalls_after_message_1_times_out() -> None:
    left, right = transports()
    handshake = Handshake(initiator=True, node_key=ALICE, static_private=os.urandom(32))
    with trio.fail_after(WAIT):
        await left.send(handshake.start())
        with pytest.raises(LinkBroken, match="timed out"):
            await establish(right, initiator=False, node_key=BOB, handshake_seconds=0.2)


def test_default_handshake_timeout() -> None:
    assert HANDSHAKE_TIMEOUT == 10.0
    assert WEBSOCKET_MAX_MESSAGE == MAX_NOISE_MESSAGE + 64


NOISE_32 = hashlib.sha256(b"noise").digest()


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x00" * 31, NOISE_32 + b"payload", b"x" * 500],
    ids=["empty", "short", "with payload", "long"],
)
async def test_garbage_instead_of_message_1_is_misbehaviour(garbage: bytes) -> None:
    left, right = transports()
    with trio.fail_after(WAIT):
        await left.send(garbage)
        with pytest.raises(PeerMisbehaved):
            await establish(right, initiator=False, node_key=BOB)


@pytest.mark.parametrize(
    "garbage", [b"", NOISE_32, NOISE_32 * 6 + b"tail"], ids=["empty", "32 bytes", "196 bytes"]
)
async def test_garbage_instead_of_message_2_is_misbehaviour(garbage: bytes) -> None:
    left, right = transports()

    async def garbage_responder() -> None:
        await right.receive()
        await right.send(garbage)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(garbage_responder)
            with pytest.raises(PeerMisbehaved, match="rejected"):
                await establish(left, initiator=True, node_key=ALICE)


async def test_oversized_frame_is_misbehaviour() -> None:
    left, right = trio.testing.memory_stream_pair()
    with trio.fail_after(WAIT):
        await left.send_all((WEBSOCKET_MAX_MESSAGE + 1).to_bytes(4, "big"))
        with pytest.raises(PeerMisbehaved, match="exceeds"):
            await StreamTransport(right).receive()


async def _raw_peer_and_link() -> tuple[StreamTransport, Established, PeerLink]:
    """Mallory (by hand) dials Bob (a real link): Mallory keeps her raw session."""
    left, right = transports()
    results: list[object] = []
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                outcome_of, partial(establish, right, initiator=False, node_key=BOB), results
            )
            mallory = await raw_handshake(left, initiator=True, key=MALLORY)
    (link,) = results
    assert isinstance(link, PeerLink)
    return left, mallory, link


@pytest.mark.parametrize(
    "make_frame",
    [
        pytest.param(lambda s: os.urandom(100), id="random ciphertext"),
        pytest.param(lambda s: s.seal(b"\x02" + encode(Ping(1))), id="bad chunk flag"),
        pytest.param(lambda s: s.seal(b""), id="empty chunk"),
        pytest.param(lambda s: s.seal(b"\x00\x09junk"), id="unknown type"),
        pytest.param(lambda s: s.seal(b'\x00\x01{"t":"ping"}'), id="bad control"),
        pytest.param(lambda s: s.seal(b"\x00\x02\x00\x00\x00\x05"), id="truncated batch"),
    ],
)
async def test_garbage_after_the_handshake_is_misbehaviour(
    make_frame: Callable[[Any], bytes],
) -> None:
    wire, mallory, bob = await _raw_peer_and_link()
    with trio.fail_after(WAIT):
        await wire.send(make_frame(mallory.session))
        with pytest.raises(PeerMisbehaved):
            await bob.receive()


async def test_replayed_transport_frame_is_misbehaviour() -> None:
    wire, mallory, bob = await _raw_peer_and_link()
    frame = mallory.session.seal(b"\x00" + encode(Ping(7)))
    with trio.fail_after(WAIT):
        await wire.send(frame)
        assert await bob.receive() == Ping(7)
        await wire.send(frame)
        with pytest.raises(PeerMisbehaved, match="authentication"):
            await bob.receive()


async def test_oversized_reassembly_is_misbehaviour() -> None:
    wire, mallory, bob = await _raw_peer_and_link()
    more = b"\x01" + bytes(CHUNK_PLAINTEXT)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:

            async def flood() -> None:
                for _ in range(MAX_MESSAGE // CHUNK_PLAINTEXT + 1):
                    await wire.send(mallory.session.seal(more))

            nursery.start_soon(flood)
            with pytest.raises(PeerMisbehaved, match="exceeds"):
                await bob.receive()


async def test_closing_one_side_ends_the_other() -> None:
    alice, bob = await link_pair()
    with trio.fail_after(WAIT):
        await alice.aclose()
        with pytest.raises(LinkClosed):
            await bob.receive()
        with pytest.raises(LinkBroken):
            await bob.send(Ping(1))


async def test_closing_during_the_handshake_ends_the_other() -> None:
    left, right = transports()
    with trio.fail_after(WAIT):
        await left.aclose()
        with pytest.raises((LinkClosed, LinkBroken)):
            await establish(right, initiator=False, node_key=BOB)


async def test_sending_on_a_closed_link_is_broken() -> None:
    alice, _bob = await link_pair()
    await alice.aclose()
    with trio.fail_after(WAIT), pytest.raises(LinkBroken):
        await alice.send(Ping(1))


async def test_expected_peer_mismatch_is_misbehaviour() -> None:
    left, right = transports()
    results: list[object] = []
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                outcome_of, partial(establish, right, initiator=False, node_key=BOB), results
            )
            with pytest.raises(PeerMisbehaved, match="expected node"):
                await establish(left, initiator=True, node_key=ALICE, expected_peer=MALLORY.id)
            await left.aclose()  # what a dialer does with a refused link
    (responder_outcome,) = results
    assert isinstance(responder_outcome, LinkClosed)  # Bob never learnt who dialled


async def test_expected_peer_match_is_accepted() -> None:
    left, right = transports()
    results: list[object] = []
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                outcome_of, partial(establish, right, initiator=False, node_key=BOB), results
            )
            link = await establish(left, initiator=True, node_key=ALICE, expected_peer=BOB.id)
    assert link.peer_id == BOB.id


async def test_dialling_ourselves_is_refused() -> None:
    left, right = transports()
    results: list[object] = []
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                outcome_of, partial(establish, right, initiator=False, node_key=ALICE), results
            )
            with pytest.raises(PeerMisbehaved, match="own node id"):
                await establish(left, initiator=True, node_key=ALICE)
            await left.aclose()


async def test_a_deeply_nested_identity_payload_is_misbehaviour() -> None:
    left, right = transports()
    results: list[object] = []
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                outcome_of, partial(establish, left, initiator=True, node_key=ALICE), results
            )
            noise = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
            noise.set_prologue(PROLOGUE)
            noise.set_as_responder()
            noise.set_keypair_from_private_bytes(Keypair.STATIC, os.urandom(32))
            noise.start_handshake()
            noise.read_message(await right.receive())
            await right.send(bytes(noise.write_message(b"[" * MAX_PAYLOAD)))
    (outcome,) = results
    assert isinstance(outcome, PeerMisbehaved), repr(outcome)


# -- a real WebSocket ------------------------------------------------------------------


async def test_websocket_pair_carries_handshake_and_events() -> None:
    batch = Events([bytes([i]) * 50_000 for i in range(10)])  # ~500 kB: 8 chunks
    served: list[object] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        if request.path != P2P_PATH:
            await request.reject(404)
            return
        ws = await request.accept()
        link = await establish(WebSocketTransport(ws), initiator=False, node_key=BOB)
        served.append(link.peer_id)
        message = await link.receive()
        served.append(message)
        await link.send(Pong(len(message.events) if isinstance(message, Events) else -1))
        with pytest.raises(LinkClosed):
            await link.receive()
        finished.set()

    finished = trio.Event()
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    handler,
                    "127.0.0.1",
                    0,
                    None,
                    max_message_size=WEBSOCKET_MAX_MESSAGE,
                )
            )
            url = f"ws://127.0.0.1:{server.port}{P2P_PATH}"
            async with trio_websocket.open_websocket_url(
                url, max_message_size=WEBSOCKET_MAX_MESSAGE
            ) as ws:
                link = await establish(
                    WebSocketTransport(ws), initiator=True, node_key=ALICE, expected_peer=BOB.id
                )
                assert link.peer_id == BOB.id
                await link.send(batch)
                assert await link.receive() == Pong(10)
            await finished.wait()
            nursery.cancel_scope.cancel()
    assert served == [ALICE.id, batch]


async def _websocket_client_receives(first: bytes | str) -> object:
    """The server sends ``first``; what does the dialer's WebSocketTransport make of it?

    The dialer uses :func:`open_websocket_client`, as the federation does: it owns
    the TCP stream and closes it on every path (trio-websocket 0.12.2 leaves the
    socket to the garbage collector whenever the close was not started by its own
    ``aclose``: a close frame from the server, or its own 1009 close).
    """
    outcome: list[object] = []

    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message(first)
        with pytest.raises(trio_websocket.ConnectionClosed):
            await ws.get_message()

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
            )
            async with open_websocket_client(f"ws://127.0.0.1:{server.port}{P2P_PATH}") as ws:
                await outcome_of(WebSocketTransport(ws).receive, outcome)
            nursery.cancel_scope.cancel()
    (result,) = outcome
    return result


async def test_websocket_message_at_the_cap_is_received() -> None:
    assert await _websocket_client_receives(bytes(WEBSOCKET_MAX_MESSAGE)) == bytes(
        WEBSOCKET_MAX_MESSAGE
    )


async def test_websocket_message_over_the_cap_closes_the_link() -> None:
    outcome = await _websocket_client_receives(bytes(WEBSOCKET_MAX_MESSAGE + 1))
    assert isinstance(outcome, LinkClosed)
    assert "1009" in str(outcome) or "too big" in str(outcome).lower()


async def test_text_websocket_message_is_misbehaviour() -> None:
    outcome = await _websocket_client_receives("hello")
    assert isinstance(outcome, PeerMisbehaved)


async def test_dialling_a_closed_port_is_broken() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with trio.fail_after(WAIT), pytest.raises(LinkBroken):
        async with open_websocket_client(f"ws://127.0.0.1:{port}{P2P_PATH}"):
            pass


async def test_a_rejected_websocket_upgrade_is_broken() -> None:
    async def handler(request: trio_websocket.WebSocketRequest) -> None:
        await request.reject(404)

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
            )
            with pytest.raises(LinkBroken):
                async with open_websocket_client(f"ws://127.0.0.1:{server.port}/elsewhere"):
                    pass
            nursery.cancel_scope.cancel()


async def test_a_deeply_nested_identity_payload_does_not_kill_the_node(tmp_path: Path) -> None:
    crashed: list[object] = []
    honest: list[object] = []
    async with open_node(DataDir(tmp_path / "victim"), name="victim") as node:

        async def run_node(*, task_status: trio.TaskStatus[dict[str, str]]) -> None:
            try:
                await serve_node(
                    node, http=("127.0.0.1", 0), p2p=("127.0.0.1", 0), task_status=task_status
                )
            except* Exception as group:  # not Cancelled: that is ours, at the end
                crashed.append(group)

        async def dial_honestly(url: str) -> PeerLink:
            async with open_websocket_client(url) as ws:
                return await establish(WebSocketTransport(ws), initiator=True, node_key=ALICE)

        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                addresses = await nursery.start(run_node)
                url = addresses["p2p"] + P2P_PATH
                async with open_websocket_client(url) as ws:
                    wire = WebSocketTransport(ws)
                    noise = NoiseConnection.from_name(NOISE_PROTOCOL_NAME)
                    noise.set_prologue(PROLOGUE)
                    noise.set_as_initiator()
                    noise.set_keypair_from_private_bytes(Keypair.STATIC, os.urandom(32))
                    noise.start_handshake()
                    await wire.send(bytes(noise.write_message(b"")))
                    noise.read_message(await wire.receive())
                    await wire.send(bytes(noise.write_message(b"[" * MAX_PAYLOAD)))
                    with contextlib.suppress(LinkError):
                        await wire.receive()  # the node hangs up, one way or another
                await outcome_of(partial(dial_honestly, url), honest)
                nursery.cancel_scope.cancel()
    assert crashed == []
    (link,) = honest
    assert isinstance(link, PeerLink) and link.peer_id == node.node_id, link


# -- replication's use of the link (node.replication) -------------------------------


@dataclass
class _Store:
    """Just what PeerSession reads: one author's events, as (seq, raw)."""

    events: dict[str, list[bytes]]

    def heads_for(self, authors: list[str]) -> dict[str, object]:
        return {}

    def events_after(self, author: str, seq: int, *, limit: int = 1000) -> list[tuple[int, bytes]]:
        rows = list(enumerate(self.events.get(author, []), start=1))
        return rows[seq : seq + limit]


@dataclass
class _Node:
    store: _Store


async def offer_vector(link: PeerLink, heads: dict[str, int]) -> None:
    """Play the peer's part: announce an unknown scope, answer the NeedVector."""
    await link.send(Want("00" * 32, "00" * 32))
    while not isinstance(await link.receive(), NeedVector):
        pass
    await link.send(Vector(heads))


@dataclass
class _Federation:
    node: _Node
    scope: frozenset[str] = frozenset()
    scope_digest: str = field(default_factory=lambda: scope_hash([]))
    blocked_authors: frozenset[str] = frozenset()
    heads_cache: dict[str, object] = field(default_factory=dict)

    interest: frozenset[str] = frozenset()

    async def update_scope(self) -> None:
        return None

    def recall_scope(self, digest: str) -> list[str] | None:
        return None

    def remember_scope(self, authors: list[str], peer: str) -> None:
        return None


async def _push_feed(raws: list[bytes]) -> tuple[list[list[bytes]], list[object]]:
    """Bob's PeerSession pushes one author's feed to Alice; return the batches Alice got
    and how Bob's session ended."""
    author = hex32("a prolific author")
    federation = _Federation(_Node(_Store({author: raws})))
    alice, bob = await link_pair()
    session = PeerSession(bob, cast(Any, federation), initiator=False)
    batches: list[list[bytes]] = []
    ended: list[object] = []

    async def replicate() -> None:
        await outcome_of(session.run, ended)
        await bob.aclose()

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(replicate)
            assert isinstance(await alice.receive(), Want)
            await offer_vector(alice, {author: 0})
            try:
                while sum(map(len, batches)) < len(raws):
                    message = await alice.receive()
                    if isinstance(message, Events):
                        batches.append(message.events)
            except LinkError:
                pass
            await alice.aclose()
    return batches, ended


def _within_batch_limits(batch: list[bytes]) -> bool:
    """At least one and at most BATCH_EVENTS events, of at most BATCH_BYTES in all."""
    return 1 <= len(batch) <= BATCH_EVENTS and sum(map(len, batch)) <= BATCH_BYTES


async def test_session_pushes_a_feed_in_batches() -> None:
    raws = [b"%d" % n for n in range(2500)]
    batches, ended = await _push_feed(raws)
    assert [e for b in batches for e in b] == raws
    assert [len(b) for b in batches] == [BATCH_EVENTS, BATCH_EVENTS, 500]
    assert all(isinstance(e, LinkError) for e in ended), ended


async def test_session_pushes_a_feed_of_large_events() -> None:
    """100 events of 60 kB (6 MB, over MAX_MESSAGE) leave in batches of at most 1 MiB."""
    raws = [bytes([n]) * 60_000 for n in range(100)]
    batches, ended = await _push_feed(raws)
    assert all(isinstance(e, LinkError) for e in ended), ended
    assert [e for b in batches for e in b] == raws
    assert all(_within_batch_limits(b) for b in batches), [len(b) for b in batches]
    assert len(batches) == -(-len(raws) // (BATCH_BYTES // 60_000))


async def test_a_message_that_cannot_be_framed_ends_the_session_with_an_error() -> None:
    """An event too large for MAX_MESSAGE (no real store holds one) makes the batch
    unframeable: the session ends with a LinkError, which the federation handles,
    instead of letting FramingError escape."""
    raws = [b"first", bytes(MAX_MESSAGE), b"never sent"]
    batches, ended = await _push_feed(raws)
    assert batches == [[b"first"]]
    (outcome,) = ended
    assert isinstance(outcome, PeerMisbehaved), repr(outcome)
    assert "protocol error" in str(outcome)


class _GatedStore(_Store):
    """A store whose every read but the first waits until ``gate`` is set."""

    def __init__(self, events: dict[str, list[bytes]], gate: threading.Event) -> None:
        super().__init__(events)
        self.gate = gate
        self.reads = 0

    def events_after(self, author: str, seq: int, *, limit: int = 1000) -> list[tuple[int, bytes]]:
        self.reads += 1
        if self.reads > 1:
            self.gate.wait(WAIT)
        return super().events_after(author, seq, limit=limit)


async def test_a_blocked_author_stops_being_served_mid_catch_up() -> None:
    author = hex32("a prolific author")
    gate = threading.Event()
    federation = _Federation(_Node(_GatedStore({author: [b"%d" % n for n in range(5000)]}, gate)))
    alice, bob = await link_pair()
    session = PeerSession(bob, cast(Any, federation), initiator=False)
    later: list[list[bytes]] = []
    try:
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(outcome_of, session.run, [])
                assert isinstance(await alice.receive(), Want)
                await offer_vector(alice, {author: 0})
                first = await alice.receive()
                assert isinstance(first, Events) and len(first.events) == BATCH_EVENTS
                # The author gets blocked: what Federation.refresh does to a session.
                federation.blocked_authors = frozenset({author})
                assert session.their_scope == frozenset({author})
                session.their_scope = session.their_scope - federation.blocked_authors
                gate.set()
                with trio.move_on_after(1.0):
                    while True:
                        message = await alice.receive()
                        if isinstance(message, Events):
                            later.append(message.events)
                nursery.cancel_scope.cancel()
    finally:
        gate.set()
    # At most the batch being read when the block came; not the other 3000 events.
    assert sum(map(len, later)) <= BATCH_EVENTS, [len(b) for b in later]


async def test_the_receive_limiter_holds_a_peer_to_its_rate(
    mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Virtual time: once its burst is spent, a peer's bytes are handled at the set rate.

    The clock jumps only once the session is up: while a worker thread runs (the
    session's first Want reads the store in one), an autojumping clock races ahead.
    """
    rate = 1024  # bytes per second, a power of two: the limiter's float sums stay exact
    monkeypatch.setattr(replication, "RECEIVE_BYTES_PER_S", rate)
    federation = _Federation(_Node(_Store({})))
    alice, bob = await link_pair()
    session = PeerSession(bob, cast(Any, federation), initiator=False)
    count = 150
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            assert isinstance(await alice.receive(), Want)
            mock_clock.autojump_threshold = 0  # only Pings from now on: no threads
            start, sent_before = trio.current_time(), alice.bytes_sent
            for nonce in range(count):
                await alice.send(Ping(nonce))
            sent = alice.bytes_sent - sent_before
            pongs = 0
            while pongs < count:
                pongs += isinstance(await alice.receive(), Pong)
            took = trio.current_time() - start
            nursery.cancel_scope.cancel()
    one_ping = sent / count
    assert sent > 2 * 2 * rate  # well past the burst
    assert took >= (sent - 2 * rate - one_ping) / rate, (took, sent)


async def test_a_follower_dialling_a_node_with_long_posts_gets_them(tmp_path: Path) -> None:
    """300 posts of ~17 kB (~5 MB, more than MAX_MESSAGE) must travel in several batches."""
    crashed: list[tuple[str, object]] = []

    async def run_node(node: Node, *, task_status: trio.TaskStatus[dict[str, str]]) -> None:
        try:
            await serve_node(
                node, http=("127.0.0.1", 0), p2p=("127.0.0.1", 0), task_status=task_status
            )
        except* Exception as group:
            crashed.append((node.name, group))

    async with (
        open_node(DataDir(tmp_path / "artist"), name="artist") as artist,
        open_node(DataDir(tmp_path / "fan"), name="fan") as fan,
    ):
        key = artist.author_key("default")

        def write_posts() -> None:
            for n in range(300):
                text = f"verse {n:03d} " * 1700  # 17 kB, within the 20000 code points
                artist.store.append_local(key, kind="post", body={"text": text}, now_ms=now_ms())
            peerstore.set_follow(fan.store, key.id, True, now_ms())

        await trio.to_thread.run_sync(write_posts)
        with trio.fail_after(WAIT):
            async with trio.open_nursery() as nursery:
                await nursery.start(run_node, artist)
                await nursery.start(run_node, fan)
                address = artist.addresses["p2p"]
                await trio.to_thread.run_sync(
                    peerstore.add_peer, fan.store, address, artist.node_id, now_ms()
                )
                while fan.store.count() < 300 and not crashed:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
        # Read the stores before open_node closes them.
        assert crashed == []
        assert fan.store.count() == 300
        assert fan.store.events_after(key.id, 0) == artist.store.events_after(key.id, 0)
