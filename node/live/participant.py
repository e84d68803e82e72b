"""A scripted jam participant: what the jam page does, done with aiortc on its own thread.

For tests and ``talas bench jam``.  It speaks the web UI's WebSocket
protocol (``webui/jam_api.py``) exactly as the jam page does: one offer with
:data:`SLOTS` audio transceivers (the first sends, the rest only receive),
the node's answer, then rosters.  Each participant sends a sine of its own
frequency (continuously, or in bursts for latency measurements); what it
receives is decoded and, every few frames, measured with the Goertzel
algorithm at every expected frequency, so a test can tell *whose* audio
arrived on which slot, not only that some sound did.  With ``onsets`` it
also notes, on every frame, when sound starts after silence on a slot.

aiortc and PyAV are imported inside the functions (on the participant's own
asyncio thread), so importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from array import array
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from node.jitter import install_on_peer_connection
from node.live.jam import SLOTS
from node.rtc_bridge import RtcLoop, open_rtc_loop

RATE = 48_000
FRAME = 960
ANALYSE_EVERY = 5
"""Frames between two measurements of a slot (Goertzel in pure Python is not free)."""


BURST_FRAMES = 5
"""A burst is 100 ms of tone..."""
BURST_PERIOD_FRAMES = 20
"""...every 400 ms, silence between."""
SILENT_FRAME = bytes(2 * FRAME)
ONSET_ENERGY = 1e5
"""Mean square (of int16 samples) above which a frame counts as sound; the tone is ~3e7."""


class ToneTrack:
    """An aiortc audio track playing a sine of ``freq`` Hz in real time (made on the loop).

    With ``bursts``, the tone plays for :data:`BURST_FRAMES` frames every
    :data:`BURST_PERIOD_FRAMES`, silence between, and ``sent_onsets`` gets
    the ``time.perf_counter()`` at which each burst's first frame left.
    """

    @staticmethod
    def make(freq: float, bursts: bool = False, sent_onsets: list[float] | None = None) -> Any:
        import av
        from aiortc import MediaStreamTrack

        # One second of the tone, made once: whole-hertz tones loop without a click.
        second = array(
            "h", (int(8000 * math.sin(2 * math.pi * freq * i / RATE)) for i in range(RATE))
        ).tobytes()

        class _Tone(MediaStreamTrack):
            kind = "audio"

            def __init__(self) -> None:
                super().__init__()
                self.samples = 0
                self.start: float | None = None

            async def recv(self) -> av.AudioFrame:
                loop = asyncio.get_running_loop()
                if self.start is None:
                    self.start = loop.time()
                wait = self.start + self.samples / RATE - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                index = self.samples // FRAME
                quiet = bursts and index % BURST_PERIOD_FRAMES >= BURST_FRAMES
                offset = self.samples % RATE * 2
                pcm = SILENT_FRAME if quiet else second[offset : offset + 2 * FRAME]
                if bursts and index % BURST_PERIOD_FRAMES == 0 and sent_onsets is not None:
                    sent_onsets.append(time.perf_counter())
                frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
                frame.planes[0].update(pcm)
                frame.sample_rate = RATE
                frame.pts = self.samples
                frame.time_base = Fraction(1, RATE)
                self.samples += FRAME
                return frame

        return _Tone()


def goertzel_ratio(samples: array[int], freq: float) -> float:
    """Share of the frame's energy at ``freq`` (0..1)."""
    coeff = 2 * math.cos(2 * math.pi * freq / RATE)
    s1 = s2 = 0.0
    total = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
        total += x * x
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 0.0 if total == 0 else min(1.0, 2 * power / (len(samples) * total))


class Participant:
    """One jam participant; see the module docstring.  Use :func:`jam_participant`."""

    def __init__(
        self,
        rtc: RtcLoop,
        freq: float,
        freqs: list[float],
        *,
        bursts: bool = False,
        onsets: bool = False,
        low_latency: bool = False,
        codec: str = "audio/opus",
    ) -> None:
        self.rtc = rtc
        self.freq = freq
        self.freqs = freqs
        self.bursts = bursts
        self.track_onsets = onsets
        self.low_latency = low_latency
        self.codec = codec
        """The only codec offered (a test offers PCMU to see it refused)."""
        self.sent_onsets: list[float] = []
        """When each burst left (``bursts``)."""
        self.onsets: dict[int, list[float]] = {}
        """slot -> when sound started after silence there (``onsets``)."""
        self.watch: str | None = None
        """When set, only the slot carrying this participant is measured (benchmarks)."""
        self.pc: Any = None
        self.ws: WebSocketConnection | None = None
        self.participant_id = ""
        self.roster: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self.heard: dict[int, dict[float, int]] = {}
        """slot -> frequency -> frames in which that tone dominated."""
        self.energy: dict[int, float] = {}

    # -- asyncio side ------------------------------------------------------------------

    async def _offer(self) -> str:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

        self.pc = pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        tone = ToneTrack.make(self.freq, self.bursts, self.sent_onsets)
        pc.addTransceiver(tone, direction="sendrecv")
        for _ in range(SLOTS - 1):
            pc.addTransceiver("audio", direction="recvonly")
        if self.low_latency:
            install_on_peer_connection(pc)
        codecs = RTCRtpSender.getCapabilities("audio").codecs
        for transceiver in pc.getTransceivers():
            transceiver.setCodecPreferences([c for c in codecs if c.mimeType == self.codec])

        @pc.on("track")
        def on_track(track: Any) -> None:
            transceivers = pc.getTransceivers()
            slot = next(i for i, t in enumerate(transceivers) if t.receiver.track is track)
            asyncio.ensure_future(self._listen(slot, track))  # noqa: RUF006

        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)

    async def _answer(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def _listen(self, slot: int, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        count = 0
        sounding = False
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            count += 1
            if self.watch is not None and slot != self.slot_of_participant(self.watch):
                continue  # decoded (as a listener would), not measured
            if count % ANALYSE_EVERY and not self.track_onsets:
                continue
            channels = len(frame.layout.channels)
            pcm = array("h", bytes(frame.planes[0])[: 2 * channels * frame.samples])  # no padding
            left = pcm[::channels] if channels > 1 else pcm
            energy = sum(x * x for x in left) / max(1, len(left))
            self.energy[slot] = energy
            if self.track_onsets:
                loud = energy > ONSET_ENERGY
                if loud and not sounding:
                    self.onsets.setdefault(slot, []).append(time.perf_counter())
                sounding = loud
                if count % ANALYSE_EVERY:
                    continue
            if energy < 1e4:  # silence (a -30 dBFS tone is ~2e6)
                continue
            best = max(self.freqs, key=lambda f: goertzel_ratio(left, f))
            if goertzel_ratio(left, best) > 0.5:
                heard = self.heard.setdefault(slot, {})
                heard[best] = heard.get(best, 0) + 1

    async def _close(self) -> None:
        if self.pc is not None:
            await self.pc.close()

    # -- trio side ----------------------------------------------------------------------

    async def join(self, jam: str) -> None:
        assert self.ws is not None
        sdp = await self.rtc.run(self._offer)
        await self.send({"t": "jam-join", "jam": jam, "sdp": sdp})
        with trio.fail_after(15):
            while True:
                message = await self.receive()
                if message["t"] == "jam-answer":
                    break
                if message["t"] == "error":
                    raise AssertionError(message)
        self.participant_id = message["participant"]
        await self.rtc.run(lambda: self._answer(message["sdp"]))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_message(json.dumps(message))

    async def receive(self) -> dict[str, Any]:
        assert self.ws is not None
        message: dict[str, Any] = json.loads(await self.ws.get_message())
        self.messages.append(message)
        if message["t"] == "jam-roster":
            self.roster = message
        return message

    async def pump(self) -> None:
        """Read the node's frames until the socket closes (run in a nursery)."""
        with trio.move_on_after(600):
            while True:
                await self.receive()

    def hears(self, freq: float, frames: int = 5) -> bool:
        return any(tones.get(freq, 0) >= frames for tones in self.heard.values())

    def slot_of_participant(self, participant: str) -> int | None:
        """The receive slot the roster gives ``participant`` (a participant id)."""
        for entry in self.roster.get("participants", []):
            if entry["id"] == participant:
                slot: int | None = entry["slot"]
                return slot
        return None

    def slot_of(self, name: str) -> int | None:
        for entry in self.roster.get("participants", []):
            if entry["name"] == name:
                slot: int | None = entry["slot"]
                return slot
        return None


@asynccontextmanager
async def jam_participant(
    url: str, token: str, freq: float, freqs: list[float], **options: Any
) -> AsyncIterator[Participant]:
    """A participant connected to the node at ``url`` (http://…) with a bearer ``token``.

    ``options`` are :class:`Participant`'s (``bursts``, ``onsets``, ``low_latency``).
    """
    async with open_rtc_loop() as rtc:
        participant = Participant(rtc, freq, freqs, **options)
        ws_url = url.replace("http://", "ws://") + "/api/v1/live/ws"
        headers = [(b"authorization", f"Bearer {token}".encode())]
        try:
            async with open_websocket_url(ws_url, extra_headers=headers) as ws:
                participant.ws = ws
                yield participant
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await rtc.run(participant._close)
