"""``talas bench discovery``: time from a node starting until another node lists it.

A listener Discovery runs in this process on 127.0.0.1 (never a real
interface: mDNS must not leave the machine).  Each run starts a fresh node
process and measures from just before the process is spawned until the
listener's table holds its node id; then SIGTERM, and the time until its
goodbye removes it.  The node process is ``talas run --discovery-interface
127.0.0.1`` when the CLI has that option, else the discovery agent below.

``python -m node.bench_discovery agent --interface ADDR ...`` is that agent: a
bare Discovery that prints JSON lines (started, registered, each change of
its tables) until SIGTERM.  The tests run it in network namespaces.
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import trio

from node.discovery import MIC_SERVICE_TYPE, SERVICE_TYPE, Discovery

GOAL_S = 1.5
LOOPBACK = "127.0.0.1"
RUN_TIMEOUT_S = 15.0


def _emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, sort_keys=True), flush=True)


async def _agent(args: argparse.Namespace) -> None:
    discovery = Discovery(
        node_id=args.node_id,
        name=args.name,
        http_port=args.http,
        p2p_port=args.p2p or None,
        interfaces=args.interface,
        service_type=args.service_type,
        mic_service_type=args.mic_service_type,
        ttl_s=args.ttl,
        refresh_s=args.refresh,
        advertise=not args.no_advertise,
    )
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(discovery.run)
            _emit("started")

            async def report_registration() -> None:
                _emit("registered", service=await discovery.wait_registered())

            async def report_changes() -> None:
                shown = None
                while True:
                    await discovery.wait_changed()
                    table = {
                        "nearby": [n.as_dict() | {"last_seen_ms": 0} for n in discovery.nearby()],
                        "mics": [m.as_dict() | {"last_seen_ms": 0} for m in discovery.mics()],
                    }
                    if table != shown:  # a refreshed last-seen alone is not news
                        shown = table
                        _emit("table", **table)

            nursery.start_soon(report_registration)
            nursery.start_soon(report_changes)
            async for _ in signals:
                nursery.cancel_scope.cancel()
                break
    _emit("stopped")


def agent_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.bench_discovery agent")
    parser.add_argument(
        "--interface", action="append", required=True, help="IPv4 address (repeatable)"
    )
    parser.add_argument("--node-id", default=None, help="default: random")
    parser.add_argument("--name", default="agent")
    parser.add_argument("--http", type=int, default=1)
    parser.add_argument("--p2p", type=int, default=0)
    parser.add_argument("--service-type", default=SERVICE_TYPE)
    parser.add_argument("--mic-service-type", default=MIC_SERVICE_TYPE)
    parser.add_argument("--ttl", type=float, default=90.0)
    parser.add_argument("--refresh", type=float, default=15.0)
    parser.add_argument("--no-advertise", action="store_true")
    args = parser.parse_args(argv)
    args.node_id = args.node_id or secrets.token_hex(32)
    trio.run(_agent, args)
    return 0


# -- the benchmark -------------------------------------------------------------------


def _cli_has_discovery() -> bool:
    """Whether ``talas run`` takes --discovery-interface (wired by the CLI)."""
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "run", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    return "--discovery-interface" in result.stdout


def _init_node(data: Path, name: str) -> str:
    """Create a node (untimed); its id."""
    result = subprocess.run(
        [sys.executable, "-m", "node.cli", "--data", str(data), "init", "--name", name],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()[2]  # "created node <id> (<name>) in <dir>"


async def _one_run(listener: Discovery, command: list[str], node_id: str) -> tuple[float, float]:
    """Seconds until listed after the spawn, and until gone after SIGTERM."""

    def listed() -> bool:
        return any(n.node_id == node_id for n in listener.nearby())

    start = time.perf_counter()
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(RUN_TIMEOUT_S):
            while not listed():
                await listener.wait_changed()
        took = time.perf_counter() - start
        process.send_signal(signal.SIGTERM)
        stop = time.perf_counter()
        with trio.fail_after(RUN_TIMEOUT_S):
            while listed():
                await listener.wait_changed()
        gone = time.perf_counter() - stop
    finally:
        if process.returncode is None:
            with trio.move_on_after(5):
                await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    return took, gone


async def _bench(runs: int, tmp: Path) -> dict[str, float | int]:
    use_cli = await trio.to_thread.run_sync(_cli_has_discovery)
    what = "talas run" if use_cli else "discovery agent (talas run lacks --discovery-interface)"
    print(f"discovery: {runs} runs on {LOOPBACK}, node process: {what}", flush=True)
    listener = Discovery(
        node_id=secrets.token_hex(32),
        name="bench listener",
        http_port=9,
        p2p_port=None,
        interfaces=[LOOPBACK],
        advertise=False,
    )
    listed: list[float] = []
    gone: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        for run in range(1, runs + 1):
            if use_cli:
                data = tmp / f"node-{run}"
                node_id = await trio.to_thread.run_sync(_init_node, data, f"bench {run}")
                command = [sys.executable, "-m", "node.cli", "--data", str(data), "run",
                           "--http", f"{LOOPBACK}:0", "--no-p2p",
                           "--discovery-interface", LOOPBACK]  # fmt: skip
            else:
                node_id = secrets.token_hex(32)
                command = [sys.executable, "-m", "node.bench_discovery", "agent",
                           "--interface", LOOPBACK, "--node-id", node_id,
                           "--name", f"bench {run}"]  # fmt: skip
            took, left = await _one_run(listener, command, node_id)
            listed.append(took)
            gone.append(left)
            print(f"  run {run}: listed after {took * 1000:6.0f} ms;"
                  f" gone {left * 1000:5.0f} ms after SIGTERM", flush=True)  # fmt: skip
        nursery.cancel_scope.cancel()
    p50 = statistics.median(listed)
    worst = max(listed)
    verdict = "PASS" if worst <= GOAL_S else "MISS"
    print(f"  start -> listed: p50 {p50 * 1000:.0f} ms, max {worst * 1000:.0f} ms"
          f"  (goal <= {GOAL_S} s: {verdict})")  # fmt: skip
    return {
        "runs": runs,
        "talas_run": int(use_cli),
        "listed_p50_ms": round(p50 * 1000, 1),
        "listed_max_ms": round(worst * 1000, 1),
        "gone_p50_ms": round(statistics.median(gone) * 1000, 1),
        "goal_ms": int(GOAL_S * 1000),
        "goal_met": int(worst <= GOAL_S),
    }


def bench_discovery(runs: int = 5) -> dict[str, float | int]:
    """Run the benchmark (prints each run and a summary); the figures."""
    if runs < 1:
        raise ValueError("runs must be >= 1")
    with tempfile.TemporaryDirectory(prefix="talas-bench-discovery-") as tmp:
        return trio.run(partial(_bench, runs, Path(tmp)))


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["agent"]:
        return agent_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m node.bench_discovery")
    parser.add_argument("--runs", type=int, default=5)
    figures = bench_discovery(parser.parse_args(argv).runs)
    print(json.dumps({"bench": "discovery", **figures}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
