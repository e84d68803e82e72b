"""``talas nearby`` and ``talas mic`` against a running ``talas run`` and the simulator."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from tests.processes import running_node, talas_async
from tests.test_mics import simulator


async def _talas(data: Path, *args: str) -> tuple[int, str, str]:
    from tests.processes import TALAS, clean_env

    with trio.fail_after(30):
        result = await trio.run_process(
            [*TALAS, "--data", str(data), *args],
            capture_stdout=True,
            capture_stderr=True,
            env=clean_env(),
            check=False,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


async def test_mic_and_nearby_commands(tmp_path: Path) -> None:
    data = tmp_path / "n"
    code, _, err = await _talas(data, "mic", "list")
    assert code == 2 and "no node is running" in err
    async with running_node(data), simulator("--pty", "--serial", "TM1-CLI-1") as (_, path):
        assert "discovery is off" in await talas_async(data, "nearby")
        code, out, err = await _talas(data, "mic", "attach", path)
        assert code == 0, err
        assert json.loads(out)["online"] is True
        code, out, _ = await _talas(data, "mic", "list")
        assert "TM1-CLI-1" in out and "online" in out
        code, out, err = await _talas(
            data, "mic", "set", "TM1-CLI-1", "--gain", "30", "--pattern", "figure8", "--mute", "on"
        )
        assert code == 0, err
        assert json.loads(out)["pattern"] == "figure8" and json.loads(out)["mute"] is True
        code, _, err = await _talas(data, "mic", "set", "TM1-CLI-1", "--gain", "75")
        assert code == 1 and "gain" in err
        code, out, _ = await _talas(data, "mic", "self-test", "TM1-CLI-1")
        assert code == 0 and json.loads(out)["passed"] is True
        code, out, err = await _talas(
            data, "mic", "passport", "TM1-CLI-1", "--action", "repaired", "--note", "new grille"
        )
        assert code == 0, err
        lines = out.strip().splitlines()
        assert "registered" in lines[0] and "repaired by (node): new grille" in lines[1]
        code, out, _ = await _talas(data, "mic", "show", "TM1-CLI-1")
        assert json.loads(out)["settings"]["gain_db"] == 30
        code, _, err = await _talas(data, "mic", "show", "TM1-NOPE")
        assert code == 1 and "no attached mic" in err
        code, _, _ = await _talas(data, "mic", "detach", "TM1-CLI-1")
        assert code == 0
