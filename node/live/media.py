"""The asyncio side of a jam: participants' Opus packets, forwarded as they came.

Theory of operation
-------------------
Every participant's audio enters the node as Opus RTP on some peer
connection: a browser's microphone, a slot of a link from another node, a
track a peer streams.  :func:`node.jitter.install_low_latency_jitter` with a
``tap`` hands each encoded frame, in order and without decoding, to an
:class:`InSlot`, which passes it to the :class:`Source` the link's roster
says that slot carries.  A Source fans each packet out to the
:class:`SlotTrack` of every outgoing slot that carries it (one per listener
link) and to its :class:`Recorder` while the jam records.

A SlotTrack is what aiortc sends on one outgoing slot.  It returns
``av.Packet`` objects, which aiortc's RTP sender packs as they are instead of
encoding (``RTCRtpSender._next_encoded_frame``): the host never decodes or
re-encodes a participant for its listeners, so forwarding costs a copy per
listener, not an Opus encode.  Each slot restamps the packets on its own
48 kHz clock, advancing by each packet's duration (read from its TOC byte,
:mod:`node.live.opus`) and jumping ahead to the wall clock after a pause
(a muted or silent participant, a new source on the slot), so a listener's
jitter buffer sees timestamps that track real time.

Everything here runs on the RtcLoop's asyncio thread; the trio side changes
what flows where with ``RtcLoop.call_soon``.  This module imports aiortc and
PyAV: import it only where aiortc is wanted (on the loop thread, lazily), so
an idle node never loads them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import wave
from fractions import Fraction
from pathlib import Path

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from node.live.opus import SAMPLE_RATE, BadOpusPacket, packet_samples

log = logging.getLogger(__name__)

SLOT_QUEUE = 25
"""Packets (~0.5 s) a slot holds for its sender; more drops the oldest (the sender stalled)."""
RESYNC_SAMPLES = 3 * 960
"""A slot's clock this far (60 ms) behind the wall clock jumps ahead to it."""
RECORD_CHANNELS = 2
MAX_RECORD_SAMPLES = 15 * 60 * SAMPLE_RATE
"""15 minutes per participant: a 48 kHz stereo WAV of about 165 MB, under the track size cap."""
_TIME_BASE = Fraction(1, SAMPLE_RATE)


class Source:
    """One participant's audio as a stream of Opus packets."""

    def __init__(self, participant: str) -> None:
        self.participant = participant
        self.sinks: set[SlotTrack] = set()
        self.recorder: Recorder | None = None
        self.packets = 0
        self.malformed = 0

    def push(self, payload: bytes) -> None:
        try:
            samples = packet_samples(payload)
        except BadOpusPacket:
            self.malformed += 1  # never forwarded: listeners get only well-formed headers
            return
        self.packets += 1
        for sink in self.sinks:
            sink.offer(payload, samples)
        if self.recorder is not None:
            self.recorder.write(payload)

    def detach(self) -> None:
        for sink in list(self.sinks):
            sink.assign(None)


class InSlot:
    """One incoming slot of a link: the tap of its receiver, routed to a Source."""

    def __init__(self) -> None:
        self.source: Source | None = None

    def __call__(self, payload: bytes) -> None:
        if self.source is not None:
            self.source.push(payload)


class SlotTrack(MediaStreamTrack):
    """What one outgoing slot sends: the packets of the Source assigned to it, restamped."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self.source: Source | None = None
        self._queue: collections.deque[tuple[bytes, int]] = collections.deque(maxlen=SLOT_QUEUE)
        self._ready = asyncio.Event()
        self._epoch: float | None = None
        self._pts = 0
        self.sent = 0

    def assign(self, source: Source | None) -> None:
        if source is self.source:
            return
        if self.source is not None:
            self.source.sinks.discard(self)
        self.source = source
        self._queue.clear()
        if source is not None:
            source.sinks.add(self)

    def offer(self, payload: bytes, samples: int) -> None:
        self._queue.append((payload, samples))
        self._ready.set()

    async def recv(self) -> av.Packet:  # type: ignore[type-arg]
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        payload, samples = self._queue.popleft()
        now = asyncio.get_running_loop().time()
        if self._epoch is None:
            self._epoch = now
        wall = int((now - self._epoch) * SAMPLE_RATE)
        if wall - self._pts > RESYNC_SAMPLES:
            self._pts = wall
        packet = av.Packet(payload)
        packet.pts = self._pts
        packet.time_base = _TIME_BASE
        self._pts += samples
        self.sent += 1
        return packet

    def stop(self) -> None:
        self.assign(None)
        super().stop()
        self._ready.set()


class Recorder:
    """Decodes one participant's packets into a 48 kHz stereo WAV file, aligned to the jam's clock.

    The file starts when recording started: silence fills the time before a
    participant's first packet and any pause longer than a few packets (mute,
    DTX, loss), so the files of one session line up in any editor.
    """

    def __init__(self, path: Path, started: float) -> None:
        self.path = path
        self._started = started
        self._written = 0
        self._decoder = av.CodecContext.create("opus", "r")
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=SAMPLE_RATE)
        self._wav = wave.open(str(path), "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(RECORD_CHANNELS)
        self._wav.setsampwidth(2)
        self._wav.setframerate(SAMPLE_RATE)
        self.failed = 0
        self.heard = False
        self.full = False

    @property
    def duration_ms(self) -> int:
        return self._written * 1000 // SAMPLE_RATE

    def write(self, payload: bytes) -> None:
        self.heard = True
        if self._written >= MAX_RECORD_SAMPLES:
            self.full = True
            return
        due = int((asyncio.get_running_loop().time() - self._started) * SAMPLE_RATE)
        if due - self._written > RESYNC_SAMPLES:
            self._silence(due - self._written)
        try:
            frames = self._decoder.decode(av.Packet(payload))
            for frame in frames:
                for pcm in self._resampler.resample(frame):
                    self._wav.writeframesraw(bytes(pcm.planes[0])[: pcm.samples * 4])
                    self._written += pcm.samples
        except (av.FFmpegError, ValueError):
            self.failed += 1

    def _silence(self, samples: int) -> None:
        chunk = bytes(4 * 4800)
        while samples > 0:
            n = min(samples, 4800)
            self._wav.writeframesraw(chunk[: 4 * n])
            samples -= n
            self._written += n

    def close(self) -> int:
        """Finish the file; returns its duration in ms."""
        self._wav.close()
        return self.duration_ms
