"""Direct messages: sealed for the recipient, federated, read later by an offline recipient."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from node import peerstore
from node.daemon import now_ms
from protocol.direct_message import UnreadableMessage, open_message, seal
from protocol.kinds import validate_body
from tests.conftest import signing_key
from tests.webapp import web_node


def test_only_the_two_authors_can_open_a_message() -> None:
    ada, bea, eve = signing_key(31), signing_key(32), signing_key(33)
    body = seal(ada, bea.id, "meet at the studio <b>8pm</b>", os.urandom(24))
    validate_body("dm", body)
    assert "studio" not in str(body)
    assert open_message(bea, ada.id, body) == "meet at the studio <b>8pm</b>"
    assert open_message(ada, bea.id, body) == "meet at the studio <b>8pm</b>"  # sender reads back
    with pytest.raises(UnreadableMessage):
        open_message(eve, ada.id, body)  # a relay or anyone else
    with pytest.raises(UnreadableMessage):
        open_message(bea, eve.id, body)  # claimed from someone else
    tampered = dict(body, box=body["box"][:-4] + ("AAAA" if body["box"][-4:] != "AAAA" else "BBBB"))
    with pytest.raises(UnreadableMessage):
        open_message(bea, ada.id, tampered)
    for bad in ({}, {"nonce": "zz", "box": "x"}, {"nonce": "00" * 24, "box": "!!"}):
        with pytest.raises(UnreadableMessage):
            open_message(bea, ada.id, bad)
    with pytest.raises(ValueError, match="characters"):
        seal(ada, bea.id, "", os.urandom(24))


async def test_a_message_to_an_offline_node_arrives_when_it_syncs(tmp_path: Path) -> None:
    async with web_node(tmp_path, "A", p2p=True) as a:
        ada = await a.add_user("ada", "member")
        a_address = a.node.addresses["p2p"]
        async with web_node(tmp_path, "B", p2p=True) as b:
            bea = await b.add_user("bea", "member")
        # B is offline now.  Ada writes to Bea.
        with trio.fail_after(30):
            async with a.signed_in("ada") as client:
                sent = await client.post("/api/v1/dms", json={"to": bea.author, "text": "hi Bea"})
                assert sent.status_code == 201, sent.text
                refused = await client.post("/api/v1/dms", json={"to": "x", "text": "hi"})
                assert refused.status_code == 400
                mine = (await client.get("/api/v1/dms", params={"with": bea.author})).json()
                assert [m["text"] for m in mine["items"]] == ["hi Bea"]
        # B comes back, carrying Ada's feed (Bea follows her), and syncs with A.
        async with web_node(tmp_path, "B", p2p=True) as b:
            await trio.to_thread.run_sync(
                peerstore.set_follow, b.node.store, ada.author, True, now_ms()
            )
            await trio.to_thread.run_sync(
                peerstore.add_peer, b.node.store, a_address, a.node.node_id, now_ms()
            )
            with trio.fail_after(30):
                async with b.signed_in("bea") as client:
                    while True:
                        got = (await client.get("/api/v1/dms", params={"with": ada.author})).json()
                        if got["items"]:
                            break
                        await trio.sleep(0.05)
                    assert [(m["from"], m["text"]) for m in got["items"]] == [
                        (ada.author, "hi Bea")
                    ]
                    partners = (await client.get("/api/v1/dms")).json()["items"]
                    assert [p["with"] for p in partners] == [ada.author]
                    reply = await client.post(
                        "/api/v1/dms", json={"to": ada.author, "text": "hi Ada"}
                    )
                    assert reply.status_code == 201
            # The event B holds carries no plaintext.
            stored = b.node.store.query("SELECT raw FROM events WHERE kind = 'dm'")
            assert stored and all("hi Bea" not in str(row[0]) for row in stored)
