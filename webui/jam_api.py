"""JSON API and WebSocket for jam sessions (see node/live/jam.py for how a jam works).

REST, under /api/v1/jams: list and read jams (``read``); create one, or join
another node's jam by its code ``<host node id>/<jam id>`` (``post``); end
it (the host ends it for everyone, a member node leaves it); ask a peer to
stream one of its tracks into it (``post``); start and stop recording
(``upload``: stopping publishes one library track per participant heard).

The WebSocket ``/api/v1/live/ws`` is how a browser takes part
(``specs/live.md`` §10.5).  The upgrade is authenticated like the API (the
session cookie with an ``Origin`` equal to this node's, or a bearer token)
and needs ``post``; it is refused before it is accepted otherwise.  Frames
are JSON text: the browser sends ``jam-join`` (its offer), ``jam-mute``,
``jam-chat`` and ``jam-leave``; the node sends ``jam-answer``, ``jam-roster``
(who is on which of the browser's receive slots), ``jam-chat`` (the jam's
chat lines), ``jam-left``, ``jam-ended`` and ``error``.  Closing the socket
leaves every jam it joined; the node closes it when the session ends
(sign-out, expiry, the user removed).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from typing import Any

import trio
from quart import Response, jsonify, websocket
from quart_trio import QuartTrio

from node.daemon import Node, now_ms
from node.errors import TalasError
from node.live import LiveManager
from node.live.jam import JamError, NoSuchJam
from node.ratelimit import RateLimiter
from node.roles import Permission
from protocol.signalling import (
    MAX_SDP_BYTES,
    SignalKind,
    SignallingError,
    check_sdp,
    sha256_fingerprints_only,
)
from webui.auth import NODE_USER, Auth, Principal, api_error, json_body, no_content
from webui.content_api import Items
from webui.tracks_api import publish_audio_file

log = logging.getLogger(__name__)

MAX_FRAME = 2 * MAX_SDP_BYTES
OUTBOX = 64
FRAMES_PER_S = 10.0
FRAME_BURST = 40
SESSION_CHECK_S = 5.0
"""How often an open socket re-checks that its session still exists."""
MAX_SOCKETS_PER_USER = 8


def register_jam_api(app: QuartTrio, node: Node, auth: Auth, items: Items) -> None:
    """Add /api/v1/jams… and the /api/v1/live/ws WebSocket to ``app``."""
    sockets: dict[str, int] = {}

    def live() -> LiveManager | None:
        return node.federation.live if node.federation is not None else None

    def unavailable() -> Response:
        return api_error(
            409, "not_federating", "jams need the node's peer-to-peer listener (--p2p)"
        )

    def jam_json(manager: LiveManager, jam_id: str) -> dict[str, Any]:
        return manager.jams.get(jam_id).public(node.node_id)

    def display_name(principal: Principal) -> str:
        return node.name if principal.user.name == NODE_USER else principal.user.name

    @app.get("/api/v1/jams")
    @auth.require(Permission.READ)
    async def jams() -> Response:
        manager = live()
        if manager is None:
            return unavailable()
        return jsonify({"jams": [j.public(node.node_id) for j in manager.jams.jams.values()]})

    @app.post("/api/v1/jams")
    @auth.require(Permission.POST)
    async def jam_create() -> Response:
        manager = live()
        if manager is None:
            return unavailable()
        data = await json_body()
        code = data.get("code")
        if code is not None:
            if not isinstance(code, str) or code.count("/") != 1:
                raise ValueError("a jam code is <host node id>/<jam id>")
            host, jam_id = code.split("/")
            existed = jam_id in manager.jams.jams
            jam = manager.jams.join_remote(host, jam_id, now_ms())
            response = jsonify(jam.public(node.node_id))
            response.status_code = 200 if existed else 201
            return response
        jam = manager.jams.create(data.get("title", ""), now_ms())
        response = jsonify(jam.public(node.node_id))
        response.status_code = 201
        return response

    @app.get("/api/v1/jams/<jam>")
    @auth.require(Permission.READ)
    async def jam_read(jam: str) -> Response:
        manager = live()
        if manager is None:
            return unavailable()
        try:
            return jsonify(jam_json(manager, jam))
        except NoSuchJam as exc:
            return api_error(404, "not_found", str(exc))

    @app.delete("/api/v1/jams/<jam>")
    @auth.require(Permission.POST)
    async def jam_end(jam: str) -> Response:
        jam_id = jam
        manager = live()
        if manager is None:
            return unavailable()
        try:
            if manager.jams.get(jam_id).recording is not None:
                await publish_takes(manager, jam_id)  # never lose a take to an ended jam
            await manager.jams.end(jam_id)
        except NoSuchJam as exc:
            return api_error(404, "not_found", str(exc))
        return no_content()

    @app.post("/api/v1/jams/<jam>/streams")
    @auth.require(Permission.POST)
    async def jam_stream(jam: str) -> Response:
        jam_id = jam
        manager = live()
        if manager is None:
            return unavailable()
        data = await json_body()
        peer, track = data.get("peer"), data.get("track")
        if not isinstance(peer, str) or not isinstance(track, str):
            raise ValueError("give the peer's node id and the track's event id")
        try:
            manager.jams.play_track(jam_id, peer, track)
        except NoSuchJam as exc:
            return api_error(404, "not_found", str(exc))
        except JamError as exc:
            return api_error(409, "full", str(exc))
        response = jsonify({"jam": jam_id, "peer": peer, "track": track})
        response.status_code = 202
        return response

    @app.post("/api/v1/jams/<jam>/recording")
    @auth.require(Permission.UPLOAD)
    async def jam_recording(jam: str) -> Response:
        jam_id = jam
        manager = live()
        if manager is None:
            return unavailable()
        on = (await json_body()).get("on")
        if type(on) is not bool:
            raise ValueError("'on' is true (start recording) or false (stop and publish)")
        try:
            if on:
                await manager.jams.start_recording(jam_id, now_ms())
                return jsonify(jam_json(manager, jam_id))
            return jsonify({"tracks": await publish_takes(manager, jam_id)})
        except NoSuchJam as exc:
            return api_error(404, "not_found", str(exc))

    async def publish_takes(manager: LiveManager, jam_id: str) -> list[dict[str, Any]]:
        """Stop recording ``jam_id``; publish each take as the current user's track."""
        title = manager.jams.get(jam_id).title
        published = []
        for take in await manager.jams.stop_recording(jam_id):
            published.append(
                await publish_audio_file(
                    node, items, take.path, f"{title} — {take.name}", take.path.name
                )
            )
            await trio.to_thread.run_sync(partial(take.path.unlink, missing_ok=True))
        return published

    # -- the browser's socket --------------------------------------------------------------

    @app.websocket("/api/v1/live/ws")
    async def live_socket() -> Response | None:
        principal = await auth.identify(websocket)
        if principal is None:
            return api_error(401, "unauthenticated", "sign in or give a bearer token")
        if principal.via == "session":
            own = f"{'https' if websocket.scheme == 'wss' else 'http'}://{websocket.host}"
            if websocket.headers.get("Origin") != own:
                return api_error(403, "csrf", "cross-origin WebSocket refused")
        if not principal.may(Permission.POST):
            return api_error(403, "forbidden", f"your role ({principal.user.role}) may not jam")
        manager = live()
        if manager is None:
            return unavailable()
        user = principal.user.name
        if sockets.get(user, 0) >= MAX_SOCKETS_PER_USER:
            return api_error(429, "rate_limited", "too many live sockets for this user")
        sockets[user] = sockets.get(user, 0) + 1
        try:
            await websocket.accept()
            await _serve_socket(manager, principal, display_name(principal))
        finally:
            sockets[user] -= 1
            if not sockets[user]:
                del sockets[user]
        return None

    async def _serve_socket(manager: LiveManager, principal: Principal, name: str) -> None:
        send_out, outbox = trio.open_memory_channel[dict[str, Any]](OUTBOX)
        joined: dict[str, str] = {}
        limiter = RateLimiter(rate=FRAMES_PER_S, burst=FRAME_BURST)

        async with trio.open_nursery() as nursery:

            def notify(message: dict[str, Any]) -> None:
                if message.get("t") in ("jam-left", "jam-ended"):
                    joined.pop(str(message.get("jam")), None)  # this socket may join it again
                try:
                    send_out.send_nowait(message)
                except trio.WouldBlock:  # the browser is not reading: let it reconnect
                    nursery.cancel_scope.cancel()
                except (trio.ClosedResourceError, trio.BrokenResourceError):
                    pass

            async def writer() -> None:
                async for message in outbox:
                    await websocket.send(json.dumps(message, separators=(",", ":")))

            async def watch_session() -> None:
                while True:
                    await trio.sleep(SESSION_CHECK_S)
                    if await auth.identify(websocket) is None:
                        notify({"t": "error", "message": "your session ended"})
                        await trio.sleep(0.1)
                        nursery.cancel_scope.cancel()

            nursery.start_soon(writer)
            nursery.start_soon(watch_session)
            try:
                while True:
                    raw = await websocket.receive()
                    if not limiter.allow("socket", trio.current_time()):
                        notify({"t": "error", "message": "too many frames: slow down"})
                        continue
                    try:
                        await _handle_frame(manager, raw, name, notify, joined)
                    except (ValueError, TalasError) as exc:
                        notify({"t": "error", "message": str(exc)})
            finally:
                for jam_id, participant in joined.items():
                    manager.jams.leave(jam_id, participant)
                nursery.cancel_scope.cancel()

    async def _handle_frame(
        manager: LiveManager,
        raw: str | bytes,
        name: str,
        notify: Any,
        joined: dict[str, str],
    ) -> None:
        if not isinstance(raw, str) or len(raw) > MAX_FRAME:
            raise ValueError(f"frames are JSON text of at most {MAX_FRAME} characters")
        try:
            frame = json.loads(raw)
        except ValueError as exc:
            raise ValueError("a frame is one JSON object") from exc
        if not isinstance(frame, dict):
            raise ValueError("a frame is one JSON object")
        kind, jam_id = frame.get("t"), frame.get("jam")
        if not isinstance(jam_id, str):
            raise ValueError("a frame names its jam")
        if kind == "jam-join":
            sdp = frame.get("sdp")
            if not isinstance(sdp, str):
                raise ValueError("jam-join carries the browser's offer as 'sdp'")
            sdp = sha256_fingerprints_only(sdp)  # aiortc clients add sha-384 and sha-512
            try:
                check_sdp(SignalKind.OFFER, sdp)  # the rules a peer's offer meets (live.md §5)
            except SignallingError as exc:
                raise ValueError(f"bad offer: {exc}") from exc
            if jam_id in joined:
                raise ValueError("this socket already joined that jam")
            participant, answer = await manager.jams.join_browser(jam_id, name, sdp, notify)
            joined[jam_id] = participant
            notify({"t": "jam-answer", "jam": jam_id, "participant": participant, "sdp": answer})
        elif kind == "jam-mute":
            muted = frame.get("muted")
            if type(muted) is not bool or jam_id not in joined:
                raise ValueError("jam-mute needs a jam you joined and muted true or false")
            manager.jams.set_muted(jam_id, joined[jam_id], muted)
        elif kind == "jam-chat":
            if jam_id not in joined:
                raise ValueError("chat in a jam you joined")
            manager.jams.say(jam_id, joined[jam_id], str(frame.get("text", "")), now_ms())
        elif kind == "jam-leave":
            if jam_id in joined:
                manager.jams.leave(jam_id, joined.pop(jam_id))
                notify({"t": "jam-left", "jam": jam_id, "reason": "you left"})
        else:
            raise ValueError(f"unknown frame type {str(kind)[:40]!r}")
