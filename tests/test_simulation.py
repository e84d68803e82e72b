"""The gossip simulation: real nodes on in-memory links, on virtual time."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from node.errors import LinkClosed
from node.simulation import (
    LatencyTransport,
    SimConfig,
    bench_gossip,
    build_overlay,
    figures,
    percentile,
    random_follows,
    run_simulation,
    transport_pair,
)


def _connected(nodes: int, edges: list[tuple[int, int]]) -> bool:
    neighbours: dict[int, set[int]] = {n: set() for n in range(nodes)}
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen, todo = {0}, [0]
    while todo:
        for nxt in neighbours[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return len(seen) == nodes


@pytest.mark.parametrize(("nodes", "degree"), [(12, 3), (50, 6), (7, 10)])
def test_overlay_is_simple_connected_and_near_regular(nodes: int, degree: int) -> None:
    for seed in range(5):
        edges = build_overlay(nodes, degree, random.Random(seed))
        assert len(set(edges)) == len(edges)
        assert all(a < b for a, b in edges)  # no self-loops, one orientation
        assert _connected(nodes, edges)
        degrees = [sum(n in edge for edge in edges) for n in range(nodes)]
        want = min(degree, nodes - 1)
        assert sum(d != want for d in degrees) <= 2, degrees


def test_overlay_joins_pieces_into_one_graph() -> None:
    for seed in range(5):  # degree 1 is a matching: many pieces before joining
        assert _connected(20, build_overlay(20, 1, random.Random(seed)))


def test_follows_are_skewed_and_never_self() -> None:
    plan = random_follows(200, 10, random.Random(3))
    assert all(len(f) == 10 and me not in f for me, f in enumerate(plan))
    popularity = sorted((sum(a in f for f in plan) for a in range(200)), reverse=True)
    assert popularity[0] >= 5 * popularity[100]  # a few authors are followed by many


async def test_latency_transport_delays_in_order(autojump_clock: trio.testing.MockClock) -> None:
    one, two = transport_pair(random.Random(1), "t")
    sent: list[float] = []
    for i in range(200):
        sent.append(trio.current_time())
        await one.send(i.to_bytes(2, "big"))
        await trio.sleep(0.001)
    last = 0.0
    for i in range(200):
        assert int.from_bytes(await two.receive(), "big") == i
        now = trio.current_time()
        assert now > sent[i] and now >= last
        last = now
    await one.aclose()
    with pytest.raises(LinkClosed):
        await two.receive()


def test_latency_transport_is_a_message_transport() -> None:
    from node.peerlink import MessageTransport

    transport: MessageTransport = transport_pair(random.Random(1), "x")[0]
    assert isinstance(transport, LatencyTransport)


@pytest.mark.timeout(20)
def test_everyone_following_one_author_receives_every_post() -> None:
    nodes, events = 12, 10
    config = SimConfig(
        nodes,
        degree=3,
        events=events,
        follow_plan=[set()] + [{0}] * (nodes - 1),
        publishers=[0],
        seed=5,
    )
    original = trio.to_thread.run_sync
    result = run_simulation(config)
    assert trio.to_thread.run_sync is original  # the inline patch is undone
    assert result.link_errors == []
    assert result.interested == result.reachable == events * (nodes - 1)
    assert result.deliveries == events * (nodes - 1)
    assert result.missed == 0 and result.stray == 0 and result.unattributed == 0
    assert len(result.hops) == result.deliveries
    assert min(result.hops) >= 1
    assert max(result.hops) <= nodes - 1
    assert all(latency > 0 for latency in result.latencies)
    assert result.copies >= result.deliveries
    assert result.copies == result.deliveries + result.duplicates
    assert result.frames >= 1 and result.messages >= result.frames
    f = figures(result)
    assert f["coverage"] == 1.0 and f["reached_of_reachable"] == 1.0
    assert f["copies_per_delivery"] >= 1.0
    assert f["hops_p50"] <= f["hops_p99"] <= f["hops_max"]
    assert 0 < f["latency_p50_s"] <= f["latency_p99_s"] < 10


@pytest.mark.timeout(20)
@pytest.mark.parametrize("seed", [2, 3, 4])
def test_random_follows_reach_every_follower_the_overlay_allows(seed: int) -> None:
    lines: list[str] = []
    f = bench_gossip(16, degree=3, events=20, follows=4, seed=seed, echo=lines.append)
    assert f["link_errors"] == 0 and f["missed"] == 0 and f["stray"] == 0
    assert f["deliveries"] == f["reachable"] <= f["interested"]
    assert f["reached_of_reachable"] == 1.0
    assert f["coverage"] == round(f["deliveries"] / f["interested"], 4)
    assert f["hops_p50"] >= 1 and f["copies_per_delivery"] >= 1.0
    assert f["nodes"] == 16 and f["events"] == 20 and f["links"] >= 16 * 3 // 2 - 1
    assert lines[0].startswith("gossip: 16 nodes") and len(lines) >= 5


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0
    assert percentile([3.0], 0.01) == 3.0


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ValueError, match="nodes >= 2"):
        run_simulation(SimConfig(1))
