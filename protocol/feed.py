"""Feed rules: where a verified event fits in its author's hash chain.

Pure functions over values, in the manner of synapse's ``event_auth``: the
store looks up what it holds and asks :func:`classify` what to do.

Theory of operation
-------------------
An author's feed is a chain: event ``seq`` names event ``seq - 1`` in
``prev``.  Against the feed's current head an incoming (verified) event is
described by two facts: where its seq falls (at or below the head, right after
it, or beyond it), and whether it agrees with what we hold (same id at that
seq; or, right after the head, ``prev`` naming the head).  The table below
maps those facts to a verdict.  Two signed events that cannot both be in one
chain are a fork: the author signed conflicting histories.  The conflicting
event is kept as evidence and the feed is frozen: nothing more is appended,
so a forking author cannot keep feeding different histories to different
peers.  An event beyond the head waits (HOLD) until the gap fills.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from protocol.event import Event


class Verdict(enum.Enum):
    APPEND = "append"  # extends the chain: store it, it becomes the head
    DUPLICATE = "duplicate"  # already held: drop it silently
    HOLD = "hold"  # its predecessor is missing: keep it aside until the gap fills
    FORK = "fork"  # conflicts with what we hold: keep as evidence, freeze the feed
    FROZEN = "frozen"  # the feed is frozen by an earlier fork: refuse


class Position(enum.Enum):
    KNOWN = "known"  # seq <= head
    NEXT = "next"  # seq == head + 1
    AHEAD = "ahead"  # seq > head + 1


@dataclass(frozen=True, slots=True)
class FeedHead:
    """What a node holds of one author's feed."""

    author: str
    seq: int
    id: str
    frozen: bool = False


# (position, agrees with what we hold) -> verdict, for a feed that is not frozen.
_RULES: dict[tuple[Position, bool], Verdict] = {
    (Position.KNOWN, True): Verdict.DUPLICATE,
    (Position.KNOWN, False): Verdict.FORK,
    (Position.NEXT, True): Verdict.APPEND,
    (Position.NEXT, False): Verdict.FORK,
    (Position.AHEAD, True): Verdict.HOLD,
    (Position.AHEAD, False): Verdict.HOLD,
}


def position(head: FeedHead | None, seq: int) -> Position:
    head_seq = 0 if head is None else head.seq
    if seq <= head_seq:
        return Position.KNOWN
    if seq == head_seq + 1:
        return Position.NEXT
    return Position.AHEAD


def classify(head: FeedHead | None, event: Event, held_id_at_seq: str | None) -> Verdict:
    """Decide what to do with ``event`` given the feed ``head``.

    ``held_id_at_seq`` is the id of the event the store holds at
    ``event.seq`` (None if none); the caller looks it up only when
    :func:`position` says KNOWN.
    """
    if head is not None and head.author != event.author:
        raise ValueError("head belongs to another author")
    where = position(head, event.seq)
    if where is Position.KNOWN:
        agrees = held_id_at_seq == event.id
    elif where is Position.NEXT:
        agrees = event.prev == (None if head is None else head.id)
    else:
        agrees = True
    if head is not None and head.frozen:
        return Verdict.DUPLICATE if where is Position.KNOWN and agrees else Verdict.FROZEN
    return _RULES[(where, agrees)]


def advance(head: FeedHead | None, event: Event) -> FeedHead:
    """The head after appending ``event`` (which :func:`classify` said APPEND)."""
    return FeedHead(
        event.author, event.seq, event.id, frozen=False if head is None else head.frozen
    )


def freeze(head: FeedHead) -> FeedHead:
    return FeedHead(head.author, head.seq, head.id, frozen=True)
