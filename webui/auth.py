"""Who is asking: bearer tokens, session cookies, CSRF, and permission checks.

A request is authenticated by ``Authorization: Bearer`` (API tokens, and the
node's own token in DATA/api-token, which acts as the owner) or by the
session cookie a browser got at login.  Cookie-authenticated unsafe requests
must also carry the session's CSRF token in ``X-CSRF-Token`` and, when the
browser sends one, an ``Origin`` matching this host: SameSite=Strict already
keeps the cookie off cross-site requests, and the token covers browsers or
proxies that get SameSite wrong.  Bearer requests need neither: a page on
another origin cannot attach that header without a CORS preflight we never
grant.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

import trio
from quart import Response, g, jsonify, request

from node.accounts import Accounts, User
from node.daemon import Node, now_ms
from node.errors import TalasError
from node.roles import Permission, Role, allowed
from protocol.errors import ProtocolError

SESSION_COOKIE = "talas_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NODE_USER = "(node)"
"""The name of the node-token principal: not a valid user name, so never a real user."""

Handler = Callable[..., Awaitable[Response]]


def api_error(status: int, code: str, message: str, **headers: str) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers)
    return response


def no_content() -> Response:
    """A 204.  ``Response(status=204)`` without a body breaks keep-alive under quart-trio."""
    return Response(b"", status=204)


@dataclass(frozen=True)
class Principal:
    user: User
    via: str  # "session" or "token"
    csrf: str | None = None
    session_id: str | None = None

    def may(self, permission: Permission) -> bool:
        return allowed(self.user.role, permission)


class Auth:
    """Authenticates requests of one app against the node's accounts."""

    def __init__(self, node: Node, accounts: Accounts) -> None:
        self.node = node
        self.accounts = accounts
        collective = node.author_key("default").id if node.api_token else ""
        self.node_user = User(NODE_USER, Role.OWNER, collective, "default", node.started_ms)

    async def identify(self, source: Any = None) -> Principal | None:
        """Who sent ``source`` (the current request by default; a ``websocket`` also works)."""
        source = request if source is None else source
        header = source.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                return None
            token = token.strip()
            if self.node.api_token and hmac.compare_digest(
                token.encode(), self.node.api_token.encode()
            ):
                return Principal(self.node_user, "token")
            # An indexed read: inline (see webui/content_api.py on thread hops).
            user = self.accounts.token_user(token)
            return Principal(user, "token") if user else None
        session_id = source.cookies.get(SESSION_COOKIE, "")
        if not session_id:
            return None
        now = now_ms()
        session = self.accounts.session(session_id, now)
        if session is None:
            return None
        if session.stale:  # sliding expiry: a write, so in a thread (rare: once a minute)
            await trio.to_thread.run_sync(self.accounts.touch_session, session_id, now)
        return Principal(session.user, "session", session.csrf, session_id)

    @staticmethod
    def csrf_problem(principal: Principal) -> str | None:
        """Why an unsafe cookie-authenticated request is refused, or None."""
        if principal.via != "session" or request.method not in UNSAFE_METHODS:
            return None
        given = request.headers.get(CSRF_HEADER, "")
        if not principal.csrf or not hmac.compare_digest(given.encode(), principal.csrf.encode()):
            return f"this request needs the {CSRF_HEADER} header from GET /api/v1/me"
        origin = request.headers.get("Origin")
        if origin is not None and origin != f"{request.scheme}://{request.host}":
            return "cross-origin request refused"
        return None

    def require(
        self, permission: Permission | None = Permission.READ
    ) -> Callable[[Handler], Handler]:
        """Decorate a handler: authenticate, check CSRF and ``permission``, map errors."""

        def decorate(handler: Handler) -> Handler:
            @wraps(handler)
            async def guarded(*args: Any, **kwargs: Any) -> Response:
                if request.method in UNSAFE_METHODS and not getattr(handler, "streams_body", False):
                    # Read the capped body before answering, even with a refusal:
                    # answering first leaves unread bytes on a keep-alive connection.
                    await request.get_data()
                principal = await self.identify()
                if principal is None:
                    return api_error(401, "unauthenticated", "sign in or give a bearer token")
                problem = self.csrf_problem(principal)
                if problem is not None:
                    return api_error(403, "csrf", problem)
                if permission is not None and not principal.may(permission):
                    return api_error(
                        403, "forbidden", f"your role ({principal.user.role}) may not do this"
                    )
                g.principal = principal
                try:
                    return await handler(*args, **kwargs)
                except (ValueError, TalasError, ProtocolError) as exc:
                    return api_error(400, "bad_request", str(exc))

            return guarded

        return decorate


def current() -> Principal:
    principal = g.get("principal")
    assert isinstance(principal, Principal), "handler not wrapped in Auth.require"
    return principal


async def json_body() -> dict[str, Any]:
    data = await request.get_json(force=True, silent=True)
    if not isinstance(data, dict):
        raise ValueError("the request body must be a JSON object")
    return data
