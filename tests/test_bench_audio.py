"""``talas bench audio`` end to end on a short run: real WebRTC on loopback, a real idle node."""

from __future__ import annotations

import math

import pytest

from node.bench_audio import bench_audio, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.99) == 99.0
    assert percentile([], 0.5) == 0.0 and percentile([7.0], 0.99) == 7.0


def test_bench_audio_measures_both_jitter_buffers(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("TALAS_BENCH_CACHE", "TALAS_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    figures = bench_audio(1.5)
    out = capsys.readouterr().out
    assert figures["frames"] > 0 and figures["stock_frames"] > 0, out
    for key in ("p50_ms", "p99_ms", "stock_p50_ms", "stock_p99_ms", "cpu_per_stream"):
        assert math.isfinite(figures[key]) and figures[key] > 0, (key, out)
    assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert figures["idle_rss_mb"] > 0 and figures["idle_aiortc_loaded"] == 0, out
    assert "idle talas run RSS" in out and "goals p50" in out
    with pytest.raises(ValueError):
        bench_audio(0)
