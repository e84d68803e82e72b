"""The track library: streamed uploads, audio checks, signed playback URLs with Range.

Upload: the raw body streams to a private temporary file, counted against
the size cap as it arrives (a lying or absent Content-Length changes
nothing), is checked as audio with PyAV, then moves into the blob store by
hash.  The original file name is kept, sanitised, only in the local
``uploads`` table; the signed track event carries the metadata.

Playback: ``/media/tracks/<blob>`` needs no cookie; its query carries an
HMAC over method, path, expiry and user, so a URL can be handed to an
``<audio>`` element (and cached by the service worker) without exposing a
session, and stops working when it expires or the user is removed.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from node.blobs import BlobStore
from node.daemon import Node, now_ms
from node.errors import BlobError
from node.roles import Permission
from node.tracks import MAX_TRACK_BYTES, AudioInfo, BadMedia, probe_audio, sanitise_filename
from protocol.event import Event, is_hex32
from webui.auth import Auth, api_error, current, no_content
from webui.content_api import Items, publish, viewer
from webui.ranges import RangeNotSatisfiable, content_range, parse_range
from webui.signed_urls import SignedURLError, sign_url, verify_url

URL_LIFETIME_S = 6 * 3600
MEDIA_CHUNK = 256 * 1024
MEDIA_KEY_META = "media_url_key"
UPLOAD_ENDPOINT = "upload_track"


def media_key(node: Node) -> bytes:
    """The HMAC key for media URLs: random, made once, kept in the database."""
    stored = node.store.get_meta(MEDIA_KEY_META)
    if stored is None:
        stored = secrets.token_hex(32)
        node.store.set_meta(MEDIA_KEY_META, stored)
    return bytes.fromhex(stored)


def _track_path(blob: str) -> str:
    return f"/media/tracks/{blob}"


def register_tracks_api(
    app: QuartTrio, node: Node, auth: Auth, items: Items, *, clock: Callable[[], float]
) -> None:
    key = media_key(node)
    blobs: BlobStore = node.blobs
    uploads = node.data.root / "uploads"
    store = node.store

    def url_for(blob: str, user: str) -> str:
        expires = int(now_ms() / 1000) + URL_LIFETIME_S
        return sign_url(key, "GET", _track_path(blob), user, expires)

    def decorate_track(item: dict[str, Any], event: Event, who: str) -> None:
        body = event.body or {}
        blob = body.get("blob")
        item["url"] = url_for(blob, who) if isinstance(blob, str) and blobs.has(blob) else None
        rows = store.query("SELECT filename FROM uploads WHERE blob = ?", (blob,))
        item["filename"] = str(rows[0][0]) if rows else None

    def decorate_post(item: dict[str, Any], event: Event, who: str) -> None:
        listed = (event.body or {}).get("tracks")
        if isinstance(listed, list):
            item["track_urls"] = {
                b: url_for(b, who) for b in listed if isinstance(b, str) and blobs.has(b)
            }

    items.decorators["track"] = decorate_track
    items.decorators["post"] = decorate_post

    @app.get("/api/v1/tracks")
    @auth.require(Permission.READ)
    async def tracks() -> Response:
        from node.timeline import Cursor, parse_limit

        cursor = Cursor.decode(request.args.get("cursor"))
        limit = parse_limit(request.args.get("limit"))
        author = request.args.get("author")
        who = viewer()
        if author is not None and not is_hex32(author):
            return api_error(400, "bad_request", "author ids are 64 lowercase hex characters")

        def load() -> dict[str, Any]:
            if author:
                page = items.timeline.by_author(author, "track", cursor, limit)
            else:
                page = items.timeline.of_kind("track", scope="local", cursor=cursor, limit=limit)
            return items.page(page, who)

        return jsonify(load())

    async def receive_upload(target: Path) -> int:
        """Stream the request body into ``target``; returns the size or raises BadMedia."""
        declared = request.content_length
        if declared is not None and declared > MAX_TRACK_BYTES:
            raise _TooLarge(declared)
        size = 0
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            async for chunk in _body_chunks():
                size += len(chunk)
                if size > MAX_TRACK_BYTES:
                    raise _TooLarge(size)
                await trio.to_thread.run_sync(handle.write, chunk)
        return size

    @app.post("/api/v1/tracks")
    @auth.require(Permission.UPLOAD)
    async def upload_track() -> Response:
        title = request.args.get("title", "").strip()
        filename = sanitise_filename(request.args.get("filename", "") or "upload")
        if not 1 <= len(title) <= 300:
            title = filename.rsplit(".", 1)[0][:300] or "Untitled"
        principal = current()
        await trio.to_thread.run_sync(partial(uploads.mkdir, mode=0o700, exist_ok=True))
        target = uploads / f"{secrets.token_hex(16)}.part"
        try:
            try:
                size = await receive_upload(target)
            except _TooLarge:
                return api_error(
                    413, "too_large", f"tracks are at most {MAX_TRACK_BYTES // (1024 * 1024)} MiB"
                )
            if size == 0:
                return api_error(422, "bad_audio", "the upload is empty")
            try:
                info = await trio.to_thread.run_sync(probe_audio, target)
            except BadMedia as exc:
                return api_error(422, "bad_audio", str(exc))
            stored = await trio.to_thread.run_sync(
                partial(blobs.put_file, target, max_size=MAX_TRACK_BYTES)
            )
        finally:
            await trio.to_thread.run_sync(partial(target.unlink, missing_ok=True))
        await trio.to_thread.run_sync(
            partial(
                store_upload, node, stored.hash, filename, info.mime, principal.user.name, now_ms()
            )
        )
        body = track_body(title, stored.hash, stored.size, info)
        return await publish(node, items, "track", body, collective=False)

    upload_track.streams_body = True  # type: ignore[attr-defined]

    @app.delete("/api/v1/tracks/<event_id>")
    @auth.require(Permission.UPLOAD)
    async def delete_track(event_id: str) -> Response:
        if not is_hex32(event_id):
            return api_error(400, "bad_request", "event ids are 64 lowercase hex characters")
        event = await trio.to_thread.run_sync(items.timeline.get, event_id)
        if event is None or event.kind != "track":
            return api_error(404, "not_found", "no such track")
        principal = current()
        if event.author != principal.user.author and not principal.may(Permission.MODERATE):
            return api_error(403, "forbidden", "you may delete only your own tracks")
        owner = await trio.to_thread.run_sync(auth.accounts.by_author, event.author)
        key_name = owner.author_key if owner else None
        if event.author == items.timeline.collective:
            key_name = "default"
        if key_name is None:
            return api_error(404, "not_found", "that track is not from this node")
        signer = await trio.to_thread.run_sync(node.author_key, key_name)
        await trio.to_thread.run_sync(
            partial(
                store.append_local, signer, kind="delete", body={"target": event_id},
                now_ms=now_ms(),
            )
        )  # fmt: skip
        node.poke()
        blob = (event.body or {}).get("blob")
        if isinstance(blob, str):
            await trio.to_thread.run_sync(release_blob, node, blob)
        return no_content()

    @app.get("/media/tracks/<blob>")
    async def media(blob: str) -> Response:
        if not is_hex32(blob):
            return api_error(404, "not_found", "no such track")
        try:
            user = verify_url(
                key,
                "GET",
                _track_path(blob),
                request.args.to_dict(flat=False),
                int(now_ms() / 1000),
            )
        except SignedURLError as exc:
            return api_error(403, "bad_signature", str(exc))
        if user != "_node" and await trio.to_thread.run_sync(auth.accounts.get, user) is None:
            return api_error(403, "bad_signature", "this link's user no longer exists")
        try:
            size = await trio.to_thread.run_sync(blobs.size, blob)
        except BlobError:
            return api_error(404, "not_found", "this track's audio is not stored on this node")
        mime = await trio.to_thread.run_sync(track_mime, node, blob)
        try:
            wanted = parse_range(request.headers.get("Range"), size)
        except RangeNotSatisfiable as exc:
            return api_error(
                416, "range_not_satisfiable", str(exc), **{"Content-Range": f"bytes */{size}"}
            )
        start, end = wanted if wanted is not None else (0, size - 1)

        async def stream() -> AsyncIterator[bytes]:
            position = start
            while position <= end:
                length = min(MEDIA_CHUNK, end - position + 1)
                chunk = await trio.to_thread.run_sync(blobs.read_range, blob, position, length)
                if not chunk:
                    return
                position += len(chunk)
                yield chunk

        response = Response(stream(), status=206 if wanted else 200, content_type=mime)
        response.headers["Accept-Ranges"] = "bytes"
        response.headers["Content-Length"] = str(end - start + 1)
        if wanted:
            response.headers["Content-Range"] = content_range(start, end, size)
        response.headers["Cache-Control"] = "private, max-age=3600"
        return response

    del clock  # media expiry uses wall time (URLs outlive a process)


class _TooLarge(Exception):
    pass


async def _body_chunks() -> AsyncIterator[bytes]:
    async for chunk in request.body:
        yield chunk


def store_upload(node: Node, blob: str, filename: str, mime: str, user: str, now: int) -> None:
    with node.store.transaction() as conn:
        conn.execute(
            "INSERT OR REPLACE INTO uploads (blob, filename, mime, user, created)"
            " VALUES (?, ?, ?, ?, ?)",
            (blob, filename, mime, user, now),
        )


def track_mime(node: Node, blob: str) -> str:
    """The MIME type PyAV found at upload; never a type taken from the client."""
    rows = node.store.query("SELECT mime FROM uploads WHERE blob = ?", (blob,))
    return str(rows[0][0]) if rows else "application/octet-stream"


def release_blob(node: Node, blob: str) -> None:
    """Delete ``blob`` once no live track of this node refers to it."""
    rows = node.store.query(
        "SELECT 1 FROM events WHERE kind = 'track' AND deleted = 0 AND raw LIKE ? LIMIT 1",
        (f'%"blob":"{blob}"%',),
    )
    if not rows:
        node.blobs.delete(blob)
        with node.store.transaction() as conn:
            conn.execute("DELETE FROM uploads WHERE blob = ?", (blob,))


def track_body(title: str, blob: str, size: int, info: AudioInfo) -> dict[str, Any]:
    """The body of a ``track`` event for stored audio PyAV described as ``info``."""
    return {
        "title": title,
        "blob": blob,
        "size": size,
        "mime": info.mime,
        "duration_ms": info.duration_ms,
        "sample_rate": info.sample_rate,
        "channels": info.channels,
    }


async def publish_audio_file(
    node: Node, items: Items, path: Path, title: str, filename: str
) -> dict[str, Any]:
    """Store the audio file at ``path`` as a track of the current user; the published item.

    For audio the node made itself (a jam recording); uploads stream through
    :func:`register_tracks_api`'s handler.  Raises BadMedia if PyAV refuses it.
    """
    info = await trio.to_thread.run_sync(probe_audio, path)
    stored = await trio.to_thread.run_sync(
        partial(node.blobs.put_file, path, max_size=MAX_TRACK_BYTES)
    )
    user = current().user.name
    await trio.to_thread.run_sync(
        partial(store_upload, node, stored.hash, filename, info.mime, user, now_ms())
    )
    body = track_body(title[:300], stored.hash, stored.size, info)
    response = await publish(node, items, "track", body, collective=False)
    item = await response.get_json()
    if response.status_code != 201 or not isinstance(item, dict):
        raise PermissionError(f"the recording could not be published: {item}")
    return item
