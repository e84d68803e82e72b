"""A low-latency adaptive jitter buffer for aiortc's audio receiver.

Why: aiortc 1.16's ``RTCRtpReceiver`` gives audio a ``JitterBuffer(capacity=16,
prefetch=4)``.  That buffer treats a frame as complete only once a packet with
the next timestamp has arrived (video frames span packets), then waits until
``prefetch`` such frames are queued: every audio frame sits ~80 ms on a
loopback link where transport costs 1-2 ms.

Theory of operation.  An RTP audio packet (Opus, RFC 7587; G.711) carries
whole frames, so a packet is complete the moment it arrives:

* the packet the decoder expects next is released at once, with any held
  packets that follow it in sequence (several frames may leave at once);
* a packet beyond a gap is held while the gap may still fill.  The gap is
  given up (counted as lost) at the first arrival at least ``target - half a
  packet`` after it was noticed; held packets are then released in order.
  There is no timer: the decision is taken when packets arrive, which for a
  live stream is every 20 ms, so the target acts in whole packets;
* ``target`` adapts: ``JITTER_MULTIPLE`` times the RFC 3550 inter-arrival
  jitter, raised to cover any packet that came too late (decaying with a
  half-life of ``LATE_HALF_LIFE_S``), clamped to ``min_delay_ms..max_delay_ms``;
* a packet behind the release point is dropped (too late, or a duplicate);
  a jump of more than ``RESET_SPAN`` packets either way is taken as a new
  stream (sender restart) rather than loss or reordering;
* memory is bounded: at most ``capacity`` packets are held; a gap wider than
  that is given up at once.

:class:`AdaptiveJitter` is the pure logic (arrival times are passed in);
:class:`LowLatencyJitterBuffer` adapts it to the interface aiortc calls, and
:func:`install_low_latency_jitter` swaps it into one audio receiver.  Nothing
here imports aiortc, and nothing is patched globally.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SEQ_MOD = 1 << 16
TS_MOD = 1 << 32
PACKET_MS = 20.0
"""Audio packet duration WebRTC uses for Opus (and the unit the target acts in)."""
JITTER_MULTIPLE = 3.0
LATE_HALF_LIFE_S = 5.0
RESET_SPAN = 100
"""Sequence jump (packets, 2 s of audio) beyond which the stream is taken as restarted."""
MAX_TRANSIT_STEP_S = 1.0
"""A transit-time step larger than this is a timestamp jump, not jitter: not sampled."""


@dataclass(slots=True)
class EncodedFrame:
    """One encoded audio frame ready for the decoder (the shape of aiortc's JitterFrame)."""

    data: bytes
    timestamp: int
    sequence: int = 0


@dataclass(slots=True)
class _Held:
    timestamp: int
    data: bytes
    arrival: float


@dataclass(slots=True)
class JitterCounters:
    received: int = 0
    released: int = 0
    lost: int = 0
    """Packets given up (never arrived in time)."""
    late: int = 0
    """Packets that arrived after their gap was given up (dropped)."""
    duplicates: int = 0
    resets: int = 0


class AdaptiveJitter:
    """Pure reordering logic; see the module docstring.  Not thread-safe."""

    def __init__(
        self,
        *,
        clock_rate: int = 48_000,
        min_delay_ms: float = 0.0,
        max_delay_ms: float = 60.0,
        packet_ms: float = PACKET_MS,
        capacity: int = 32,
    ) -> None:
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError("need 0 <= min_delay_ms <= max_delay_ms")
        if capacity < 1 or clock_rate < 1 or packet_ms <= 0:
            raise ValueError("capacity, clock_rate and packet_ms must be positive")
        self.clock_rate = clock_rate
        self.min_delay_s = min_delay_ms / 1000
        self.max_delay_s = max_delay_ms / 1000
        self.packet_s = packet_ms / 1000
        self.capacity = capacity
        self.counters = JitterCounters()
        self.jitter_s = 0.0
        """RFC 3550 inter-arrival jitter estimate, in seconds."""
        self._late_s = 0.0
        self._late_at = 0.0
        self._next: int | None = None
        """Extended (unwrapped) sequence number the decoder needs next."""
        self._held: dict[int, _Held] = {}
        self._gap_since: float | None = None
        self._given_up: dict[int, float] = {}
        """Extended seq of recently given-up packets -> when their gap was noticed."""
        self._last_transit: float | None = None

    # -- figures ---------------------------------------------------------------

    @property
    def target_s(self) -> float:
        """How long a gap may hold later packets back, in seconds."""
        wanted = max(JITTER_MULTIPLE * self.jitter_s, self._late_s, self.min_delay_s)
        return min(wanted, self.max_delay_s)

    @property
    def held(self) -> int:
        return len(self._held)

    # -- the logic -------------------------------------------------------------

    def push(self, seq: int, timestamp: int, data: bytes, arrival: float) -> list[EncodedFrame]:
        """Take a packet that arrived at ``arrival`` (s); return the frames now due, in order."""
        self.counters.received += 1
        if self._next is None:
            self._next = seq
            self._last_transit = None
        ext = self._unwrap(seq)
        if abs(ext - self._next) > RESET_SPAN:
            out = self._release_all()
            self._restart(ext)
            self._sample_jitter(timestamp, arrival)
            return out + self._accept(ext, timestamp, data, arrival)
        if ext < self._next:
            noticed = self._given_up.pop(ext, None)
            if noticed is not None:
                self._sample_jitter(timestamp, arrival)
                self._packet_was_late(arrival, noticed)
            else:
                self.counters.duplicates += 1
            return []
        if ext in self._held:
            self.counters.duplicates += 1
            return []
        self._sample_jitter(timestamp, arrival)
        return self._accept(ext, timestamp, data, arrival)

    def _accept(self, ext: int, timestamp: int, data: bytes, arrival: float) -> list[EncodedFrame]:
        assert self._next is not None
        self._held[ext] = _Held(timestamp, data, arrival)
        out = self._release_in_order()
        while self._held:
            if self._gap_since is None:
                self._gap_since = min(held.arrival for held in self._held.values())
            waited = arrival - self._gap_since
            span = max(self._held) - self._next + 1
            if waited < self.target_s - self.packet_s / 2 and span <= self.capacity:
                break
            out += self._give_up_gap()
        return out

    def _release_in_order(self) -> list[EncodedFrame]:
        assert self._next is not None
        out: list[EncodedFrame] = []
        while (held := self._held.pop(self._next, None)) is not None:
            out.append(EncodedFrame(held.data, held.timestamp, self._next % SEQ_MOD))
            self._next += 1
        if out:
            self.counters.released += len(out)
            self._gap_since = None
        return out

    def _give_up_gap(self) -> list[EncodedFrame]:
        """Count the packets missing before the first held one as lost, and move on."""
        assert self._next is not None and self._held
        first = min(self._held)
        noticed = self._gap_since if self._gap_since is not None else 0.0
        for missing in range(self._next, first):
            self._given_up[missing] = noticed
        self.counters.lost += first - self._next
        self._next = first
        # Remember given-up packets only as far back as a reset would reach.
        for old in [s for s in self._given_up if s < first - RESET_SPAN]:
            del self._given_up[old]
        self._gap_since = None
        return self._release_in_order()

    def _release_all(self) -> list[EncodedFrame]:
        out: list[EncodedFrame] = []
        while self._held:
            out += self._give_up_gap()
        return out

    def _restart(self, ext: int) -> None:
        self.counters.resets += 1
        self._next = ext
        self._given_up.clear()
        self._gap_since = None
        self._last_transit = None

    def _packet_was_late(self, arrival: float, noticed: float) -> None:
        """A given-up packet arrived: wait that long (and half a packet more) next time."""
        self.counters.late += 1
        needed = arrival - noticed + self.packet_s / 2 + 0.001
        self._late_s = max(self._decayed_late(arrival), min(needed, self.max_delay_s))
        self._late_at = arrival

    def _decayed_late(self, now: float) -> float:
        if self._late_s <= 0:
            return 0.0
        halvings = max(0.0, now - self._late_at) / LATE_HALF_LIFE_S
        return float(self._late_s * 0.5**halvings)

    def _sample_jitter(self, timestamp: int, arrival: float) -> None:
        """RFC 3550 6.4.1: J += (|D| - J) / 16 over packets in arrival order."""
        transit = arrival - timestamp / self.clock_rate
        if self._last_transit is not None:
            step = transit - self._last_transit
            # Timestamps wrap at 2^32 and may jump (a new talkspurt origin): unwrap
            # the step, and skip steps no network jitter could explain.
            period = TS_MOD / self.clock_rate
            step = (step + period / 2) % period - period / 2
            if abs(step) <= MAX_TRANSIT_STEP_S:
                self.jitter_s += (abs(step) - self.jitter_s) / 16
        self._last_transit = transit
        if self._late_s > 0:
            self._late_s = self._decayed_late(arrival)
            self._late_at = arrival

    def _unwrap(self, seq: int) -> int:
        """The extended sequence number nearest to the release point."""
        assert self._next is not None
        delta = (seq - self._next) % SEQ_MOD
        if delta >= SEQ_MOD // 2:
            delta -= SEQ_MOD
        return self._next + delta


class LowLatencyJitterBuffer:
    """:class:`AdaptiveJitter` behind the interface ``RTCRtpReceiver`` calls (audio only).

    aiortc calls ``add(packet)`` and decodes the one frame it returns.  When a
    filled gap makes several frames due at once, the first is returned and
    the others wait in :meth:`take_pending`, which the decoder-queue hook of
    :func:`install_low_latency_jitter` drains right after aiortc queues the
    first, so no frame is held back a packet longer than needed.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, **options: Any) -> None:
        self.core = AdaptiveJitter(**options)
        self._clock = clock
        self._pending: list[EncodedFrame] = []

    @property
    def capacity(self) -> int:
        return self.core.capacity

    def add(self, packet: Any) -> tuple[bool, EncodedFrame | None]:
        """aiortc's call: (send a picture-loss indication?, the next frame for the decoder)."""
        self._pending.clear()  # not drained means the receiver is not decoding: drop
        data = getattr(packet, "_data", None)  # aiortc's depayloaded payload
        frames = self.core.push(
            packet.sequence_number,
            packet.timestamp,
            packet.payload if data is None else data,
            self._clock(),
        )
        if not frames:
            return False, None
        self._pending = frames[1:]
        return False, frames[0]

    def take_pending(self) -> list[EncodedFrame]:
        """Frames that became due with the one :meth:`add` returned, in order."""
        pending, self._pending = self._pending, []
        return pending


_RECEIVER_ATTRS = ("__kind", "__jitter_buffer", "__decoder_queue", "__timestamp_mapper")


def install_low_latency_jitter(
    receiver: Any, *, tap: Callable[[bytes], None] | None = None, **options: Any
) -> LowLatencyJitterBuffer | None:
    """Swap aiortc's stock jitter buffer for ours in one audio ``RTCRtpReceiver``.

    Call it before media flows (from the peer connection's ``track`` event,
    or right after ``setRemoteDescription``).  Video receivers are left alone
    (returns None); installing twice returns the installed buffer.  This
    reaches into aiortc 1.16's private attributes, per receiver, so an aiortc
    that renamed them fails loudly here instead of silently keeping 80 ms.

    With ``tap``, the encoded frames go to ``tap(payload)`` in order instead
    of the decoder (a forwarding node never decodes what it passes on), and
    the receiver's track yields nothing.  ``tap`` runs on the asyncio thread.
    """
    private = {name: f"_RTCRtpReceiver{name}" for name in _RECEIVER_ATTRS}
    missing = [name for name in private.values() if not hasattr(receiver, name)]
    if missing:
        raise TypeError(f"not an aiortc 1.16-style RTCRtpReceiver (no {', '.join(missing)})")
    if getattr(receiver, private["__kind"]) != "audio":
        return None
    current = getattr(receiver, private["__jitter_buffer"])
    if isinstance(current, LowLatencyJitterBuffer):
        return current
    buffer = LowLatencyJitterBuffer(**options)
    decoder_queue = getattr(receiver, private["__decoder_queue"])
    mapper = getattr(receiver, private["__timestamp_mapper"])
    put = decoder_queue.put

    # aiortc maps the returned frame's timestamp and queues (codec, frame);
    # the frames that became due with it follow it, mapped the same way.  The
    # decoder thread already holds this queue object, so the hook goes on the
    # instance rather than replacing the queue.
    def put_with_pending(item: Any, block: bool = True, timeout: float | None = None) -> None:
        if tap is not None and item is not None:
            tap(item[1].data)
            for frame in buffer.take_pending():
                tap(frame.data)
            return
        put(item, block, timeout)
        if item is None:  # the decoder's stop sentinel
            return
        codec = item[0]
        for frame in buffer.take_pending():
            frame.timestamp = mapper.map(frame.timestamp)
            put((codec, frame), block, timeout)

    decoder_queue.put = put_with_pending
    setattr(receiver, private["__jitter_buffer"], buffer)
    return buffer


def install_on_peer_connection(pc: Any, **options: Any) -> list[LowLatencyJitterBuffer]:
    """Install on every audio receiver of ``pc`` now and on those a later offer adds."""

    def install_all() -> list[LowLatencyJitterBuffer]:
        installed = []
        for receiver in pc.getReceivers():
            if (buffer := install_low_latency_jitter(receiver, **options)) is not None:
                installed.append(buffer)
        return installed

    # "track" fires inside setRemoteDescription, before the transports connect.
    pc.on("track", lambda _track: install_all())
    return install_all()
