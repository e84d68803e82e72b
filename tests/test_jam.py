"""Jam sessions between real nodes on loopback, over real WebRTC audio.

Participants are :mod:`tests.jam_client` clients: aiortc peers that speak the
web UI WebSocket protocol exactly as the jam page does, each sending a tone
of its own frequency, so a test can tell whose audio reached whom.  ICE is
pinned to 127.0.0.1 as in tests/test_live_chat.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.jam_client import Participant, jam_participant
from tests.test_live_chat import live, loopback_ice, owner, peer, wait_until
from tests.webapp import WebNode, web_node

__all__ = ["loopback_ice"]

FREQS = [440.0, 660.0, 990.0, 1320.0]


async def create_jam(client: httpx.AsyncClient, title: str = "Friday jam") -> dict[str, Any]:
    response = await client.post("/api/v1/jams", json={"title": title})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@asynccontextmanager
async def joined(web: WebNode, jam: str, freq: float) -> AsyncIterator[Participant]:
    assert web.node.api_token
    async with (
        jam_participant(web.url, web.node.api_token, freq, FREQS) as participant,
        trio.open_nursery() as nursery,
    ):
        await participant.join(jam)
        nursery.start_soon(participant.pump)
        yield participant
        nursery.cancel_scope.cancel()


async def test_two_browsers_on_one_node_hear_each_other(tmp_path: Path) -> None:
    async with web_node(tmp_path, "a", p2p=True) as a, owner(a) as client:
        jam = await create_jam(client)
        async with joined(a, jam["id"], FREQS[0]) as p1, joined(a, jam["id"], FREQS[1]) as p2:
            await wait_until(lambda: p1.hears(FREQS[1]) and p2.hears(FREQS[0]), 20)
            assert not p1.hears(FREQS[0]) and not p2.hears(FREQS[1])  # never your own voice
            listed = (await client.get(f"/api/v1/jams/{jam['id']}")).json()
            assert len(listed["participants"]) == 2
        await wait_until(lambda: not live(a).jams.get(jam["id"]).participants, 10)


async def join_by_code(client: httpx.AsyncClient, host: WebNode, jam: str) -> dict[str, Any]:
    response = await client.post("/api/v1/jams", json={"code": f"{host.node.node_id}/{jam}"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_three_nodes_jam_and_one_leaving_does_not_break_the_others(tmp_path: Path) -> None:
    async with (
        web_node(tmp_path, "a", p2p=True) as a,
        web_node(tmp_path, "b", p2p=True) as b,
        owner(a) as ca,
        owner(b) as cb,
    ):
        await peer(b, a)
        jam = (await create_jam(ca, "Across town"))["id"]
        mirror = await join_by_code(cb, a, jam)
        assert mirror["host"] == a.node.node_id and not mirror["hosted_here"]
        await wait_until(lambda: live(b).jams.get(jam).connected, 20)
        assert (await cb.get(f"/api/v1/jams/{jam}")).json()["title"] == "Across town"
        async with joined(a, jam, FREQS[0]) as pa, joined(b, jam, FREQS[1]) as pb:
            await wait_until(lambda: pa.hears(FREQS[1]) and pb.hears(FREQS[0]), 20)
            async with web_node(tmp_path, "c", p2p=True) as c, owner(c) as cc:
                await peer(c, a)
                await join_by_code(cc, a, jam)
                async with joined(c, jam, FREQS[2]) as pc:
                    # Everyone hears both others (c and b through the host), never themselves.
                    await wait_until(
                        lambda: pa.hears(FREQS[2]) and pb.hears(FREQS[2])
                        and pc.hears(FREQS[0]) and pc.hears(FREQS[1]),
                        30,
                    )  # fmt: skip
                    assert not any(p.hears(p.freq) for p in (pa, pb, pc))
                    names = {e["name"] for e in pb.roster["participants"]}
                    assert names == {"a", "b", "c"}
                # c's participant left; then node c stops altogether.
            await wait_until(lambda: len(live(a).jams.get(jam).participants) == 2, 20)
            await wait_until(lambda: len(live(b).jams.get(jam).participants) == 2, 10)
            await wait_until(lambda: len(pb.roster["participants"]) == 2, 10)
            pa.heard.clear()
            pb.heard.clear()
            await wait_until(lambda: pa.hears(FREQS[1]) and pb.hears(FREQS[0]), 15)
        # The host ends the jam: the member's mirror ends too.
        assert (await ca.delete(f"/api/v1/jams/{jam}")).status_code == 204
        await wait_until(lambda: jam not in live(b).jams.jams, 20)
