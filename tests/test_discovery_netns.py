"""Discovery across a veth pair between two network namespaces the suite creates.

Two Talas nodes on separate "hosts" find each other (and rename on a name
conflict), and an independent implementation, avahi, agrees with ours in both
directions.  Needs root: CI runs as root.  Nothing here touches the host's
interfaces: the veth pair exists only inside the namespaces.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from node.discovery import SERVICE_TYPE
from tests.netns import (
    Pair,
    agent_command,
    avahi,
    in_ns,
    ip,
    not_seen,
    processes_mentioning,
    seen,
    started,
    veth_pair,
)


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    with veth_pair() as created:
        yield created


def registered(event: dict[str, Any]) -> bool:
    return bool(event.get("event") == "registered")


def listing(event: dict[str, Any], node_id: str) -> dict[str, Any]:
    return next(n for n in event["nearby"] if n["node_id"] == node_id)


async def test_nodes_in_two_namespaces_find_each_other(pair: Pair) -> None:
    prefix = secrets.token_hex(4)  # same name and short id: the second must rename
    id_a, id_b = prefix + secrets.token_hex(28), prefix + secrets.token_hex(28)
    command_a = agent_command(pair.a.address, "--node-id", id_a, "--name", "twin",
                              "--http", "8765", "--p2p", "8766", ns=pair.a.ns)  # fmt: skip
    command_b = agent_command(pair.b.address, "--node-id", id_b, "--name", "twin",
                              "--http", "9000", ns=pair.b.ns)  # fmt: skip
    async with started(command_a, "agent a") as a:
        event = await a.wait_for(registered, 10)
        assert event["service"] == f"twin {prefix}.{SERVICE_TYPE}"
        async with started(command_b, "agent b") as b:
            event = await b.wait_for(registered, 10)
            assert event["service"] == f"twin {prefix}-2.{SERVICE_TYPE}"
            in_b = listing(await b.wait_for(seen(id_a), 10), id_a)
            assert in_b["addresses"] == [pair.a.address]
            assert (in_b["http_port"], in_b["p2p_port"], in_b["name"]) == (8765, 8766, "twin")
            in_a = listing(await a.wait_for(seen(id_b), 10), id_b)
            assert in_a["addresses"] == [pair.b.address]
            assert (in_a["http_port"], in_a["p2p_port"]) == (9000, None)
            assert in_a["service"] == f"twin {prefix}-2.{SERVICE_TYPE}"
        # b stopped (SIGTERM): its goodbye crosses the veth
        await a.wait_for(not_seen(id_b), 5)


def _browse(env: dict[str, str], ns: str) -> list[list[str]]:
    result = subprocess.run(
        in_ns(ns, "avahi-browse", "--resolve", "--parsable", "--terminate", "_talas._tcp"),
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=20,
        check=False,
    )
    return [line.split(";") for line in result.stdout.splitlines() if line.startswith("=")]


async def test_avahi_and_talas_see_each_other(pair: Pair) -> None:
    node_id = secrets.token_hex(32)
    talas = agent_command(pair.b.address, "--node-id", node_id, "--name", "talas in b",
                          "--http", "8765", "--p2p", "8766", ns=pair.b.ns)  # fmt: skip
    avahi_id = secrets.token_hex(32)
    async with avahi(pair.a) as daemon, started(talas, "talas agent") as agent:
        # (a) avahi-browse, in a's namespace, resolves the node advertised from b
        found: list[str] | None = None
        with trio.fail_after(15):
            while found is None:
                rows = await trio.to_thread.run_sync(_browse, daemon.env, pair.a.ns)
                found = next((r for r in rows if f'"id={node_id}"' in r[9]), None)
        interface, protocol, _, service_type, _, _, address, port, record = found[1:10]
        assert (interface, protocol, service_type) == (pair.a.interface, "IPv4", "_talas._tcp")
        assert (address, port) == (pair.b.address, "8765")
        for item in ('"v=1"', '"name=talas in b"', '"http=8765"', '"p2p=8766"'):
            assert item in record
        # (b) talas, in b, lists a service avahi-publish announces from a
        publish = in_ns(pair.a.ns, "avahi-publish", "-s", "avahi peer", "_talas._tcp", "4321",
                        f"id={avahi_id}", "v=1", "name=x", "http=1", "p2p=2")  # fmt: skip
        async with started(publish, "avahi-publish", daemon.env):
            event = await agent.wait_for(seen(avahi_id), 10)
            entry = listing(event, avahi_id)
            assert entry["addresses"] == [pair.a.address]
            assert (entry["name"], entry["http_port"], entry["p2p_port"]) == ("x", 1, 2)
            assert entry["service"] == f"avahi peer.{SERVICE_TYPE}"
        await agent.wait_for(not_seen(avahi_id), 5)  # avahi's goodbye
    joined = [line for line in daemon.log if "Joining mDNS multicast group" in line]
    assert joined and all(f"interface {pair.a.interface}." in line for line in joined), joined
    assert processes_mentioning(daemon.host) == []  # no avahi-daemon outlives the test
    assert ip("netns", "pids", pair.a.ns).split() == []
