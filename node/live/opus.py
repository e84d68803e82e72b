"""What a forwarding node needs to know about an Opus packet without decoding it.

A jam host forwards each participant's Opus packets to the others as they
came (no decode, no encode per listener), so it must restamp them on its own
outgoing RTP clock.  The duration of a packet is in its first bytes: the TOC
byte names the frame size, and the frame count code (and, for code 3, the
second byte) names how many frames the packet holds (RFC 6716 §3.1-§3.2).
"""

from __future__ import annotations

from node.errors import RemoteError

SAMPLE_RATE = 48_000
"""Opus RTP always runs a 48 kHz clock (RFC 7587 §4.1)."""
MAX_PACKET_SAMPLES = 5_760
"""120 ms: the longest packet RFC 6716 allows."""
SILENCE = b"\xf8\xff\xfe"
"""A 20 ms CELT frame of silence (config 31, mono, one frame), as browsers send for DTX."""

# Frame size in samples at 48 kHz for each of the 32 TOC configurations (RFC 6716 Table 2).
_FRAME_SAMPLES = (
    [480, 960, 1920, 2880] * 3  # SILK NB, MB, WB: 10, 20, 40, 60 ms
    + [480, 960] * 2  # Hybrid SWB, FB: 10, 20 ms
    + [120, 240, 480, 960] * 4  # CELT NB, WB, SWB, FB: 2.5, 5, 10, 20 ms
)


class BadOpusPacket(RemoteError, ValueError):
    """Bytes that are not an Opus packet (RFC 6716 §3.4 rules R1-R7, as far as the header goes)."""


def packet_samples(packet: bytes) -> int:
    """The duration of ``packet`` in 48 kHz samples; raises BadOpusPacket for a malformed header."""
    if not packet:
        raise BadOpusPacket("an Opus packet has at least one byte (R1)")
    toc = packet[0]
    frame = _FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(packet) < 2:
            raise BadOpusPacket("a code 3 packet has a frame count byte (R6)")
        frames = packet[1] & 0x3F
        if frames == 0:
            raise BadOpusPacket("a code 3 packet holds at least one frame (R5)")
    samples = frame * frames
    if samples > MAX_PACKET_SAMPLES:
        raise BadOpusPacket(f"{samples} samples is over the 120 ms a packet may hold (R5)")
    return samples
