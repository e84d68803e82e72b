"""JSON API for live chat: rooms shared with other nodes, their history, posting.

A node joins a room with peers it is linked to (``peers``: node ids of
connected federation peers; members already in the room may be offline).
Rooms need the node's peer-to-peer listener (the live layer rides the peer
links): without it every endpoint answers 409 ``not_federating``; a peer
without a link answers 409 ``offline``.  Reading needs ``read``;
joining a room and posting need ``post``.  Texts are plain strings of 1 to
4000 characters, returned as JSON (the UI inserts them as text, never as
HTML).  Posting is rate-limited per user.  History pages read in the room's
total order (lamport, author, id), oldest first: pass a message's ``cursor``
(or a page's ``next``) as ``after`` to read on from it.
"""

from __future__ import annotations

from typing import Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from node.daemon import Node
from node.live import LiveManager
from node.live.chat import MAX_MEMBERS, ChatMessage, HistoryCursor, check_room, check_text
from node.ratelimit import RateLimiter
from node.roles import Permission
from node.timeline import parse_limit
from protocol.event import is_hex32
from webui.auth import NODE_USER, Auth, api_error, current, json_body
from webui.content_api import signing_key

POSTS_PER_S = 1.0
"""Messages each user may post per second, sustained."""
POST_BURST = 20


def register_chat_api(app: QuartTrio, node: Node, auth: Auth) -> None:
    """Add /api/v1/chat/rooms and /api/v1/chat/rooms/<room>/messages to ``app``."""
    limiter = RateLimiter(rate=POSTS_PER_S, burst=POST_BURST)

    def live() -> LiveManager | None:
        return node.federation.live if node.federation is not None else None

    def unavailable() -> Response:
        return api_error(
            409, "not_federating", "chat needs the node's peer-to-peer listener (--p2p)"
        )

    def room_json(manager: LiveManager, room: str) -> dict[str, Any]:
        members = manager.chat.rooms.get(room, set())
        return {
            "room": room,
            "members": [
                {
                    "node_id": member,
                    "self": member == node.node_id,
                    "connected": member == node.node_id or manager.channels.is_open(member),
                }
                for member in sorted(members)
            ],
        }

    def message_json(message: ChatMessage) -> dict[str, Any]:
        return {**message.as_json(), "local": message.origin == node.node_id}

    @app.get("/api/v1/chat/rooms")
    @auth.require(Permission.READ)
    async def chat_rooms() -> Response:
        manager = live()
        if manager is None:
            return unavailable()
        return jsonify({"rooms": [room_json(manager, r) for r in sorted(manager.chat.rooms)]})

    @app.post("/api/v1/chat/rooms")
    @auth.require(Permission.POST)
    async def chat_join() -> Response:
        manager, federation = live(), node.federation
        if manager is None or federation is None:
            return unavailable()
        data = await json_body()
        room = check_room(data.get("room"))
        peers = data.get("peers", [])
        if not isinstance(peers, list) or len(peers) >= MAX_MEMBERS:
            raise ValueError(f"peers must be a list of at most {MAX_MEMBERS - 1} node ids")
        if not all(is_hex32(peer) for peer in peers):
            raise ValueError("peers are node ids: 64 lowercase hex characters")
        wanted = {str(peer) for peer in peers} - {node.node_id}
        known = manager.chat.rooms.get(room, set())
        missing = sorted(wanted - known - federation.sessions.keys())
        if missing:
            return api_error(409, "offline", f"no link to node(s): {', '.join(missing)}")
        existed = room in manager.chat.rooms
        await manager.chat.join(room, wanted)
        response = jsonify(room_json(manager, room))
        response.status_code = 200 if existed else 201
        return response

    @app.get("/api/v1/chat/rooms/<room>/messages")
    @auth.require(Permission.READ)
    async def chat_messages(room: str) -> Response:
        manager = live()
        if manager is None:
            return unavailable()
        if room not in manager.chat.rooms:
            return api_error(404, "not_found", f"this node is not in room {room!r}")
        after = HistoryCursor.decode(request.args.get("after"))
        limit = parse_limit(request.args.get("limit"))
        page = await manager.chat.history(room, after, limit)
        last = page[-1].as_json()["cursor"] if len(page) == limit else None
        return jsonify({"items": [message_json(m) for m in page], "next": last})

    @app.post("/api/v1/chat/rooms/<room>/messages")
    @auth.require(Permission.POST)
    async def chat_post(room: str) -> Response:
        manager = live()
        if manager is None:
            return unavailable()
        if room not in manager.chat.rooms:
            return api_error(404, "not_found", f"this node is not in room {room!r}")
        text = check_text((await json_body()).get("text"))
        user = current().user
        if not limiter.allow(user.name, trio.current_time()):
            wait = max(1, int(limiter.retry_after(user.name) + 0.999))
            return api_error(
                429, "rate_limited", "too many chat messages", **{"Retry-After": str(wait)}
            )
        name = node.name if user.name == NODE_USER else user.name
        key = await trio.to_thread.run_sync(signing_key, node, False)
        message = await manager.chat.post(room, key, name, text)
        response = jsonify(message_json(message))
        response.status_code = 201
        return response
