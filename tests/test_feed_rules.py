"""Tests for the pure feed rules (protocol.feed): classify/advance/freeze."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.event import Event, sign_event
from protocol.feed import FeedHead, Position, Verdict, advance, classify, freeze, position
from tests.conftest import T0, make_chain, signing_key

KEYS = [signing_key(i) for i in (11, 12, 13)]
CHAINS = {key.id: make_chain(key, 30) for key in KEYS}
A = KEYS[0]
CHAIN = CHAINS[A.id]


def head_at(seq: int, *, frozen: bool = False) -> FeedHead:
    """The head of A's feed after appending ``CHAIN[:seq]``."""
    event = CHAIN[seq - 1]
    return FeedHead(A.id, event.seq, event.id, frozen=frozen)


def conflicting(seq: int, prev: str | None = None) -> Event:
    """A second, different event A signs at ``seq`` (by default with the right prev)."""
    if prev is None and seq > 1:
        prev = CHAIN[seq - 2].id
    return sign_event(A, seq=seq, prev=prev, kind="post", created=T0, body={"text": "fork"})


# -- position -----------------------------------------------------------------------


def test_position() -> None:
    assert position(None, 1) is Position.NEXT
    assert position(None, 2) is Position.AHEAD
    assert position(head_at(3), 1) is Position.KNOWN
    assert position(head_at(3), 3) is Position.KNOWN
    assert position(head_at(3), 4) is Position.NEXT
    assert position(head_at(3), 5) is Position.AHEAD


# -- each cell of the rule table -------------------------------------------------------


def test_append_first_event_of_a_new_feed() -> None:
    assert classify(None, CHAIN[0], None) is Verdict.APPEND


def test_append_next_event_naming_the_head() -> None:
    assert classify(head_at(3), CHAIN[3], None) is Verdict.APPEND


def test_duplicate_of_a_held_event() -> None:
    assert classify(head_at(3), CHAIN[2], CHAIN[2].id) is Verdict.DUPLICATE
    assert classify(head_at(3), CHAIN[0], CHAIN[0].id) is Verdict.DUPLICATE


def test_hold_when_predecessor_missing() -> None:
    assert classify(None, CHAIN[1], None) is Verdict.HOLD
    assert classify(head_at(3), CHAIN[4], None) is Verdict.HOLD
    assert classify(head_at(3), CHAIN[29], None) is Verdict.HOLD
    # Beyond the head we cannot tell a fork yet: a conflicting event is held too.
    assert classify(head_at(3), conflicting(6), None) is Verdict.HOLD


def test_fork_at_a_known_seq() -> None:
    fork = conflicting(2)
    assert fork.id != CHAIN[1].id
    assert classify(head_at(3), fork, CHAIN[1].id) is Verdict.FORK
    assert classify(head_at(3), conflicting(3), CHAIN[2].id) is Verdict.FORK  # at the head
    assert classify(head_at(1), conflicting(1), CHAIN[0].id) is Verdict.FORK


def test_fork_at_next_seq_via_wrong_prev() -> None:
    wrong_prev = conflicting(4, prev=CHAIN[1].id)  # names seq 2, not the head (seq 3)
    assert classify(head_at(3), wrong_prev, None) is Verdict.FORK
    # The genuine next event with the right prev is still an append.
    assert classify(head_at(3), CHAIN[3], None) is Verdict.APPEND


def test_frozen_feed_refuses_everything_new() -> None:
    frozen = head_at(3, frozen=True)
    assert classify(frozen, CHAIN[3], None) is Verdict.FROZEN  # would have been APPEND
    assert classify(frozen, CHAIN[5], None) is Verdict.FROZEN  # would have been HOLD
    assert classify(frozen, conflicting(2), CHAIN[1].id) is Verdict.FROZEN  # another fork
    assert classify(frozen, conflicting(4, prev=CHAIN[0].id), None) is Verdict.FROZEN


def test_frozen_feed_still_reports_duplicates_of_what_it_holds() -> None:
    frozen = head_at(3, frozen=True)
    for event in CHAIN[:3]:
        assert classify(frozen, event, event.id) is Verdict.DUPLICATE


def test_head_of_another_author_is_a_caller_error() -> None:
    other = CHAINS[KEYS[1].id][0]
    with pytest.raises(ValueError, match="another author"):
        classify(head_at(3), other, None)


def test_advance_and_freeze() -> None:
    first = advance(None, CHAIN[0])
    assert first == FeedHead(A.id, 1, CHAIN[0].id, frozen=False)
    second = advance(first, CHAIN[1])
    assert (second.seq, second.id, second.frozen) == (2, CHAIN[1].id, False)
    frozen = freeze(second)
    assert (frozen.author, frozen.seq, frozen.id, frozen.frozen) == (A.id, 2, CHAIN[1].id, True)
    # Freezing is sticky: advancing a frozen head keeps the flag.
    assert advance(frozen, CHAIN[2]).frozen


# -- property: any delivery order converges -----------------------------------------------


@dataclass
class FeedModel:
    """A tiny in-memory node built only from classify/advance, with a held-events dict."""

    heads: dict[str, FeedHead] = field(default_factory=dict)
    by_pos: dict[tuple[str, int], str] = field(default_factory=dict)
    held: dict[tuple[str, int], Event] = field(default_factory=dict)
    appended: list[Event] = field(default_factory=list)
    duplicates: int = 0
    holds: int = 0

    def deliver(self, event: Event) -> None:
        queue = [event]
        while queue:
            current = queue.pop()
            head = self.heads.get(current.author)
            held_id = self.by_pos.get((current.author, current.seq))
            if position(head, current.seq) is not Position.KNOWN:
                held_id = None
            verdict = classify(head, current, held_id)
            if verdict is Verdict.APPEND:
                self.heads[current.author] = advance(head, current)
                self.by_pos[(current.author, current.seq)] = current.id
                self.appended.append(current)
                waiting = self.held.pop((current.author, current.seq + 1), None)
                if waiting is not None:
                    queue.append(waiting)
            elif verdict is Verdict.HOLD:
                self.holds += 1
                self.held[(current.author, current.seq)] = current
            elif verdict is Verdict.DUPLICATE:
                self.duplicates += 1
            else:
                raise AssertionError(f"{verdict} for an event of a valid chain: {current}")


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[list[Event]], list[Event]]:
    """1-3 authors' chain prefixes (at most 30 events in all) and a delivery order."""
    authors = draw(st.integers(1, 3))
    lengths = draw(
        st.lists(st.integers(0, 30), min_size=authors, max_size=authors).filter(
            lambda ls: 0 < sum(ls) <= 30
        )
    )
    chains = [CHAINS[KEYS[i].id][:n] for i, n in enumerate(lengths)]
    events = [e for chain in chains for e in chain]
    extra = draw(st.lists(st.sampled_from(events), max_size=10))  # random re-deliveries
    order = draw(st.permutations(events + extra))
    return chains, order


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_any_delivery_order_appends_every_event_once(
    case: tuple[list[list[Event]], list[Event]],
) -> None:
    chains, order = case
    model = FeedModel()
    for event in order:
        model.deliver(event)
    expected = [e for chain in chains for e in chain]
    assert sorted(e.id for e in model.appended) == sorted(e.id for e in expected)
    assert len(model.appended) == len(expected)  # each exactly once
    assert model.held == {}
    assert model.duplicates == len(order) - len(expected) - _later_redeliveries_of_held(order)
    for chain in chains:
        if not chain:
            continue
        author = chain[0].author
        assert model.heads[author] == FeedHead(author, len(chain), chain[-1].id, frozen=False)
        # Per author, appends happened in chain order.
        assert [e for e in model.appended if e.author == author] == chain
    assert set(model.heads) == {chain[0].author for chain in chains if chain}


def _later_redeliveries_of_held(order: list[Event]) -> int:
    """Re-deliveries of an event that was still held: HOLD again, not DUPLICATE.

    Computed independently of the model by replaying heads as plain seq counters.
    """
    head: dict[str, int] = {}
    waiting: set[tuple[str, int]] = set()
    rehold = 0
    for event in order:
        key = (event.author, event.seq)
        if event.seq <= head.get(event.author, 0):
            continue  # a true duplicate
        if event.seq > head.get(event.author, 0) + 1:
            if key in waiting:
                rehold += 1
            waiting.add(key)
            continue
        seq = event.seq
        while True:
            head[event.author] = seq
            waiting.discard((event.author, seq))
            if (event.author, seq + 1) not in waiting:
                break
            seq += 1
    return rehold


def test_reverse_delivery_of_a_chain_holds_then_appends_all() -> None:
    model = FeedModel()
    for event in reversed(CHAIN):
        model.deliver(event)
    assert model.holds == len(CHAIN) - 1
    assert model.appended == CHAIN
    assert model.heads[A.id] == FeedHead(A.id, 30, CHAIN[-1].id)


def test_shuffled_chains_with_a_fork_freeze_the_forking_feed() -> None:
    """Deliver a valid chain plus one conflicting event in many orders: always a fork."""
    fork = conflicting(5)
    rng = random.Random(1234)
    for _ in range(50):
        order = [*CHAIN[:10], fork]
        rng.shuffle(order)
        heads: dict[str, FeedHead] = {}
        by_pos: dict[tuple[str, int], str] = {}
        held: dict[tuple[str, int], list[Event]] = {}
        verdicts: list[Verdict] = []
        queue: list[Event] = []
        for delivered in order:
            queue.append(delivered)
            while queue:
                event = queue.pop()
                head = heads.get(event.author)
                known = position(head, event.seq) is Position.KNOWN
                verdict = classify(
                    head, event, by_pos.get((event.author, event.seq)) if known else None
                )
                verdicts.append(verdict)
                if verdict is Verdict.APPEND:
                    heads[event.author] = advance(head, event)
                    by_pos[(event.author, event.seq)] = event.id
                    queue.extend(held.pop((event.author, event.seq + 1), []))
                elif verdict is Verdict.HOLD:
                    held.setdefault((event.author, event.seq), []).append(event)
                elif verdict is Verdict.FORK:
                    assert head is not None
                    heads[event.author] = freeze(head)
        assert verdicts.count(Verdict.FORK) == 1
        assert heads[A.id].frozen
        # Whichever event at seq 5 arrived (or was unblocked) first is the one kept.
        assert by_pos[(A.id, 5)] in {CHAIN[4].id, fork.id}
        assert Verdict.DUPLICATE not in verdicts
