"""The feed, posts, authors, the barter market and courses, as JSON.

Writes sign an event with the caller's own author key (or, with the
``post_as_collective`` permission, the collective's) and store it; the
federation pushes it from the store.  Reads render stored events as items:
the signed body plus who wrote it, as far as this node knows.

Reads run on the event loop, not in a worker thread: each is a handful of
indexed SQLite lookups on the reader connection (WAL: never waits for a
writer) taking well under a millisecond, and under the GIL a thread hop
costs more than it lets run in parallel (measured: 353 -> 454 feed
requests/s at 1M events by dropping two hops).  Writes, which can wait on
the writer lock behind an ingest batch, stay in threads.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from node.daemon import Node, now_ms
from node.roles import Permission
from node.store import EventRef
from node.timeline import Cursor, Page, Timeline, parse_limit
from protocol.event import Event, is_hex32
from protocol.keys import SigningKey
from webui.auth import NODE_USER, Auth, api_error, current, json_body, no_content

PROFILE_CACHE = 10_000
ItemDecorator = Callable[[dict[str, Any], Event, str], None]
"""Adds fields to a rendered item; gets the viewer's name (for signed media URLs)."""


class Items:
    """Turns events into the API's item objects, naming authors as well as it can."""

    def __init__(self, node: Node, timeline: Timeline) -> None:
        self.node = node
        self.timeline = timeline
        self.decorators: dict[str, ItemDecorator] = {}
        # author -> profile name (None: no profile).  Profile lookups were a
        # third of a feed page's cost; the node's store watcher sees every new
        # event (from any process), and a profile or delete by an author drops
        # that author's entry.
        self._profile_names: OrderedDict[str, str | None] = OrderedDict()
        node.add_listener(self._forget_profiles)

    def _forget_profiles(self, refs: list[EventRef]) -> None:
        for ref in refs:
            if ref.kind in ("profile", "delete"):
                self._profile_names.pop(ref.author, None)

    def _names(self, authors: set[str]) -> tuple[dict[str, str], set[str]]:
        local = self.timeline.local_names()
        names = dict(local)
        names[self.timeline.collective] = self.node.name
        wanted = sorted(authors - names.keys() - self._profile_names.keys())
        found = self.timeline.profiles(wanted)
        for author in wanted:
            name = found.get(author, {}).get("name")
            self._profile_names[author] = name if isinstance(name, str) else None
        while len(self._profile_names) > PROFILE_CACHE:
            self._profile_names.popitem(last=False)
        for author in authors - names.keys():
            cached = self._profile_names.get(author)
            if cached is not None:
                names[author] = cached
        return names, {*local, self.timeline.collective}

    def render(self, events: list[Event], viewer: str) -> list[dict[str, Any]]:
        """Reads the store (indexed lookups; see the module docstring on threads)."""
        names, local = self._names({e.author for e in events})
        out = []
        for event in events:
            item: dict[str, Any] = {
                "id": event.id,
                "author": event.author,
                "author_name": names.get(event.author),
                "seq": event.seq,
                "kind": event.kind,
                "created": event.created,
                "body": event.body,
                "local": event.author in local,
            }
            decorate = self.decorators.get(event.kind)
            if decorate is not None:
                decorate(item, event, viewer)
            out.append(item)
        return out

    def page(self, page: Page, viewer: str) -> dict[str, Any]:
        return {
            "items": self.render(page.events, viewer),
            "next": page.next.encode() if page.next else None,
        }


def viewer() -> str:
    """The name media URLs are signed for: the user, or ``_node`` for the node token."""
    user = current().user
    return "_node" if user.name == NODE_USER else user.name


def signing_key(node: Node, collective: bool) -> SigningKey:
    """The key the current user signs with; raises PermissionError if not allowed."""
    principal = current()
    if collective:
        if not principal.may(Permission.POST_AS_COLLECTIVE):
            raise PermissionError("your role may not post as the collective")
        return node.author_key("default")
    return node.author_key(principal.user.author_key)


async def publish(
    node: Node, items: Items, kind: str, body: dict[str, Any], *, collective: bool
) -> Response:
    """Sign ``body`` as the current user (or the collective), store it, answer 201 with the item."""
    try:
        key = await trio.to_thread.run_sync(signing_key, node, collective)
    except PermissionError as exc:
        return api_error(403, "forbidden", str(exc))
    event = await trio.to_thread.run_sync(
        partial(node.store.append_local, key, kind=kind, body=body, now_ms=now_ms())
    )
    node.poke()
    rendered = await trio.to_thread.run_sync(items.render, [event], viewer())
    response = jsonify(rendered[0])
    response.status_code = 201
    return response


def _as_collective(data: dict[str, Any]) -> bool:
    value = data.pop("as", "me")
    if value not in ("me", "collective"):
        raise ValueError("'as' must be 'me' or 'collective'")
    return bool(value == "collective")


def register_content_api(app: QuartTrio, node: Node, auth: Auth, items: Items) -> None:
    timeline = items.timeline

    def cursor_and_limit() -> tuple[Cursor | None, int]:
        return Cursor.decode(request.args.get("cursor")), parse_limit(request.args.get("limit"))

    @app.get("/api/v1/feed")
    @auth.require(Permission.READ)
    async def feed() -> Response:
        cursor, limit = cursor_and_limit()

        who = viewer()

        def load() -> dict[str, Any]:
            return items.page(timeline.feed(cursor, limit), who)

        return jsonify(load())

    @app.post("/api/v1/posts")
    @auth.require(Permission.POST)
    async def post() -> Response:
        data = await json_body()
        collective = _as_collective(data)
        data.pop("author", None)
        return await publish(node, items, "post", data, collective=collective)

    @app.delete("/api/v1/events/<event_id>")
    @auth.require(Permission.POST)
    async def delete(event_id: str) -> Response:
        if not is_hex32(event_id):
            return api_error(400, "bad_request", "event ids are 64 lowercase hex characters")
        event = await trio.to_thread.run_sync(timeline.get, event_id)
        if event is None:
            return api_error(404, "not_found", "no such event")
        principal = current()
        local = await trio.to_thread.run_sync(timeline.local_names)
        own = event.author == principal.user.author
        moderated = principal.may(Permission.MODERATE) and (
            event.author in local or event.author == timeline.collective
        )
        if not own and not moderated:
            return api_error(403, "forbidden", "you may delete only your own content")
        if event.author == timeline.collective:
            key_name = "default"
        else:
            owner = await trio.to_thread.run_sync(auth.accounts.by_author, event.author)
            if owner is None:
                return api_error(404, "not_found", "that author is no longer a user here")
            key_name = owner.author_key
        key = await trio.to_thread.run_sync(node.author_key, key_name)
        await trio.to_thread.run_sync(
            partial(
                node.store.append_local,
                key,
                kind="delete",
                body={"target": event_id},
                now_ms=now_ms(),
            )
        )
        node.poke()
        return no_content()

    @app.post("/api/v1/profile")
    @auth.require(Permission.POST)
    async def profile() -> Response:
        """Publish a new version of the caller's (or the collective's) profile."""
        data = await json_body()
        collective = _as_collective(data)
        body: dict[str, Any] = {k: data[k] for k in ("name", "bio", "links") if k in data}
        return await publish(node, items, "profile", body, collective=collective)

    @app.get("/api/v1/authors/<author>")
    @auth.require(Permission.READ)
    async def author(author: str) -> Response:
        if not is_hex32(author):
            return api_error(400, "bad_request", "author ids are 64 lowercase hex characters")

        def load() -> dict[str, Any]:
            profile = timeline.profile(author) or {}
            local = timeline.local_names()
            fallback = local.get(author) or (node.name if author == timeline.collective else None)
            return {
                "id": author,
                "name": profile.get("name") or fallback,
                "bio": profile.get("bio"),
                "local_user": local.get(author),
                "collective": author == timeline.collective,
                "following": timeline.is_following(author),
                "counts": timeline.counts(author),
            }

        return jsonify(load())

    @app.get("/api/v1/authors/<author>/items")
    @auth.require(Permission.READ)
    async def author_items(author: str) -> Response:
        if not is_hex32(author):
            return api_error(400, "bad_request", "author ids are 64 lowercase hex characters")
        kind = request.args.get("kind", "post")
        if kind not in ("post", "track", "offer", "course"):
            return api_error(400, "bad_request", "kind must be post, track, offer or course")
        cursor, limit = cursor_and_limit()

        who = viewer()

        def load() -> dict[str, Any]:
            return items.page(timeline.by_author(author, kind, cursor, limit), who)

        return jsonify(load())

    def catalog(kind: str) -> None:
        async def listing() -> Response:
            cursor, limit = cursor_and_limit()
            scope = request.args.get("scope", "all")

            who = viewer()

            def load() -> dict[str, Any]:
                return items.page(
                    timeline.of_kind(kind, scope=scope, cursor=cursor, limit=limit), who
                )

            return jsonify(load())

        async def create() -> Response:
            data = await json_body()
            collective = _as_collective(data)
            return await publish(node, items, kind, data, collective=collective)

        async def one(event_id: str) -> Response:
            event = timeline.get(event_id)
            if event is None or event.kind != kind:
                return api_error(404, "not_found", f"no such {kind}")
            rendered = items.render([event], viewer())
            return jsonify(rendered[0])

        for handler in (listing, create, one):
            handler.__name__ = f"{kind}_{handler.__name__}"
        app.get(f"/api/v1/{kind}s")(auth.require(Permission.READ)(listing))
        app.post(f"/api/v1/{kind}s")(auth.require(Permission.POST)(create))
        app.get(f"/api/v1/{kind}s/<event_id>")(auth.require(Permission.READ)(one))

    catalog("offer")
    catalog("course")
