"""``talas bench jam``: a jam through a real host node, participants over real WebRTC.

A ``talas run`` host (its own process, p2p on, ICE pinned to 127.0.0.1)
hosts a jam; this process connects P scripted participants
(:mod:`node.live.participant`) through the web UI WebSocket, exactly as
browsers do.  Everyone sends audio all the time, as in a real jam, so the
host forwards P * (P - 1) streams.  One participant plays 100 ms tone bursts
every 400 ms; the others play quieter tones of their own.

Figures, for each P:

* **mouth-to-ear latency through the host**: from the moment a burst's first
  frame leaves the talker's track to the moment a listener's decoder yields
  the first loud frame, p50 and p99 over every burst and listener.  Both ends
  use the low-latency jitter buffer (:mod:`node.jitter`), as nodes do; the
  path is encode, send, host receive and jitter, forward, listener receive,
  jitter and decode.
* **host CPU per forwarded stream**: the host process's CPU time (utime +
  stime from /proc) over the window, divided by wall time and by the number
  of forwarded streams.  It includes receiving every participant (SRTP,
  jitter) and the sockets.
* **Opus encode per stream**, measured in the same run with PyAV: what the
  host would add per forwarded stream if it re-encoded for each listener
  (decoding and mixing not counted) instead of forwarding packets; printed
  as the CPU that would add and its ratio to what the host spends now.

Every participant runs in this one Python process (each on its own asyncio
thread, decoding what it hears, as a browser would): at 8 participants that
is 8 encoders and 56 decoders sharing one GIL, and the process's own CPU is
printed beside the host's.  Near a full core, the latency measured is the
simulated participants' queueing, not the host's forwarding.

The last line is JSON.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
import trio

from node.bench_audio import percentile, start_talas_run, stop_talas_run
from node.live.participant import Participant, jam_participant

SETTLE_S = 2.0
"""After every participant hears the talker, before the window opens."""
MATCH_S = 0.3
"""A listener's onset later than this after a burst is not that burst's."""
FREQS = [440.0, 550.0, 660.0, 770.0, 880.0, 990.0, 1100.0, 1210.0]
GOAL_P50_MS = 50.0
"""Two hops of the 25 ms one-way goal of ``talas bench audio``."""


@dataclass
class Round:
    participants: int
    streams: int
    latencies_ms: list[float]
    bursts: int
    host_cpu: float
    """Fraction of one core over the window."""
    clients_cpu: float
    """The same for this process, which runs every participant (encode, decode, measure)."""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def opus_encode_seconds_per_frame(frames: int = 500) -> float:
    """Seconds PyAV's libopus takes to encode one 20 ms 48 kHz mono frame (a tone)."""
    import math
    from array import array
    from fractions import Fraction

    import av

    encoder = av.CodecContext.create("libopus", "w")
    assert isinstance(encoder, av.AudioCodecContext)
    encoder.sample_rate = 48_000
    encoder.layout = "mono"
    encoder.format = av.AudioFormat("s16")
    encoder.bit_rate = 64_000
    encoder.time_base = Fraction(1, 48_000)
    encoder.open()
    pcm = array("h", (int(8000 * math.sin(2 * math.pi * 440 * i / 48_000)) for i in range(960)))
    made = []
    for index in range(frames):
        frame = av.AudioFrame(format="s16", layout="mono", samples=960)
        frame.planes[0].update(pcm.tobytes())
        frame.sample_rate = 48_000
        frame.pts = index * 960
        frame.time_base = Fraction(1, 48_000)
        made.append(frame)
    start = time.perf_counter()
    for frame in made:
        encoder.encode(frame)
    return (time.perf_counter() - start) / frames


async def _start_host(tmp: str) -> tuple[trio.Process, str, str]:
    process, output = await start_talas_run(
        tmp, "--p2p", "127.0.0.1:0", "--no-discovery", "--ice-address", "127.0.0.1"
    )
    line = next(x for x in output.splitlines() if "web UI" in x)
    url = line.split()[-1].rstrip("/")
    token = (Path(tmp) / "api-token").read_text().strip()
    return process, url, token


async def _round(url: str, token: str, pid: int, count: int, seconds: float) -> Round:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
        response = await client.post("/api/v1/jams", json={"title": f"bench {count}"})
        response.raise_for_status()
        jam = response.json()["id"]
        async with AsyncExitStack() as stack:
            people: list[Participant] = []
            for index in range(count):
                person = await stack.enter_async_context(
                    jam_participant(
                        url, token, FREQS[index], FREQS[:count],
                        bursts=index == 0, onsets=index > 0, low_latency=True,
                    )
                )  # fmt: skip
                await person.join(jam)
                people.append(person)
            async with trio.open_nursery() as nursery:
                for person in people:
                    nursery.start_soon(person.pump)
                bursts, host_cpu, clients_cpu, latencies = await _measure(people, pid, seconds)
                nursery.cancel_scope.cancel()
        await client.delete(f"/api/v1/jams/{jam}")
    return Round(count, count * (count - 1), sorted(latencies), bursts, host_cpu, clients_cpu)


async def _measure(
    people: list[Participant], pid: int, seconds: float
) -> tuple[int, float, float, list[float]]:
    """(bursts sent x listeners, host CPU and participants' CPU in cores, latencies in ms)."""
    listeners = people[1:]
    for listener in listeners:  # Python measuring every slot would load this process, not the host
        listener.watch = people[0].participant_id
    with trio.fail_after(30):
        while not all(p.hears(FREQS[0], 1) for p in listeners):  # noqa: ASYNC110
            await trio.sleep(0.05)
    await trio.sleep(SETTLE_S)
    talker = people[0]
    cpu_before, wall_before = _cpu_seconds(pid), time.perf_counter()
    own_before = _cpu_seconds(os.getpid())
    first_burst = len(talker.sent_onsets)
    await trio.sleep(seconds)
    wall = time.perf_counter() - wall_before
    host_cpu = (_cpu_seconds(pid) - cpu_before) / wall
    clients_cpu = (_cpu_seconds(os.getpid()) - own_before) / wall
    sent = talker.sent_onsets[first_burst:]
    latencies = []
    for listener in listeners:
        slot = listener.slot_of_participant(talker.participant_id)
        heard = listener.onsets.get(slot, []) if slot is not None else []
        for at in sent:
            match = next((t for t in heard if at <= t < at + MATCH_S), None)
            if match is not None:
                latencies.append((match - at) * 1000)
    return len(sent) * len(listeners), host_cpu, clients_cpu, latencies


async def _bench(
    seconds: float, sizes: list[int], out: Callable[[str], None]
) -> dict[str, float | int]:
    encode_s = await trio.to_thread.run_sync(opus_encode_seconds_per_frame)
    encode_cpu = encode_s / 0.02
    out(f"  opus encode (PyAV)          {encode_s * 1e6:7.1f} µs per 20 ms frame"
        f" = {encode_cpu * 100:.2f} % of a core per re-encoded listener")  # fmt: skip
    rounds = []
    with tempfile.TemporaryDirectory(prefix="talas-bench-jam-") as tmp:
        process, url, token = await _start_host(tmp)
        try:
            for count in sizes:
                result = await _round(url, token, process.pid, count, seconds)
                rounds.append(result)
                p50 = percentile(result.latencies_ms, 0.5)
                p99 = percentile(result.latencies_ms, 0.99)
                extra = result.streams * encode_cpu
                out(f"  {count} participants, {result.streams:2d} forwarded streams:"
                    f" latency p50 {p50:5.1f} ms p99 {p99:5.1f} ms"
                    f" ({len(result.latencies_ms)}/{result.bursts} bursts heard);"
                    f" host CPU {result.host_cpu * 100:5.1f} % of a core;"
                    f" an encode per listener would add {extra * 100:5.1f} %"
                    f" ({(result.host_cpu + extra) / result.host_cpu:.2f} x);"
                    f" participants' process {result.clients_cpu * 100:.0f} %")  # fmt: skip
        finally:
            await stop_talas_run(process)
    last = rounds[-1]
    p50 = percentile(last.latencies_ms, 0.5)
    verdict = "ok" if p50 <= GOAL_P50_MS else "OVER"
    out(f"  mouth-to-ear p50 at {last.participants} participants {p50:.1f} ms,"
        f" goal <= {GOAL_P50_MS:.0f} ms (two hops of the one-way goal): {verdict}")  # fmt: skip
    figures: dict[str, float | int] = {"seconds": seconds}
    figures["encode_us_per_frame"] = round(encode_s * 1e6, 1)
    for r in rounds:
        key = f"p{r.participants}"
        figures[f"{key}_latency_p50_ms"] = round(percentile(r.latencies_ms, 0.5), 1)
        figures[f"{key}_latency_p99_ms"] = round(percentile(r.latencies_ms, 0.99), 1)
        figures[f"{key}_heard"] = len(r.latencies_ms)
        figures[f"{key}_bursts"] = r.bursts
        figures[f"{key}_host_cpu"] = round(r.host_cpu, 4)
        figures[f"{key}_streams"] = r.streams
        figures[f"{key}_clients_cpu"] = round(r.clients_cpu, 3)
        figures[f"{key}_reencode_extra_cpu"] = round(r.streams * encode_cpu, 4)
        figures[f"{key}_reencode_over_forward"] = round(
            (r.host_cpu + r.streams * encode_cpu) / r.host_cpu, 3
        )
    figures["cpus"] = os.cpu_count() or 1
    return figures


def bench_jam(seconds: float = 8.0, sizes: tuple[int, ...] = (2, 4, 8)) -> dict[str, float | int]:
    """Measure, print human-readable lines as it goes, and return the figures."""
    if not seconds > 0 or not sizes or min(sizes) < 2 or max(sizes) > 8:
        raise ValueError("need seconds > 0 and 2 to 8 participants per round")
    print(f"jam: a host node forwarding every participant to every other, over WebRTC on"
          f" loopback; {', '.join(map(str, sizes))} participants, {seconds:g} s each",
          flush=True)  # fmt: skip
    figures: dict[str, float | int] = trio.run(
        _bench, seconds, list(sizes), partial(print, flush=True)
    )
    return figures
