"""JSON API for federation: peers, follows, blocks, and posting.

Reads are open on the (loopback) API; every write needs the node's API token
as ``Authorization: Bearer``.  A browser page cannot read that token or add
that header cross-origin without a CORS preflight we never grant, so the
writes are safe from CSRF until accounts and sessions replace the token.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from functools import partial, wraps
from typing import Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from node import peerstore
from node.daemon import Node, now_ms
from node.errors import TalasError
from protocol.errors import ProtocolError
from protocol.event import is_hex32

Handler = Callable[..., Awaitable[Response]]


def api_error(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    return response


def register_federation_api(app: QuartTrio, node: Node, api_token: str) -> None:
    """Add /api/v1/peers, /api/v1/follows, /api/v1/blocks and /api/v1/posts to ``app``."""
    store = node.store

    def writer(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(*args: Any, **kwargs: Any) -> Response:
            # Read the (size-capped) body before answering, even with a refusal:
            # answering first leaves unread bytes on a keep-alive connection.
            await request.get_data()
            given = request.headers.get("Authorization", "")
            expected = f"Bearer {api_token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return api_error(401, "unauthorized", "this request needs the node's API token")
            try:
                return await handler(*args, **kwargs)
            except (ValueError, TalasError, ProtocolError) as exc:
                return api_error(400, "bad_request", str(exc))

        return guarded

    async def body() -> dict[str, Any]:
        data = await request.get_json(force=True, silent=True)
        if not isinstance(data, dict):
            raise ValueError("the request body must be a JSON object")
        return data

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
    async def peers() -> Response:
        configured = await trio.to_thread.run_sync(peerstore.list_peers, store)
        return jsonify(
            {"peers": [p.as_json() for p in configured], "links": list(live_sessions().values())}
        )

    @app.post("/api/v1/peers")
    @writer
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
    @writer
    async def remove_peer() -> Response:
        address, _ = peerstore.parse_address(request.args.get("address", ""))
        if not await trio.to_thread.run_sync(peerstore.remove_peer, store, address):
            return api_error(404, "not_found", f"no peer {address}")
        return Response(status=204)

    @app.get("/api/v1/follows")
    async def follows() -> Response:
        authors = await trio.to_thread.run_sync(peerstore.follows, store)
        return jsonify({"follows": authors})

    async def _follow(author: str, following: bool) -> Response:
        if not is_hex32(author):
            return api_error(400, "bad_request", "author ids are 64 lowercase hex characters")
        key = node.author_key("default")
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
    @writer
    async def follow() -> Response:
        return await _follow(str((await body()).get("author", "")), True)

    @app.delete("/api/v1/follows/<author>")
    @writer
    async def unfollow(author: str) -> Response:
        return await _follow(author, False)

    @app.post("/api/v1/blocks")
    @writer
    async def block() -> Response:
        data = await body()
        target, what = str(data.get("target", "")), str(data.get("what", "author"))
        if not is_hex32(target) or what not in ("author", "node"):
            return api_error(400, "bad_request", "target: a 64-hex id; what: author or node")
        await trio.to_thread.run_sync(partial(peerstore.block, store, target, what, now_ms()))
        return jsonify({"blocked": target, "what": what})

    @app.post("/api/v1/posts")
    @writer
    async def post() -> Response:
        data = await body()
        author = str(data.get("author", "default"))
        key = node.author_key(author)
        post_body = {k: v for k, v in data.items() if k != "author"}
        event = await trio.to_thread.run_sync(
            partial(store.append_local, key, kind="post", body=post_body, now_ms=now_ms())
        )
        node.poke()
        response = jsonify({"id": event.id, "seq": event.seq, "author": event.author})
        response.status_code = 201
        return response
