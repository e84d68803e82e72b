"""Replication over one peer link: catch up, then push live, both ways.

Theory of operation
-------------------
Each side announces what it replicates with ``Want(scope digest, heads
digest, interest digest)``.  The interest (what a node follows or owns) is
fetched by digest only when unknown, and each node adds its peers' interests
to its own scope, so it stores and relays feeds its neighbours want: posts
reach followers through nodes that do not follow the author (one hop deep).
The receiver looks the scope up in its cache of scopes seen
before: if it knows the author list and its own heads for those authors hash
to the same digest, both hold the same events and it answers ``InSync``: an
identical re-sync costs two small messages each way, whatever the number of
events.  Otherwise it asks for the full ``Vector`` (author -> latest seq),
caches the scope for next time, and from then on knows ``their_known``: the
latest seq of each author the peer is known to hold.

One sender task per link turns "author X has events after their_known[X]"
into ``Events`` batches read straight from the store, many events per
message.  Catch-up and live push are the same mechanism: a newly stored event
(from any source) only marks its author dirty for every link whose scope
includes it, and wakes the sender.  Nothing is queued per event, so a slow
peer costs a set entry per author, not memory per event; what the peer still
lacks is always recomputed from the durable store (the store *is* the
outbox, so it survives restarts).

Live signalling (``specs/live.md`` §9) shares the link: a received
``SignalMessage`` goes to the federation's live layer, which verifies it
against the peer this link authenticated; misbehaviour (malformed, forged,
misaddressed) counts against the link, honest trouble (expired, replayed) is
only logged, and signals are rate-limited per link.

Incoming batches go through the node's ingest path under the federation's
FIFO ingest lock: a flooding peer waits its turn behind honest peers' batches,
and since a reader holds at most one batch while it waits, memory is bounded
by peers x batch size.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from node.errors import LinkBroken, LinkClosed, PeerMisbehaved, TalasError
from node.ingest import PreparedBatch
from node.peerlink import PeerLink
from node.peerstore import scope_hash
from node.ratelimit import RateLimiter
from protocol.errors import ProtocolError
from protocol.feed import FeedHead
from protocol.messages import (
    Events,
    Goodbye,
    InSync,
    Interest,
    Message,
    NeedInterest,
    NeedVector,
    Ping,
    Pong,
    SignalMessage,
    Vector,
    Want,
)
from protocol.signalling import MAX_SIGNAL_BYTES, Expired, Replayed, SignallingError

if TYPE_CHECKING:
    from node.federation import Federation

KEEPALIVE = 15.0
IDLE_TIMEOUT = 60.0
BATCH_EVENTS = 1000
BATCH_BYTES = 1 << 20
MAX_INVALID_EVENTS = 100
RECEIVE_BYTES_PER_S = 32 * 1024 * 1024
SIGNALS_PER_S = 10.0
SIGNAL_BURST = 40
MAX_INVALID_SIGNALS = 20
SIGNAL_OUTBOX = 16

log = logging.getLogger(__name__)


def vector_hash(heads: Mapping[str, FeedHead], authors: Iterable[str]) -> str:
    """Digest of our (seq, head id) for each author of a scope; absent = seq 0."""
    digest = hashlib.sha256()
    for author in sorted(authors):
        head = heads.get(author)
        line = f"{author}:{head.seq}:{head.id}\n" if head else f"{author}:0:\n"
        digest.update(line.encode())
    return digest.hexdigest()


@dataclass
class SessionStats:
    events_sent: int = 0
    events_received: int = 0
    events_accepted: int = 0
    invalid_events: int = 0
    unsolicited_events: int = 0
    signals_received: int = 0
    invalid_signals: int = 0
    dropped_signals: int = 0
    in_sync_at: float | None = None
    caught_up_at: float | None = None


@dataclass
class PeerSession:
    """Replication state for one established link."""

    link: PeerLink
    federation: Federation
    initiator: bool
    address: str | None = None
    their_scope: frozenset[str] | None = None
    their_known: dict[str, int] = field(default_factory=dict)
    their_interest: frozenset[str] = frozenset()  # what the peer follows or owns
    stats: SessionStats = field(default_factory=SessionStats)
    _dirty: set[str] = field(default_factory=set)
    _wake: trio.Event = field(default_factory=trio.Event)
    _cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    _error: TalasError | None = None
    _last_sent: float = 0.0
    _vectors_requested: int = 0  # 1 while a need_vector is unanswered
    _interests_requested: int = 0  # 1 while a need_interest is unanswered
    _their_interest_hash: str | None = None
    _signal_limiter: RateLimiter = field(
        default_factory=lambda: RateLimiter(rate=SIGNALS_PER_S, burst=SIGNAL_BURST, max_clients=1)
    )

    def __post_init__(self) -> None:
        # One batch queued for the committer while the reader prepares the next:
        # at most three batches per link in memory.
        self._prepared_send, self._prepared_receive = trio.open_memory_channel[PreparedBatch](1)
        self._signals_send, self._signals_receive = trio.open_memory_channel[bytes](SIGNAL_OUTBOX)

    @property
    def peer_id(self) -> str:
        return self.link.peer_id

    @property
    def lag(self) -> int | None:
        """Events we hold that the peer is still missing (None before its vector)."""
        if self.their_scope is None:
            return None
        heads = self.federation.heads_cache
        return sum(
            max(0, heads[a].seq - self.their_known.get(a, 0))
            for a in self.their_scope
            if a in heads
        )

    def close(self, error: TalasError | None = None) -> None:
        if self._error is None:
            self._error = error
        self._cancel.cancel()

    # -- notifications from the node (synchronous, never block) ---------------

    def authors_changed(self, authors: Iterable[str]) -> None:
        """New events exist for ``authors``: push them if the peer wants them."""
        if self.their_scope is None:
            return
        wanted = [a for a in authors if a in self.their_scope]
        if wanted:
            self._dirty.update(wanted)
            self._wake.set()

    # -- tasks -------------------------------------------------------------------

    async def run(self) -> None:
        """Replicate until the link ends; raise why it ended (LinkError)."""
        with self._cancel:
            async with trio.open_nursery() as nursery:
                tasks = (
                    self._reader, self._committer, self._sender, self._keepalive,
                    self._signal_sender,
                )  # fmt: skip
                for task in tasks:
                    nursery.start_soon(self._guard, task)
                await self._guard(self.send_want)
        if self._error is not None:
            raise self._error

    async def _guard(self, task: Callable[[], Awaitable[None]]) -> None:
        try:
            await task()
        except TalasError as exc:
            self.close(exc)
        except ProtocolError as exc:  # e.g. a message we could not frame: end this link only
            self.close(PeerMisbehaved(f"protocol error on this link: {exc}"))

    async def _send(self, message: Message) -> None:
        self._last_sent = trio.current_time()
        await self.link.send(message)

    async def send_want(self) -> None:
        federation = self.federation
        scope = federation.scope
        heads = await trio.to_thread.run_sync(federation.node.store.heads_for, sorted(scope))
        digest = scope_hash(federation.interest)
        await self._send(Want(federation.scope_digest, vector_hash(heads, scope), digest))

    def send_signal(self, envelope: bytes) -> None:
        """Queue one signed live-signalling envelope for this peer; never blocks.

        The session's own task sends it: a live call may be cancelled at any time,
        but a link send must never stop half-way (each chunk advances the Noise
        nonce, so an interrupted send breaks the link for good).  Raises LinkBroken
        when SIGNAL_OUTBOX signals already wait (the peer is not reading).
        """
        if not 1 <= len(envelope) <= MAX_SIGNAL_BYTES:
            raise ValueError(f"a signal is 1 to {MAX_SIGNAL_BYTES} bytes")
        try:
            self._signals_send.send_nowait(envelope)
        except trio.WouldBlock:
            raise LinkBroken(f"{SIGNAL_OUTBOX} signals already wait for this link") from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise LinkClosed("the link is closing") from None

    async def _signal_sender(self) -> None:
        async for envelope in self._signals_receive:
            await self._send(SignalMessage(envelope))

    def _on_signal(self, envelope: bytes) -> None:
        self.stats.signals_received += 1
        live = self.federation.live
        if live is None or not self._signal_limiter.allow("peer", trio.current_time()):
            self.stats.dropped_signals += 1
            return
        try:
            live.receive_signal(self.peer_id, envelope)
        except (Expired, Replayed) as exc:  # can happen to an honest peer: log only
            self.stats.dropped_signals += 1
            log.info("signal from %s dropped: %s", self.peer_id[:16], exc)
        except SignallingError as exc:  # malformed, forged or misaddressed: misbehaviour
            self.stats.invalid_signals += 1
            log.warning("signal from %s refused: %s", self.peer_id[:16], exc)
            if self.stats.invalid_signals > MAX_INVALID_SIGNALS:
                raise PeerMisbehaved(
                    f"peer sent {self.stats.invalid_signals} invalid signals"
                ) from exc

    async def _keepalive(self) -> None:
        nonce = 0
        while True:
            await trio.sleep(KEEPALIVE / 3)
            if trio.current_time() - self._last_sent >= KEEPALIVE:
                nonce += 1
                await self._send(Ping(nonce))

    async def _reader(self) -> None:
        limiter = RateLimiter(rate=RECEIVE_BYTES_PER_S, burst=2 * RECEIVE_BYTES_PER_S)
        received_before = self.link.bytes_received
        while True:
            with trio.move_on_after(IDLE_TIMEOUT) as idle:
                message = await self.link.receive()
            if idle.cancelled_caught:
                raise LinkBroken(f"no message from the peer for {IDLE_TIMEOUT:.0f}s")
            size = self.link.bytes_received - received_before
            received_before = self.link.bytes_received
            cost = min(size, limiter.burst)
            while not limiter.allow("peer", trio.current_time(), cost):  # noqa: ASYNC110 - tokens refill with time
                await trio.sleep(limiter.retry_after("peer", cost))
            await self._handle(message)

    async def _handle(self, message: Message) -> None:
        match message:
            case Want():
                await self._on_want(message)
            case NeedVector():
                await self._send_vector()
            case Vector():
                await self._on_vector(message)
            case InSync():
                self.stats.in_sync_at = trio.current_time()
            case Events():
                self.stats.events_received += len(message.events)
                prepared = await self.federation.prepare(message.events)
                await self._prepared_send.send(prepared)  # waits while a batch is queued
            case Ping(nonce):
                await self._send(Pong(nonce))
            case Pong():
                pass
            case SignalMessage(envelope):
                self._on_signal(envelope)
            case Goodbye(reason):
                raise LinkClosed(f"peer said goodbye: {reason}")
            case NeedInterest():
                await self._send(Interest(self.federation.interest))
            case Interest(authors):
                if not self._interests_requested:
                    raise PeerMisbehaved("interest sent without a need_interest request")
                self._interests_requested = 0
                listed = sorted(authors)
                await trio.to_thread.run_sync(self.federation.remember_scope, listed, self.peer_id)
                await self._adopt_interest(authors, scope_hash(listed))

    async def _adopt_interest(self, authors: frozenset[str], digest: str | None) -> None:
        self._their_interest_hash = digest
        if authors != self.their_interest:
            self.their_interest = authors
            await self.federation.update_scope()

    async def _on_want(self, want: Want) -> None:
        federation = self.federation
        if want.interest_hash != self._their_interest_hash:
            # Interest lists are cached by digest like scopes: a known one costs nothing.
            if want.interest_hash is None:
                await self._adopt_interest(frozenset(), None)
            else:
                listed = await trio.to_thread.run_sync(federation.recall_scope, want.interest_hash)
                if listed is not None:
                    await self._adopt_interest(frozenset(listed), want.interest_hash)
                elif not self._interests_requested:
                    # One request at a time: the answer is the peer's interest when
                    # it answers, so it covers any newer digest announced meanwhile.
                    self._interests_requested = 1
                    await self._send(NeedInterest())
        authors = await trio.to_thread.run_sync(federation.recall_scope, want.scope_hash)
        if authors is not None:
            heads = await trio.to_thread.run_sync(federation.node.store.heads_for, authors)
            if vector_hash(heads, authors) == want.vector_hash:
                self._adopt_scope(authors, {a: h.seq for a, h in heads.items()})
                await self._send(InSync())
                return
        if not self._vectors_requested:  # one at a time, as for interests
            self._vectors_requested = 1
            await self._send(NeedVector())

    async def _send_vector(self) -> None:
        scope = sorted(self.federation.scope)
        heads = await trio.to_thread.run_sync(self.federation.node.store.heads_for, scope)
        await self._send(Vector({a: heads[a].seq if a in heads else 0 for a in scope}))

    async def _on_vector(self, vector: Vector) -> None:
        if not self._vectors_requested:
            # Each vector is stored (the scope cache): only take the ones we asked for.
            raise PeerMisbehaved("vector sent without a need_vector request")
        self._vectors_requested = 0
        authors = sorted(vector.heads)
        await trio.to_thread.run_sync(self.federation.remember_scope, authors, self.peer_id)
        self._adopt_scope(authors, dict(vector.heads))
        self.authors_changed(authors)

    def _adopt_scope(self, authors: Iterable[str], known: dict[str, int]) -> None:
        blocked = self.federation.blocked_authors
        self.their_scope = frozenset(a for a in authors if a not in blocked)
        self.their_known = known

    async def _committer(self) -> None:
        """Store prepared batches in order, while the reader prepares the next one."""
        async for prepared in self._prepared_receive:
            await self._on_prepared(prepared)

    async def _on_prepared(self, prepared: PreparedBatch) -> None:
        result = await self.federation.commit(self, prepared)
        self.stats.events_accepted += result.accepted
        self.stats.unsolicited_events += result.unsolicited
        self.stats.invalid_events += len(result.rejected)
        if self.their_scope is not None:
            sent = [(e.author, e.seq) for e in result.report.accepted]
            for author, seq in [*sent, *result.held_by_sender.items()]:
                if author in self.their_scope:
                    self.their_known[author] = max(self.their_known.get(author, 0), seq)
        if self.stats.invalid_events > MAX_INVALID_EVENTS:
            await self._send(Goodbye("too many invalid events"))
            raise PeerMisbehaved(f"peer sent {self.stats.invalid_events} invalid events")

    async def _sender(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._dirty:
                # Take the authors out of the dirty set *before* reading: an event
                # stored meanwhile marks its author dirty again, so no wake-up is lost.
                scope = self.their_scope or frozenset()
                wanted = [(a, self.their_known.get(a, 0)) for a in sorted(self._dirty & scope)]
                self._dirty.clear()  # authors outside the scope (blocked since) are dropped
                batch, advanced, more = await trio.to_thread.run_sync(self._collect, wanted)
                for author, seq in advanced.items():
                    self.their_known[author] = max(self.their_known.get(author, 0), seq)
                self._dirty.update(more)
                if batch:
                    await self._send(Events(batch))
                    self.stats.events_sent += len(batch)
            if self.stats.caught_up_at is None and self.their_scope is not None:
                self.stats.caught_up_at = trio.current_time()

    def _collect(
        self, wanted: list[tuple[str, int]]
    ) -> tuple[list[bytes], dict[str, int], set[str]]:
        """Read the next batch from the store (in a worker thread; touches no session state).

        Returns the batch (at most BATCH_EVENTS events and BATCH_BYTES bytes, but
        always at least one event), the last seq taken per author, and the
        authors that still have more to send.
        """
        store = self.federation.node.store
        batch: list[bytes] = []
        size = 0
        advanced: dict[str, int] = {}
        more: set[str] = set()
        for index, (author, known) in enumerate(wanted):
            room = BATCH_EVENTS - len(batch)
            if room <= 0 or size >= BATCH_BYTES:
                more.update(a for a, _ in wanted[index:])
                break
            rows = store.events_after(author, known, limit=room)
            taken = 0
            for seq, raw in rows:
                if batch and size + len(raw) > BATCH_BYTES:
                    break
                batch.append(raw)
                size += len(raw)
                advanced[author] = seq
                taken += 1
            if taken < len(rows) or len(rows) == room:
                more.add(author)
        return batch, advanced, more


def backoff_delays(initial: float = 0.5, maximum: float = 60.0) -> Iterable[float]:
    """0.5, 1, 2, 4 ... capped at ``maximum`` seconds (jitter is the caller's)."""
    delay = initial
    while True:
        yield delay
        delay = min(maximum, delay * 2)
