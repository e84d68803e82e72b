"""``talas-mic-sim`` as a real process: the driver over a real pseudo-terminal and TCP.

Each test starts ``python -m hardware.simulator``, reads the target it prints,
attaches with :func:`hardware.driver.open_mic` and exercises it; unplugging is
killing the process.  mDNS runs on 127.0.0.1 only, under an instance name
unique to the run.  The meter model itself is tested without I/O at the end.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from statistics import mean
from typing import Any

import pytest
import trio

from hardware.driver import MicModule, open_mic
from hardware.errors import MicDisconnected, MicRejected
from hardware.messages import (
    FLOOR_DBFS,
    ErrorCode,
    LowCut,
    PartStatus,
    Pattern,
    Settings,
    Slot,
)
from hardware.simulator import DEFAULT_SETTINGS, SERVICE_TYPE, SimulatedModule, main

ROOT = Path(__file__).resolve().parent.parent
SIM = [sys.executable, "-m", "hardware.simulator", "--quiet"]


@asynccontextmanager
async def simulator(*args: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """A running simulator and the target it printed; killed on exit if still running."""
    process = await trio.lowlevel.open_process([*SIM, *args], stdout=subprocess.PIPE, cwd=ROOT)
    assert process.stdout is not None
    try:
        line = b""
        with trio.fail_after(10):
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "the simulator exited before printing its target"
                line += chunk
        yield process, line.decode().strip()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.move_on_after(5):
            await process.wait()


async def mean_rms(mic: MicModule, reports: int = 4) -> float:
    """Channel 1 RMS averaged over a fresh level stream (so it reflects current settings)."""
    await mic.stop_levels()
    await mic.start_levels(20)
    values = []
    for _ in range(reports):
        report = await mic.next_level()
        values.append(report.channels[0].rms_dbfs)
    await mic.stop_levels()
    return mean(values)


async def test_pty_session_exercises_every_command_then_unplug() -> None:
    with trio.fail_after(15):
        async with simulator("--pty", "--serial", "PTY-T1", "--seed", "1") as (process, path):
            assert path.startswith("/dev/") and await trio.Path(path).exists()
            async with open_mic(path, heartbeat=None) as mic:
                info = mic.last_info
                assert info is not None
                assert (info.serial, info.model, info.firmware) == ("PTY-T1", "Talas TM-2", "1.4.2")
                assert {part.slot: part.serial for part in info.parts} == {
                    Slot.CAPSULE: "C-PTY-T1",
                    Slot.PREAMP: "P-PTY-T1",
                    Slot.BODY: "B-PTY-T1",
                    Slot.FIRMWARE: "F-PTY-T1",
                }
                assert await mic.ping() < 0.5
                await mic.identify(2)
                assert await mic.settings() == DEFAULT_SETTINGS
                changed = await mic.set(
                    gain_db=50.0, pattern=Pattern.SUPERCARDIOID, low_cut=LowCut.HZ_80
                )
                assert changed == Settings(50.0, Pattern.SUPERCARDIOID, True, LowCut.HZ_80, False)
                result = await mic.self_test()
                assert result.passed and len(result.checks) == 4

                loud = await mean_rms(mic)
                await mic.set(gain_db=10.0)
                quiet = await mean_rms(mic)
                assert loud - quiet > 25, (loud, quiet)
                await mic.set(mute=True)
                await mic.start_levels(10)
                report = await mic.next_level()
                assert report.muted and all(c.peak_dbfs == FLOOR_DBFS for c in report.channels)

                process.kill()  # unplugged
                with trio.fail_after(1):
                    await mic.wait_disconnected()
                assert not mic.online
                with pytest.raises(MicDisconnected):
                    await mic.ping()
            # Leaving the block after an unplug is not an error.


async def test_pty_settings_survive_closing_and_reopening_the_port() -> None:
    with trio.fail_after(15):
        async with simulator("--pty") as (_, path):
            async with open_mic(path, heartbeat=None) as mic:
                wanted = await mic.set(gain_db=33.5, pattern=Pattern.FIGURE8, phantom=False)
                await mic.start_levels(10)  # left running: closing stops it (spec §2.1)
                await mic.next_level()
            async with open_mic(path, heartbeat=None) as mic:
                assert await mic.settings() == wanted
                await trio.sleep(0.05)
                await mic.ping()
                assert mic.levels_dropped == 0  # no reports from the old stream


async def test_silent_module_goes_offline_and_comes_back() -> None:
    with trio.fail_after(15):
        async with (
            simulator("--pty") as (process, path),
            open_mic(path, request_timeout=0.3, heartbeat=0.3) as mic,
        ):
            process.send_signal(signal.SIGSTOP)
            try:
                with trio.fail_after(2):
                    await mic.wait_online(False)
                assert not mic.disconnected
            finally:
                process.send_signal(signal.SIGCONT)
            with trio.fail_after(2):
                await mic.wait_online(True)
            assert (await mic.settings()) == DEFAULT_SETTINGS


async def test_tcp_sessions_share_settings_then_unplug() -> None:
    with trio.fail_after(15):
        async with simulator("--tcp", "127.0.0.1:0", "--serial", "TCP-T1") as (process, target):
            assert target.startswith("tcp://127.0.0.1:")
            async with (
                open_mic(target, heartbeat=None) as first,
                open_mic(target, heartbeat=None) as second,
            ):
                assert first.last_info is not None and first.last_info.serial == "TCP-T1"
                await first.set(gain_db=42.0, low_cut=LowCut.HZ_160)
                assert (await second.settings()).gain_db == 42.0
                await second.start_levels(10)
                assert len((await second.next_level()).channels) == 2
                assert (await first.self_test()).passed
                process.kill()
                with trio.fail_after(1):
                    await first.wait_disconnected()
                    await second.wait_disconnected()
                with pytest.raises(MicDisconnected):  # after the reports already received
                    while True:
                        await second.next_level()


async def test_failed_capsule_is_reported_by_the_self_test() -> None:
    with trio.fail_after(15):
        async with (
            simulator("--tcp", "127.0.0.1:0", "--fail", "capsule") as (_, target),
            open_mic(target, heartbeat=None) as mic,
        ):
            result = await mic.self_test()
            assert not result.passed
            statuses = {check.slot: check.status for check in result.checks}
            assert statuses[Slot.CAPSULE] is PartStatus.FAIL
            assert {s for s, v in statuses.items() if v is PartStatus.PASS} == {
                Slot.PREAMP,
                Slot.BODY,
                Slot.FIRMWARE,
            }
            assert result.checks[0].code == 0x0101 and "capsule" in result.checks[0].detail
            with pytest.raises(MicRejected) as caught:
                await mic.set(pattern=Pattern.OMNI)
            assert caught.value.code == ErrorCode.HARDWARE_FAULT
            assert await mean_rms(mic) < -90  # a dead capsule: preamp noise only


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signals_stop_the_simulator_cleanly(signum: int, tmp_path: Path) -> None:
    link = tmp_path / "mic0"
    with trio.fail_after(10):
        async with simulator("--pty", "--link", str(link)) as (process, path):
            assert str(await trio.Path(link).resolve()) == path
            process.send_signal(signum)
            assert await process.wait() == 0
    assert not link.exists() and not link.is_symlink()


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["--pty", "--tcp", "127.0.0.1:0"],
        ["--pty", "--mdns-interface", "127.0.0.1"],
        ["--tcp", "127.0.0.1"],
        ["--tcp", "127.0.0.1:0", "--mdns-interface", "eth0"],
        ["--pty", "--serial", "x" * 40],
        ["--pty", "--fail", "cable"],
    ):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 2, argv
    capsys.readouterr()


def test_environment_errors_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    assert main(["--pty", "--quiet", "--link", str(taken)]) == 1
    assert taken.is_file()  # not ours to remove
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["--tcp", f"127.0.0.1:{busy.getsockname()[1]}", "--quiet"]) == 1
    assert "talas-mic-sim:" in capsys.readouterr().err


async def test_mdns_advertisement_is_seen_and_leads_to_the_module() -> None:
    """Registration probes ~1.6 s; the browser runs on 127.0.0.1 only, never the real interfaces."""
    from zeroconf import IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    name = f"talas-test-{uuid.uuid4().hex[:10]}"
    full_name = f"{name}.{SERVICE_TYPE}"
    send, receive = trio.open_memory_channel[tuple[str, str]](100)
    token = trio.lowlevel.current_trio_token()

    def on_change(
        zeroconf: Any, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        token.run_sync_soon(send.send_nowait, (name, state_change.name))

    async def wait_for(state: str) -> None:
        async for seen, change in receive:
            if seen == full_name and change == state:
                return

    zc = await trio.to_thread.run_sync(
        lambda: Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    )
    try:
        browser = ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
        args = ("--tcp", "127.0.0.1:0", "--mdns-interface", "127.0.0.1", "--name", name)
        async with simulator(*args, "--serial", "MDNS-T1") as (process, target):
            with trio.fail_after(8):
                await wait_for("Added")
            info = await trio.to_thread.run_sync(
                lambda: zc.get_service_info(SERVICE_TYPE, full_name, timeout=3000)
            )
            assert info is not None
            txt = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            assert txt == {
                "serial": "MDNS-T1",
                "model": "Talas TM-2",
                "firmware": "1.4.2",
                "proto": "1",
            }
            assert info.parsed_addresses() == ["127.0.0.1"]
            assert target == f"tcp://127.0.0.1:{info.port}"
            async with open_mic(f"tcp://{info.parsed_addresses()[0]}:{info.port}") as mic:
                assert mic.last_info is not None and mic.last_info.serial == txt["serial"]
            process.send_signal(signal.SIGTERM)  # withdraws the advertisement
            with trio.fail_after(5):
                await wait_for("Removed")
                assert await process.wait() == 0
        browser.cancel()
    finally:
        await trio.to_thread.run_sync(zc.close)


# --------------------------------------------------------------------------- the meter model


def _mean_rms(module: SimulatedModule, channel: int = 0) -> float:
    return mean(module.levels(i, i * 0.05).channels[channel].rms_dbfs for i in range(200))


def test_meters_follow_the_settings() -> None:
    module = SimulatedModule(serial="MODEL-1", seed=5)
    base = _mean_rms(module)
    module.settings = Settings(44.0, Pattern.CARDIOID, True, LowCut.OFF, False)
    assert _mean_rms(module) - base == pytest.approx(20.0, abs=1.5)
    module.settings = Settings(44.0, Pattern.CARDIOID, True, LowCut.HZ_160, False)
    assert _mean_rms(module) < base + 20.0
    cardioid_rear = _mean_rms(module, 1) - _mean_rms(module, 0)
    module.settings = Settings(44.0, Pattern.OMNI, True, LowCut.OFF, False)
    omni_rear = _mean_rms(module, 1) - _mean_rms(module, 0)
    assert cardioid_rear < -15 and abs(omni_rear) < 1.5
    module.settings = Settings(44.0, Pattern.OMNI, False, LowCut.OFF, False)
    assert _mean_rms(module) < -75  # no phantom: the condenser capsule is dead
    module.settings = Settings(44.0, Pattern.OMNI, True, LowCut.OFF, True)
    report = module.levels(0, 0.0)
    assert report.muted and {c.rms_dbfs for c in report.channels} == {FLOOR_DBFS}


def test_meters_stay_in_range_at_full_gain() -> None:
    module = SimulatedModule(serial="MODEL-2", seed=6)
    module.settings = Settings(60.0, Pattern.OMNI, True, LowCut.OFF, False)
    for i in range(500):
        for channel in module.levels(i, i * 0.01).channels:
            assert FLOOR_DBFS <= channel.rms_dbfs <= channel.peak_dbfs <= 0.0
