"""``talas bench web`` end to end on a tiny store: seeding, a real server, the load client."""

from __future__ import annotations

import pytest

from node.bench_web import bench_web


def test_bench_web_measures_the_feed_of_a_real_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("TALAS_BENCH_CACHE", "TALAS_PASSPHRASE"):
        monkeypatch.delenv(name, raising=False)
    figures = bench_web(1000, seconds=0.5, connections=2)
    out = capsys.readouterr().out
    # 10 authors, one followed: 89 posts (its 100 events less a profile and 10 likes).
    assert figures["events"] == 1000 and figures["feed_posts"] == 89
    assert figures["errors"] == 0, out
    assert figures["requests"] > 0 and figures["trivial_per_s"] > 0
    assert 0 < figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert "goals: p99" in out
