"""JSON API for federation: peers, follows and blocks.

Peers and blocks need the ``manage_peers`` permission; following needs
``post`` and publishes a follow event signed by the caller's own author key.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from node import peerstore
from node.daemon import Node, now_ms
from node.roles import Permission
from protocol.event import is_hex32
from webui.auth import Auth, api_error, current, json_body, no_content


def register_federation_api(app: QuartTrio, node: Node, auth: Auth) -> None:
    """Add /api/v1/peers, /api/v1/follows and /api/v1/blocks to ``app``."""
    store = node.store
    manage_peers = auth.require(Permission.MANAGE_PEERS)
    reader = auth.require(Permission.READ)

    body = json_body

    def live_sessions() -> dict[str, dict[str, Any]]:
        federation = node.federation
        if federation is None:
            return {}
        return {
            peer_id: {
                "node_id": peer_id,
                "address": s.address,
                "direction": "outbound" if s.initiator else "inbound",
                "lag": s.lag,
                "events_sent": s.stats.events_sent,
                "events_received": s.stats.events_received,
                "events_accepted": s.stats.events_accepted,
                "invalid_events": s.stats.invalid_events,
            }
            for peer_id, s in federation.sessions.items()
        }

    @app.get("/api/v1/peers")
    @reader
    async def peers() -> Response:
        configured = await trio.to_thread.run_sync(peerstore.list_peers, store)
        return jsonify(
            {"peers": [p.as_json() for p in configured], "links": list(live_sessions().values())}
        )

    @app.post("/api/v1/peers")
    @manage_peers
    async def add_peer() -> Response:
        data = await body()
        address, pinned = peerstore.parse_address(str(data.get("address", "")), data.get("node_id"))
        record = await trio.to_thread.run_sync(
            partial(peerstore.add_peer, store, address, pinned, now_ms())
        )
        response = jsonify(record.as_json())
        response.status_code = 201
        return response

    @app.delete("/api/v1/peers")
    @manage_peers
    async def remove_peer() -> Response:
        address, _ = peerstore.parse_address(request.args.get("address", ""))
        if not await trio.to_thread.run_sync(peerstore.remove_peer, store, address):
            return api_error(404, "not_found", f"no peer {address}")
        return no_content()

    @app.get("/api/v1/follows")
    @reader
    async def follows() -> Response:
        authors = await trio.to_thread.run_sync(peerstore.follows, store)
        return jsonify({"follows": authors})

    async def _follow(author: str, following: bool) -> Response:
        if not is_hex32(author):
            return api_error(400, "bad_request", "author ids are 64 lowercase hex characters")
        key = await trio.to_thread.run_sync(node.author_key, current().user.author_key)
        blocked = await trio.to_thread.run_sync(peerstore.blocked, store)
        if following and author in blocked:
            return api_error(409, "blocked", "unblock this author before following it")
        await trio.to_thread.run_sync(peerstore.set_follow, store, author, following, now_ms())
        event = await trio.to_thread.run_sync(
            partial(
                store.append_local,
                key,
                kind="follow",
                body={"author": author, "active": following},
                now_ms=now_ms(),
            )
        )
        node.poke()
        return jsonify({"author": author, "following": following, "event": event.id})

    @app.post("/api/v1/follows")
    @auth.require(Permission.POST)
    async def follow() -> Response:
        return await _follow(str((await body()).get("author", "")), True)

    @app.delete("/api/v1/follows/<author>")
    @auth.require(Permission.POST)
    async def unfollow(author: str) -> Response:
        return await _follow(author, False)

    @app.post("/api/v1/blocks")
    @manage_peers
    async def block() -> Response:
        data = await body()
        target, what = str(data.get("target", "")), str(data.get("what", "author"))
        if not is_hex32(target) or what not in ("author", "node"):
            return api_error(400, "bad_request", "target: a 64-hex id; what: author or node")
        await trio.to_thread.run_sync(partial(peerstore.block, store, target, what, now_ms()))
        return jsonify({"blocked": target, "what": what})

    @app.get("/api/v1/blocks")
    @manage_peers
    async def blocks() -> Response:
        found = await trio.to_thread.run_sync(peerstore.blocked, store)
        items = [{"target": target, "what": what} for target, what in sorted(found.items())]
        return jsonify({"items": items, "next": None})

    @app.delete("/api/v1/blocks/<target>")
    @manage_peers
    async def unblock(target: str) -> Response:
        if not is_hex32(target):
            return api_error(400, "bad_request", "target: a 64-hex id")
        if not await trio.to_thread.run_sync(peerstore.unblock, store, target):
            return api_error(404, "not_found", "that id is not blocked")
        return no_content()
