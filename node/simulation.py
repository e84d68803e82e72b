"""``talas bench gossip``: many real nodes in one process, on virtual time.

Theory of operation
-------------------
Every simulated node is a real node: its own data dir (keys, SQLite store),
a :class:`Federation`, the store watcher, and one :class:`PeerSession` per
overlay link doing the real handshake, sealing and replication.  Only the
network and the clock are simulated:

* links are in-memory :class:`LatencyTransport` pairs: each message is
  delivered after a one-way delay drawn from a lognormal distribution
  (median 40 ms, p99 250 ms over all messages; most of the spread is per
  link, a little per message) and never before the message sent ahead of it;
* time is trio's ``MockClock`` with ``autojump_threshold=0``: when every
  task waits, the clock jumps to the next deadline.

The store runs its SQLite work through ``trio.to_thread.run_sync``.  Under an
autojumping clock a worker thread leaves the loop idle, so virtual time races
ahead while the thread works (0.5 s of thread work measured as thousands of
virtual seconds).  For the simulation's duration ``run_sync`` therefore runs
the function inline: processing takes no virtual time, and the figures in
seconds are network latency only.  Data dirs go to /dev/shm when it exists.

Each (event, node that replicates its author) pair is recorded when the node
stores the event (``Federation.ingest_observer``), with its hop count: one
more than the hops of the peer that sent it (0 at the author's node).
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio
import trio.testing

from node import peerstore
from node.daemon import Node, now_ms, open_node, watch_store
from node.datadir import DataDir
from node.errors import LinkBroken, LinkClosed, TalasError
from node.federation import Federation
from node.ingest import ImportResult
from node.peerlink import establish
from node.replication import PeerSession
from protocol.keys import SigningKey

LATENCY_MEDIAN = 0.040
LATENCY_P99 = 0.250
LATENCY_SIGMA = math.log(LATENCY_P99 / LATENCY_MEDIAN) / 2.3263  # z of the 99th percentile
JITTER_SIGMA = 0.3  # per message; the rest of LATENCY_SIGMA is per link
QUIET_SECONDS = 5.0  # no ingest for this long (virtual) = the workload has settled
SETTLE_LIMIT = 600.0  # virtual seconds allowed for connecting, and for settling

T = TypeVar("T")
Item = tuple[float, bytes]


# -- the network ------------------------------------------------------------------


class LatencyTransport:
    """One end of an in-memory link; implements ``node.peerlink.MessageTransport``."""

    def __init__(
        self,
        outbox: trio.MemorySendChannel[Item],
        inbox: trio.MemoryReceiveChannel[Item],
        delay: Callable[[], float],
    ) -> None:
        self._outbox = outbox
        self._inbox = inbox
        self._delay = delay
        self._last_due = 0.0

    async def send(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        due = max(trio.current_time() + self._delay(), self._last_due)  # FIFO per direction
        self._last_due = due
        try:
            self._outbox.send_nowait((due, data))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise LinkBroken("simulated link closed") from exc

    async def receive(self) -> bytes:
        try:
            due, data = await self._inbox.receive()
        except trio.EndOfChannel as exc:
            raise LinkClosed("simulated link closed by peer") from exc
        except trio.ClosedResourceError as exc:
            raise LinkBroken("simulated link closed") from exc
        await trio.sleep_until(due)
        return data

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self._outbox.close()
        self._inbox.close()


def transport_pair(rng: random.Random, seed: str) -> tuple[LatencyTransport, LatencyTransport]:
    """Both ends of a link with its own base latency and per-direction jitter streams."""
    base = LATENCY_MEDIAN * math.exp(rng.gauss(0.0, math.sqrt(LATENCY_SIGMA**2 - JITTER_SIGMA**2)))
    ab_send, ab_recv = trio.open_memory_channel[Item](math.inf)
    ba_send, ba_recv = trio.open_memory_channel[Item](math.inf)

    def delays(direction: str) -> Callable[[], float]:
        jitter = random.Random(f"{seed}:{direction}")  # noqa: S311 - simulation, not crypto
        return lambda: base * math.exp(jitter.gauss(0.0, JITTER_SIGMA))

    return (
        LatencyTransport(ab_send, ba_recv, delays("ab")),
        LatencyTransport(ba_send, ab_recv, delays("ba")),
    )


def build_overlay(nodes: int, degree: int, rng: random.Random) -> list[tuple[int, int]]:
    """A connected random graph where (almost) every node has ``degree`` neighbours."""
    degree = min(degree, nodes - 1)
    edges: set[tuple[int, int]] = set()
    stubs = [n for n in range(nodes) for _ in range(degree)]
    for _ in range(100):  # pair stubs at random; retry the leftovers
        rng.shuffle(stubs)
        left: list[int] = []
        for a, b in zip(stubs[::2], stubs[1::2], strict=False):
            pair = (min(a, b), max(a, b))
            if a == b or pair in edges:
                left += [a, b]
            else:
                edges.add(pair)
        stubs = left + stubs[len(stubs) - len(stubs) % 2 :]
        if len(stubs) < 2:
            break
    neighbours = _adjacency(nodes, edges)
    seen = _reach(0, neighbours, lambda _: True)
    for other in range(nodes):  # join any stray pieces to the first
        if other not in seen:
            edges.add((0, other))
            seen |= _reach(other, neighbours, lambda _: True)
    return sorted(edges)


def _adjacency(nodes: int, edges: Collection[tuple[int, int]]) -> list[list[int]]:
    neighbours: list[list[int]] = [[] for _ in range(nodes)]
    for a, b in edges:
        neighbours[a].append(b)
        neighbours[b].append(a)
    return neighbours


def _reach(start: int, neighbours: list[list[int]], allowed: Callable[[int], bool]) -> set[int]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in neighbours[todo.pop()]:
            if nxt not in seen and allowed(nxt):
                seen.add(nxt)
                todo.append(nxt)
    return seen


def random_follows(nodes: int, follows: int, rng: random.Random) -> list[set[int]]:
    """Who follows whom: Zipf popularity (weight 1/rank), ranks shuffled over the nodes."""
    ranks = list(range(1, nodes + 1))
    rng.shuffle(ranks)
    weights = [1.0 / r for r in ranks]
    plan: list[set[int]] = []
    for me in range(nodes):
        chosen: set[int] = set()
        want = min(follows, nodes - 1)
        while len(chosen) < want:
            pick = rng.choices(range(nodes), weights)[0]
            if pick != me:
                chosen.add(pick)
        plan.append(chosen)
    return plan


# -- the simulation ----------------------------------------------------------------


@dataclass(frozen=True)
class SimConfig:
    nodes: int
    degree: int = 6
    events: int = 200
    follows: int = 20
    rate: float = 20.0  # posts per virtual second, network-wide (Poisson)
    seed: int = 1
    follow_plan: Sequence[Collection[int]] | None = None  # node -> nodes whose author it follows
    publishers: Sequence[int] | None = None  # nodes whose authors post (default: all, uniformly)


@dataclass
class SimResult:
    config: SimConfig
    links: int
    interested: int  # (event, follower) pairs
    reachable: int  # of those, joined to the author through nodes that replicate it
    latencies: list[float]  # one per delivery, virtual seconds after publishing
    hops: list[int]  # one per attributed delivery
    unattributed: int  # deliveries whose sender had no hop count for the event
    missed: int  # reachable pairs never delivered
    stray: int  # copies stored by nodes that neither follow nor relay the author
    relayed: int  # copies stored by relays (neighbours of followers) for them
    frames: int  # Events messages received during the workload
    copies: int  # event copies sent in them
    duplicates: int  # copies the receiver already held
    messages: int  # replication messages of any kind sent during the workload
    bytes_sent: int
    link_errors: list[str]
    setup_s: float  # wall: nodes opened, every link replicating
    wall_s: float
    connect_virtual_s: float
    virtual_s: float  # first post until quiet

    @property
    def deliveries(self) -> int:
        return len(self.latencies)


@dataclass
class _Sim:
    node: Node
    federation: Federation
    author: SigningKey
    hops: dict[str, int] = field(default_factory=dict)  # event id -> hops when stored


@contextmanager
def _threads_inline() -> Iterator[None]:
    """Run ``trio.to_thread.run_sync`` work on the loop (see the module docstring)."""
    original = trio.to_thread.run_sync

    async def inline(sync_fn: Callable[..., T], *args: Any, **_options: Any) -> T:
        await trio.lowlevel.checkpoint()
        return sync_fn(*args)

    trio.to_thread.run_sync = inline  # type: ignore[assignment]
    try:
        yield
    finally:
        trio.to_thread.run_sync = original


def _tmp_root() -> str | None:
    shm = Path("/dev/shm")  # noqa: S108 - RAM-backed: SQLite's fsyncs cost nothing there
    return str(shm) if shm.is_dir() else None


def run_simulation(config: SimConfig) -> SimResult:
    """Run one simulation to the end (blocking; starts its own trio loop)."""
    if config.nodes < 2 or config.degree < 1 or config.events < 0 or config.rate <= 0:
        raise ValueError("need nodes >= 2, degree >= 1, events >= 0, rate > 0")
    with (
        _threads_inline(),
        tempfile.TemporaryDirectory(prefix="talas-sim-", dir=_tmp_root()) as tmp,
    ):
        clock = trio.testing.MockClock(autojump_threshold=0)
        return trio.run(_Simulation(config, Path(tmp)).run, clock=clock)


async def _until(check: Callable[[], bool], what: str) -> None:
    with trio.move_on_after(SETTLE_LIMIT) as scope:
        while not check():  # noqa: ASYNC110 - polls shared state in virtual time
            await trio.sleep(0.1)
    if scope.cancelled_caught:
        raise AssertionError(f"simulation: {what} not reached within {SETTLE_LIMIT:.0f} s")


class _Simulation:
    def __init__(self, config: SimConfig, root: Path) -> None:
        self.config = config
        self.root = root
        self.rng = random.Random(config.seed)  # noqa: S311 - reproducible simulation
        self.edges = build_overlay(config.nodes, config.degree, self.rng)
        self.plan = config.follow_plan or random_follows(config.nodes, config.follows, self.rng)
        self.sims: list[_Sim] = []
        self.index_of: dict[str, int] = {}
        self.published: dict[str, tuple[int, float]] = {}  # event id -> (author node, time)
        self.arrivals: list[tuple[str, int, float, int | None]] = []  # id, node, time, hops
        self.errors: list[str] = []
        self.frames = self.duplicates = 0
        self.last_ingest = 0.0

    async def run(self) -> SimResult:
        wall0 = time.perf_counter()
        async with AsyncExitStack() as stack:
            for i in range(self.config.nodes):
                data = DataDir(self.root / f"n{i:04d}")
                node = await stack.enter_async_context(open_node(data, name=f"sim{i}"))
                node.federation = Federation(node)
                node.federation.ingest_observer = self._observer(i)
                self.sims.append(_Sim(node, node.federation, node.identity.author_key()))
                self.index_of[node.node_id] = i
            for sim, followed in zip(self.sims, self.plan, strict=True):
                for a in followed:
                    peerstore.set_follow(sim.node.store, self.sims[a].author.id, True, now_ms())
                await sim.federation.refresh()
            async with trio.open_nursery() as nursery:
                for sim in self.sims:
                    await nursery.start(watch_store, sim.node)
                for a, b in self.edges:
                    one, two = transport_pair(self.rng, f"{self.config.seed}:{a}:{b}")
                    nursery.start_soon(self._side, a, one, True)
                    nursery.start_soon(self._side, b, two, False)
                await _until(lambda: self._connected() or bool(self.errors), "all links up")
                setup_s = time.perf_counter() - wall0
                start = trio.current_time()
                before = self._totals()
                await self._publish(start)
                await _until(
                    lambda: trio.current_time() - self.last_ingest >= QUIET_SECONDS, "quiet"
                )
                after = self._totals()
                virtual_s = trio.current_time() - start
                nursery.cancel_scope.cancel()
        messages, bytes_sent, copies, frames, duplicates = (
            x - y for x, y in zip(after, before, strict=True)
        )
        result = _assess(self.config, self.edges, self.plan, self.published, self.arrivals)
        result.update(
            frames=frames, copies=copies, duplicates=duplicates, messages=messages,
            bytes_sent=bytes_sent, link_errors=self.errors, setup_s=setup_s,
            wall_s=time.perf_counter() - wall0, connect_virtual_s=start, virtual_s=virtual_s,
        )  # fmt: skip
        return SimResult(config=self.config, links=len(self.edges), **result)

    def _observer(self, me: int) -> Callable[[PeerSession, ImportResult], None]:
        def observe(session: PeerSession, result: ImportResult) -> None:
            now = trio.current_time()
            self.frames += 1
            self.duplicates += result.already_known
            self.last_ingest = now
            sender = self.sims[self.index_of[session.peer_id]]
            for event in result.report.accepted:
                before = sender.hops.get(event.id)
                hops = None if before is None else before + 1
                if hops is not None:
                    self.sims[me].hops[event.id] = hops
                self.arrivals.append((event.id, me, now, hops))

        return observe

    async def _side(self, i: int, transport: LatencyTransport, initiator: bool) -> None:
        federation = self.sims[i].federation
        try:
            link = await establish(
                transport, initiator=initiator, node_key=federation.node.node_key
            )
            await federation.run_session(PeerSession(link, federation, initiator=initiator))
        except TalasError as exc:
            self.errors.append(f"node {i}: {type(exc).__name__}: {exc}")

    def _sessions(self) -> list[PeerSession]:
        return [s for sim in self.sims for s in sim.federation.sessions.values()]

    def _connected(self) -> bool:
        live = self._sessions()
        return len(live) == 2 * len(self.edges) and all(s.their_scope for s in live)

    def _totals(self) -> tuple[int, ...]:
        live = self._sessions()
        return (
            sum(s.link.messages_sent for s in live),
            sum(s.link.bytes_sent for s in live),
            sum(s.stats.events_sent for s in live),
            self.frames,
            self.duplicates,
        )

    async def _publish(self, start: float) -> None:
        publishers = list(self.config.publishers or range(self.config.nodes))
        at = start
        for number in range(self.config.events):
            at += self.rng.expovariate(self.config.rate)
            who = self.rng.choice(publishers)
            sim = self.sims[who]
            await trio.sleep_until(at)
            event = sim.node.store.append_local(
                sim.author, kind="post", body={"text": f"sim post {number}"}, now_ms=now_ms()
            )
            sim.hops[event.id] = 0
            self.published[event.id] = (who, trio.current_time())
            sim.node.poke()
        self.last_ingest = max(self.last_ingest, trio.current_time())


def _assess(
    config: SimConfig,
    edges: list[tuple[int, int]],
    plan: Sequence[Collection[int]],
    published: dict[str, tuple[int, float]],
    arrivals: list[tuple[str, int, float, int | None]],
) -> dict[str, Any]:
    """Compare what arrived with what the follow graph and the overlay allow."""
    neighbours = _adjacency(config.nodes, edges)
    followers: list[set[int]] = [set() for _ in range(config.nodes)]
    for node, followed in enumerate(plan):
        for author in followed:
            if author != node:
                followers[author].add(node)
    # A node carries an author's feed when it follows the author, or relays it
    # for a neighbour that follows (or is) the author: interests go one hop.
    carriers: list[set[int]] = []
    for author in range(config.nodes):
        interested = followers[author] | {author}
        relays = {n for node in interested for n in neighbours[node]}
        carriers.append(interested | relays)
    reach = [
        _reach(author, neighbours, carriers[author].__contains__) & followers[author]
        for author in range(config.nodes)
    ]
    expected = {(e, node) for e, (author, _) in published.items() for node in reach[author]}
    latencies: list[float] = []
    hops: list[int] = []
    stray = relayed = 0
    delivered: set[tuple[str, int]] = set()
    for event_id, node, at, hop in arrivals:
        author, sent_at = published[event_id]
        if node not in followers[author]:
            relayed += 1
            stray += node not in carriers[author]
            continue
        delivered.add((event_id, node))
        latencies.append(at - sent_at)
        if hop is not None:
            hops.append(hop)
    return {
        "interested": sum(len(followers[author]) for author, _ in published.values()),
        "reachable": len(expected),
        "latencies": latencies,
        "hops": hops,
        "unattributed": len(latencies) - len(hops),
        "missed": len(expected - delivered),
        "stray": stray,
        "relayed": relayed,
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def figures(result: SimResult) -> dict[str, float | int]:
    """The result as flat numbers, per delivered event where it says so."""
    per = max(1, result.deliveries)
    return {
        "nodes": result.config.nodes,
        "degree": result.config.degree,
        "links": result.links,
        "events": result.config.events,
        "follows": result.config.follows,
        "interested": result.interested,
        "reachable": result.reachable,
        "deliveries": result.deliveries,
        "missed": result.missed,
        "stray": result.stray,
        "relayed": result.relayed,
        "relayed_per_delivery": round(result.relayed / per, 3),
        "coverage": round(result.deliveries / max(1, result.interested), 4),
        "reached_of_reachable": round(result.deliveries / max(1, result.reachable), 4),
        "hops_p50": percentile(result.hops, 0.5),
        "hops_p99": percentile(result.hops, 0.99),
        "hops_max": max(result.hops, default=0),
        "latency_p50_s": round(percentile(result.latencies, 0.5), 4),
        "latency_p99_s": round(percentile(result.latencies, 0.99), 4),
        "frames_per_delivery": round(result.frames / per, 3),
        "copies_per_delivery": round(result.copies / per, 3),
        "duplicates_per_delivery": round(result.duplicates / per, 3),
        "messages_per_delivery": round(result.messages / per, 3),
        "bytes_per_delivery": round(result.bytes_sent / per),
        "unattributed": result.unattributed,
        "link_errors": len(result.link_errors),
        "setup_s": round(result.setup_s, 2),
        "wall_s": round(result.wall_s, 2),
        "connect_virtual_s": round(result.connect_virtual_s, 2),
        "virtual_s": round(result.virtual_s, 2),
    }


def bench_gossip(
    nodes: int,
    *,
    degree: int = 6,
    events: int = 200,
    follows: int = 20,
    rate: float = 20.0,
    seed: int = 1,
    echo: Callable[[str], object] = print,
) -> dict[str, float | int]:
    """Simulate ``nodes`` real nodes on a random overlay; print a summary, return figures."""
    echo(f"gossip: {nodes} nodes, degree {degree}, {follows} follows each, "
         f"{events} posts at {rate:g}/s (virtual), seed {seed} ...")  # fmt: skip
    config = SimConfig(nodes, degree=degree, events=events, follows=follows, rate=rate, seed=seed)
    f = figures(run_simulation(config))
    echo(f"  {f['links']} links up after {f['connect_virtual_s']} virtual s, "
         f"{f['setup_s']} s wall (nodes opened, handshakes, vectors)")  # fmt: skip
    echo(f"  delivered {f['deliveries']} of {f['interested']} (post, follower) pairs: "
         f"coverage {f['coverage']:.1%}; {f['reachable']} are reachable through "
         f"followers and their neighbours (relays), {f['reached_of_reachable']:.1%} of "
         f"those reached; {f['relayed_per_delivery']:.2f} relay copies stored per "
         "delivery")  # fmt: skip
    echo(f"  propagation hops   p50 {f['hops_p50']:g}  p99 {f['hops_p99']:g}"
         f"  max {f['hops_max']}")  # fmt: skip
    echo(f"  propagation time   p50 {f['latency_p50_s']:.3f} s  p99 {f['latency_p99_s']:.3f} s"
         "  (virtual; links 40 ms median, 250 ms p99 one way)")  # fmt: skip
    echo(f"  per delivery       {f['frames_per_delivery']:.2f} Events frames, "
         f"{f['copies_per_delivery']:.2f} event copies ({f['duplicates_per_delivery']:.2f} "
         f"duplicates), {f['messages_per_delivery']:.2f} messages, "
         f"{f['bytes_per_delivery']} bytes")  # fmt: skip
    echo(f"  wall {f['wall_s']} s; workload {f['virtual_s']} virtual s; "
         f"{f['link_errors']} link errors, {f['missed']} reachable pairs missed")  # fmt: skip
    return f
