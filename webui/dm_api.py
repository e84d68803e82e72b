"""Direct messages between artists: end-to-end encrypted ``dm`` events.

Sending signs a ``dm`` event with the sender's own author key; the text is
boxed for the recipient (protocol/direct_message.py).  The event federates
like any other, so a recipient whose node was offline gets it when that node
next syncs the sender's feed (the recipient's node must carry that feed:
it follows the sender, or a neighbour relays it).  Reading opens the boxes
with the caller's own key, server-side: the node holds its members' keys.
"""

from __future__ import annotations

import os
from typing import Any

from quart import Response, jsonify, request
from quart_trio import QuartTrio

from node.daemon import Node
from node.roles import Permission
from node.timeline import TIME, trusted_event
from protocol.direct_message import UnreadableMessage, open_message, seal
from protocol.event import is_hex32
from webui.auth import Auth, api_error, current, json_body
from webui.content_api import Items, publish

CONVERSATION_LIMIT = 500
_PARTNERS = (
    "SELECT CASE WHEN author = ? THEN json_extract(raw, '$.body.to') ELSE author END,"  # noqa: S608
    f" max({TIME}) FROM events WHERE kind = 'dm' AND deleted = 0"
    " AND (author = ? OR json_extract(raw, '$.body.to') = ?)"
    " GROUP BY 1 ORDER BY 2 DESC LIMIT ?"
)
_CONVERSATION = (
    "SELECT id, author, seq, prev, kind, created, raw FROM events"  # noqa: S608
    " WHERE kind = 'dm' AND deleted = 0 AND ("
    " (author = ? AND json_extract(raw, '$.body.to') = ?) OR"
    " (author = ? AND json_extract(raw, '$.body.to') = ?))"
    f" ORDER BY {TIME}, arrival LIMIT ?"
)


def register_dm_api(app: QuartTrio, node: Node, auth: Auth, items: Items) -> None:
    def my_key_name() -> str:
        return current().user.author_key

    @app.post("/api/v1/dms")
    @auth.require(Permission.POST)
    async def send() -> Response:
        data = await json_body()
        to, text = data.get("to"), data.get("text")
        if not is_hex32(to) or not isinstance(text, str):
            return api_error(400, "bad_request", "give 'to' (an author id) and 'text'")
        assert isinstance(to, str)
        key = node.author_key(my_key_name())
        if to == key.id:
            return api_error(400, "bad_request", "you cannot write to yourself")
        body = seal(key, to, text, os.urandom(24))
        made = await publish(node, items, "dm", body, collective=False)
        if made.status_code != 201:
            return made
        event = await made.get_json()
        response = jsonify(
            {"id": event["id"], "from": key.id, "to": to, "sent": event["created"], "text": text}
        )
        response.status_code = 201
        return response

    @app.get("/api/v1/dms")
    @auth.require(Permission.POST)
    async def conversation() -> Response:
        """With ``?with=AUTHOR``: the messages between you and AUTHOR, oldest first;
        without: the authors you have exchanged messages with, latest first."""
        key = node.author_key(my_key_name())
        me = key.id
        other = request.args.get("with")
        if other is None:
            rows = node.store.query(_PARTNERS, (me, me, me, CONVERSATION_LIMIT))
            names = items.timeline.local_names()
            found = [
                {"with": str(w), "name": names.get(str(w)), "latest": int(str(t))} for w, t in rows
            ]
            return jsonify({"items": found, "next": None})
        if not is_hex32(other):
            return api_error(400, "bad_request", "'with' is an author id (64 hex)")
        rows = node.store.query(_CONVERSATION, (me, other, other, me, CONVERSATION_LIMIT))
        messages: list[dict[str, Any]] = []
        unreadable = 0
        for row in rows:
            event = trusted_event(row)
            try:
                text = open_message(key, other, dict(event.body or {}))
            except UnreadableMessage:
                unreadable += 1
                continue
            to = other if event.author == me else me
            messages.append(
                {"id": event.id, "from": event.author, "to": to, "sent": event.created,
                 "text": text}
            )  # fmt: skip
        return jsonify({"items": messages, "next": None, "unreadable": unreadable})
