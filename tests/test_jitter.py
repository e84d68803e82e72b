"""The low-latency audio jitter buffer: pure logic first, then inside a real aiortc receiver."""

from __future__ import annotations

import asyncio
import queue
import random
from types import SimpleNamespace
from typing import Any

import pytest

from node.jitter import (
    AdaptiveJitter,
    EncodedFrame,
    LowLatencyJitterBuffer,
    install_low_latency_jitter,
)

TICK = 0.020
TS_STEP = 960


def seqs(frames: list[EncodedFrame]) -> list[int]:
    return [frame.sequence for frame in frames]


def feed(
    jitter: AdaptiveJitter, order: list[int], *, base_ts: int = 0, t0: float = 0.0
) -> list[list[int]]:
    """Push packets in ``order``, one per 20 ms tick; what each push released."""
    out = []
    for i, seq in enumerate(order):
        timestamp = (base_ts + seq * TS_STEP) % (1 << 32)
        out.append(seqs(jitter.push(seq, timestamp, bytes([seq % 256]), t0 + i * TICK)))
    return out


def test_in_order_packets_leave_at_once() -> None:
    jitter = AdaptiveJitter()
    assert feed(jitter, list(range(10, 20))) == [[s] for s in range(10, 20)]
    frame = jitter.push(20, 20 * TS_STEP, b"opus", 0.2)[0]
    assert (frame.data, frame.timestamp, frame.sequence) == (b"opus", 20 * TS_STEP, 20)
    assert jitter.held == 0 and jitter.counters.lost == 0
    assert jitter.jitter_s == pytest.approx(0.0)


def test_a_reordered_packet_is_waited_for_within_the_target() -> None:
    jitter = AdaptiveJitter(min_delay_ms=20)
    # 3 arrives before 2: held; 2 fills the gap and both leave together.
    assert feed(jitter, [1, 3, 2, 4]) == [[1], [], [2, 3], [4]]
    assert jitter.counters.lost == 0 and jitter.counters.late == 0


def test_a_lost_packet_is_given_up_after_the_target() -> None:
    jitter = AdaptiveJitter(min_delay_ms=20)
    # 2 never comes: 3 waits one packet time, then 3 and 4 leave together.
    assert feed(jitter, [1, 3, 4, 5]) == [[1], [], [3, 4], [5]]
    assert jitter.counters.lost == 1
    # With no jitter seen and no floor the target is 0: a gap costs nothing.
    eager = AdaptiveJitter()
    assert feed(eager, [1, 3, 4]) == [[1], [3], [4]]
    assert eager.counters.lost == 1


def test_a_packet_after_its_gap_was_given_up_is_dropped_and_raises_the_target() -> None:
    jitter = AdaptiveJitter()
    assert jitter.target_s == 0
    assert feed(jitter, [1, 3, 2, 4]) == [[1], [3], [], [4]]
    assert jitter.counters.late == 1
    # It came one packet time late: next time the buffer waits that long.
    assert jitter.target_s - TICK / 2 > TICK
    assert feed(jitter, [6, 5, 7], t0=1.0) == [[], [5, 6], [7]]
    assert jitter.counters.late == 1


def test_the_late_target_decays() -> None:
    jitter = AdaptiveJitter()
    feed(jitter, [1, 3, 2])
    raised = jitter.target_s
    feed(jitter, list(range(4, 4 + 1000)), t0=0.06)  # 20 s of clean audio
    assert jitter.target_s < raised / 8


def test_duplicates_are_dropped() -> None:
    jitter = AdaptiveJitter(min_delay_ms=40)
    assert feed(jitter, [1, 1, 3, 3, 2, 2]) == [[1], [], [], [], [2, 3], []]
    assert jitter.counters.duplicates == 3
    assert jitter.counters.released == 3


def test_sequence_numbers_wrap_at_65535() -> None:
    jitter = AdaptiveJitter(min_delay_ms=20)
    order = [65533, 65534, 65535, 0, 1]
    assert feed(jitter, order) == [[s] for s in order]
    # Reordered across the wrap.
    assert feed(jitter, [3, 2, 4, 5], t0=1.0) == [[], [2, 3], [4], [5]]
    late = AdaptiveJitter()
    assert feed(late, [65534, 0, 65535, 1]) == [[65534], [0], [], [1]]
    assert late.counters.late == 1 and late.counters.lost == 1


def test_a_burst_after_a_stall_is_released_and_reordering_inside_it_is_repaired() -> None:
    jitter = AdaptiveJitter(min_delay_ms=20)
    assert feed(jitter, [1, 2]) == [[1], [2]]
    # 100 ms of silence from the network, then five packets at once, 4 before 3.
    burst = [jitter.push(s, s * TS_STEP, b"x", 0.140) for s in (4, 3, 5, 6, 7)]
    assert [seqs(f) for f in burst] == [[], [3, 4], [5], [6], [7]]
    assert jitter.counters.lost == 0


def test_timestamp_jumps_are_not_taken_for_jitter() -> None:
    jitter = AdaptiveJitter()
    feed(jitter, list(range(0, 50)))
    # The sender's timestamps jump (a new origin) while packets keep their pace.
    # 1.2 s back, then a continuous wrap of the 32-bit timestamp at seq 60.
    out = feed(jitter, list(range(50, 100)), base_ts=(1 << 32) - 60 * TS_STEP, t0=1.0)
    assert out == [[s] for s in range(50, 100)]
    out = feed(jitter, list(range(100, 150)), base_ts=123_456_789, t0=2.0)
    assert out == [[s] for s in range(100, 150)]
    assert jitter.jitter_s < 0.001 and jitter.target_s < 0.003


def test_jitter_is_estimated_rfc3550_style_and_the_target_is_clamped() -> None:
    jitter = AdaptiveJitter()
    for seq in range(500):
        wobble = 0.005 if seq % 2 else 0.0  # every other packet 5 ms late
        jitter.push(seq, seq * TS_STEP, b"x", seq * TICK + wobble)
    assert jitter.jitter_s == pytest.approx(0.005, rel=0.05)
    assert jitter.target_s == pytest.approx(0.015, rel=0.05)
    wild = AdaptiveJitter(max_delay_ms=60)
    for seq in range(500):
        wild.push(seq, seq * TS_STEP, b"x", seq * TICK + (0.3 if seq % 2 else 0.0))
    assert wild.target_s == pytest.approx(0.060)


def test_memory_is_bounded_and_a_wide_gap_is_given_up_at_once() -> None:
    jitter = AdaptiveJitter(capacity=8, max_delay_ms=60, min_delay_ms=60)
    assert feed(jitter, [1]) == [[1]]
    # 2 is missing; 3..10 fit (span 9 > 8 when 10 comes): the gap is given up.
    out = [seqs(jitter.push(s, s * TS_STEP, b"x", 0.02)) for s in range(3, 11)]
    assert out[:-1] == [[]] * 7 and out[-1] == list(range(3, 11))
    rng = random.Random(5)
    chaos = AdaptiveJitter(capacity=16)
    for i in range(5000):
        seq = (i + rng.randint(-20, 20)) % 65536
        chaos.push(seq, seq * TS_STEP, b"x", i * TICK + rng.random() * 0.05)
        assert chaos.held <= 16 and len(chaos._given_up) <= 120


def test_a_big_sequence_jump_restarts_the_stream() -> None:
    jitter = AdaptiveJitter(min_delay_ms=60)
    assert feed(jitter, [1, 2, 4]) == [[1], [2], []]
    # The sender restarted with a new sequence origin: 4 is flushed, then 30000 plays.
    assert seqs(jitter.push(30_000, 5, b"x", 0.1)) == [4, 30_000]
    assert seqs(jitter.push(30_001, 965, b"x", 0.12)) == [30_001]
    assert jitter.counters.resets == 1


def test_the_aiortc_adapter_returns_one_frame_and_keeps_the_rest_pending() -> None:
    now = [0.0]
    buffer = LowLatencyJitterBuffer(clock=lambda: now[0], min_delay_ms=20)

    def packet(seq: int) -> Any:
        return SimpleNamespace(sequence_number=seq, timestamp=seq * TS_STEP, _data=b"%d" % seq)

    assert buffer.add(packet(1))[1] == EncodedFrame(b"1", TS_STEP, 1)
    assert buffer.add(packet(3)) == (False, None)
    pli, frame = buffer.add(packet(2))
    assert not pli and frame is not None and frame.sequence == 2
    assert seqs(buffer.take_pending()) == [3] and buffer.take_pending() == []
    assert buffer.capacity == buffer.core.capacity


def _rtp(seq: int, timestamp: int) -> Any:
    from aiortc.rtp import RtpPacket

    return RtpPacket(payload_type=111, sequence_number=seq, timestamp=timestamp, payload=b"\xf8x")


def test_installed_in_a_real_receiver_frames_reach_the_decoder_queue_in_order() -> None:
    from aiortc import RTCRtpCodecParameters, RTCRtpReceiver

    transport: Any = SimpleNamespace(state="new")
    receiver = RTCRtpReceiver("audio", transport)
    video = RTCRtpReceiver("video", transport)
    assert install_low_latency_jitter(video) is None
    buffer = install_low_latency_jitter(receiver, min_delay_ms=20)
    assert isinstance(buffer, LowLatencyJitterBuffer)
    assert install_low_latency_jitter(receiver) is buffer
    with pytest.raises(TypeError):
        install_low_latency_jitter(object())

    # Stand in for receive(): a known codec and a "running" decoder thread.
    opus = RTCRtpCodecParameters(
        mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111
    )
    receiver._RTCRtpReceiver__codecs[111] = opus  # type: ignore[attr-defined]
    receiver._RTCRtpReceiver__decoder_thread = True  # type: ignore[attr-defined]
    decoder_queue: queue.Queue[Any] = receiver._RTCRtpReceiver__decoder_queue  # type: ignore[attr-defined]

    async def deliver() -> None:
        base = 4_000_000_000
        for seq in (65534, 0, 65535, 1):  # reordered across the sequence wrap
            timestamp = base + (seq + 2) % 65536 * TS_STEP
            await receiver._handle_rtp_packet(_rtp(seq, timestamp), 0)

    asyncio.run(deliver())
    got = []
    while not decoder_queue.empty():
        codec, frame = decoder_queue.get_nowait()
        assert codec is opus
        got.append((frame.sequence, frame.timestamp))
    # Timestamps were mapped by aiortc's mapper for every frame: 0, 960, 1920, 2880.
    assert got == [(65534, 0), (65535, 960), (0, 1920), (1, 2880)]
