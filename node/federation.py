"""Federation: the p2p listener, the dialers, and the shared replication state.

The listener and one dialer per configured peer each hand established links
to :meth:`Federation.run_session`, which keeps one link per peer node (when
two nodes dial each other at once, both keep the link dialled by the smaller
node id) and runs :class:`node.replication.PeerSession` on it.  A supervisor
re-reads peers, follows and blocks from the database on a short interval, so
changes made by ``talas peer add`` / ``follow`` / ``block`` in another process
take effect while the node runs.

Live features (chat over WebRTC data channels) reach peers through
:meth:`Federation.send_signal`, and signals received on a link go to
:attr:`Federation.live` (set by :func:`node.live.serve_live`).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterable
from functools import partial
from typing import TYPE_CHECKING

import trio
import trio_websocket
from trio_websocket import WebSocketRequest

from node import peerstore
from node.daemon import Node, now_ms
from node.errors import LinkClosed, LinkError, PeerMisbehaved, TalasError
from node.ingest import ImportResult, PreparedBatch, VerifyPool, commit_batch, prepare_batch
from node.peerlink import (
    WEBSOCKET_MAX_MESSAGE,
    WebSocketTransport,
    establish,
    open_websocket_client,
)
from node.ratelimit import RateLimiter
from node.replication import PeerSession, backoff_delays
from node.store import EventRef
from protocol.feed import FeedHead
from protocol.messages import MAX_INTEREST_AUTHORS, MAX_VECTOR_AUTHORS, Goodbye

if TYPE_CHECKING:
    from node.live import LiveManager

SUPERVISE_INTERVAL = 0.5
LIVE_STATE_EVERY_MS = 2000
CONNECT_TIMEOUT = 5.0
INBOUND_PER_IP_PER_S = 5.0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return str(exc) or type(exc).__name__


def _log(message: str) -> None:
    print(f"talas: {message}", file=sys.stderr, flush=True)


class Federation:
    """Everything the node shares between its peer links."""

    def __init__(self, node: Node, *, pool: VerifyPool | None = None) -> None:
        self.node = node
        self.pool = pool
        self.sessions: dict[str, PeerSession] = {}
        self.ingest_lock = trio.Lock()  # FIFO: peers take turns, none starves
        self.interest: frozenset[str] = frozenset()  # what we follow or own
        self.scope: frozenset[str] = frozenset()  # interest + what we relay for peers
        self.scope_digest = peerstore.scope_hash([])
        self._frozen: frozenset[str] = frozenset()
        self._live_state_at = 0
        self.blocked_authors: frozenset[str] = frozenset()
        self.blocked_nodes: frozenset[str] = frozenset()
        self.heads_cache: dict[str, FeedHead] = {}
        self._dialers: dict[str, trio.CancelScope] = {}
        self._inbound_limiter = RateLimiter(rate=INBOUND_PER_IP_PER_S, burst=20)
        self.ingest_observer: Callable[[PeerSession, ImportResult], None] | None = None
        """Called after each batch a peer sent is ingested (simulations measure hops here)."""
        self.live: LiveManager | None = None
        """The live layer: verifies and handles received signals (None: signals dropped)."""
        node.add_listener(self.on_new_events)

    # -- state shared with sessions -------------------------------------------------

    def recall_scope(self, digest: str) -> list[str] | None:
        return peerstore.recall_scope(self.node.store, digest)

    def remember_scope(self, authors: list[str], peer: str) -> None:
        peerstore.remember_scope(self.node.store, authors, now_ms(), peer)

    def on_new_events(self, events: list[EventRef]) -> None:
        authors = {event.author for event in events}
        for event in events:
            known = self.heads_cache.get(event.author)
            if known is None or event.seq > known.seq:
                self.heads_cache[event.author] = FeedHead(event.author, event.seq, event.id)
        for session in list(self.sessions.values()):
            session.authors_changed(authors)

    async def prepare(self, raws: list[bytes]) -> PreparedBatch:
        """Decode a peer's batch and start verifying it (no lock: links overlap here)."""
        work = partial(
            prepare_batch,
            self.node.store,
            list(enumerate(raws, start=1)),
            pool=self.pool,
            accept_author=self.scope.__contains__,
        )
        return await trio.to_thread.run_sync(work)

    async def commit(self, session: PeerSession, prepared: PreparedBatch) -> ImportResult:
        """Finish verifying and store a prepared batch, in turn with every other peer."""
        work = partial(commit_batch, self.node.store, prepared, now_ms=now_ms())
        async with self.ingest_lock:
            result = await trio.to_thread.run_sync(work)
        if self.ingest_observer is not None:
            self.ingest_observer(session, result)
        if result.accepted:
            self.node.poke()
        if result.report.forks:
            await self.refresh()  # frozen feeds leave the scope now, not at the next tick
        return result

    # -- configuration from the database ------------------------------------------------

    def _read_config(
        self,
    ) -> tuple[frozenset[str], frozenset[str], dict[str, str], list[peerstore.PeerRecord]]:
        store = self.node.store
        own = {
            self.node.identity.author_info(n).public.hex()
            for n in self.node.identity.author_names()
        }
        frozen = frozenset(h.author for h in store.heads() if h.frozen)
        blocks = peerstore.blocked(store)
        interest = (own | set(peerstore.follows(store))) - frozen - set(blocks)
        if len(interest) > MAX_INTEREST_AUTHORS:
            # Interest and vectors must fit in one message: keep our own authors
            # and the first follows in id order, and say so.
            follows = sorted(interest - own)[: MAX_INTEREST_AUTHORS - len(own)]
            _log(f"following {len(interest)} authors; replicating {MAX_INTEREST_AUTHORS}")
            interest = own | set(follows)
        return frozenset(interest), frozen, blocks, peerstore.list_peers(store)

    async def refresh(self) -> list[peerstore.PeerRecord]:
        """Re-read follows, blocks and peers; tell every link when the scope changed."""
        interest, frozen, blocks, peers = await trio.to_thread.run_sync(self._read_config)
        self.blocked_authors = frozenset(t for t, w in blocks.items() if w == "author")
        self.blocked_nodes = frozenset(t for t, w in blocks.items() if w == "node")
        self._frozen = frozen
        for peer_id, session in list(self.sessions.items()):
            if peer_id in self.blocked_nodes:
                session.close(LinkClosed("node blocked"))
            elif session.their_scope is not None and session.their_scope & self.blocked_authors:
                session.their_scope = session.their_scope - self.blocked_authors
        interest_changed = interest != self.interest
        self.interest = interest
        if not await self.update_scope() and interest_changed:
            for session in list(self.sessions.values()):
                await session.send_want()  # carries the new interest digest
        return peers

    async def update_scope(self) -> bool:
        """Scope = our interest + our peers' interests (so we can relay between them).

        Relaying is one hop deep: an Interest lists only what a node follows or
        owns, never what it relays, so scopes do not snowball across the network.
        """
        relay: set[str] = set()
        for session in self.sessions.values():
            relay |= session.their_interest
        relay -= self.blocked_authors | self._frozen | self.interest
        room = MAX_VECTOR_AUTHORS - len(self.interest)
        scope = self.interest | frozenset(sorted(relay)[:room])
        if scope == self.scope:
            return False
        self.scope = scope
        self.scope_digest = peerstore.scope_hash(scope)
        for session in list(self.sessions.values()):
            await session.send_want()
        return True

    def send_signal(self, peer_id: str, envelope: bytes) -> None:
        """Queue a signed signalling envelope on the link to ``peer_id`` (raises LinkError)."""
        session = self.sessions.get(peer_id)
        if session is None:
            raise LinkClosed(f"no link to node {peer_id[:16]}…")
        session.send_signal(envelope)

    # -- sessions -----------------------------------------------------------------

    def _keeps_new(self, new: PeerSession, old: PeerSession) -> bool:
        me = self.node.node_id

        def dialer(s: PeerSession) -> str:
            return me if s.initiator else s.peer_id

        if dialer(new) == dialer(old):
            return True  # a reconnect: the old link is stale
        return dialer(new) == min(me, new.peer_id)

    async def run_session(self, session: PeerSession) -> None:
        """Run replication on an established link until it ends."""
        link = session.link
        try:
            if link.peer_id in self.blocked_nodes:
                await link.send(Goodbye("blocked"))
                raise PeerMisbehaved(f"node {link.peer_id} is blocked")
            old = self.sessions.get(link.peer_id)
            if old is not None:
                if not self._keeps_new(session, old):
                    await link.send(Goodbye("duplicate link"))
                    raise LinkClosed("duplicate link to the same node")
                old.close(LinkClosed("replaced by a newer link"))
            self.sessions[link.peer_id] = session
            try:
                await session.run()
            finally:
                if self.sessions.get(link.peer_id) is session:
                    del self.sessions[link.peer_id]
        finally:
            with trio.move_on_after(2) as cleanup:
                cleanup.shield = True
                await link.aclose()

    # -- listener -------------------------------------------------------------------

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[str]) -> None:
        """Accept peer links on ws://host:port until cancelled."""
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    self._inbound,
                    host,
                    port,
                    None,
                    max_message_size=WEBSOCKET_MAX_MESSAGE,
                    connect_timeout=CONNECT_TIMEOUT,
                    disconnect_timeout=2,
                )
            )
            bound = server.port
            shown = f"[{host}]" if ":" in host else host
            task_status.started(f"ws://{shown}:{bound}")

    async def _inbound(self, request: WebSocketRequest) -> None:
        remote = request.remote
        client = remote.address if isinstance(remote, trio_websocket.Endpoint) else str(remote)
        if request.path != peerstore.P2P_PATH:
            await request.reject(404)
            return
        if not self._inbound_limiter.allow(str(client), trio.current_time()):
            await request.reject(429)
            return
        ws = await request.accept()
        try:
            link = await establish(
                WebSocketTransport(ws), initiator=False, node_key=self.node.node_key
            )
            await self.run_session(PeerSession(link, self, initiator=False))
        except (TalasError, trio_websocket.HandshakeError) as exc:
            if not isinstance(exc, LinkClosed):
                _log(f"inbound link from {client} ended: {_describe(exc)}")
        except Exception as exc:  # one bad link must never stop the listener
            _log(f"inbound link from {client} failed: {exc!r}")

    # -- dialers -----------------------------------------------------------------

    async def supervise(self, *, task_status: trio.TaskStatus[None]) -> None:
        """Keep one dialer per configured peer; refresh config; record live state."""
        async with trio.open_nursery() as nursery:
            await self._supervise_once(nursery)
            task_status.started()
            while True:
                await trio.sleep(SUPERVISE_INTERVAL)
                await self._supervise_once(nursery)

    async def _supervise_once(self, nursery: trio.Nursery) -> None:
        peers = await self.refresh()
        self.heads_cache = {
            h.author: h for h in await trio.to_thread.run_sync(self.node.store.heads)
        }
        configured = {p.address: p for p in peers}
        for address in list(self._dialers):
            if address not in configured:
                self._dialers.pop(address).cancel()
        for address, peer in configured.items():
            if address not in self._dialers:
                scope = trio.CancelScope()
                self._dialers[address] = scope
                nursery.start_soon(self._dial_forever, scope, address, peer.pinned_id)
        await trio.to_thread.run_sync(self._record_live_state, list(self.sessions.values()))

    def _record_live_state(self, sessions: Iterable[PeerSession]) -> None:
        """Last seen and lag of connected peers, for ``talas peer list`` (every few s)."""
        now = now_ms()
        if now - self._live_state_at < LIVE_STATE_EVERY_MS:
            return
        self._live_state_at = now
        for session in sessions:
            if session.address is not None:
                peerstore.record_peer_state(
                    self.node.store,
                    session.address,
                    state="connected",
                    now_ms=now_ms(),
                    node_id=session.peer_id,
                    lag=session.lag,
                )

    async def _record(
        self,
        address: str,
        state: str,
        *,
        node_id: str | None = None,
        error: str | None = None,
    ) -> None:
        record = partial(
            peerstore.record_peer_state,
            self.node.store,
            address,
            state=state,
            now_ms=now_ms(),
            node_id=node_id,
            error=error,
        )
        await trio.to_thread.run_sync(record)

    async def _dial_forever(
        self, scope: trio.CancelScope, address: str, pinned: str | None
    ) -> None:
        known_id = pinned
        delays = iter(backoff_delays())
        with scope:
            while True:
                if known_id is not None and (
                    known_id in self.sessions or known_id in self.blocked_nodes
                ):
                    await trio.sleep(SUPERVISE_INTERVAL)  # an inbound link serves it already
                    continue
                await self._record(address, "connecting")
                try:
                    async with open_websocket_client(
                        address + peerstore.P2P_PATH, connect_seconds=CONNECT_TIMEOUT
                    ) as ws:
                        link = await establish(
                            WebSocketTransport(ws),
                            initiator=True,
                            node_key=self.node.node_key,
                            expected_peer=pinned,
                        )
                        known_id = link.peer_id
                        delays = iter(backoff_delays())
                        await self._record(address, "connected", node_id=link.peer_id, error=None)
                        await self.run_session(
                            PeerSession(link, self, initiator=True, address=address)
                        )
                    state, error = "disconnected", None
                except PeerMisbehaved as exc:
                    state, error = "refused", _describe(exc)
                    _log(f"peer {address} refused: {error}")
                except (
                    LinkError,
                    OSError,
                    trio_websocket.HandshakeError,
                    trio.TooSlowError,
                ) as exc:
                    state, error = "disconnected", _describe(exc)
                except BaseExceptionGroup as group:
                    if group.subgroup(lambda e: isinstance(e, trio.Cancelled)) is not None:
                        raise
                    state, error = "disconnected", _describe(group)
                except Exception as exc:  # keep dialling whatever the peer did
                    state, error = "failed", repr(exc)
                    _log(f"link to {address} failed: {error}")
                await self._record(address, state, error=error)
                await trio.sleep(next(delays) * random.uniform(0.8, 1.2))  # noqa: S311
