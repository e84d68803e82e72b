"""``talas bench``: measured figures, each beside a limit measured in the same run.

Every benchmark prints human-readable lines and ends with one JSON object on
its own line, so scripts can compare runs.  Figures vary 15-30 % between runs
on a shared 2-core machine: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from node.ingest import VerifyPool, ingest_stream
from node.store import Store
from protocol.event import Event, sign_event
from protocol.keys import SigningKey, is_valid_signature

TEXT = (
    "Tracked the new piece tonight: modular drone into the old spring reverb, "
    "two mics on the cab. Stems and the preset are on my node if you want them."
)


def make_events(count: int, authors: int, *, seed: int = 7) -> list[bytes]:
    """Signed posts spread over ``authors`` feeds, interleaved as a sync would deliver them."""
    rng = random.Random(seed)  # noqa: S311 - reproducible benchmark keys
    keys = [SigningKey(rng.randbytes(32)) for _ in range(authors)]
    heads: list[Event | None] = [None] * authors
    out: list[bytes] = []
    created = 1_750_000_000_000
    for index in range(count):
        which = index % authors
        head = heads[which]
        event = sign_event(
            keys[which],
            seq=1 if head is None else head.seq + 1,
            prev=None if head is None else head.id,
            kind="post",
            created=created + index,
            body={"text": f"{TEXT} #{index}", "tags": ["drone", "field-recording"]},
        )
        heads[which] = event
        out.append(event.wire_bytes())
    return out


def raw_verify_rate(lines: list[bytes], sample: int = 20_000) -> float:
    """Bare Ed25519 verifications per second on one core (libsodium via PyNaCl)."""
    from protocol.event import decode_event

    events = [decode_event(line) for line in lines[:sample]]
    triples = [(bytes.fromhex(e.author), e.signing_bytes(), bytes.fromhex(e.sig)) for e in events]
    start = time.perf_counter()
    for public, message, signature in triples:
        if not is_valid_signature(public, message, signature):
            raise AssertionError("benchmark event failed to verify")
    return len(triples) / (time.perf_counter() - start)


def _timed_ingest(lines: list[bytes], workers: int) -> tuple[float, int]:
    """Events/s through the real path into a fresh store; ``workers=0`` verifies in-process."""
    with tempfile.TemporaryDirectory(prefix="talas-bench-") as tmp:
        store = Store(Path(tmp) / "bench.db")
        numbered = list(enumerate(lines, start=1))
        try:
            if workers >= 1:
                with VerifyPool(workers) as pool:
                    pool.warm_up()
                    start = time.perf_counter()
                    result = ingest_stream(store, numbered, now_ms=0, pool=pool)
                    elapsed = time.perf_counter() - start
            else:
                start = time.perf_counter()
                result = ingest_stream(store, numbered, now_ms=0)
                elapsed = time.perf_counter() - start
            stored = store.count()
        finally:
            store.close()
    if result.accepted != len(lines) or stored != len(lines) or result.rejected:
        raise AssertionError(f"benchmark ingest lost events: {result.accepted}/{len(lines)}")
    return len(lines) / elapsed, stored


def bench_ingest(events: int, authors: int, workers: int) -> dict[str, float | int]:
    print(f"ingest: signing {events} events by {authors} authors ...", flush=True)
    lines = make_events(events, authors)
    raw = raw_verify_rate(lines)
    print(f"  raw Ed25519 verify, 1 core        {raw:10,.0f} /s")
    single, _ = _timed_ingest(lines, 0)
    print(f"  verify+store, 1 process           {single:10,.0f} events/s"
          f"  ({single / raw:.0%} of raw verify; goal >= 40%)")  # fmt: skip
    figures: dict[str, float | int] = {
        "events": events,
        "authors": authors,
        "raw_verify_per_s": round(raw),
        "ingest_per_s": round(single),
        "ratio": round(single / raw, 3),
    }
    if workers >= 1:
        pooled, _ = _timed_ingest(lines, workers)
        print(f"  verify+store, {workers} verify workers  {pooled:10,.0f} events/s"
              f"  ({pooled / raw:.0%} of raw verify)")  # fmt: skip
        figures.update(workers=workers, ingest_pool_per_s=round(pooled),
                       pool_ratio=round(pooled / raw, 3))  # fmt: skip
    figures["cpus"] = os.cpu_count() or 1
    return figures


def main(args: argparse.Namespace) -> int:
    figures: dict[str, float | int]
    if args.bench_name in ("ingest", "sync") and (args.events < 1 or args.authors < 1):
        print("talas: error: --events and --authors must be >= 1")
        return 2
    if args.bench_name == "ingest":
        figures = bench_ingest(args.events, args.authors, args.workers)
    elif args.bench_name == "sync":
        from node.bench_sync import bench_sync

        figures = bench_sync(args.events, args.authors, args.workers)
    elif args.bench_name == "gossip":
        from node.simulation import bench_gossip

        if args.nodes < 2 or args.degree < 1:
            print("talas: error: --nodes must be >= 2 and --degree >= 1")
            return 2
        figures = bench_gossip(
            args.nodes, degree=args.degree, events=args.events, follows=args.follows
        )
    elif args.bench_name == "web":
        from node.bench_web import bench_web

        figures = bench_web(args.events, seconds=args.seconds, connections=args.connections)
    elif args.bench_name == "discovery":
        from node.bench_discovery import bench_discovery

        figures = bench_discovery(args.runs)
    elif args.bench_name == "audio":
        from node.bench_audio import bench_audio

        figures = bench_audio(args.seconds, args.streams)
    elif args.bench_name == "jam":
        from node.bench_jam import bench_jam

        sizes = tuple(int(n) for n in args.participants.split(","))
        figures = bench_jam(args.seconds, sizes)
    else:  # argparse restricts the names; this is a programming error
        raise AssertionError(args.bench_name)
    print(json.dumps({"bench": args.bench_name, **figures}, sort_keys=True))
    return 0
