"""Federation between nodes started by ``talas run``: CLI, API, and kill -9 mid-sync."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from node.bench import make_events
from protocol.event import parse_event
from tests.processes import TALAS, clean_env, ok, running_node, talas, talas_async


def author_id(data: Path) -> str:
    return str(json.loads(ok(talas(data, "id")))["authors"][0]["id"])


def p2p_address(lines: list[str]) -> str:
    return next(line.split()[-1] for line in lines if line.strip().startswith("p2p"))


async def poll(check: Callable[[], bool], seconds: float) -> float:
    """Seconds until ``check()`` held; fails after ``seconds``."""
    start = trio.current_time()
    with trio.fail_after(seconds):
        while not check():  # noqa: ASYNC110 - state lives in another process
            await trio.sleep(0.05)
    return trio.current_time() - start


def stored(data: Path, event_id: str) -> bool:
    with sqlite3.connect(data / "talas.db", timeout=10) as conn:
        return conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None


def count_events(data: Path, author: str) -> int:
    with sqlite3.connect(data / "talas.db", timeout=10) as conn:
        (count,) = conn.execute(
            "SELECT count(*) FROM events WHERE author = ?", (author,)
        ).fetchone()
    return int(count)


async def test_post_on_b_reaches_a_through_cli_and_api(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    ok(talas(a_dir, "init", "--name", "A"))
    ok(talas(b_dir, "init", "--name", "B"))
    b_author = author_id(b_dir)
    async with running_node(b_dir) as b, running_node(a_dir) as a:
        b_p2p = p2p_address(b.lines)
        b_node_id = json.loads(ok(talas(b_dir, "id")))["node_id"]
        token = (a_dir / "api-token").read_text().strip()
        async with httpx.AsyncClient(base_url=a.url) as client:
            with trio.fail_after(10):
                refused = await client.post("/api/v1/follows", json={"author": b_author})
                assert refused.status_code == 401
                auth = {"Authorization": f"Bearer {token}"}
                followed = await client.post(
                    "/api/v1/follows", json={"author": b_author}, headers=auth
                )
                assert followed.status_code == 200, followed.text
                added = await client.post(
                    "/api/v1/peers",
                    json={"address": b_p2p, "node_id": b_node_id},
                    headers=auth,
                )
                assert added.status_code == 201, added.text
                follows = await client.get("/api/v1/follows", headers=auth)
                assert follows.json()["follows"] == [b_author]

            def connected() -> bool:
                peers = json.loads(ok(talas(a_dir, "peer", "list", "--json")))
                return bool(peers) and peers[0]["state"] == "connected"

            await poll(connected, 15)

            def a_holds(event_id: str) -> Callable[[], bool]:
                return lambda: stored(a_dir, event_id)

            event_id = (await talas_async(b_dir, "post", "from B's command line")).strip()
            took = await poll(a_holds(event_id), 10)
            assert took < 2.0, f"a post on B reached A after {took:.2f}s (goal: 2 s)"

            b_token = (b_dir / "api-token").read_text().strip()
            async with httpx.AsyncClient(base_url=b.url) as b_client:
                with trio.fail_after(10):
                    made = await b_client.post(
                        "/api/v1/posts",
                        json={"text": "from B's API"},
                        headers={"Authorization": f"Bearer {b_token}"},
                    )
                assert made.status_code == 201, made.text
            await poll(a_holds(made.json()["id"]), 10)

            with trio.fail_after(10):
                listing = (await client.get("/api/v1/peers", headers=auth)).json()
            assert listing["peers"][0]["node_id"] == b_node_id
            assert [link["node_id"] for link in listing["links"]] == [b_node_id]

        # The CLI's peer list shows the state the running node recorded.
        listed = ok(talas(a_dir, "peer", "list"))
        assert b_p2p in listed and "connected" in listed


async def test_kill_9_mid_sync_then_restart_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    a_dir, b_dir = tmp_path / "a", tmp_path / "b"
    ok(talas(a_dir, "init"))
    ok(talas(b_dir, "init"))
    total = 20_000
    lines = make_events(total, 1, seed=11)
    feed_author = parse_event(lines[0]).author
    with trio.fail_after(120):
        imported = await trio.run_process(
            [*TALAS, "--data", str(b_dir), "events", "import", "-"],
            stdin=b"\n".join(lines),
            capture_stdout=True,
            capture_stderr=True,
            env=clean_env(),
        )
    assert json.loads(imported.stdout)["accepted"] == total, imported.stderr
    ok(talas(a_dir, "follow", feed_author))
    async with running_node(b_dir) as b:
        ok(talas(a_dir, "peer", "add", p2p_address(b.lines)))
        async with running_node(a_dir) as a:
            await poll(lambda: count_events(a_dir, feed_author) > 0, 30)
            a.process.send_signal(signal.SIGKILL)
            with trio.fail_after(10):
                await a.process.wait()
        partial = count_events(a_dir, feed_author)
        assert 0 < partial < total, f"kill landed at {partial}/{total}: not mid-sync"
        async with running_node(a_dir):
            await poll(lambda: count_events(a_dir, feed_author) == total, 60)
    with sqlite3.connect(a_dir / "talas.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        seqs = [
            s
            for (s,) in conn.execute(
                "SELECT seq FROM events WHERE author = ? ORDER BY seq", (feed_author,)
            )
        ]
    assert seqs == list(range(1, total + 1))
    exported = ok(talas(a_dir, "events", "export", "--author", feed_author)).encode().splitlines()
    assert exported == lines
