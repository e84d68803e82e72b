"""Mic modules through the JSON API: attach, control, level meters, passport."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from node.daemon import Node, now_ms
from node.mics import MicManager, MicOffline, UnknownMic, passport_entries
from node.roles import Permission
from webui.auth import Auth, api_error, current, json_body, no_content
from webui.content_api import Items, publish, viewer

LEVEL_STREAM_SECONDS = 600
"""A level stream ends after ten minutes; EventSource reconnects by itself."""
LEVEL_STREAM_HZ = 10


def register_mics_api(app: QuartTrio, node: Node, auth: Auth, items: Items) -> None:
    def manager() -> MicManager:
        if node.mics is None:
            raise MicOffline("mic support is not running on this node")
        return node.mics

    def mic_error(exc: Exception) -> Response:
        if isinstance(exc, UnknownMic):
            return api_error(404, "not_found", str(exc.args[0]))
        if isinstance(exc, MicOffline):
            return api_error(409, "offline", str(exc))
        return api_error(400, "bad_request", str(exc))

    @app.get("/api/v1/mics")
    @auth.require(Permission.READ)
    async def mics() -> Response:
        found = [] if node.mics is None else [m.as_json() for m in node.mics.mics.values()]
        return jsonify({"items": found, "next": None})

    @app.get("/api/v1/mics/ports")
    @auth.require(Permission.READ)
    async def ports() -> Response:
        """Serial ports present now (hot plug), attached or not."""
        attached = set() if node.mics is None else set(node.mics.mics)
        present = [] if node.mics is None else sorted(node.mics.ports)
        return jsonify(
            {"items": [{"path": p, "attached": p in attached} for p in present], "next": None}
        )

    @app.post("/api/v1/mics")
    @auth.require(Permission.HARDWARE)
    async def attach() -> Response:
        target = str((await json_body()).get("target", ""))
        try:
            mic = await manager().attach(target, by=current().user.name)
        except (ValueError, MicOffline) as exc:
            return mic_error(exc)
        response = jsonify(mic.as_json())
        response.status_code = 201
        return response

    @app.get("/api/v1/mics/<serial>")
    @auth.require(Permission.READ)
    async def show(serial: str) -> Response:
        try:
            return jsonify(manager().find(serial).as_json())
        except (UnknownMic, MicOffline) as exc:
            return mic_error(exc)

    @app.patch("/api/v1/mics/<serial>")
    @auth.require(Permission.HARDWARE)
    async def change(serial: str) -> Response:
        values = await json_body()
        try:
            settings = await manager().change(serial, values)
        except (UnknownMic, MicOffline, ValueError) as exc:
            return mic_error(exc)
        return jsonify(settings)

    @app.delete("/api/v1/mics/<serial>")
    @auth.require(Permission.HARDWARE)
    async def detach(serial: str) -> Response:
        try:
            await manager().detach(serial)
        except (UnknownMic, MicOffline) as exc:
            return mic_error(exc)
        return no_content()

    @app.post("/api/v1/mics/<serial>/identify")
    @auth.require(Permission.HARDWARE)
    async def identify(serial: str) -> Response:
        raw = await request.get_data()
        seconds = (await json_body()).get("seconds", 5) if raw.strip() else 5
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= 60:
            return api_error(400, "bad_request", "seconds must be an integer from 0 to 60")
        try:
            await manager().identify(serial, seconds)
        except (UnknownMic, MicOffline, ValueError) as exc:
            return mic_error(exc)
        return no_content()

    @app.post("/api/v1/mics/<serial>/self-test")
    @auth.require(Permission.HARDWARE)
    async def self_test(serial: str) -> Response:
        try:
            return jsonify(await manager().self_test(serial))
        except (UnknownMic, MicOffline, ValueError) as exc:
            return mic_error(exc)

    @app.get("/api/v1/mics/<serial>/levels")
    @auth.require(Permission.READ)
    async def levels(serial: str) -> Response:
        """Server-sent events: the module's level meters, at most 10 a second."""
        try:
            mic = manager().find(serial)
        except (UnknownMic, MicOffline) as exc:
            return mic_error(exc)

        async def stream() -> AsyncIterator[bytes]:
            with trio.move_on_after(LEVEL_STREAM_SECONDS):
                while True:
                    state = {"online": mic.online, "levels": mic.levels, "serial": mic.serial}
                    yield f"data: {json.dumps(state)}\n\n".encode()
                    await trio.sleep(1 / LEVEL_STREAM_HZ)
                    with trio.move_on_after(1):
                        await mic.changed.wait()

        response = Response(stream(), content_type="text/event-stream")
        response.headers["Cache-Control"] = "no-store"
        response.timeout = None
        return response

    @app.get("/api/v1/mics/<serial>/passport")
    @auth.require(Permission.READ)
    async def passport(serial: str) -> Response:
        """Every hardware and repair event about this module, any author, oldest first."""
        who = viewer()
        entries = await trio.to_thread.run_sync(passport_entries, node, serial)
        rendered: list[dict[str, Any]] = items.render(entries, who)
        return jsonify({"serial": serial, "items": rendered, "next": None})

    @app.post("/api/v1/mics/<serial>/passport")
    @auth.require(Permission.HARDWARE)
    async def add_repair(serial: str) -> Response:
        """Record a repair done by hand (signed by the caller)."""
        data = await json_body()
        body = {k: v for k, v in data.items() if k != "as"}
        body["serial"] = serial
        body.setdefault("by", current().user.name)
        body.setdefault("when", now_ms())
        publish_as = data.get("as", "me")
        if publish_as not in ("me", "collective"):
            return api_error(400, "bad_request", "'as' must be 'me' or 'collective'")
        return await publish(node, items, "repair", body, collective=publish_as == "collective")
