"""The verify-and-store path every untrusted event takes.

Theory of operation
-------------------
Raw bytes arrive in batches (lines of a file, frames from a peer).  Each batch
is decoded (strict parse, schema, body hash, id), events already stored are
dropped *before* the signature check (verification is the dominant cost), the
rest are verified, and the survivors are stored in one transaction.

Verification can run in a pool of worker processes (:class:`VerifyPool`):
while the workers check batch *k*, this process decodes batch *k+1* and
stores batch *k-1*, so on two cores decoding/storing and verifying overlap.
Workers receive only ``(public key, signed bytes, signature)`` triples and
return one boolean each: nothing they say can put an event into the store
that this process did not decode and check itself.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from node.store import IngestReport, Store
from protocol.errors import ProtocolError
from protocol.event import Event, decode_event
from protocol.keys import is_valid_signature

DEFAULT_BATCH = 2000


@dataclass(frozen=True)
class Rejection:
    """One refused input: its position (1-based line) and why."""

    line: int
    reason: str


@dataclass
class ImportResult:
    """Totals for a stream of events pushed through :func:`ingest_stream`."""

    report: IngestReport = field(default_factory=IngestReport)
    rejected: list[Rejection] = field(default_factory=list)
    already_known: int = 0
    unsolicited: int = 0  # valid-looking events by authors we do not replicate
    held_by_sender: dict[str, int] = field(default_factory=dict)
    """Highest seq per author among events we already held (verified earlier): the
    sender evidently holds them too, even though nothing new was stored."""

    @property
    def accepted(self) -> int:
        return len(self.report.accepted)


Triple = tuple[bytes, bytes, bytes]


def _verify_triples(triples: Sequence[Triple]) -> list[bool]:
    return [is_valid_signature(pk, msg, sig) for pk, msg, sig in triples]


def _triple(event: Event) -> Triple:
    return bytes.fromhex(event.author), event.signing_bytes(), bytes.fromhex(event.sig)


class VerifyPool:
    """Ed25519 verification in worker processes; use as a context manager."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.workers = workers
        # spawn, not fork: forking a process that runs threads (trio, sqlite
        # callers) can deadlock the child on a lock held at fork time.
        context = multiprocessing.get_context("spawn")
        self._executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)

    def __enter__(self) -> VerifyPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, events: Sequence[Event]) -> list[concurrent.futures.Future[list[bool]]]:
        """Start verifying ``events``, split across the workers."""
        step = max(1, -(-len(events) // self.workers))
        return [
            self._executor.submit(_verify_triples, [_triple(e) for e in events[i : i + step]])
            for i in range(0, len(events), step)
        ]

    def warm_up(self) -> None:
        """Start every worker now rather than on the first batch."""
        futures = [self._executor.submit(_verify_triples, []) for _ in range(self.workers)]
        for future in futures:
            future.result()


def decode_batch(
    lines: Sequence[tuple[int, bytes]],
) -> tuple[list[tuple[int, Event]], list[Rejection]]:
    """Decode numbered raw events; bad ones become rejections with the reason."""
    good: list[tuple[int, Event]] = []
    bad: list[Rejection] = []
    for number, raw in lines:
        try:
            good.append((number, decode_event(raw)))
        except ProtocolError as exc:
            bad.append(Rejection(number, str(exc)))
    return good, bad


def verify_batch(
    events: Sequence[tuple[int, Event]], pool: VerifyPool | None = None
) -> tuple[list[Event], list[Rejection]]:
    """Check signatures; returns (valid events, rejections)."""
    if pool is None:
        flags = _verify_triples([_triple(e) for _, e in events])
    else:
        flags = [flag for f in pool.submit([e for _, e in events]) for flag in f.result()]
    return _split(events, flags)


def _split(
    events: Sequence[tuple[int, Event]], flags: Sequence[bool]
) -> tuple[list[Event], list[Rejection]]:
    good = [e for (_, e), ok in zip(events, flags, strict=True) if ok]
    bad = [
        Rejection(n, f"bad signature on event {e.id}")
        for (n, e), ok in zip(events, flags, strict=True)
        if not ok
    ]
    return good, bad


def numbered_lines(stream: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based line numbers, trailing newline removed."""
    for number, line in enumerate(stream, start=1):
        stripped = line.rstrip(b"\r\n")
        if stripped.strip():
            yield number, stripped


def _chunks(lines: Iterable[tuple[int, bytes]], size: int) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class PreparedBatch:
    """A batch decoded, filtered and de-duplicated, its signatures being checked.

    Preparing needs no lock and only reads the store, so a peer link prepares
    its next batch while the previous one is being committed.
    """

    result: ImportResult
    todo: list[tuple[int, Event]]
    futures: list[concurrent.futures.Future[list[bool]]] | None


def prepare_batch(
    store: Store,
    lines: Sequence[tuple[int, bytes]],
    *,
    pool: VerifyPool | None = None,
    accept_author: Callable[[str], bool] | None = None,
) -> PreparedBatch:
    """Decode and de-duplicate numbered raw events; start verifying them in ``pool``.

    ``accept_author`` drops events by other authors before the signature check
    (a peer pushing feeds nobody asked for costs a parse, not a verify).
    """
    result = ImportResult()
    decoded, bad = decode_batch(lines)
    result.rejected.extend(bad)
    known = store.known_ids([e.id for _, e in decoded])
    fresh: dict[str, tuple[int, Event]] = {}
    for number, event in decoded:
        if accept_author is not None and not accept_author(event.author):
            result.unsolicited += 1
        elif event.id in known or event.id in fresh:
            result.already_known += 1
            if event.id in known:
                best = result.held_by_sender.get(event.author, 0)
                result.held_by_sender[event.author] = max(best, event.seq)
            earlier = fresh.get(event.id)
            if earlier is not None and earlier[1].body is None and event.body is not None:
                fresh[event.id] = (number, event)  # keep the copy that has the body
        else:
            fresh[event.id] = (number, event)
    todo = list(fresh.values())
    futures = None if pool is None else pool.submit([e for _, e in todo])
    return PreparedBatch(result, todo, futures)


def commit_batch(store: Store, prepared: PreparedBatch, *, now_ms: int) -> ImportResult:
    """Finish verifying a prepared batch and store what verified, in one transaction."""
    if prepared.futures is None:
        good, bad = verify_batch(prepared.todo)
    else:
        flags = [flag for f in prepared.futures for flag in f.result()]
        good, bad = _split(prepared.todo, flags)
    result = prepared.result
    result.rejected.extend(bad)
    result.report.merge(store.ingest(good, now_ms=now_ms))
    result.rejected.sort(key=lambda r: r.line)
    return result


def ingest_stream(
    store: Store,
    lines: Iterable[tuple[int, bytes]],
    *,
    now_ms: int,
    pool: VerifyPool | None = None,
    batch_size: int = DEFAULT_BATCH,
    accept_author: Callable[[str], bool] | None = None,
) -> ImportResult:
    """Decode, de-duplicate, verify and store numbered raw events, batch by batch.

    With a pool, batch *k+1* is decoded while the workers verify batch *k*.
    """
    total = ImportResult()
    in_flight: PreparedBatch | None = None
    for chunk in _chunks(lines, batch_size):
        prepared = prepare_batch(store, chunk, pool=pool, accept_author=accept_author)
        if pool is None:
            _merge(total, commit_batch(store, prepared, now_ms=now_ms))
            continue
        if in_flight is not None:
            _merge(total, commit_batch(store, in_flight, now_ms=now_ms))
        in_flight = prepared
    if in_flight is not None:
        _merge(total, commit_batch(store, in_flight, now_ms=now_ms))
    total.rejected.sort(key=lambda r: r.line)
    return total


def _merge(total: ImportResult, part: ImportResult) -> None:
    total.report.merge(part.report)
    total.rejected.extend(part.rejected)
    total.already_known += part.already_known
    total.unsolicited += part.unsolicited
    for author, seq in part.held_by_sender.items():
        total.held_by_sender[author] = max(total.held_by_sender.get(author, 0), seq)
