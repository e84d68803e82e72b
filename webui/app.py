"""The node's HTTP face: a quart-trio app served by hypercorn in the node's nursery.

It serves the JSON API under ``/api/v1`` (accounts, feed, library, market,
courses, federation), signed media URLs under ``/media``, and the
single-page PWA from ``webui/static``.  The security envelope around every
request: loopback-only Host names when bound to loopback (against DNS
rebinding), a strict Content-Security-Policy with no inline script, no
sniffing, no framing, and a per-client rate limit.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from pathlib import Path

import trio
from quart import Response, jsonify, request, websocket
from quart_trio import QuartTrio

from node.accounts import Accounts, PasswordPolicy
from node.daemon import Node
from node.errors import TalasError
from node.ratelimit import RateLimiter
from node.timeline import Timeline
from node.tracks import MAX_TRACK_BYTES
from protocol.errors import ProtocolError
from webui.accounts_api import register_accounts_api
from webui.auth import Auth, api_error
from webui.chat_api import register_chat_api
from webui.content_api import Items, register_content_api
from webui.dm_api import register_dm_api
from webui.federation_api import register_federation_api
from webui.jam_api import register_jam_api
from webui.mics_api import register_mics_api
from webui.nearby_api import register_nearby_api
from webui.openapi import register_openapi
from webui.tracks_api import UPLOAD_ENDPOINT, register_tracks_api

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; connect-src 'self'; manifest-src 'self'; worker-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "microphone=(self), camera=(), geolocation=(), payment=(), usb=()",
}
STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".webmanifest": "application/manifest+json",
    ".json": "application/json",
}
MAX_BODY = 1 << 20
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]"}


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    return api_error(status, code, message, **headers)


def _static_file(relative: str) -> Response:
    """A file from webui/static, or 404; never a path outside that folder."""
    path = (STATIC / relative).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file():
        return _error(404, "not_found", "no such file")
    kind = STATIC_TYPES.get(path.suffix)
    if kind is None:
        return _error(404, "not_found", "no such file")
    response = Response(path.read_bytes(), content_type=kind)
    # Revalidate every time: the service worker keeps the offline copy.
    response.headers["Cache-Control"] = "no-cache"
    return response


def _shell_digest() -> str:
    """A digest of every static file: the service worker's cache version."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(STATIC)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(
    node: Node,
    *,
    bind_host: str,
    rate: float | None = None,
    burst: float | None = None,
    clock: Callable[[], float] = trio.current_time,
    password_policy: PasswordPolicy | None = None,
) -> QuartTrio:
    """Build the app for ``node``, served on ``bind_host``."""
    app = QuartTrio(__name__, static_folder=None)
    # The app-wide cap admits track uploads; every other endpoint gets 1 MiB below.
    app.config["MAX_CONTENT_LENGTH"] = MAX_TRACK_BYTES
    rate = node.http_rate if rate is None else rate
    limiter = RateLimiter(rate=rate, burst=2 * rate if burst is None else burst)
    loopback_only = _is_loopback(bind_host)

    def turned_away(host: str | None, client: str | None) -> Response | None:
        """The host-name check and the per-client rate limit, for requests and sockets alike."""
        host = (host or "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if loopback_only and name not in LOOPBACK_NAMES:
            return _error(421, "bad_host", "this node only answers to loopback host names")
        client = client or "unknown"
        if not limiter.allow(client, clock()):
            wait = max(1, int(limiter.retry_after(client) + 0.999))
            return _error(429, "rate_limited", "too many requests", **{"Retry-After": str(wait)})
        return None

    @app.before_request
    async def guard() -> Response | None:
        if request.endpoint != UPLOAD_ENDPOINT:
            if (request.content_length or 0) > MAX_BODY:
                # Unread bytes would follow on this connection: close it after answering.
                return _error(
                    413, "too_large", "request bodies are at most 1 MiB here", Connection="close"
                )
            request.body._max_content_length = MAX_BODY  # also caps chunked bodies
        return turned_away(request.host, request.remote_addr)

    @app.before_websocket
    async def guard_socket() -> Response | None:
        return turned_away(websocket.host, websocket.remote_addr)

    @app.after_request
    async def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    accounts = Accounts(node.store, password_policy or node.password_policy)
    auth = Auth(node, accounts)
    timeline = Timeline(node.store, auth.node_user.author)
    items = Items(node, timeline)
    register_accounts_api(app, node, accounts, auth, clock)
    register_content_api(app, node, auth, items)
    register_federation_api(app, node, auth)
    register_tracks_api(app, node, auth, items, clock=clock)
    register_nearby_api(app, node, auth)
    register_mics_api(app, node, auth, items)
    register_chat_api(app, node, auth)
    register_dm_api(app, node, auth, items)
    register_jam_api(app, node, auth, items)
    register_openapi(app)

    @app.get("/api/v1/node")
    async def node_info() -> Response:
        return jsonify(node.info())

    @app.get("/")
    async def index() -> Response:
        return _static_file("index.html")

    shell_version = _shell_digest()

    @app.get("/sw.js")
    async def service_worker() -> Response:
        source = (STATIC / "sw.js").read_text()
        source = source.replace("const VERSION = 'dev';", f"const VERSION = '{shell_version}';")
        response = Response(source, content_type=STATIC_TYPES[".js"])
        response.headers["Cache-Control"] = "no-cache"
        response.headers["Service-Worker-Allowed"] = "/"
        return response

    @app.get("/manifest.webmanifest")
    async def manifest() -> Response:
        return _static_file("manifest.webmanifest")

    @app.get("/static/<path:relative>")
    async def static_file(relative: str) -> Response:
        return _static_file(relative)

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return _error(404, "not_found", "no such resource")

    @app.errorhandler(413)
    async def too_large(_: Exception) -> Response:
        return _error(413, "too_large", "request bodies are at most 1 MiB here", Connection="close")

    @app.errorhandler(ValueError)
    @app.errorhandler(TalasError)
    @app.errorhandler(ProtocolError)
    async def refused(exc: Exception) -> Response:
        # Handlers raise these for bad input they did not map themselves.
        return _error(400, "bad_request", str(exc))

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> Response:
        return _error(405, "method_not_allowed", "method not allowed here")

    return app
