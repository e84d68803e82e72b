"""Tests for the SQLite event store (node.store) and the ingest path (node.ingest)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import select
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from node.errors import StoreError
from node.ingest import ingest_stream, numbered_lines
from node.store import MIGRATIONS, Store
from protocol.canonical import JSONValue, canonical_bytes
from protocol.errors import ProtocolError
from protocol.event import SIGNATURE_DOMAIN, Event, decode_event, parse_event, sign_event
from protocol.feed import FeedHead
from protocol.keys import SigningKey
from tests.conftest import T0, growing_event, make_chain, numbered, signing_key

REPO_ROOT = Path(__file__).resolve().parents[1]
NOW = T0 + 10_000_000

A = signing_key(31)
B = signing_key(32)
C = signing_key(33)


def forge(
    key: SigningKey,
    *,
    seq: int,
    prev: str | None,
    kind: str,
    body: dict[str, JSONValue],
    body_hash: str | None = None,
) -> bytes:
    """Wire bytes of an event signed correctly by ``key`` but never checked by sign_event."""
    envelope: dict[str, JSONValue] = {
        "v": 1,
        "author": key.id,
        "seq": seq,
        "prev": prev,
        "kind": kind,
        "created": T0 + seq,
        "body_hash": body_hash or hashlib.sha256(canonical_bytes(body)).hexdigest(),
    }
    sig = key.sign(SIGNATURE_DOMAIN + canonical_bytes(envelope)).hex()
    return canonical_bytes({**envelope, "sig": sig, "body": body})


def feed(store: Store, author: str) -> list[Event]:
    """The author's stored events in export order, each re-verified from its raw form."""
    return [parse_event(raw.encode()) for raw in store.iter_raw(author=author)]


def assert_gap_free(events: list[Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.prev for e in events] == [None, *(e.id for e in events[:-1])]


def snapshot(store: Store) -> tuple[list[FeedHead], int, list[str]]:
    return store.heads(), store.count(), list(store.iter_raw())


# -- basics -------------------------------------------------------------------------


def test_ingest_then_reopen_persists(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    chain_a, chain_b = make_chain(A, 5), make_chain(B, 3)
    store = Store(path)
    report = store.ingest([*chain_a, *chain_b], now_ms=NOW)
    assert len(report.accepted) == 8
    assert (report.duplicates, report.held, report.forks, report.refused) == (0, 0, [], [])
    store.close()

    store = Store(path)
    try:
        assert store.integrity_problems() == []
        assert store.count() == 8
        assert store.heads() == sorted(
            [FeedHead(A.id, 5, chain_a[-1].id), FeedHead(B.id, 3, chain_b[-1].id)],
            key=lambda h: h.author,
        )
        assert store.head(A.id) == FeedHead(A.id, 5, chain_a[-1].id)
        assert store.head(C.id) is None
        for event in [*chain_a, *chain_b]:
            stored = store.get(event.id)
            assert stored is not None
            assert stored.event == event
            assert stored.event.body == event.body
            assert not stored.deleted
        assert store.get("f" * 64) is None
        assert feed(store, A.id) == chain_a
        assert feed(store, B.id) == chain_b
        assert list(store.iter_raw()) == [
            e.wire_bytes().decode() for e in sorted([*chain_a, *chain_b], key=lambda e: e.author)
        ]
        arrivals = store.since(0)
        assert [s.arrival for s in arrivals] == sorted(s.arrival for s in arrivals)
        assert store.latest_arrival() == arrivals[-1].arrival
        assert store.since(store.latest_arrival()) == []
        assert store.count("pending") == store.count("forks") == 0
    finally:
        store.close()


def test_iter_raw_pages_through_many_events(store: Store) -> None:
    chain = make_chain(A, 25)
    store.ingest(chain, now_ms=NOW)
    assert list(store.iter_raw(batch=4)) == [e.wire_bytes().decode() for e in chain]
    assert list(store.iter_raw(author=B.id)) == []


def test_same_batch_twice_is_stored_once(store: Store) -> None:
    events = [*make_chain(A, 4), *make_chain(B, 4)]
    first = store.ingest(events, now_ms=NOW)
    second = store.ingest(events, now_ms=NOW + 1)
    assert len(first.accepted) == 8
    assert second.accepted == []
    assert second.duplicates == 8
    assert store.count() == 8
    raw_ids = [parse_event(raw.encode()).id for raw in store.iter_raw()]
    assert sorted(raw_ids) == sorted(e.id for e in events)


def test_unique_constraints_hold_below_the_code(store: Store) -> None:
    """The schema itself refuses a second row for an id or an (author, seq)."""
    chain = make_chain(A, 2)
    store.ingest(chain, now_ms=NOW)
    conn = sqlite3.connect(store.path)
    try:
        insert = (
            "INSERT INTO events (id, author, seq, prev, kind, created, received, deleted, raw)"
            " VALUES (?, ?, ?, ?, 'post', 0, 0, 0, '{}')"
        )
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(insert, (chain[0].id, C.id, 9, None))  # same id
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(insert, ("f" * 64, A.id, 2, chain[0].id))  # same (author, seq)
    finally:
        conn.close()
    assert store.count() == 2


def test_duplicates_within_one_batch(store: Store) -> None:
    chain = make_chain(A, 3)
    report = store.ingest([chain[0], chain[1], chain[0], chain[2], chain[1]], now_ms=NOW)
    assert report.accepted == chain
    assert report.duplicates == 2
    assert store.count() == 3


def test_replay_of_an_old_event_is_a_duplicate(store: Store) -> None:
    chain = make_chain(A, 6)
    store.ingest(chain, now_ms=NOW)
    head = store.head(A.id)
    report = store.ingest([chain[1]], now_ms=NOW + 5)
    assert report.accepted == []
    assert report.duplicates == 1
    assert store.head(A.id) == head
    assert store.count() == 6
    # Through the stream path it is dropped before verification.
    result = ingest_stream(store, numbered([chain[0], chain[3]]), now_ms=NOW + 6)
    assert result.already_known == 2
    assert result.accepted == 0
    assert result.rejected == []
    assert store.count() == 6


def test_append_local_builds_a_chain(store: Store) -> None:
    events = [
        store.append_local(A, kind="post", body={"text": f"hello {i}"}, now_ms=NOW + i)
        for i in range(4)
    ]
    assert_gap_free(events)
    assert feed(store, A.id) == events
    assert [e.created for e in events] == [NOW + i for i in range(4)]
    with pytest.raises(ProtocolError, match=r"body\.text is required"):
        store.append_local(A, kind="post", body={}, now_ms=NOW)
    assert store.count() == 4


def test_known_ids(store: Store) -> None:
    chain = make_chain(A, 6)
    store.ingest(chain[:3], now_ms=NOW)
    store.ingest(chain[4:], now_ms=NOW)  # held: seq 4 is missing
    assert store.count("pending") == 2
    unknown = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(1200)]
    ids = [*unknown[:700], *(e.id for e in chain), *unknown[700:]]
    assert store.known_ids(ids) == {e.id for e in chain if e.seq != 4}
    assert store.known_ids([]) == set()
    assert store.known_ids(unknown) == set()


def test_schema_version_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    Store(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    finally:
        conn.close()
    with pytest.raises(StoreError, match="newer than this Talas"):
        Store(path)


def test_meta_round_trip(store: Store) -> None:
    assert store.get_meta("name") is None
    store.set_meta("name", "studio")
    store.set_meta("name", "studio 2")
    assert store.get_meta("name") == "studio 2"


# -- delivery order -----------------------------------------------------------------


def _ingest_in_random_batches(store: Store, events: list[Event], rng: random.Random) -> int:
    lines = [e.wire_bytes() for e in events]
    accepted = 0
    start = 0
    while start < len(lines):
        size = rng.randint(1, 8)
        chunk = list(enumerate(lines[start : start + size], start=1))
        result = ingest_stream(store, chunk, now_ms=NOW + start, batch_size=rng.randint(1, 4))
        assert result.rejected == []
        assert result.report.forks == [] and result.report.refused == []
        accepted += result.accepted
        start += size
    return accepted


def test_random_order_delivery_reaches_the_in_order_state(tmp_path: Path) -> None:
    chains = [make_chain(A, 12), make_chain(B, 9), make_chain(C, 15)]
    everything = [e for chain in chains for e in chain]
    reference = Store(tmp_path / "reference.sqlite")
    try:
        result = ingest_stream(reference, numbered(everything), now_ms=NOW)
        assert result.accepted == len(everything)
        expected = snapshot(reference)
    finally:
        reference.close()
    assert expected[1] == 36
    assert {h.author: h.seq for h in expected[0]} == {A.id: 12, B.id: 9, C.id: 15}

    for seed in range(6):
        rng = random.Random(seed)
        delivery = everything + rng.choices(everything, k=12)  # with re-deliveries
        rng.shuffle(delivery)
        store = Store(tmp_path / f"shuffled-{seed}.sqlite")
        try:
            accepted = _ingest_in_random_batches(store, delivery, rng)
            assert accepted == len(everything), f"seed {seed}"
            assert snapshot(store) == expected, f"seed {seed}"
            assert store.count("pending") == 0
            assert store.forks() == []
            assert store.integrity_problems() == []
        finally:
            store.close()


def test_gap_is_held_then_filled_by_a_later_batch(store: Store) -> None:
    chain = make_chain(A, 6)
    held = store.ingest([chain[5], chain[2], chain[3]], now_ms=NOW)
    assert held.accepted == []
    assert held.held == 3
    assert store.count() == 0
    assert store.count("pending") == 3
    assert store.head(A.id) is None

    partial = store.ingest([chain[0]], now_ms=NOW + 1)
    assert partial.accepted == [chain[0]]
    assert store.count("pending") == 3

    filled = store.ingest([chain[1], chain[4]], now_ms=NOW + 2)
    assert filled.accepted == chain[1:]  # seq 2 unblocks 3, 4; 5 arrives; 6 unblocked
    assert filled.held == 0
    assert store.count("pending") == 0
    assert feed(store, A.id) == chain
    assert store.head(A.id) == FeedHead(A.id, 6, chain[-1].id)


def test_long_held_chain_in_reverse_order_no_recursion_error(store: Store) -> None:
    n = 3000
    chain = make_chain(A, n)
    rest = list(reversed(chain[1:]))
    for start in range(0, len(rest), 600):
        report = store.ingest(rest[start : start + 600], now_ms=NOW)
        assert report.accepted == []
        assert report.held == len(rest[start : start + 600])
    assert store.count("pending") == n - 1
    assert store.count() == 0
    report = store.ingest([chain[0]], now_ms=NOW + 1)
    assert [e.seq for e in report.accepted] == list(range(1, n + 1))
    assert store.count() == n
    assert store.count("pending") == 0
    assert store.head(A.id) == FeedHead(A.id, n, chain[-1].id)
    assert_gap_free(feed(store, A.id))


# -- forks ---------------------------------------------------------------------------


def _fork_of(chain: list[Event], seq: int, prev: str | None = None) -> Event:
    if prev is None and seq > 1:
        prev = chain[seq - 2].id
    key = A if chain[0].author == A.id else B
    return sign_event(key, seq=seq, prev=prev, kind="post", created=T0, body={"text": "forked"})


def _fork_evidence(path: Path) -> list[tuple[str, int, str, str]]:
    conn = sqlite3.connect(path)
    try:
        rows = conn.execute(
            "SELECT author, seq, existing_id, conflicting_raw FROM forks ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [(str(a), int(s), str(e), str(r)) for a, s, e, r in rows]


def test_fork_at_a_known_seq_freezes_the_feed(store: Store) -> None:
    chain = make_chain(A, 8)
    store.ingest(chain[:5], now_ms=NOW)
    fork = _fork_of(chain, 3)
    report = store.ingest([fork], now_ms=NOW + 1)
    assert report.accepted == []
    assert report.forks == [(A.id, 3)]
    assert store.forks() == [(A.id, 3, chain[2].id, fork.id)]
    assert store.forks(A.id) == store.forks()
    assert store.forks(B.id) == []
    (evidence,) = _fork_evidence(store.path)
    assert parse_event(evidence[3].encode()) == fork  # kept verifiable
    head = store.head(A.id)
    assert head == FeedHead(A.id, 5, chain[4].id, frozen=True)
    assert store.count() == 5
    assert store.get(fork.id) is None
    assert store.get(chain[2].id) is not None

    later = store.ingest(chain[5:], now_ms=NOW + 2)
    assert later.accepted == []
    assert [event_id for event_id, _ in later.refused] == [e.id for e in chain[5:]]
    assert all("frozen" in why for _, why in later.refused)
    assert store.ingest([chain[0]], now_ms=NOW + 3).duplicates == 1
    assert store.count() == 5

    with pytest.raises(StoreError, match="frozen"):
        store.append_local(A, kind="post", body={"text": "more"}, now_ms=NOW + 4)
    assert store.count() == 5
    # Other authors are unaffected.
    assert len(store.ingest(make_chain(B, 2), now_ms=NOW + 5).accepted) == 2


def test_fork_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    chain = make_chain(A, 3)
    store = Store(path)
    store.ingest([*chain, _fork_of(chain, 2)], now_ms=NOW)
    store.close()
    store = Store(path)
    try:
        head = store.head(A.id)
        assert head is not None and head.frozen
        with pytest.raises(StoreError, match="frozen"):
            store.append_local(A, kind="post", body={"text": "x"}, now_ms=NOW)
    finally:
        store.close()


@pytest.mark.parametrize("fork_first", [False, True])
def test_two_events_at_one_position_in_one_batch_first_is_kept(
    store: Store, fork_first: bool
) -> None:
    chain = make_chain(A, 2)
    fork = _fork_of(chain, 2)
    first, second = (fork, chain[1]) if fork_first else (chain[1], fork)
    report = store.ingest([chain[0], first, second], now_ms=NOW)
    assert report.accepted == [chain[0], first]
    assert report.forks == [(A.id, 2)]
    assert store.forks() == [(A.id, 2, first.id, second.id)]
    head = store.head(A.id)
    assert head == FeedHead(A.id, 2, first.id, frozen=True)


def test_fork_in_separate_batches_first_is_kept(store: Store) -> None:
    chain = make_chain(A, 1)
    fork = _fork_of(chain, 1)
    assert store.ingest([fork], now_ms=NOW).accepted == [fork]
    assert store.ingest([chain[0]], now_ms=NOW).forks == [(A.id, 1)]
    assert store.forks() == [(A.id, 1, fork.id, chain[0].id)]


def test_fork_at_next_seq_via_wrong_prev(store: Store) -> None:
    chain = make_chain(A, 3)
    store.ingest(chain, now_ms=NOW)
    wrong = _fork_of(chain, 4, prev=chain[0].id)
    report = store.ingest([wrong], now_ms=NOW)
    assert report.forks == [(A.id, 4)]
    assert store.forks() == [(A.id, 4, chain[2].id, wrong.id)]  # conflicts with the head
    head = store.head(A.id)
    assert head is not None and head.frozen and head.seq == 3


def test_fork_drops_the_authors_held_events(store: Store) -> None:
    chain = make_chain(A, 8)
    b_chain = make_chain(B, 3)
    store.ingest([*chain[:2], *chain[5:], b_chain[2]], now_ms=NOW)
    assert store.count("pending") == 4
    store.ingest([_fork_of(chain, 2)], now_ms=NOW)
    assert store.count("pending") == 1  # only B's
    report = store.ingest(chain[2:5], now_ms=NOW)
    assert report.accepted == []
    assert len(report.refused) == 3
    assert store.count() == 2


def test_fork_among_held_events_is_detected_when_the_gap_fills(store: Store) -> None:
    chain = make_chain(A, 5)
    fork = _fork_of(chain, 4)
    store.ingest([chain[3], fork, chain[4]], now_ms=NOW)  # all beyond the head: held
    assert store.count("pending") == 3
    report = store.ingest(chain[:3], now_ms=NOW)
    assert len(report.forks) == 1
    head = store.head(A.id)
    assert head is not None and head.frozen
    stored_at_4 = [e for e in feed(store, A.id) if e.seq == 4]
    assert [e.id for e in stored_at_4] in ([chain[3].id], [fork.id])
    assert store.count("pending") == 0


# -- deletes ---------------------------------------------------------------------------


def test_delete_tombstones_the_target(store: Store) -> None:
    p1 = store.append_local(A, kind="post", body={"text": "oops"}, now_ms=NOW)
    p2 = store.append_local(A, kind="post", body={"text": "keep"}, now_ms=NOW + 1)
    d = store.append_local(A, kind="delete", body={"target": p1.id}, now_ms=NOW + 2)

    gone = store.get(p1.id)
    assert gone is not None
    assert gone.deleted
    assert gone.event.body is None
    assert gone.event.id == p1.id
    kept = store.get(p2.id)
    assert kept is not None and not kept.deleted and kept.event.body == {"text": "keep"}
    delete = store.get(d.id)
    assert delete is not None and not delete.deleted and delete.event.body == {"target": p1.id}

    exported = list(store.iter_raw())
    assert "body" not in json.loads(exported[0])
    assert "oops" not in exported[0]
    verified = [parse_event(raw.encode()) for raw in exported]
    assert [e.id for e in verified] == [p1.id, p2.id, d.id]
    assert_gap_free(verified)


def test_exported_feed_with_tombstones_imports_into_a_fresh_node(
    store: Store, tmp_path: Path
) -> None:
    p1 = store.append_local(A, kind="post", body={"text": "oops"}, now_ms=NOW)
    store.append_local(A, kind="delete", body={"target": p1.id}, now_ms=NOW + 1)
    other = Store(tmp_path / "other.sqlite")
    try:
        lines = numbered_lines(io.BytesIO("\n".join(store.iter_raw()).encode()))
        result = ingest_stream(other, lines, now_ms=NOW)
        assert result.rejected == []
        assert result.accepted == 2
        assert snapshot(other) == snapshot(store)
        gone = other.get(p1.id)
        assert gone is not None and gone.deleted and gone.event.body is None
    finally:
        other.close()


def test_delete_in_the_same_batch_as_its_target(store: Store) -> None:
    post = sign_event(A, seq=1, prev=None, kind="post", created=T0, body={"text": "x"})
    delete = sign_event(A, seq=2, prev=post.id, kind="delete", created=T0, body={"target": post.id})
    report = store.ingest([delete, post], now_ms=NOW)
    assert report.accepted == [post, delete]
    gone = store.get(post.id)
    assert gone is not None and gone.deleted and gone.event.body is None


def test_delete_of_another_authors_event_does_nothing(store: Store) -> None:
    target = store.append_local(A, kind="post", body={"text": "mine"}, now_ms=NOW)
    attempt = store.append_local(B, kind="delete", body={"target": target.id}, now_ms=NOW)
    assert store.get(attempt.id) is not None  # the delete itself is a valid event
    kept = store.get(target.id)
    assert kept is not None and not kept.deleted and kept.event.body == {"text": "mine"}


def test_delete_of_a_delete_does_nothing(store: Store) -> None:
    post = store.append_local(A, kind="post", body={"text": "x"}, now_ms=NOW)
    first = store.append_local(A, kind="delete", body={"target": post.id}, now_ms=NOW)
    second = store.append_local(A, kind="delete", body={"target": first.id}, now_ms=NOW)
    kept = store.get(first.id)
    assert kept is not None and not kept.deleted and kept.event.body == {"target": post.id}
    assert store.get(second.id) is not None
    gone = store.get(post.id)
    assert gone is not None and gone.deleted


def test_delete_of_an_unknown_event_does_nothing(store: Store) -> None:
    post = store.append_local(A, kind="post", body={"text": "x"}, now_ms=NOW)
    store.append_local(A, kind="delete", body={"target": "e" * 64}, now_ms=NOW)
    kept = store.get(post.id)
    assert kept is not None and not kept.deleted
    assert store.count() == 2


# -- body-less copies (relayed envelopes) ------------------------------------------------


def _bodyless(event: Event) -> Event:
    return decode_event(event.wire_bytes(with_body=False))


def test_full_copy_in_a_later_batch_restores_a_bodyless_event(store: Store) -> None:
    chain = make_chain(A, 2)
    first = ingest_stream(store, numbered([_bodyless(e) for e in chain]), now_ms=NOW)
    assert first.accepted == 2
    held = store.get(chain[0].id)
    assert held is not None and held.event.body is None and not held.deleted
    # A body-less event still needs its body: it must not be dropped as known.
    assert store.known_ids([e.id for e in chain]) == set()
    second = ingest_stream(store, numbered(chain), now_ms=NOW + 1)
    assert second.already_known == 0
    for event in chain:
        stored = store.get(event.id)
        assert stored is not None and stored.event.body == event.body
    assert list(store.iter_raw()) == [e.wire_bytes().decode() for e in chain]
    assert store.known_ids([e.id for e in chain]) == {e.id for e in chain}
    assert store.count() == 2


def test_full_copy_does_not_resurrect_a_deleted_event(store: Store) -> None:
    post = store.append_local(A, kind="post", body={"text": "regret"}, now_ms=NOW)
    store.append_local(A, kind="delete", body={"target": post.id}, now_ms=NOW)
    store.ingest([post], now_ms=NOW + 1)
    gone = store.get(post.id)
    assert gone is not None and gone.deleted and gone.event.body is None


def test_restored_delete_body_applies_the_delete(store: Store) -> None:
    post = sign_event(A, seq=1, prev=None, kind="post", created=T0, body={"text": "x"})
    delete = sign_event(A, seq=2, prev=post.id, kind="delete", created=T0, body={"target": post.id})
    store.ingest([post, _bodyless(delete)], now_ms=NOW)
    kept = store.get(post.id)
    assert kept is not None and not kept.deleted  # the delete's target is unknown so far
    store.ingest([delete], now_ms=NOW + 1)
    gone = store.get(post.id)
    assert gone is not None and gone.deleted and gone.event.body is None


def test_full_copy_after_bodyless_copy_in_one_ingest_batch_keeps_the_body(store: Store) -> None:
    event = make_chain(A, 1)[0]
    store.ingest([_bodyless(event), event], now_ms=NOW)
    stored = store.get(event.id)
    assert stored is not None
    assert stored.event.body == event.body


def test_full_copy_after_bodyless_copy_in_one_stream_batch_keeps_the_body(store: Store) -> None:
    event = make_chain(A, 1)[0]
    lines = [(1, event.wire_bytes(with_body=False)), (2, event.wire_bytes())]
    ingest_stream(store, lines, now_ms=NOW)
    stored = store.get(event.id)
    assert stored is not None
    assert stored.event.body == event.body


# -- the stream path with bad input ---------------------------------------------------------


def test_ingest_stream_rejects_bad_lines_and_keeps_the_rest(store: Store) -> None:
    earlier = make_chain(B, 2)
    store.ingest(earlier, now_ms=NOW)
    chain = make_chain(A, 3)
    bad_sig = bytearray(bytes.fromhex(chain[1].sig))
    bad_sig[10] ^= 0x40
    tampered = chain[1].to_json()
    tampered["sig"] = bad_sig.hex()
    text_of_b = earlier[1].to_json()
    text_of_b["body"] = {"text": "edited"}
    stream = b"\n".join(
        [
            chain[0].wire_bytes(),  # 1 good
            b"garbage {",  # 2
            canonical_bytes(tampered),  # 3 bad signature
            b"",  # 4 blank: skipped, still counted
            forge(A, seq=2, prev=chain[0].id, kind="post", body={"no": "text"}),  # 5 schema
            canonical_bytes(text_of_b),  # 6 body does not match its hash
            b'{"v":1}',  # 7 missing fields
            forge(A, seq=2, prev=chain[0].id, kind="post", body={"text": "x"}, body_hash="0" * 64),
            chain[1].wire_bytes(),  # 9 good
            b"\xff\xfe\x00",  # 10 not UTF-8
            chain[2].wire_bytes() + b"\r",  # 11 good, CRLF line end
        ]
    )
    result = ingest_stream(store, numbered_lines(io.BytesIO(stream)), now_ms=NOW + 1)
    assert [r.line for r in result.rejected] == [2, 3, 5, 6, 7, 8, 10]
    reasons = {r.line: r.reason for r in result.rejected}
    assert "not a valid event" in reasons[2]
    assert reasons[3] == f"bad signature on event {decode_event(canonical_bytes(tampered)).id}"
    assert "body.text is required" in reasons[5]
    assert "does not match 'body_hash'" in reasons[6]
    assert "missing event field" in reasons[7]
    assert "does not match 'body_hash'" in reasons[8]
    assert "UTF-8" in reasons[10]
    assert result.accepted == 3
    assert store.count() == 5
    for event in [*earlier, *chain]:
        stored = store.get(event.id)
        assert stored is not None and stored.event == event
    for raw in store.iter_raw():
        parse_event(raw.encode())
    assert store.integrity_problems() == []


def test_event_over_the_cap_in_canonical_form_is_rejected_not_stored(store: Store) -> None:
    raw, event_id = growing_event(A)
    result = ingest_stream(store, [(7, raw)], now_ms=NOW)
    assert result.accepted == 0
    assert [r.line for r in result.rejected] == [7]
    assert "cap" in result.rejected[0].reason
    assert store.get(event_id) is None
    assert store.count() == store.count("pending") == 0


# -- concurrency and crashes -------------------------------------------------------------------


def test_two_stores_on_one_file_append_concurrently_without_gaps(
    store: Store, tmp_path: Path
) -> None:
    second = Store(store.path)
    per_thread = 15
    writers = [store, second, store, second]
    barrier = threading.Barrier(len(writers))

    def append_many(index: int) -> list[Event]:
        db = writers[index]
        barrier.wait(timeout=10)
        return [
            db.append_local(A, kind="post", body={"text": f"w{index} #{i}"}, now_ms=NOW + i)
            for i in range(per_thread)
        ]

    try:
        with ThreadPoolExecutor(len(writers)) as pool:
            results = list(pool.map(append_many, range(len(writers)), timeout=60))
        total = per_thread * len(writers)
        events = feed(second, A.id)
        assert len(events) == total == store.count()
        assert_gap_free(events)
        assert sorted(e.id for r in results for e in r) == sorted(e.id for e in events)
        texts = [str(e.body["text"]) for e in events if e.body is not None]
        assert sorted(texts) == sorted(f"w{w} #{i}" for w in range(4) for i in range(per_thread))
        assert store.head(A.id) == FeedHead(A.id, total, events[-1].id)
        assert store.integrity_problems() == [] == second.integrity_problems()
    finally:
        second.close()


KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from node.store import Store
    from tests.conftest import make_chain, signing_key

    store = Store(Path(sys.argv[1]))
    per_author = int(sys.argv[2])
    keys = [signing_key(41), signing_key(42)]
    heads = [store.head(key.id) for key in keys]
    prev = {key.id: None if h is None else h.id for key, h in zip(keys, heads)}
    seq = 1 if heads[0] is None else heads[0].seq + 1
    while True:
        batch = []
        for key in keys:
            events = make_chain(key, per_author, start=seq, prev=prev[key.id])
            prev[key.id] = events[-1].id
            batch.extend(events)
        report = store.ingest(batch, now_ms=seq)
        assert len(report.accepted) == len(batch), report
        seq += per_author
        # Committed: every event up to seq - 1 of both authors is acknowledged.
        print(seq - 1, flush=True)
    """
)
KILL_KEYS = (41, 42)


def _run_until_killed(path: Path, per_author: int, new_batches: int, delay: float) -> int:
    """Run the writer, SIGKILL it after ``new_batches`` acks (+ ``delay``); last acked seq."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, str(path), str(per_author)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=REPO_ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acked: list[int] = []
    buffer = b""

    def take(data: bytes) -> bytes:
        *lines, rest = data.split(b"\n")
        acked.extend(int(line) for line in lines)
        return rest

    try:
        deadline = time.monotonic() + 30
        while len(acked) < new_batches:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"child acknowledged only {len(acked)} batches in 30 s"
            ready, _, _ = select.select([proc.stdout], [], [], remaining)
            if not ready:
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                proc.wait(timeout=10)
                raise AssertionError(f"child exited early: {proc.stderr.read()[-2000:]!r}")
            buffer = take(buffer + chunk)
        time.sleep(delay)  # let the kill land anywhere: signing, inserting, committing
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        # Lines written before the kill were acknowledged too.
        take(buffer + proc.stdout.read())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert acked == sorted(acked)
    return acked[-1]


def test_kill_9_loses_no_acknowledged_batch(tmp_path: Path) -> None:
    path = tmp_path / "killed.sqlite"
    per_author = 100
    rng = random.Random(9)
    acknowledged = 0
    for round_number in range(4):
        acknowledged = _run_until_killed(path, per_author, 3, rng.uniform(0.0, 0.15))
        store = Store(path)
        try:
            assert store.integrity_problems() == [], f"round {round_number}"
            assert store.count("pending") == 0
            total = store.count()
            for i in KILL_KEYS:
                key = signing_key(i)
                events = feed(store, key.id)
                assert_gap_free(events)
                # Every acknowledged event is there ...
                assert len(events) >= acknowledged, f"round {round_number}: lost acked events"
                # ... and batches are atomic: an interrupted one left nothing behind.
                assert len(events) % per_author == 0
                assert len(events) == total // 2
                expected = make_chain(key, len(events))
                assert [e.id for e in events] == [e.id for e in expected]
            all_ids = [parse_event(raw.encode()).id for raw in store.iter_raw()]
            assert len(all_ids) == len(set(all_ids)) == total
        finally:
            store.close()
    # The store keeps working where the dead writers stopped.
    store = Store(path)
    try:
        key = signing_key(KILL_KEYS[0])
        head = store.head(key.id)
        assert head is not None and head.seq >= acknowledged
        after = make_chain(key, 1, start=head.seq + 1, prev=head.id)
        assert store.ingest(after, now_ms=NOW).accepted == after
    finally:
        store.close()
