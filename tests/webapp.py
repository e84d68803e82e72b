"""A real node serving the real web app on 127.0.0.1:0, and an HTTP client for it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from node.accounts import Accounts, PasswordPolicy, User, add_member
from node.daemon import Node, now_ms, open_node, serve_node
from node.datadir import DataDir

FAST_PASSWORDS = PasswordPolicy(opslimit=2, memlimit=19 * 1024 * 1024)  # OWASP's minimum
PASSWORD = "correct horse battery"


@dataclass
class WebNode:
    node: Node
    url: str

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10, **kwargs)

    async def add_user(self, name: str, role: str, password: str = PASSWORD) -> User:
        accounts = Accounts(self.node.store, FAST_PASSWORDS)
        return await trio.to_thread.run_sync(
            partial(add_member, self.node.identity, accounts, name, role, password, now=now_ms())
        )

    @asynccontextmanager
    async def signed_in(
        self, name: str, password: str = PASSWORD
    ) -> AsyncIterator[httpx.AsyncClient]:
        """A client holding ``name``'s session cookie and sending its CSRF token."""
        async with self.client() as client:
            response = await client.post(
                "/api/v1/session", json={"username": name, "password": password}
            )
            assert response.status_code == 200, response.text
            client.headers["X-CSRF-Token"] = response.json()["csrf"]
            yield client

    @asynccontextmanager
    async def token_client(self, name: str) -> AsyncIterator[httpx.AsyncClient]:
        accounts = Accounts(self.node.store, FAST_PASSWORDS)
        token = await trio.to_thread.run_sync(accounts.create_token, name, "test", now_ms())
        async with self.client(headers={"Authorization": f"Bearer {token}"}) as client:
            yield client


async def raw_exchange(url: str, request: bytes, *, until: bytes | None = None) -> bytes:
    """Send ``request`` as-is on a fresh TCP connection; the answer's first bytes.

    With ``until``, keep reading until that marker has arrived after the headers.
    """
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        answer = await stream.receive_some(4096)
        while until is not None and until not in answer.partition(b"\r\n\r\n")[2]:
            more = await stream.receive_some(4096)
            if not more:
                break
            answer += more
        return answer


@asynccontextmanager
async def web_node(
    root: Path,
    name: str = "A",
    *,
    rate: float = 1000.0,
    p2p: bool = False,
    discovery_service: str | None = None,
    serial_directories: tuple[str, ...] = (),
) -> AsyncIterator[WebNode]:
    """A node serving the web app; with ``discovery_service``, mDNS on 127.0.0.1 only."""
    async with open_node(DataDir(root / name), name=name) as node, trio.open_nursery() as nursery:
        node.password_policy = FAST_PASSWORDS
        node.http_rate = rate
        addresses = await nursery.start(
            partial(
                serve_node,
                node,
                http=("127.0.0.1", 0),
                p2p=("127.0.0.1", 0) if p2p else None,
                discovery=["127.0.0.1"] if discovery_service else None,
                discovery_service=discovery_service,
                serial_directories=serial_directories,
            )
        )
        yield WebNode(node, addresses["http"].rstrip("/"))
        nursery.cancel_scope.cancel()
