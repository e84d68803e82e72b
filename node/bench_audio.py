"""``talas bench audio``: one-way audio latency over real WebRTC on loopback.

Each stream is a pair of RTCPeerConnections in the bridged asyncio loop
(:mod:`node.rtc_bridge`), host candidates only.  The sender's track makes
20 ms, 48 kHz mono frames of a 1 kHz tone on a fixed schedule and notes when
it hands frame ``k`` to aiortc (its ``recv()`` returns); the receiver notes
when the decoded frame with pts ``k * 960`` comes out of the remote track.
aiortc stamps RTP timestamps from the encoder's output counted from the first
packet, and the receiver counts decoded pts from the first packet it gets, so
the pts identify the frame as long as the first packet arrives: the tracks
start only once both ends are connected.

The same run measures our jitter buffer (:mod:`node.jitter`) and aiortc's
stock one, so their ratio is meaningful; CPU per stream is process CPU time
over wall time in our phase, divided by the streams, and counts both ends of
each stream (encode + send + receive + decode), as a node in a call does per
peer.  Beside them: the RSS of an idle ``talas run`` in its own process, and
whether it loaded aiortc or PyAV.

aiortc is imported inside the functions below, so importing this module is cheap.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from node.jitter import (
    LowLatencyJitterBuffer,
    install_low_latency_jitter,
    install_on_peer_connection,
)
from node.rtc_bridge import RtcLoop, open_rtc_loop

if TYPE_CHECKING:
    from aiortc import RTCPeerConnection

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
WARM_UP_S = 0.5
"""Frames of the first half second are not measured (codec start, stock buffer fill)."""
DRAIN_S = 0.4
"""Frames keep flowing this long after the window, so buffered ones come out."""
CONNECT_TIMEOUT_S = 20.0
IDLE_SETTLE_S = 2.0
GOAL_P50_MS = 25.0
GOAL_P99_MS = 40.0
GOAL_CPU = 0.10
GOAL_IDLE_RSS_MB = 80.0
SOURCE_ROOT = Path(__file__).resolve().parents[1]
"""``talas run`` is started from here, so it runs the same tree as this module."""

TONE = b"".join(
    struct.pack("<h", round(8000 * math.sin(2 * math.pi * 1000 * i / SAMPLE_RATE)))
    for i in range(FRAME_SAMPLES)
)
"""20 ms of a 1 kHz tone: exactly 20 periods, so frames join without a click."""


@dataclass
class _Stream:
    """Clocks of one stream: frame index -> when it was sent and received."""

    sent: dict[int, float] = field(default_factory=dict)
    received: dict[int, float] = field(default_factory=dict)
    start: float = 0.0


@dataclass
class Phase:
    latencies_ms: list[float]
    frames: int
    lost: int
    cpu_per_stream: float
    target_ms: float = 0.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def _tone_track(stream: _Stream, gate: asyncio.Event) -> Any:
    """An aiortc audio track that emits TONE every 20 ms once ``gate`` is set."""
    import av
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    class ToneTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.index = 0

        async def recv(self) -> av.AudioFrame:
            if self.readyState != "live":
                raise MediaStreamError
            await gate.wait()
            delay = stream.start + self.index * FRAME_S - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
            frame.planes[0].update(TONE)
            frame.sample_rate = SAMPLE_RATE
            frame.time_base = Fraction(1, SAMPLE_RATE)
            frame.pts = self.index * FRAME_SAMPLES
            stream.sent[self.index] = time.perf_counter()
            self.index += 1
            return frame

    return ToneTrack()


async def _consume(track: Any, stream: _Stream) -> None:
    from aiortc.mediastreams import MediaStreamError

    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        now = time.perf_counter()
        if frame.pts is not None:
            stream.received.setdefault(frame.pts // FRAME_SAMPLES, now)


@dataclass
class _Pair:
    sender: RTCPeerConnection
    receiver: RTCPeerConnection
    buffers: list[LowLatencyJitterBuffer]
    consumers: list[asyncio.Task[None]]


async def _connect_pair(
    rtc: RtcLoop, stream: _Stream, gate: asyncio.Event, low_latency: bool
) -> _Pair:
    """A sender and a receiver peer connection negotiating one audio stream over loopback."""
    pair = _Pair(await rtc.create_peer_connection(), await rtc.create_peer_connection(), [], [])
    pair.sender.addTransceiver(_tone_track(stream, gate), direction="sendonly")
    if low_latency:
        install_on_peer_connection(pair.receiver)  # on "track", before media flows

    @pair.receiver.on("track")
    def _on_track(track: Any) -> None:
        pair.consumers.append(asyncio.ensure_future(_consume(track, stream)))

    await pair.sender.setLocalDescription(await pair.sender.createOffer())
    await pair.receiver.setRemoteDescription(pair.sender.localDescription)
    if low_latency:  # installed by now: this only collects them
        for r in pair.receiver.getReceivers():
            if (buffer := install_low_latency_jitter(r)) is not None:
                pair.buffers.append(buffer)
        if not pair.buffers:
            raise AssertionError("the low-latency jitter buffer is not installed")
    await pair.receiver.setLocalDescription(await pair.receiver.createAnswer())
    await pair.sender.setRemoteDescription(pair.receiver.localDescription)
    return pair


async def _phase(rtc: RtcLoop, seconds: float, streams: int, low_latency: bool) -> Phase:
    """One measured run of ``streams`` streams (asyncio side)."""
    gate = asyncio.Event()
    links = [_Stream() for _ in range(streams)]
    pairs = [await _connect_pair(rtc, link, gate, low_latency) for link in links]
    pcs = [pc for pair in pairs for pc in (pair.sender, pair.receiver)]
    first = math.ceil(WARM_UP_S / FRAME_S)
    count = max(1, round(seconds / FRAME_S))
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            while any(pc.connectionState != "connected" for pc in pcs):
                if any(pc.connectionState in ("failed", "closed") for pc in pcs):
                    raise RuntimeError("WebRTC connection failed on loopback")
                await asyncio.sleep(0.01)
        # Receivers start right after their DTLS handshake; the first packet must
        # arrive, as decoded pts count from it.
        await asyncio.sleep(0.1)
        start = time.perf_counter()
        for link in links:
            link.start = start
        gate.set()
        await asyncio.sleep(start + first * FRAME_S - time.perf_counter())
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(start + (first + count) * FRAME_S - time.perf_counter())
        cpu1, wall1 = time.process_time(), time.perf_counter()
        await asyncio.sleep(DRAIN_S)
    finally:
        for pc in pcs:
            await pc.close()
        # Closing ends each remote track, so the consumers return.
        consumers = [task for pair in pairs for task in pair.consumers]
        if consumers:
            await asyncio.wait(consumers, timeout=5)
    latencies: list[float] = []
    lost = 0
    for link in links:
        for index in range(first, first + count):
            sent, got = link.sent.get(index), link.received.get(index)
            if sent is None or got is None:
                lost += 1
            else:
                latencies.append((got - sent) * 1000)
    if latencies and min(latencies) < 0:
        raise AssertionError("decoded frames do not line up with the sent ones")
    targets = [buffer.core.target_s * 1000 for pair in pairs for buffer in pair.buffers]
    return Phase(
        latencies_ms=sorted(latencies),
        frames=len(latencies),
        lost=lost,
        cpu_per_stream=(cpu1 - cpu0) / (wall1 - wall0) / streams,
        target_ms=max(targets, default=0.0),
    )


# -- the idle node -----------------------------------------------------------


@dataclass
class IdleNode:
    rss_mb: float
    aiortc_loaded: bool
    av_loaded: bool


async def idle_node() -> IdleNode:
    """RSS of a fresh ``talas run`` with nothing live, and which media libraries it mapped.

    aiortc has no compiled module of its own: its SRTP binding (pylibsrtp)
    stands for it in /proc/PID/maps; PyAV shows as its FFmpeg libraries.
    """
    with tempfile.TemporaryDirectory(prefix="talas-bench-audio-") as tmp:
        process, _ = await start_talas_run(tmp, "--no-p2p", "--no-discovery")
        try:
            await trio.sleep(IDLE_SETTLE_S)
            proc = Path(f"/proc/{process.pid}")
            status = (proc / "status").read_text()
            maps = (proc / "maps").read_text()
        finally:
            await stop_talas_run(process)
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return IdleNode(
        rss_mb=rss_kb / 1024,
        aiortc_loaded="/aiortc/" in maps or "pylibsrtp" in maps,
        av_loaded="/av/" in maps or "av.libs" in maps,
    )


async def start_talas_run(data: str, *options: str) -> tuple[trio.Process, str]:
    """``talas run --data DATA --http 127.0.0.1:0 OPTIONS`` from this source tree.

    Returns the process once it printed its web UI line, and what it printed;
    stop it with :func:`stop_talas_run`.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALAS_")}
    argv = [sys.executable, "-m", "node.cli", "--data", data, "run", "--http", "127.0.0.1:0",
            *options]  # fmt: skip
    process = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=SOURCE_ROOT,
    )
    assert process.stdout is not None
    output = b""
    try:
        with trio.fail_after(60):
            while b"web UI" not in output or not output.endswith(b"\n"):
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"talas run exited early: {output.decode()!r}")
                output += chunk
    except BaseException:
        await stop_talas_run(process)
        raise
    return process, output.decode()


async def stop_talas_run(process: trio.Process) -> None:
    """SIGINT, then wait (reading its output so it cannot block), then kill after 15 s."""
    process.send_signal(signal.SIGINT)
    assert process.stdout is not None
    with trio.move_on_after(15):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, process.stdout)
            await process.wait()
            nursery.cancel_scope.cancel()  # a worker may still hold the pipe
    if process.returncode is None:
        process.kill()
        await process.wait()
    await process.stdout.aclose()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    while await stream.receive_some(4096):
        pass


# -- the report -----------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


async def _bench(
    seconds: float, streams: int, out: Callable[[str], None]
) -> dict[str, float | int]:
    idle = await idle_node()
    libraries = f"aiortc {'LOADED' if idle.aiortc_loaded else 'not loaded'}, " + (
        "PyAV loaded" if idle.av_loaded else "PyAV not loaded"
    )
    out(f"  idle talas run RSS          {idle.rss_mb:7.1f} MB"
        f"   goal <= {GOAL_IDLE_RSS_MB:.0f} MB: {_verdict(idle.rss_mb <= GOAL_IDLE_RSS_MB)}"
        f"  ({libraries})")  # fmt: skip
    async with open_rtc_loop() as rtc:
        ours = await rtc.run(partial(_phase, rtc, seconds, streams, True))
        p50, p99 = percentile(ours.latencies_ms, 0.5), percentile(ours.latencies_ms, 0.99)
        ok = p50 <= GOAL_P50_MS and p99 <= GOAL_P99_MS
        out(
            f"  latency, our jitter buffer  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms"
            f"   goals p50 <= {GOAL_P50_MS:.0f}, p99 <= {GOAL_P99_MS:.0f} ms: {_verdict(ok)}"
            f"  ({ours.frames} frames, {ours.lost} lost, target {ours.target_ms:.1f} ms)"
        )
        cpu = ours.cpu_per_stream
        out(
            f"  CPU per stream (both ends)  {cpu:7.1%} of a core"
            f"   goal <= {GOAL_CPU:.0%}: {_verdict(cpu <= GOAL_CPU)}"
        )
        stock = await rtc.run(partial(_phase, rtc, seconds, streams, False))
        s50, s99 = percentile(stock.latencies_ms, 0.5), percentile(stock.latencies_ms, 0.99)
        ratio = s50 / p50 if p50 > 0 else 0.0
        out(
            f"  latency, aiortc's stock     p50 {s50:6.1f} ms  p99 {s99:6.1f} ms"
            f"   ({stock.frames} frames, {stock.lost} lost; ours is {ratio:.1f}x lower at p50)"
        )
    return {
        "seconds": seconds,
        "streams": streams,
        "p50_ms": round(p50, 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(ours.latencies_ms[-1], 2) if ours.latencies_ms else 0.0,
        "stock_p50_ms": round(s50, 2),
        "stock_p99_ms": round(s99, 2),
        "cpu_per_stream": round(cpu, 4),
        "idle_rss_mb": round(idle.rss_mb, 1),
        "idle_aiortc_loaded": int(idle.aiortc_loaded),
        "idle_av_loaded": int(idle.av_loaded),
        "frames": ours.frames,
        "lost": ours.lost,
        "stock_frames": stock.frames,
        "stock_lost": stock.lost,
        "target_ms": round(ours.target_ms, 2),
        "cpus": os.cpu_count() or 1,
    }


def bench_audio(seconds: float = 10.0, streams: int = 1) -> dict[str, float | int]:
    """Measure, print human-readable lines as it goes, and return the figures.

    ``cpu_per_stream`` is a fraction of one core; latencies are in ms.
    """
    if not seconds > 0 or streams < 1:
        raise ValueError("need seconds > 0 and streams >= 1")
    print(f"audio: {streams} stream(s) of 48 kHz mono Opus over WebRTC on loopback,"
          f" {seconds:g} s each with our jitter buffer and with aiortc's stock one",
          flush=True)  # fmt: skip
    return trio.run(_bench, seconds, streams, partial(print, flush=True))
