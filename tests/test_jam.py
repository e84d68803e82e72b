"""Jam sessions between real nodes on loopback, over real WebRTC audio.

Participants are :mod:`node.live.participant` clients: aiortc peers that speak the
web UI WebSocket protocol exactly as the jam page does, each sending a tone
of its own frequency, so a test can tell whose audio reached whom.  ICE is
pinned to 127.0.0.1 as in tests/test_live_chat.py.
"""

from __future__ import annotations

from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from node.live import media_call
from node.live.participant import Participant, goertzel_ratio, jam_participant
from tests.audio_files import wav_bytes
from tests.test_live_chat import flip_and_note, live, loopback_ice, owner, peer, wait_until
from tests.webapp import WebNode, raw_exchange, web_node

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


@asynccontextmanager
async def linked_pair(
    tmp_path: Path, *, dialer: str
) -> AsyncIterator[tuple[WebNode, WebNode, httpx.AsyncClient, httpx.AsyncClient]]:
    """Nodes a and b with a peer link (``dialer`` dials), and an owner client on each."""
    async with (
        web_node(tmp_path, "a", p2p=True) as a,
        web_node(tmp_path, "b", p2p=True) as b,
        owner(a) as ca,
        owner(b) as cb,
    ):
        await (peer(b, a) if dialer == "b" else peer(a, b))
        yield a, b, ca, cb


def chat_texts(participant: Participant) -> list[str]:
    """The jam chat lines a participant was sent, in order."""
    return [
        line["text"]
        for message in participant.messages
        if message["t"] == "jam-chat"
        for line in message["lines"]
    ]


async def join_by_code(client: httpx.AsyncClient, host: WebNode, jam: str) -> dict[str, Any]:
    response = await client.post("/api/v1/jams", json={"code": f"{host.node.node_id}/{jam}"})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_three_nodes_jam_and_one_leaving_does_not_break_the_others(tmp_path: Path) -> None:
    async with linked_pair(tmp_path, dialer="b") as (a, b, ca, cb):
        jam = (await create_jam(ca, "Across town"))["id"]
        mirror = await join_by_code(cb, a, jam)
        assert mirror["host"] == a.node.node_id and not mirror["hosted_here"]
        await wait_until(lambda: live(b).jams.get(jam).connected, 20)
        assert (await cb.get(f"/api/v1/jams/{jam}")).json()["title"] == "Across town"
        async with joined(a, jam, FREQS[0]) as pa, joined(b, jam, FREQS[1]) as pb:
            await wait_until(lambda: pa.hears(FREQS[1]) and pb.hears(FREQS[0]), 20)
            # Whoever records, every participant is told: B records, A's page shows it.
            await cb.post(f"/api/v1/jams/{jam}/recording", json={"on": True})
            await wait_until(lambda: pa.roster["jam"]["recording"] is True, 10)
            assert pb.roster["jam"]["recording"] is True
            assert (await ca.get(f"/api/v1/jams/{jam}")).json()["recording"] is True
            await cb.post(f"/api/v1/jams/{jam}/recording", json={"on": False})
            await wait_until(lambda: pa.roster["jam"]["recording"] is False, 10)
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
                    # The jam's chat: a line from C reaches A and B (B through the host).
                    await pc.send({"t": "jam-chat", "jam": jam, "text": "key of E <b>"})
                    await wait_until(lambda: chat_texts(pa) == chat_texts(pb) == ["key of E <b>"])
                    await pb.send({"t": "jam-chat", "jam": jam, "text": "ok"})
                    await wait_until(lambda: chat_texts(pc) == ["key of E <b>", "ok"])
                    await pb.send({"t": "jam-chat", "jam": jam, "text": " "})
                    await wait_until(lambda: pb.messages[-1]["t"] == "error")
                    assert chat_texts(pa) == ["key of E <b>", "ok"]
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


async def upload_tone(client: httpx.AsyncClient, freq: float, seconds: float) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/tracks",
        params={"title": f"Tone {freq:.0f}", "filename": "tone.wav"},
        content=wav_bytes(seconds, freq=freq),
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_a_peer_streams_a_library_track_into_a_jam(tmp_path: Path) -> None:
    async with linked_pair(tmp_path, dialer="a") as (a, b, ca, cb):
        track = await upload_tone(cb, FREQS[3], 20.0)
        jam = (await create_jam(ca))["id"]
        async with joined(a, jam, FREQS[0]) as listener:
            stream = {"peer": b.node.node_id, "track": track["id"]}
            response = await ca.post(f"/api/v1/jams/{jam}/streams", json=stream)
            assert response.status_code == 202, response.text
            await wait_until(lambda: listener.hears(FREQS[3]), 20)
            names = {e["name"] for e in listener.roster["participants"]}
            assert names == {"a", "♪ Tone 1320"}
            # Tracks B does not hold, and nodes A has no link to, are refused.
            unknown = {"peer": b.node.node_id, "track": "0" * 64}
            assert (await ca.post(f"/api/v1/jams/{jam}/streams", json=unknown)).status_code == 202
            nobody = {"peer": "1" * 64, "track": track["id"]}
            assert (await ca.post(f"/api/v1/jams/{jam}/streams", json=nobody)).status_code == 400
            await trio.sleep(1)
            assert len(live(a).jams.get(jam).participants) == 2


async def test_recording_publishes_one_track_per_participant(tmp_path: Path) -> None:
    async with web_node(tmp_path, "a", p2p=True) as a, owner(a) as client:
        jam = (await create_jam(client, "Take one"))["id"]
        async with joined(a, jam, FREQS[0]) as p1, joined(a, jam, FREQS[1]) as p2:
            await wait_until(lambda: p1.hears(FREQS[1]) and p2.hears(FREQS[0]), 20)
            response = await client.post(f"/api/v1/jams/{jam}/recording", json={"on": True})
            assert response.status_code == 200 and response.json()["recording"] is True
            await wait_until(lambda: p1.roster["jam"]["recording"] is True, 5)
            await trio.sleep(1.5)
            response = await client.post(f"/api/v1/jams/{jam}/recording", json={"on": False})
            assert response.status_code == 200, response.text
            tracks = response.json()["tracks"]
            # Ending the jam while it records publishes those takes too.
            await client.post(f"/api/v1/jams/{jam}/recording", json={"on": True})
            await trio.sleep(1)
            assert (await client.delete(f"/api/v1/jams/{jam}")).status_code == 204
            await wait_until(lambda: p1.messages[-1]["t"] == "jam-ended", 5)
        assert len(tracks) == 2
        assert all(t["body"]["title"] == "Take one — a" for t in tracks)
        for item in tracks:
            body = item["body"]
            assert body["mime"] == "audio/wav" and body["sample_rate"] == 48000
            assert 1000 <= body["duration_ms"] <= 4000
            assert body["channels"] == 2
        # Each file holds its own participant's tone: decode and measure.
        found = set()
        for item in tracks:
            pcm = a.node.blobs.read_bytes(item["body"]["blob"])[44:]
            samples = array("h", pcm[: len(pcm) // 2 * 2])[::2][-9600:]  # the last 200 ms, left
            found.add(max(FREQS, key=lambda f: goertzel_ratio(samples[:960], f)))
        assert found == {FREQS[0], FREQS[1]}
        listed = (await client.get("/api/v1/tracks")).json()["items"]
        assert {i["id"] for i in tracks} <= {i["id"] for i in listed}
        assert len(listed) == 4  # and the two takes of the ended jam
        assert not list((a.node.data.root / "recordings").glob("*/*.wav"))  # none left behind


async def test_a_tampered_jam_offer_is_refused_and_carries_no_audio(tmp_path: Path) -> None:
    async with linked_pair(tmp_path, dialer="b") as (a, b, ca, cb):
        jam = (await create_jam(ca))["id"]
        live(b).channels.ring_timeout = 0.5
        tampered: list[bytes] = []
        live(b).channels.wire_hook = partial(flip_and_note, tampered)
        await join_by_code(cb, a, jam)
        await wait_until(lambda: len(tampered) >= 2, 15)  # B retries; every offer is refused
        federation = a.node.federation
        assert federation is not None
        assert federation.sessions[b.node.node_id].stats.invalid_signals == len(tampered)
        assert not live(a).channels.rtc_started  # no peer connection was even made on A
        assert not live(a).jams.get(jam).links and not live(b).jams.get(jam).connected

        # Untouched, the same join connects (B keeps retrying while its mirror lasts).
        live(b).channels.wire_hook = None
        await wait_until(lambda: live(b).jams.get(jam).connected, 30)
        assert b.node.node_id in live(a).jams.get(jam).links


async def test_jam_api_refuses_bad_input_and_unauthenticated_sockets(tmp_path: Path) -> None:
    async with web_node(tmp_path, "a", p2p=True) as a, owner(a) as client:
        assert (await client.post("/api/v1/jams", json={"title": ""})).status_code == 400
        assert (await client.post("/api/v1/jams", json={"code": "nope"})).status_code == 400
        assert (await client.get("/api/v1/jams/" + "0" * 32)).status_code == 404
        assert (await client.delete("/api/v1/jams/" + "0" * 32)).status_code == 404
        jam = (await create_jam(client))["id"]
        async with a.client() as anonymous:
            assert (await anonymous.get("/api/v1/jams")).status_code == 401
        # Upgrades without credentials, or with a session cookie from another origin, are
        # refused before the socket is accepted.
        host = a.url.removeprefix("http://")
        upgrade = (
            f"GET /api/v1/live/ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        )
        with trio.fail_after(10):
            answer = await raw_exchange(a.url, (upgrade + "\r\n").encode())
            assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
            await a.add_user("mia", "member")
            async with a.signed_in("mia") as mia:
                cookie = "; ".join(f"{k}={v}" for k, v in mia.cookies.items())
                forged = upgrade + f"Cookie: {cookie}\r\nOrigin: http://evil.example\r\n\r\n"
                answer = await raw_exchange(a.url, forged.encode())
                assert answer.startswith(b"HTTP/1.1 403"), answer[:100]
                own = upgrade + f"Cookie: {cookie}\r\nOrigin: {a.url}\r\n\r\n"
                answer = await raw_exchange(a.url, own.encode())
                assert answer.startswith(b"HTTP/1.1 101"), answer[:100]
        # An authenticated socket survives garbage and says what was wrong.
        assert a.node.api_token
        async with jam_participant(a.url, a.node.api_token, FREQS[0], FREQS) as p:
            for frame in ("not json", "[1]", '{"t":"jam-join","jam":"x","sdp":"v=0"}',
                          '{"t":"dance","jam":"' + jam + '"}'):  # fmt: skip
                assert p.ws is not None
                await p.ws.send_message(frame)
                with trio.fail_after(10):
                    reply = await p.receive()
                assert reply["t"] == "error", reply
            await p.join(jam)  # and still works
            assert len(live(a).jams.get(jam).participants) == 1


def replaced(web: WebNode, jam: str, peer: str, link: object) -> bool:
    """Whether ``peer``'s link in ``jam`` on ``web`` is gone or another one."""
    return live(web).jams.get(jam).links.get(peer) is not link


async def test_a_member_breaking_the_roster_rules_is_hung_up_on_and_may_come_back(
    tmp_path: Path,
) -> None:
    async with linked_pair(tmp_path, dialer="b") as (a, b, ca, cb):
        jam = (await create_jam(ca))["id"]
        await join_by_code(cb, a, jam)
        async with joined(a, jam, FREQS[0]) as pa:
            not_a_participant = {"t": "roster", "participants": [{"id": "x", "slot": 0}]}
            empty = {"t": "roster", "participants": []}
            for burst in ([not_a_participant], [empty] * 200):  # a bad roster, then a flood
                await wait_until(lambda: b.node.node_id in live(a).jams.get(jam).links, 30)
                link = live(a).jams.get(jam).links[b.node.node_id]
                calls = list(live(b).calls._calls.values())
                assert len(calls) == 1
                for message in burst:
                    calls[0].send(message)
                await wait_until(calls[0].closed.is_set, 10)  # A hung up
                await wait_until(partial(replaced, a, jam, b.node.node_id, link), 10)
            # The host and its own participant carry on; the member calls again.
            await wait_until(lambda: b.node.node_id in live(a).jams.get(jam).links, 30)
            assert [p["name"] for p in pa.roster["participants"]] == ["a"]


async def test_a_browser_offering_no_opus_is_refused(tmp_path: Path) -> None:
    """Slots forward Opus packets as they are: any other codec would reach listeners as noise."""
    async with web_node(tmp_path, "a", p2p=True) as a, owner(a) as client:
        jam = (await create_jam(client))["id"]
        assert a.node.api_token
        pcmu = {"codec": "audio/PCMU"}
        async with jam_participant(a.url, a.node.api_token, FREQS[0], FREQS, **pcmu) as p:
            with pytest.raises(AssertionError, match="Opus"):
                await p.join(jam)
        assert live(a).jams.get(jam).participants == {}


async def test_a_member_gone_silent_is_hung_up_on_within_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that vanishes without a bye must not linger in the jam until ICE gives up."""
    monkeypatch.setattr(media_call, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(media_call, "SILENT_S", 1.0)
    async with linked_pair(tmp_path, dialer="b") as (a, b, ca, cb):
        jam = (await create_jam(ca))["id"]
        await join_by_code(cb, a, jam)
        async with joined(b, jam, FREQS[1]):
            await wait_until(lambda: len(live(a).jams.get(jam).participants) == 1, 30)
            await trio.sleep(1.5)  # pings keep a healthy call up past SILENT_S
            link = live(a).jams.get(jam).links[b.node.node_id]
            assert len(live(a).jams.get(jam).participants) == 1
            (call,) = live(b).calls._calls.values()
            call.send = lambda message: None  # type: ignore[method-assign]  # B goes silent
            await wait_until(partial(replaced, a, jam, b.node.node_id, link), 5)
