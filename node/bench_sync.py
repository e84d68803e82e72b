"""``talas bench sync``: catch-up and re-sync between two real nodes on loopback.

Node B runs as its own ``talas run`` process (so serving uses the other core);
node A runs in this process with the real federation stack.  Figures:
cold catch-up of every event (in-process verification, then with verify
worker processes), then an identical re-sync after A restarts (time and
bytes until both sides have said InSync).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import trio

from node import peerstore
from node.bench import make_events, raw_verify_rate
from node.daemon import now_ms, open_node, serve_node
from node.datadir import DataDir
from node.store import Store
from protocol.event import decode_event

LOOPBACK = ("127.0.0.1", 0)


def _seed_node(data: DataDir, lines: list[bytes]) -> None:
    """Create node B and store the events (already signed by us: no need to verify)."""
    subprocess.run(
        [sys.executable, "-m", "node.cli", "--data", str(data.root), "init", "--name", "B"],
        check=True,
        capture_output=True,
    )
    store = Store(data.database)
    try:
        events = [decode_event(line) for line in lines]
        for start in range(0, len(events), 5000):
            store.ingest(events[start : start + 5000], now_ms=0)
    finally:
        store.close()


async def _start_b(data: DataDir) -> tuple[trio.Process, str]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "node.cli", "--data", str(data.root), "run",
         "--http", "127.0.0.1:0", "--p2p", "127.0.0.1:0", "--no-discovery"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    seen = b""
    with trio.fail_after(30):
        while b"web UI" not in seen:
            chunk = await process.stdout.receive_some(4096)
            if not chunk:
                raise RuntimeError(f"node B did not start: {seen.decode()}")
            seen += chunk
    p2p = next(line.split()[-1] for line in seen.decode().splitlines() if "p2p" in line)
    return process, p2p


async def _catch_up(a_dir: DataDir, b_p2p: str, authors: list[str], total: int,
                    workers: int) -> float:  # fmt: skip
    async with open_node(a_dir, name="A") as node, trio.open_nursery() as nursery:
        for author in authors:
            peerstore.set_follow(node.store, author, True, now_ms())
        await nursery.start(
            partial(serve_node, node, http=LOOPBACK, p2p=LOOPBACK, verify_workers=workers)
        )
        done = trio.Event()
        node.add_listener(lambda _: done.set() if node.event_count >= total else None)
        start = time.perf_counter()
        peerstore.add_peer(node.store, b_p2p, None, now_ms())
        with trio.fail_after(600):
            await done.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed


async def _resync(a_dir: DataDir) -> tuple[float, int]:
    """Restart A with every event held: time and bytes until both said InSync."""
    start = time.perf_counter()
    async with open_node(a_dir, name="A") as node, trio.open_nursery() as nursery:
        await nursery.start(partial(serve_node, node, http=LOOPBACK, p2p=LOOPBACK))
        federation = node.federation
        assert federation is not None
        with trio.fail_after(60):
            while True:
                sessions = list(federation.sessions.values())
                if sessions and sessions[0].stats.in_sync_at and sessions[0].their_scope:
                    break
                await trio.sleep(0.002)
        elapsed = time.perf_counter() - start
        link = sessions[0].link
        exchanged = link.bytes_sent + link.bytes_received
        events_moved = sessions[0].stats.events_sent + sessions[0].stats.events_received
        nursery.cancel_scope.cancel()
    if events_moved:
        raise AssertionError(f"re-sync moved {events_moved} events")
    return elapsed, exchanged


def bench_sync(events: int, authors: int, workers: int) -> dict[str, float | int]:
    print(f"sync: signing {events} events by {authors} authors ...", flush=True)
    lines = make_events(events, authors)
    author_ids = sorted({decode_event(line).author for line in lines[:authors]})
    raw = raw_verify_rate(lines)
    print(f"  raw Ed25519 verify, 1 core           {raw:10,.0f} /s")
    figures: dict[str, float | int] = {"events": events, "authors": authors,
                                       "raw_verify_per_s": round(raw)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="talas-bench-sync-") as tmp:
        b_dir = DataDir(Path(tmp) / "b")
        _seed_node(b_dir, lines)

        async def run() -> None:
            process, b_p2p = await _start_b(b_dir)
            try:
                for label, count in (("1 core", 0), (f"{workers} verify workers", workers)):
                    if label != "1 core" and workers < 1:
                        continue
                    a_dir = DataDir(Path(tmp) / f"a-{count}")
                    took = await _catch_up(a_dir, b_p2p, author_ids, events, count)
                    rate = events / took
                    goal = 15 if not count else 8
                    print(
                        f"  catch-up, {label:22} {took:8.2f} s  {rate:10,.0f} events/s"
                        f"  ({rate / raw:.0%} of raw verify; goal <= {goal} s at 100k)"
                    )
                    key = "catchup" if not count else "catchup_pool"
                    figures[f"{key}_s"] = round(took, 3)
                    figures[f"{key}_ratio"] = round(rate / raw, 3)
                took, exchanged = await _resync(DataDir(Path(tmp) / "a-0"))
                print(
                    f"  identical re-sync              {took * 1000:8.1f} ms  {exchanged:,} bytes"
                    "  (goal <= 200 ms, <= 10 KB)"
                )
                figures["resync_ms"] = round(took * 1000, 1)
                figures["resync_bytes"] = exchanged
            finally:
                process.terminate()
                with trio.move_on_after(10):
                    await process.wait()

        trio.run(run)
    figures["workers"] = workers
    figures["cpus"] = os.cpu_count() or 1
    return figures
