"""Nearby nodes through the API: listed from mDNS on 127.0.0.1, paired by proven key."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import trio

from node import peerstore
from node.discovery import pairing_code
from tests.webapp import web_node


def unique_service() -> str:
    return f"_talas-{secrets.token_hex(4)}._tcp.local."


async def poll(client: httpx.AsyncClient, path: str, done: Callable[[Any], bool]) -> Any:
    while True:
        found = (await client.get(path)).json()
        if done(found):
            return found
        await trio.sleep(0.1)


async def test_nearby_nodes_are_listed_paired_by_code_and_pinned(tmp_path: Path) -> None:
    service = unique_service()
    async with (
        web_node(tmp_path, "A", p2p=True, discovery_service=service) as a,
        web_node(tmp_path, "B", p2p=True, discovery_service=service) as b,
    ):
        await a.add_user("ada", "owner")
        await a.add_user("mia", "member")
        with trio.fail_after(30):
            async with a.signed_in("ada") as ada:
                found = await poll(
                    ada,
                    "/api/v1/nearby",
                    lambda f: any(n["node_id"] == b.node.node_id for n in f["nodes"]),
                )
                assert found["discovery"] is True
                seen = next(n for n in found["nodes"] if n["node_id"] == b.node.node_id)
                assert seen["name"] == "B" and seen["paired"] is False
                assert seen["addresses"] == ["127.0.0.1"]

                check = await ada.post(f"/api/v1/nearby/{b.node.node_id}/pair", json={})
                assert check.status_code == 200, check.text
                code = check.json()["code"]
                # Both sides derive the same code from the two proven node ids.
                assert code == pairing_code(b.node.node_id, a.node.node_id)
                wrong = await ada.post(
                    f"/api/v1/nearby/{b.node.node_id}/pair/confirm", json={"code": "000 000"}
                )
                assert wrong.status_code == 409
                assert peerstore.list_peers(a.node.store) == []
                done = await ada.post(
                    f"/api/v1/nearby/{b.node.node_id}/pair/confirm", json={"code": code}
                )
                assert done.status_code == 201, done.text
                assert done.json()["pinned_id"] == b.node.node_id
                listed = (await ada.get("/api/v1/nearby")).json()["nodes"]
                assert next(n for n in listed if n["node_id"] == b.node.node_id)["paired"]
            async with a.signed_in("mia") as mia:
                refused = await mia.post(f"/api/v1/nearby/{b.node.node_id}/pair", json={})
                assert refused.status_code == 403


async def test_a_spoofed_advertisement_never_gets_paired(tmp_path: Path) -> None:
    """C advertises B's node id at C's own address: the handshake proves otherwise."""
    service = unique_service()
    async with (
        web_node(tmp_path, "A", p2p=True, discovery_service=service) as a,
        web_node(tmp_path, "C", p2p=True) as c,
    ):
        await a.add_user("ada", "owner")
        discovery = a.node.discovery
        assert discovery is not None
        victim = "b" * 64
        c_port = int(c.node.addresses["p2p"].rsplit(":", 1)[1])
        from node.discovery import NearbyNode

        # Planted as if an mDNS answer claimed it: only an address hint.
        discovery._nodes[victim] = NearbyNode(
            victim, "B", 1, ("127.0.0.1",), 1, c_port, 0, 0, "B spoof"
        )
        with trio.fail_after(30):
            async with a.signed_in("ada") as ada:
                refused = await ada.post(f"/api/v1/nearby/{victim}/pair", json={})
                assert refused.status_code == 409
                assert refused.json()["error"]["code"] == "key_mismatch"
                confirm = await ada.post(
                    f"/api/v1/nearby/{victim}/pair/confirm", json={"code": "123 456"}
                )
                assert confirm.status_code == 409
        assert peerstore.list_peers(a.node.store) == []
        # C saw a handshake attempt but never learned who A is, nor any event.
        assert c.node.federation is not None and c.node.federation.sessions == {}
