"""The node's HTTP face: a quart-trio app served by hypercorn in the node's nursery.

Until the web UI lands this serves the node's identity as JSON at
``/api/v1/node`` and a plain page at ``/``.  The security envelope is already
the real one: loopback-only Host names when bound to loopback (against DNS
rebinding), a strict Content-Security-Policy, no sniffing, no framing, and a
per-client rate limit on every request.
"""

from __future__ import annotations

import html
import ipaddress
from collections.abc import Callable

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from node.daemon import Node
from node.ratelimit import RateLimiter
from webui.federation_api import api_error, register_federation_api

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; manifest-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "[::1]"}


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    response = api_error(status, code, message)
    response.headers.update(headers)
    return response


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def create_app(
    node: Node,
    *,
    bind_host: str,
    rate: float = 50.0,
    burst: float = 100.0,
    clock: Callable[[], float] = trio.current_time,
) -> QuartTrio:
    """Build the app for ``node``, served on ``bind_host``."""
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = 1 << 20
    limiter = RateLimiter(rate=rate, burst=burst)
    loopback_only = _is_loopback(bind_host)

    @app.before_request
    async def guard() -> Response | None:
        host = (request.host or "").lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if loopback_only and name not in LOOPBACK_NAMES:
            return _error(421, "bad_host", "this node only answers to loopback host names")
        client = request.remote_addr or "unknown"
        if not limiter.allow(client, clock()):
            wait = max(1, int(limiter.retry_after(client) + 0.999))
            return _error(429, "rate_limited", "too many requests", **{"Retry-After": str(wait)})
        return None

    @app.after_request
    async def secure(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    register_federation_api(app, node, node.api_token)

    @app.get("/api/v1/node")
    async def node_info() -> Response:
        return jsonify(node.info())

    @app.get("/")
    async def index() -> Response:
        info = node.info()
        rows = "".join(
            f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in (
                ("name", info["name"]),
                ("node id", info["node_id"]),
                ("version", info["version"]),
                ("events", info["events"]["count"]),
            )
        )
        page = (
            "<!doctype html><html lang=en><meta charset=utf-8>"
            "<meta name=viewport content='width=device-width,initial-scale=1'>"
            f"<title>Talas: {html.escape(str(info['name']))}</title>"
            f"<h1>Talas node</h1><table>{rows}</table>"
            "<p>JSON: <a href=/api/v1/node>/api/v1/node</a></p></html>"
        )
        return Response(page, content_type="text/html; charset=utf-8")

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return _error(404, "not_found", "no such resource")

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> Response:
        return _error(405, "method_not_allowed", "method not allowed here")

    return app
