"""``talas bench jam`` end to end on a short run: a real host node, real WebRTC participants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from node.bench_jam import bench_jam, opus_encode_seconds_per_frame
from tests.processes import clean_env

ROOT = Path(__file__).resolve().parents[1]


def test_the_encode_reference_is_measured() -> None:
    assert 0 < opus_encode_seconds_per_frame(50) < 0.02  # faster than real time


def test_bench_jam_prints_figures_and_one_json_line() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.cli",
            "bench",
            "jam",
            "--seconds",
            "1.5",
            "--participants",
            "2",
        ],
        capture_output=True,
        env=clean_env(),
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["bench"] == "jam" and figures["p2_streams"] == 2
    assert figures["p2_bursts"] > 0 and 0 < figures["p2_heard"] <= figures["p2_bursts"], out
    assert 0 < figures["p2_latency_p50_ms"] <= figures["p2_latency_p99_ms"] < 300
    assert figures["p2_host_cpu"] > 0 and figures["p2_reencode_over_forward"] > 1
    assert "forwarded streams" in out


def test_bench_jam_refuses_impossible_sizes() -> None:
    for sizes in ((1,), (9,), ()):
        with pytest.raises(ValueError):
            bench_jam(1.0, sizes)
