"""Sign-in, sign-out, first-run setup, the current user, and member management."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from functools import partial

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio

from node.accounts import (
    AccountError,
    Accounts,
    UnknownUser,
    UserExists,
    add_member,
    check_password,
)
from node.daemon import Node, now_ms
from node.ratelimit import RateLimiter
from node.roles import Permission, Role, may_manage, parse_role, permissions_of
from webui.auth import SESSION_COOKIE, Auth, api_error, current, json_body, no_content

LOGIN_RATE = 5 / 60  # sustained attempts per second, per client and per user name
LOGIN_BURST = 10


def _session_response(body: dict[str, object], session_id: str, status: int = 200) -> Response:
    response = jsonify(body)
    response.status_code = status
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=request.scheme == "https",
        max_age=30 * 24 * 3600,
    )
    return response


def register_accounts_api(
    app: QuartTrio, node: Node, accounts: Accounts, auth: Auth, clock: Callable[[], float]
) -> None:
    by_client = RateLimiter(rate=LOGIN_RATE, burst=LOGIN_BURST)
    by_name = RateLimiter(rate=LOGIN_RATE, burst=LOGIN_BURST)
    setup_lock = trio.Lock()

    def me_json(user_json: dict[str, object], role: Role, csrf: str | None) -> dict[str, object]:
        return {
            "user": user_json,
            "csrf": csrf,
            "permissions": permissions_of(role),
            "node": {
                "node_id": node.node_id,
                "name": node.name,
                "collective": auth.node_user.author,
            },
        }

    @app.get("/api/v1/setup")
    async def setup_needed() -> Response:
        return jsonify({"needed": await trio.to_thread.run_sync(accounts.count) == 0})

    @app.post("/api/v1/setup")
    async def setup() -> Response:
        data = await json_body()
        code = str(data.get("setup_code", ""))
        if not hmac.compare_digest(code.encode(), node.api_token.encode()):
            return api_error(403, "bad_setup_code", "the setup code is in DATA/api-token")
        async with setup_lock:
            if await trio.to_thread.run_sync(accounts.count):
                return api_error(409, "already_set_up", "this node already has users")
            user = await trio.to_thread.run_sync(
                partial(
                    add_member,
                    node.identity,
                    accounts,
                    str(data.get("username", "")),
                    Role.OWNER,
                    str(data.get("password", "")),
                    now=now_ms(),
                    passphrase=node.passphrase,
                )
            )
        session_id, csrf = await trio.to_thread.run_sync(accounts.open_session, user, now_ms())
        return _session_response(me_json(user.as_json(), user.role, csrf), session_id, 201)

    @app.post("/api/v1/session")
    async def sign_in() -> Response:
        data = await json_body()
        username, password = data.get("username"), data.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            return api_error(400, "bad_request", "give username and password as strings")
        now = clock()
        client = request.remote_addr or "unknown"
        if not by_client.allow(client, now) or not by_name.allow(username[:64], now):
            wait = max(by_client.retry_after(client), by_name.retry_after(username[:64]))
            return api_error(
                429, "rate_limited", "too many sign-in attempts; wait and retry",
                **{"Retry-After": str(max(1, int(wait + 0.999)))},
            )  # fmt: skip
        user = await trio.to_thread.run_sync(accounts.authenticate, username, password)
        if user is None:
            return api_error(401, "bad_credentials", "wrong user name or password")
        # A fresh session id at every login: a planted cookie never becomes a session.
        old = request.cookies.get(SESSION_COOKIE)
        if old:
            await trio.to_thread.run_sync(accounts.close_session, old)
        session_id, csrf = await trio.to_thread.run_sync(accounts.open_session, user, now_ms())
        return _session_response(me_json(user.as_json(), user.role, csrf), session_id)

    @app.delete("/api/v1/session")
    @auth.require(None)
    async def sign_out() -> Response:
        principal = current()
        if principal.session_id:
            await trio.to_thread.run_sync(accounts.close_session, principal.session_id)
        response = no_content()
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/api/v1/me")
    @auth.require(None)
    async def me() -> Response:
        principal = current()
        return jsonify(me_json(principal.user.as_json(), principal.user.role, principal.csrf))

    @app.put("/api/v1/me/password")
    @auth.require(None)
    async def change_password() -> Response:
        principal = current()
        data = await json_body()
        fresh = check_password(data.get("new"))
        ok = await trio.to_thread.run_sync(
            accounts.authenticate, principal.user.name, str(data.get("current", ""))
        )
        if ok is None:
            return api_error(403, "bad_credentials", "the current password is wrong")
        await trio.to_thread.run_sync(accounts.set_password, principal.user.name, fresh)
        return no_content()

    @app.get("/api/v1/users")
    @auth.require(Permission.MANAGE_USERS)
    async def users() -> Response:
        found = await trio.to_thread.run_sync(accounts.list_users)
        return jsonify({"items": [u.as_json() for u in found], "next": None})

    @app.post("/api/v1/users")
    @auth.require(Permission.MANAGE_USERS)
    async def add_user() -> Response:
        data = await json_body()
        role = parse_role(data.get("role", "member"))
        if not may_manage(current().user.role, Role.GUEST, role):
            return api_error(403, "forbidden", "only an owner may create owners")
        try:
            user = await trio.to_thread.run_sync(
                partial(
                    add_member,
                    node.identity,
                    accounts,
                    str(data.get("name", "")),
                    role,
                    str(data.get("password", "")),
                    now=now_ms(),
                    passphrase=node.passphrase,
                )
            )
        except UserExists as exc:
            return api_error(409, "exists", str(exc))
        response = jsonify(user.as_json())
        response.status_code = 201
        return response

    @app.patch("/api/v1/users/<name>")
    @auth.require(Permission.MANAGE_USERS)
    async def change_user(name: str) -> Response:
        data = await json_body()
        target = await trio.to_thread.run_sync(accounts.get, name)
        if target is None:
            return api_error(404, "not_found", f"no user named {name!r}")
        new_role = parse_role(data["role"]) if "role" in data else None
        password = check_password(data["password"]) if "password" in data else None
        if not may_manage(current().user.role, target.role, new_role):
            return api_error(403, "forbidden", "admins may not change owners or make owners")
        try:
            if password is not None:
                await trio.to_thread.run_sync(accounts.set_password, name, password)
            if new_role is not None:
                target = await trio.to_thread.run_sync(accounts.set_role, name, new_role)
        except AccountError as exc:
            return api_error(409, "conflict", str(exc))
        return jsonify(target.as_json())

    @app.delete("/api/v1/users/<name>")
    @auth.require(Permission.MANAGE_USERS)
    async def remove_user(name: str) -> Response:
        target = await trio.to_thread.run_sync(accounts.get, name)
        if target is None:
            return api_error(404, "not_found", f"no user named {name!r}")
        if not may_manage(current().user.role, target.role):
            return api_error(403, "forbidden", "admins may not remove owners")
        try:
            await trio.to_thread.run_sync(accounts.remove, name)
        except UnknownUser:
            return api_error(404, "not_found", f"no user named {name!r}")
        except AccountError as exc:
            return api_error(409, "conflict", str(exc))
        return no_content()
