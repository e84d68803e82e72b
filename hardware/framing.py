"""Frames of the microphone control protocol (specs/mic-module.md, "Framing").

Theory of operation
-------------------
A frame is ``SYNC(a5 5a) VER TYPE SEQ LEN(2) HCRC(2) PAYLOAD FCRC(2)``.  The
header has its own CRC so that a corrupted LEN is caught *before* we wait for
LEN bytes: without it one flipped bit on an idle serial line could make the
parser sit on a reply until the request timed out.  FCRC is the CRC of
VER..LEN followed by PAYLOAD, i.e. the HCRC register continued over the
payload, so a payload cannot pass with another frame's header.

:class:`FrameParser` keeps a byte buffer and, on every feed, scans for SYNC,
checks the header CRC and the length bound, and waits for the whole frame only
once the header is known good.  On any failure it drops *one* byte and scans
again, so a real frame hidden inside a corrupted one (or right behind it) is
still found.  Every byte that ends up outside a good frame is counted, never
raised about.  After a feed the buffer never holds more than one maximal frame
minus one byte: either a complete frame was consumed, or its header failed and
the scan moved past its SYNC.

The parser knows nothing about types or payloads; :mod:`hardware.connection`
gives frames their meaning.  No I/O, no clocks.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass

SYNC = b"\xa5\x5a"
VERSION = 1
HEADER_SIZE = 9
"""SYNC (2) + VER + TYPE + SEQ + LEN (2) + HCRC (2)."""
CRC_SIZE = 2
MAX_PAYLOAD = 1024
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MAX_BUFFERED = MAX_FRAME - 1
"""What a parser may hold between feeds: an incomplete frame at most."""

_SYNC0 = SYNC[0]


def crc16(data: bytes | bytearray) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor).

    ``binascii.crc_hqx`` is exactly this CRC with 0xFFFF as its start value, in C.
    """
    return binascii.crc_hqx(data, 0xFFFF)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame whose header and payload CRCs both verified."""

    type: int
    seq: int
    payload: bytes
    version: int = VERSION


def encode_frame(type_: int, seq: int, payload: bytes, *, version: int = VERSION) -> bytes:
    """The wire bytes of one frame; a payload over :data:`MAX_PAYLOAD` is a bug here."""
    if not (0 <= type_ <= 0xFF and 0 <= seq <= 0xFF and 0 <= version <= 0xFF):
        raise ValueError("type, seq and version are single bytes")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    head = bytes((version, type_, seq)) + len(payload).to_bytes(2, "big")
    hcrc = crc16(head)
    fcrc = binascii.crc_hqx(payload, hcrc)  # = crc16(head + payload)
    return SYNC + head + hcrc.to_bytes(2, "big") + payload + fcrc.to_bytes(2, "big")


@dataclass(slots=True)
class LinkStats:
    """Counters of what one connection received; garbage is counted, not raised."""

    frames: int = 0
    """Frames whose CRCs verified."""
    discarded_bytes: int = 0
    """Bytes that were not part of any verified frame (noise, resync, corrupted frames)."""
    bad_header: int = 0
    """SYNC candidates whose header CRC failed."""
    oversize: int = 0
    """Headers with a good CRC but LEN above MAX_PAYLOAD."""
    bad_crc: int = 0
    """Frames whose header verified but whose frame CRC did not."""
    rejected: int = 0
    """Verified frames refused by the connection (version, type, payload, direction)."""
    unexpected: int = 0
    """Replies for no outstanding request (late after a timeout, or invented)."""
    dropped_events: int = 0
    """Events lost because the owner did not drain ``next_event`` in time."""


class FrameParser:
    """Bytes in, verified :class:`Frame` objects out; bounded memory, never raises on input."""

    def __init__(self, stats: LinkStats | None = None) -> None:
        self.stats = stats if stats is not None else LinkStats()
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held back, waiting for the rest of a frame (at most MAX_BUFFERED)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes; return every frame they complete, in order."""
        buf = self._buffer
        buf += data
        stats = self.stats
        frames: list[Frame] = []
        pos = 0
        size = len(buf)
        while True:
            start = buf.find(SYNC, pos)
            if start < 0:
                # No SYNC: keep a trailing first SYNC byte, it may pair with the next feed.
                keep = 1 if size > pos and buf[-1] == _SYNC0 else 0
                stats.discarded_bytes += size - pos - keep
                pos = size - keep
                break
            stats.discarded_bytes += start - pos
            pos = start
            if size - pos < HEADER_SIZE:
                break
            header = buf[pos + 2 : pos + 7]
            hcrc = crc16(header)
            if hcrc != int.from_bytes(buf[pos + 7 : pos + 9], "big"):
                stats.bad_header += 1
                stats.discarded_bytes += 1
                pos += 1
                continue
            length = int.from_bytes(header[3:5], "big")
            if length > MAX_PAYLOAD:
                stats.oversize += 1
                stats.discarded_bytes += 1
                pos += 1
                continue
            end = pos + HEADER_SIZE + length + CRC_SIZE
            if size < end:
                break
            payload = bytes(buf[pos + HEADER_SIZE : end - 2])
            if binascii.crc_hqx(payload, hcrc) != int.from_bytes(buf[end - 2 : end], "big"):
                stats.bad_crc += 1
                stats.discarded_bytes += 1
                pos += 1
                continue
            stats.frames += 1
            frames.append(
                Frame(
                    type=header[1],
                    seq=header[2],
                    payload=payload,
                    version=header[0],
                )
            )
            pos = end
        del buf[:pos]
        return frames
