"""A jam's state as values: participants, links, rosters and the rules over them.

Pure where it can be: :func:`assign_slots` and :func:`parse_roster` are the
forwarding rule and the roster check of ``specs/live.md`` §14.3-§14.4,
testable without I/O; the dataclasses are what :mod:`node.live.jam` keeps
per jam.  The asyncio objects they point to (sources, slot tracks, peer
connections) are only referenced here, never touched.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.errors import LocalError, RemoteError, TalasError

if TYPE_CHECKING:
    from node.live.media import InSlot, Recorder, SlotTrack, Source

SLOTS = 8
"""Audio transceivers each way on a node link, and downstream to a browser."""
MAX_PARTICIPANTS = SLOTS
MAX_JAMS = 16
MAX_TITLE = 120
MAX_NAME = 80
MAX_CHAT_TEXT = 1000
CHAT_KEPT = 200
"""Chat lines a jam keeps (in memory: a jam's chat lasts as long as the jam)."""
HEX16 = re.compile(r"[0-9a-f]{32}")
HEX32 = re.compile(r"[0-9a-f]{64}")

Notify = Callable[[dict[str, Any]], None]


class JamError(TalasError):
    """A jam operation refused."""


class NoSuchJam(JamError, LocalError):
    pass


class JamFull(JamError, LocalError):
    pass


class BadRoster(JamError, RemoteError):
    """A peer's roster broke the rules: its link is closed."""


@dataclass
class Participant:
    id: str
    name: str
    node: str
    link: str
    """The link it came in on."""
    kind: str = "mic"  # or "track"
    muted: bool = False
    source: Source | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "node": self.node,
            "kind": self.kind,
            "muted": self.muted,
        }


@dataclass
class Link:
    """One peer connection of a jam, seen from this node (see the module docstring)."""

    id: str
    kind: str  # "browser", "node" or "stream"
    notify: Notify
    out: list[SlotTrack] = field(default_factory=list)
    ins: list[InSlot] = field(default_factory=list)
    slot_map: list[str | None] = field(default_factory=list)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    last_roster: dict[str, Any] | None = None
    recording: bool = False
    """A node link's peer said some node on its side records (its last roster)."""
    pc: Any = None
    """A browser link's RTCPeerConnection (asyncio side; node links' belong to their call)."""


@dataclass
class Recording:
    started_ms: int
    directory: Path
    recorders: dict[str, Recorder] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)


@dataclass
class Jam:
    id: str
    title: str
    host: str
    created_ms: int
    participants: dict[str, Participant] = field(default_factory=dict)
    links: dict[str, Link] = field(default_factory=dict)
    recording: Recording | None = None
    connected: bool = True
    """For a member: whether its call to the host is up."""
    ended: trio.Event = field(default_factory=trio.Event)
    end_reason: str = ""
    chat: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=CHAT_KEPT))
    chat_ids: set[str] = field(default_factory=set)

    def recorded(self, but: str | None = None) -> bool:
        """Whether this node, or a node beyond any link but ``but``, records the jam."""
        return self.recording is not None or any(
            link.recording for link in self.links.values() if link.id != but
        )

    def public(self, me: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "host": self.host,
            "hosted_here": self.host == me,
            "connected": self.connected,
            "created_ms": self.created_ms,
            "recording": self.recorded(),
            "participants": [p.public() for p in self.participants.values()],
        }


@dataclass(frozen=True)
class Recorded:
    """One participant's recording, ready to publish."""

    path: Path
    participant: str
    name: str
    duration_ms: int


def assign_slots(current: list[str | None], wanted: Iterable[str], slots: int) -> list[str | None]:
    """Slots for ``wanted`` (in order, at most ``slots``), keeping each on the slot it holds.

    Pure: a participant that stays keeps its slot (a listener's audio
    element does not change hands); new ones take the lowest free slots.
    """
    wanted_list = list(dict.fromkeys(wanted))[:slots]
    keep = set(wanted_list)
    result: list[str | None] = [
        pid if pid in keep else None for pid in (current + [None] * slots)[:slots]
    ]
    placed = {pid for pid in result if pid is not None}
    free = (i for i, pid in enumerate(result) if pid is None)
    for pid in wanted_list:
        if pid not in placed:
            result[next(free)] = pid
    return result


def parse_roster(message: dict[str, Any], slots: int) -> list[tuple[int, Participant]]:
    """Validate a peer's roster message: (slot, participant) pairs, or raise BadRoster."""
    entries = message.get("participants")
    if not isinstance(entries, list) or len(entries) > slots:
        raise BadRoster(f"a roster lists at most {slots} participants")
    seen_slots: set[int] = set()
    seen_ids: set[str] = set()
    parsed = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise BadRoster("a roster entry is an object")
        pid, name, node = entry.get("id"), entry.get("name"), entry.get("node")
        slot, muted, kind = entry.get("slot"), entry.get("muted", False), entry.get("kind", "mic")
        if not (isinstance(pid, str) and HEX16.fullmatch(pid)) or pid in seen_ids:
            raise BadRoster("a participant id is 32 lowercase hex digits, once")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
            raise BadRoster(f"a participant name is 1 to {MAX_NAME} characters")
        if not (isinstance(node, str) and HEX32.fullmatch(node)):
            raise BadRoster("a participant's node is a node id")
        if type(slot) is not int or not 0 <= slot < slots or slot in seen_slots:
            raise BadRoster("each participant has its own slot")
        if type(muted) is not bool or kind not in ("mic", "track"):
            raise BadRoster("muted is a boolean, kind 'mic' or 'track'")
        seen_ids.add(pid)
        seen_slots.add(slot)
        parsed.append((slot, Participant(pid, name, node, "", kind=kind, muted=muted)))
    return parsed


def check_title(title: object) -> str:
    if not isinstance(title, str) or not 1 <= len(title.strip()) <= MAX_TITLE:
        raise ValueError(f"a jam title is 1 to {MAX_TITLE} characters")
    if any(ord(c) < 0x20 for c in title):
        raise ValueError("a jam title has no control characters")
    return title.strip()


def check_chat_text(text: object) -> str:
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_CHAT_TEXT:
        raise ValueError(f"a chat line is 1 to {MAX_CHAT_TEXT} characters, not blank")
    return text


def parse_chat(message: dict[str, Any]) -> dict[str, Any]:
    """A peer's jam chat line, checked (``specs/live.md`` §14.3), or BadRoster."""
    line = message.get("line")
    if not isinstance(line, dict):
        raise BadRoster("a chat message carries a line object")
    line_id, name, node = line.get("id"), line.get("name"), line.get("node")
    sent, text = line.get("sent_ms"), line.get("text")
    if not (isinstance(line_id, str) and HEX16.fullmatch(line_id)):
        raise BadRoster("a chat line id is 32 lowercase hex digits")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME:
        raise BadRoster(f"a chat line's name is 1 to {MAX_NAME} characters")
    if not (isinstance(node, str) and HEX32.fullmatch(node)):
        raise BadRoster("a chat line's node is a node id")
    if type(sent) is not int or not 0 <= sent < 2**53:
        raise BadRoster("sent_ms is an integer time")
    try:
        check_chat_text(text)
    except ValueError as exc:
        raise BadRoster(str(exc)) from None
    return {"id": line_id, "name": name, "node": node, "sent_ms": sent, "text": text}
