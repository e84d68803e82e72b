"""The pure rules under jams: call purposes, Opus packet durations, slots and rosters."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.live.opus import SILENCE, BadOpusPacket, packet_samples
from node.live.roster import BadRoster, assign_slots, check_title, parse_chat, parse_roster
from protocol.signalling import SignalKind, call_purpose, check_sdp, with_call_purpose

SDP = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\nm=audio 9 UDP/TLS/RTP/SAVPF 96\r\n"
)
JAM = "0123456789abcdef" * 2
TRACK = "ab" * 32


def test_a_call_purpose_is_added_at_session_level_and_read_back() -> None:
    assert call_purpose(SDP) is None
    with_jam = with_call_purpose(SDP, "jam", JAM)
    assert call_purpose(with_jam) == ("jam", JAM)
    lines = with_jam.split("\r\n")
    assert lines.index(f"a=x-talas-call:jam {JAM}") == lines.index("t=0 0") + 1
    assert lines.index(f"a=x-talas-call:jam {JAM}") < lines.index(
        next(x for x in lines if x.startswith("m="))
    )
    check_sdp(SignalKind.OFFER, with_jam)  # still a valid signed-SDP body
    assert call_purpose(with_call_purpose(SDP, "stream", TRACK)) == ("stream", TRACK)


@pytest.mark.parametrize(
    "line",
    [
        f"a=x-talas-call:dance {JAM}",
        "a=x-talas-call:jam ABCDEF",
        f"a=x-talas-call:jam {JAM.upper()}",
        f"a=x-talas-call:jam  {JAM}",
        "a=x-talas-call:jam",
        f"a=x-talas-call:jam {JAM} extra",
    ],
)
def test_a_bad_call_purpose_is_refused(line: str) -> None:
    with pytest.raises(ValueError):
        call_purpose(SDP.replace("t=0 0\r\n", f"t=0 0\r\n{line}\r\n"))


def test_two_call_purposes_are_refused() -> None:
    twice = with_call_purpose(with_call_purpose(SDP, "jam", JAM), "stream", TRACK)
    with pytest.raises(ValueError, match="one call purpose"):
        call_purpose(twice)
    with pytest.raises(ValueError):
        with_call_purpose(SDP, "jam", "nope")


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (SILENCE, 960),  # CELT FB 20 ms, one frame
        (bytes([0x78]), 960),  # Hybrid FB 20 ms (config 15), code 0
        (bytes([0x00]), 480),  # SILK NB 10 ms
        (bytes([0x18]), 2880),  # SILK NB 60 ms
        (bytes([0xFC | 1]), 1920),  # CELT FB 20 ms, code 1: two frames
        (bytes([0x80 | 2]), 240),  # CELT NB 2.5 ms, code 2: two frames
        (bytes([0xFB, 0x03]), 2880),  # CELT FB 20 ms, code 3, three frames
        (bytes([0x1B, 0x02]), 5760),  # SILK NB 60 ms, code 3, two frames: 120 ms
    ],
)
def test_opus_packet_durations_follow_rfc_6716(packet: bytes, samples: int) -> None:
    assert packet_samples(packet) == samples


@pytest.mark.parametrize(
    "packet", [b"", bytes([0xFB]), bytes([0xFB, 0x00]), bytes([0x1B, 0x03]), bytes([0xFB, 0x3F])]
)
def test_malformed_opus_packets_are_refused(packet: bytes) -> None:
    with pytest.raises(BadOpusPacket):
        packet_samples(packet)


@given(st.binary(max_size=8))
def test_any_bytes_give_a_duration_or_a_clear_refusal(data: bytes) -> None:
    try:
        samples = packet_samples(data)
    except BadOpusPacket:
        return
    assert 120 <= samples <= 5760


def test_slots_stay_put_while_their_participant_stays() -> None:
    assert assign_slots([], ["a", "b"], 4) == ["a", "b", None, None]
    # a left: b keeps slot 1, newcomer c takes the lowest free slot.
    assert assign_slots(["a", "b", None, None], ["b", "c"], 4) == ["c", "b", None, None]
    assert assign_slots(["c", "b", None, None], ["d", "c", "b", "e"], 4) == ["c", "b", "d", "e"]
    assert assign_slots(["a"], ["a", "b", "c"], 2) == ["a", "b"]  # more than fit: the first
    assert assign_slots(["a", "b"], [], 2) == [None, None]


@given(
    st.lists(st.sampled_from("abcdefghij"), max_size=10),
    st.lists(st.sampled_from("abcdefghij"), max_size=10),
)
def test_slot_assignment_invariants(before: list[str], after: list[str]) -> None:
    previous = assign_slots([], before, 8)
    result = assign_slots(previous, after, 8)
    placed = [p for p in result if p is not None]
    assert len(placed) == len(set(placed)) == min(8, len(set(after)))
    for i, pid in enumerate(previous):
        if pid is not None and pid in placed:
            assert result[i] == pid


def entry(**changes: Any) -> dict[str, Any]:
    base = {"id": JAM, "name": "Ada", "node": TRACK, "kind": "mic", "muted": False, "slot": 0}
    return {**base, **changes}


def test_a_valid_roster_parses() -> None:
    parsed = parse_roster({"participants": [entry(), entry(id="f" * 32, slot=3, kind="track")]}, 8)
    assert [(slot, p.id, p.kind) for slot, p in parsed] == [(0, JAM, "mic"), (3, "f" * 32, "track")]


@pytest.mark.parametrize(
    "participants",
    [
        None,
        "x",
        [entry()] * 2,  # the same id twice
        [entry(), entry(id="f" * 32)],  # the same slot twice
        [entry(slot=8)],
        [entry(slot=True)],
        [entry(slot=-1)],
        [entry(name="")],
        [entry(name="x" * 81)],
        [entry(node="zz")],
        [entry(id=JAM.upper())],
        [entry(muted="no")],
        [entry(kind="video")],
        [entry(id=f"{i:032x}", slot=i) for i in range(9)],
        [["not", "an", "object"]],
    ],
)
def test_a_bad_roster_is_refused(participants: object) -> None:
    with pytest.raises(BadRoster):
        parse_roster({"participants": participants}, 8)


def test_jam_titles() -> None:
    assert check_title("  Friday  ") == "Friday"
    for bad in ("", " ", "x" * 121, "a\nb", 3):
        with pytest.raises(ValueError):
            check_title(bad)


def line(**changes: Any) -> dict[str, Any]:
    base = {"id": JAM, "name": "Ada", "node": TRACK, "sent_ms": 1, "text": "in E"}
    return {"line": {**base, **changes}}


def test_a_chat_line_parses_to_exactly_its_fields() -> None:
    extra = line()
    extra["line"]["html"] = "<b>"
    assert parse_chat(extra) == line()["line"]


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"line": "x"},
        line(id="x"),
        line(name=""),
        line(node="zz"),
        line(sent_ms=-1),
        line(sent_ms=1.5),
        line(text=" "),
        line(text="x" * 1001),
        line(text=3),
    ],
)
def test_a_bad_chat_line_is_refused(message: dict[str, Any]) -> None:
    with pytest.raises(BadRoster):
        parse_chat(message)
