"""``talas bench web``: feed API latency and throughput over many stored events.

A node is created with ``talas init``, then its store is filled directly with
signed events by ``authors`` feeds (signed in worker processes, stored
through :meth:`Store.ingest`, which checks the chains but not signatures).
The node follows one author in ten, so the feed query must skip nine stored
events of ten; every tenth event of a feed is a ``like`` the feed never shows,
and each feed opens with a profile, as the page renderer looks names up.

``talas run`` then serves it from its own process while this process drives
it with ``connections`` keep-alive clients: 80 % first pages, 20 % a page
further down a walk of up to 20 pages.  The client is a bare HTTP/1.1 loop
on trio sockets so it costs little CPU; its share is printed, as the client
shares the machine with the server.  The limit beside the figure is the same
client against ``GET /api/v1/setup``, the bare framework with one trivial
query, measured in the same run.

``TALAS_BENCH_CACHE=DIR`` keeps the seeded node in ``DIR/web-<events>`` and
reuses it on the next run (seeding a million events takes 1-2 minutes).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import trio

from node.bench import TEXT
from node.datadir import DataDir
from node.errors import LocalError
from node.store import Store
from protocol.event import Event, sign_event
from protocol.keys import SigningKey

MAX_AUTHORS = 2000
EVENTS_PER_AUTHOR = 100
"""Smaller runs use fewer authors, so each feed is still this long (and pages go deep)."""
FOLLOW_EVERY = 10
LIKE_EVERY = 10
CREATED_BASE = 1_750_000_000_000
SEED_WORKERS = max(1, min(2, (os.cpu_count() or 1) - 1))
"""Signing processes: ingest keeps this process busy, so it gets a core of its own."""
SEED_CACHE_KIB = 256 * 1024
AUTHORS_PER_TASK = 25
BATCH = 5000
PAGE = 30
DEEP_SHARE = 0.2
MAX_DEPTH = 20
WARM_UP_S = 1.0
TRIVIAL_S = 3.0
GOAL_P99_MS = 20.0
GOAL_PER_S = 500.0
MARKER = "bench-web.json"
USER = "bench"


# -- seeding -----------------------------------------------------------------


def _author_key(which: int) -> SigningKey:
    return SigningKey(hashlib.sha256(b"talas bench web author %d" % which).digest())


def _sign_authors(task: tuple[int, int, int, int]) -> list[Event]:
    """Every event of authors ``first..last-1`` (a worker's share), chain by chain.

    Author ``a``'s k-th event is event ``k * authors + a`` of the whole run,
    so feeds interleave in time as if posted side by side.
    """
    first, last, authors, total = task
    out: list[Event] = []
    for which in range(first, last):
        key = _author_key(which)
        head: Event | None = None
        for index in range(which, total, authors):
            seq = 1 if head is None else head.seq + 1
            kind, body = _content(seq, index, head)
            head = sign_event(
                key, seq=seq, prev=None if head is None else head.id,
                kind=kind, created=CREATED_BASE + index, body=body,
            )  # fmt: skip
            out.append(head)
    return out


def _content(seq: int, index: int, head: Event | None) -> tuple[str, dict[str, Any]]:
    if seq == 1:
        return "profile", {"name": f"bench artist {index}", "bio": TEXT}
    if seq % LIKE_EVERY == 0 and head is not None:
        return "like", {"target": head.id}
    return "post", {"text": f"{TEXT} #{index}", "tags": ["drone", "field-recording"]}


def _talas(root: Path, *args: str) -> str:
    """Run a ``talas`` command on the bench node; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "node.cli", "--data", str(root), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise LocalError(f"talas {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _seed(root: Path, events: int, authors: int) -> tuple[str, float]:
    """Create the node, its owner, a token and the events; (token, seconds)."""
    start = time.perf_counter()
    _talas(root, "init", "--name", "bench")
    password = root / "bench-password"
    password.write_text(secrets.token_urlsafe(16))
    password.chmod(0o600)
    _talas(root, "user", "add", USER, "--role", "owner", "--password-file", str(password))
    token = _talas(root, "token", "create", "--user", USER, "--label", "bench").strip()
    tasks = [
        (first, min(first + AUTHORS_PER_TASK, authors), authors, events)
        for first in range(0, authors, AUTHORS_PER_TASK)
    ]
    received = int(time.time() * 1000)  # after every ``created``: pages order by created
    store = Store(DataDir(root).database)
    try:
        with store.transaction() as conn:  # this connection only: the indexes outgrow 2 MB
            conn.execute(f"PRAGMA cache_size = -{SEED_CACHE_KIB}")
        stored, shown = 0, 0
        context = multiprocessing.get_context("spawn")
        with context.Pool(SEED_WORKERS) as pool:
            for signed in pool.imap_unordered(_sign_authors, tasks):
                for at in range(0, len(signed), BATCH):
                    report = store.ingest(signed[at : at + BATCH], now_ms=received)
                    stored += len(report.accepted)
                if stored - shown >= events // 10 or stored == events:
                    shown = stored
                    print(f"  stored {stored:>10,} / {events:,}"
                          f"  ({time.perf_counter() - start:6.1f} s)", flush=True)  # fmt: skip
        with store.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO follows (author, since) VALUES (?, ?)",
                [(_author_key(a).id, received) for a in range(0, authors, FOLLOW_EVERY)],
            )
        if stored != events or store.count() != events:
            raise AssertionError(f"seeding stored {stored} of {events} events")
    finally:
        store.close()
    return token, time.perf_counter() - start


def _feed_posts(root: Path) -> int:
    store = Store(DataDir(root).database)
    try:
        rows = store.query(
            "SELECT count(*) FROM events WHERE kind = 'post'"
            " AND author IN (SELECT author FROM follows)"
        )
    finally:
        store.close()
    return int(str(rows[0][0]))


# -- the server --------------------------------------------------------------


def _start_server(root: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``talas run`` in its own process; (process, base URL)."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "--data", str(root), "run",
             "--http", "127.0.0.1:0", "--no-p2p", "--no-discovery"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if "web UI" in line:
                return process, line.split()[-1]
        if process.poll() is not None:
            raise LocalError(f"talas run exited with {process.returncode}:\n{text[-3000:]}")
        time.sleep(0.05)
    _stop_server(process)
    raise LocalError(f"talas run did not start within 60 s:\n{log.read_text()[-3000:]}")


def _stop_server(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU of a process (all threads), from /proc; None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the client --------------------------------------------------------------


class _Connection:
    """One keep-alive HTTP/1.1 connection; just enough parsing for this server."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.closing = False  # the server said ``Connection: close`` (hypercorn: every 1000)

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("server closed the connection")
        self.buffer += data

    async def _take(self, count: int) -> bytes:
        while len(self.buffer) < count:
            await self._fill()
        taken = bytes(self.buffer[:count])
        del self.buffer[:count]
        return taken

    async def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            await self._fill()
        return await self._take(end + 2)

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        await self.stream.send_all(raw)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = await self._take(end + 4)
        status = int(head[9:12])
        length, chunked = None, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                self.closing = True
        if chunked:
            body = bytearray()
            while size := int((await self._line()).split(b";")[0], 16):
                body += await self._take(size + 2)
                del body[-2:]
            while await self._line() != b"\r\n":  # trailers
                pass
            return status, bytes(body)
        if length is None:
            raise ValueError("response without Content-Length")
        return status, await self._take(length)


@dataclass
class _Phase:
    """Requests of one measured run: recorded only inside [measure_from, until)."""

    measure_from: float
    until: float
    latencies: list[float] = field(default_factory=list)
    deep: list[float] = field(default_factory=list)  # the pages after the first, also
    errors: int = 0
    first_error: str | None = None

    def error(self, problem: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = problem


Check = Callable[[int, bytes], tuple[str | None, str | None]]
"""Judges a response: (problem or None, the page's next cursor or None)."""


def _check_feed(status: int, body: bytes) -> tuple[str | None, str | None]:
    if status != 200:
        return f"HTTP {status}: {body[:200]!r}", None
    page = json.loads(body)
    if not isinstance(page, dict):
        return f"not a feed page: {body[:200]!r}", None
    items, following = page.get("items"), page.get("next")
    if not isinstance(items, list) or not (len(items) == PAGE or following is None):
        return f"a feed page with {len(items) if isinstance(items, list) else items!r} items", None
    return None, following if isinstance(following, str) else None


def _check_trivial(status: int, body: bytes) -> tuple[str | None, str | None]:
    if status != 200 or b'"needed"' not in body:
        return f"HTTP {status}: {body[:200]!r}", None
    return None, None


async def _connect(host: str, port: int, number: int) -> trio.SocketStream:
    """Client ``number``'s connection, from a loopback address of its own where possible.

    The node allows each client address 1000 requests/s; these clients stand
    for different people, and sharing one address would measure that limit.
    """
    if host == "127.0.0.1":
        local = f"127.0.{number // 250}.{number % 250 + 2}"
        try:
            return await trio.open_tcp_stream(host, port, local_address=local)
        except OSError:  # only 127.0.0.1 is configured (macOS)
            pass
    return await trio.open_tcp_stream(host, port)


async def _client(
    host: str, port: int, token: str, path: str, check: Check, phase: _Phase, number: int
) -> None:
    """One connection: first pages, and with ``DEEP_SHARE`` the next page of a walk."""
    rng = random.Random(number)  # noqa: S311 - a request mix, not a secret
    headers = f"Host: {host}:{port}\r\nAuthorization: Bearer {token}\r\n\r\n"
    first_raw = f"GET {path} HTTP/1.1\r\n{headers}".encode()
    first_next: str | None = None  # where every walk starts
    walk: str | None = None
    depth = 0
    connection: _Connection | None = None
    while (start := time.perf_counter()) < phase.until:
        deep = walk is not None and rng.random() < DEEP_SHARE
        raw = f"GET {path}&cursor={walk} HTTP/1.1\r\n{headers}".encode() if deep else first_raw
        try:
            if connection is None:
                connection = _Connection(await _connect(host, port, number))
            status, body = await connection.request(raw)
            problem, following = check(status, body)
            if connection.closing:
                await connection.stream.aclose()
                connection = None
        except (OSError, trio.BrokenResourceError, ValueError) as exc:
            problem, following = f"{type(exc).__name__}: {exc}", None
            if connection is not None:
                await connection.stream.aclose()
            connection = None
        end = time.perf_counter()
        if problem is not None:
            phase.error(problem)
            walk = None
            continue
        if start >= phase.measure_from and end <= phase.until:
            phase.latencies.append(end - start)
            if deep:
                phase.deep.append(end - start)
        if not deep:
            first_next = following
            if walk is None:
                walk, depth = following, 1
        else:
            depth += 1
            walk = following if depth < MAX_DEPTH else None
        if walk is None and depth:
            walk, depth = first_next, 1
    if connection is not None:
        await connection.stream.aclose()


@dataclass(frozen=True)
class _Measured:
    phase: _Phase
    seconds: float
    client_cpu: float
    server_cpu: float | None

    @property
    def per_s(self) -> float:
        return len(self.phase.latencies) / self.seconds

    def ms(self, quantile: float, *, deep: bool = False) -> float:
        return _quantile_ms(self.phase.deep if deep else self.phase.latencies, quantile)


def _quantile_ms(latencies: list[float], quantile: float) -> float:
    """Nearest-rank quantile in milliseconds (NaN when nothing was measured)."""
    ordered = sorted(latencies)
    if not ordered:
        return math.nan
    return 1000 * ordered[max(0, math.ceil(quantile * len(ordered)) - 1)]


def _drive(
    url: str, token: str, path: str, check: Check, *, seconds: float, connections: int,
    server_pid: int,
) -> _Measured:  # fmt: skip
    """``connections`` clients on ``path`` for a warm-up then ``seconds``; CPU of both sides."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    warm_up = min(WARM_UP_S, seconds)

    async def run() -> tuple[_Phase, float, float | None]:
        begin = time.perf_counter()
        phase = _Phase(begin + warm_up, begin + warm_up + seconds)
        cpu: list[float | None] = []

        async def sample_cpu() -> None:
            await trio.sleep_until(trio.current_time() + warm_up)
            cpu.extend((time.process_time(), _cpu_seconds(server_pid)))
            await trio.sleep_until(trio.current_time() + seconds)
            cpu.extend((time.process_time(), _cpu_seconds(server_pid)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample_cpu)
            for number in range(connections):
                nursery.start_soon(_client, host, port, token, path, check, phase, number)
        client = (cpu[2] or 0.0) - (cpu[0] or 0.0)
        before, after = cpu[1], cpu[3]
        server = None if before is None or after is None else after - before
        return phase, client, server

    phase, client, server = trio.run(run)
    return _Measured(phase, seconds, client / seconds, None if server is None else server / seconds)


# -- the benchmark -----------------------------------------------------------


def _prepare(events: int, authors: int) -> tuple[Path, str, float, bool]:
    """A seeded data dir: (root, token, seeding seconds, kept for reuse)."""
    cache = os.environ.get("TALAS_BENCH_CACHE")
    if not cache:
        root = Path(tempfile.mkdtemp(prefix="talas-bench-web-"))
        try:
            token, took = _seed(root / "node", events, authors)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        return root / "node", token, took, False
    root = Path(cache) / f"web-{events}"
    marker = root / MARKER
    if marker.exists():
        saved = json.loads(marker.read_text())
        print(f"  reusing the node seeded in {root} ({saved['seed_s']:.1f} s then)", flush=True)
        return root, str(saved["token"]), float(saved["seed_s"]), True
    shutil.rmtree(root, ignore_errors=True)  # an interrupted earlier seeding
    token, took = _seed(root, events, authors)
    marker.write_text(json.dumps({"token": token, "seed_s": took, "events": events}))
    marker.chmod(0o600)
    return root, token, took, True


def bench_web(events: int, *, seconds: float, connections: int) -> dict[str, float | int]:
    from node.errors import CliError

    if events < 1 or seconds <= 0 or connections < 1:
        raise CliError("--events and --connections must be >= 1 and --seconds > 0")
    authors = max(1, min(MAX_AUTHORS, events // EVENTS_PER_AUTHOR))
    followed = len(range(0, authors, FOLLOW_EVERY))
    print(f"web: seeding {events:,} events by {authors:,} authors, {followed} followed"
          f" (signing workers: {SEED_WORKERS}) ...", flush=True)  # fmt: skip
    root, token, seed_s, cached = _prepare(events, authors)
    try:
        posts = _feed_posts(root)
        print(f"  seeded in {seed_s:.1f} s{' (by the earlier run)' if cached else ''}"
              f" ({events / seed_s:,.0f} events/s); {posts:,} posts in the feed",
              flush=True)  # fmt: skip
        process, url = _start_server(root, root.parent / "bench-web-server.log")
        try:
            print(f"  server {url} (pid {process.pid}), {connections} connections", flush=True)
            trivial = _drive(url, token, "/api/v1/setup", _check_trivial,
                             seconds=min(TRIVIAL_S, seconds), connections=connections,
                             server_pid=process.pid)  # fmt: skip
            print(f"  limit: GET /api/v1/setup     {trivial.per_s:8,.0f} req/s"
                  f"  p50 {trivial.ms(0.5):5.1f} ms  p99 {trivial.ms(0.99):5.1f} ms"
                  f"  ({trivial.phase.errors} errors)", flush=True)  # fmt: skip
            feed = _drive(url, token, f"/api/v1/feed?limit={PAGE}", _check_feed,
                          seconds=seconds, connections=connections,
                          server_pid=process.pid)  # fmt: skip
        finally:
            _stop_server(process)
    finally:
        if not cached:
            shutil.rmtree(root.parent, ignore_errors=True)
    return _report(events, authors, seed_s, posts, trivial, feed, seconds, connections)


def _report(
    events: int, authors: int, seed_s: float, posts: int, trivial: _Measured, feed: _Measured,
    seconds: float, connections: int,
) -> dict[str, float | int]:  # fmt: skip
    count = len(feed.phase.latencies)
    p50, p90, p99, worst = (feed.ms(q) for q in (0.5, 0.9, 0.99, 1.0))
    ratio = feed.per_s / trivial.per_s if trivial.per_s else 0.0
    print(f"  feed: GET /api/v1/feed?limit={PAGE}  {feed.per_s:8,.0f} req/s"
          f"  ({ratio:.0%} of the limit; {count:,} requests in {seconds:g} s,"
          f" {len(feed.phase.deep) / max(count, 1):.0%} deeper pages)")  # fmt: skip
    print(f"    latency  p50 {p50:.1f} ms  p90 {p90:.1f} ms  p99 {p99:.1f} ms  max {worst:.1f} ms")
    deep_p50, deep_p99 = feed.ms(0.5, deep=True), feed.ms(0.99, deep=True)
    print(f"    deeper pages only (2-{MAX_DEPTH})  p50 {deep_p50:.1f} ms  p99 {deep_p99:.1f} ms")
    server = "n/a" if feed.server_cpu is None else f"{feed.server_cpu:.0%}"
    print(f"    CPU: server {server} of a core, this client {feed.client_cpu:.0%}")
    if feed.client_cpu > 0.7:
        print("    note: the client used most of a core; the server may have been starved")
    errors = feed.phase.errors + trivial.phase.errors
    print(f"    errors {errors}" + (f" (first: {first})" if (first := feed.phase.first_error
          or trivial.phase.first_error) else ""))  # fmt: skip
    p99_ok, rate_ok = p99 < GOAL_P99_MS, feed.per_s >= GOAL_PER_S
    print(f"  goals: p99 {p99:.1f} ms < {GOAL_P99_MS:g} ms {'PASS' if p99_ok else 'MISS'};"
          f"  {feed.per_s:,.0f} req/s >= {GOAL_PER_S:g} {'PASS' if rate_ok else 'MISS'}",
          flush=True)  # fmt: skip
    figures: dict[str, float | int] = {
        "events": events,
        "authors": authors,
        "feed_posts": posts,
        "seed_s": round(seed_s, 1),
        "requests": count,
        "requests_per_s": round(feed.per_s, 1),
        "p50_ms": round(p50, 2),
        "p90_ms": round(p90, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(worst, 2),
        "deep_p50_ms": round(deep_p50, 2),
        "deep_p99_ms": round(deep_p99, 2),
        "errors": errors,
        "trivial_per_s": round(trivial.per_s, 1),
        "trivial_p99_ms": round(trivial.ms(0.99), 2),
        "ratio": round(ratio, 3),
        "client_cpu": round(feed.client_cpu, 2),
        "p99_goal_met": int(p99_ok),
        "rate_goal_met": int(rate_ok),
        "connections": connections,
        "seconds": seconds,
        "cpus": os.cpu_count() or 1,
    }
    if feed.server_cpu is not None:
        figures["server_cpu"] = round(feed.server_cpu, 2)
    return figures
