"""Mic modules attached to a real node, against the simulator over a pty and TCP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from node.mics import check_target, parse_settings
from tests.webapp import raw_exchange, web_node

SIM = [sys.executable, "-m", "hardware.simulator", "--quiet"]


@asynccontextmanager
async def simulator(*args: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """A running ``talas-mic-sim``; yields (process, the target it prints)."""
    process = await trio.lowlevel.open_process([*SIM, *args], stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        with trio.fail_after(10):
            line = b""
            while not line.endswith(b"\n"):
                chunk = await process.stdout.receive_some(1)
                assert chunk, "simulator exited early"
                line += chunk
        yield process, line.decode().strip()
    finally:
        process.kill()
        with trio.move_on_after(5):
            await process.wait()
        await process.stdout.aclose()


async def wait_for(client: httpx.AsyncClient, path: str, done: Callable[[Any], bool]) -> Any:
    while True:
        found = (await client.get(path)).json()
        if done(found):
            return found
        await trio.sleep(0.05)


async def test_attach_over_a_pty_control_levels_and_passport(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web, simulator("--pty", "--serial", "TM1-PTY-1") as (_, path):
        await web.add_user("ada", "owner")
        await web.add_user("gus", "guest")
        with trio.fail_after(40):
            async with web.signed_in("ada") as ada:
                made = await ada.post("/api/v1/mics", json={"target": path})
                assert made.status_code == 201, made.text
                mic = made.json()
                assert mic["online"] is True and mic["serial"] == "TM1-PTY-1"
                slots = {p["slot"] for p in mic["info"]["parts"]}
                assert slots == {"capsule", "preamp", "body", "firmware"}

                changed = await ada.patch(
                    "/api/v1/mics/TM1-PTY-1",
                    json={"gain_db": 42.5, "pattern": "omni", "mute": True, "low_cut_hz": 80},
                )
                assert changed.status_code == 200, changed.text
                assert changed.json()["gain_db"] == 42.5 and changed.json()["pattern"] == "omni"
                bad = await ada.patch("/api/v1/mics/TM1-PTY-1", json={"gain_db": 99})
                assert bad.status_code == 400
                unknown = await ada.patch("/api/v1/mics/TM1-PTY-1", json={"volume": 3})
                assert unknown.status_code == 400
                shown = (await ada.get("/api/v1/mics/TM1-PTY-1")).json()
                assert shown["settings"]["gain_db"] == 42.5  # the refused change changed nothing
                blink = await ada.post("/api/v1/mics/TM1-PTY-1/identify", json={})
                assert blink.status_code == 204
                test = await ada.post("/api/v1/mics/TM1-PTY-1/self-test", json={})
                assert test.json()["passed"] is True

                levels = await wait_for(
                    ada, "/api/v1/mics/TM1-PTY-1", lambda m: m["levels"] is not None
                )
                assert levels["levels"]["muted"] is True
                # Server-sent events, read off a raw connection (a stream never ends).
                head = await raw_exchange(
                    web.url,
                    b"GET /api/v1/mics/TM1-PTY-1/levels HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Authorization: Bearer " + web.node.api_token.encode() + b"\r\n\r\n",
                    until=b"\n\n",
                )
                assert b"text/event-stream" in head
                event = json.loads(head.split(b"data: ", 1)[1].split(b"\n", 1)[0])
                assert event["serial"] == "TM1-PTY-1" and event["online"] is True

                passport = (await ada.get("/api/v1/mics/TM1-PTY-1/passport")).json()["items"]
                assert [e["kind"] for e in passport] == ["hardware"]
                assert passport[0]["body"]["serial"] == "TM1-PTY-1"
                manual = await ada.post(
                    "/api/v1/mics/TM1-PTY-1/passport",
                    json={"action": "inspected", "notes": "grille cleaned"},
                )
                assert manual.status_code == 201, manual.text
                assert manual.json()["body"]["by"] == "ada"

            async with web.signed_in("gus") as gus:
                assert (await gus.get("/api/v1/mics")).status_code == 200
                refused = await gus.patch("/api/v1/mics/TM1-PTY-1", json={"mute": False})
                assert refused.status_code == 403


async def test_a_module_that_goes_away_is_offline_then_back_not_fatal(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web:
        await web.add_user("ada", "owner")
        with trio.fail_after(60):
            async with (
                simulator("--tcp", "127.0.0.1:0", "--serial", "TM1-TCP-1") as (_, target),
                web.signed_in("ada") as ada,
            ):
                made = await ada.post("/api/v1/mics", json={"target": target})
                assert made.json()["online"] is True
            # The simulator is gone: offline with a reason, and the node still answers.
            async with web.signed_in("ada") as ada:
                gone = await wait_for(ada, "/api/v1/mics/TM1-TCP-1", lambda m: not m["online"])
                assert gone["last_error"]
                blocked = await ada.patch("/api/v1/mics/TM1-TCP-1", json={"mute": True})
                assert blocked.status_code == 409
                assert blocked.json()["error"]["code"] == "offline"
                assert (await ada.get("/api/v1/feed")).status_code == 200
                port = target.rsplit(":", 1)[1]
                async with simulator("--tcp", f"127.0.0.1:{port}", "--serial", "TM1-TCP-1"):
                    back = await wait_for(ada, "/api/v1/mics/TM1-TCP-1", lambda m: m["online"])
                    assert back["serial"] == "TM1-TCP-1"
                    entries = (await ada.get("/api/v1/mics/TM1-TCP-1/passport")).json()["items"]
                    assert [e["kind"] for e in entries] == ["hardware"]  # nothing changed
                assert (await ada.delete("/api/v1/mics/TM1-TCP-1")).status_code == 204
                assert (await ada.get("/api/v1/mics")).json()["items"] == []


async def test_attach_refuses_bad_targets_and_unreachable_ones_stay_offline(
    tmp_path: Path,
) -> None:
    async with web_node(tmp_path) as web:
        await web.add_user("ada", "owner")
        with trio.fail_after(30):
            async with web.signed_in("ada") as ada:
                for target in ("", "../../etc/passwd", "http://x", "tcp://host", "tcp://h:99x"):
                    refused = await ada.post("/api/v1/mics", json={"target": target})
                    assert refused.status_code == 400, target
                missing = await ada.post("/api/v1/mics", json={"target": "/dev/talas-none-here"})
                assert missing.status_code == 201
                assert missing.json()["online"] is False and missing.json()["last_error"]
                assert (await ada.get("/api/v1/mics/nope")).status_code == 404


def test_pure_checks() -> None:
    assert check_target("tcp://127.0.0.1:4000") == "tcp://127.0.0.1:4000"
    assert check_target("/dev/ttyACM0") == "/dev/ttyACM0"
    assert parse_settings({"phantom": True})["phantom"] is True
    for bad in ({}, {"gain_db": "loud"}, {"gain_db": True}, {"pattern": "hyper"},
                {"low_cut_hz": 100}, {"mute": "yes"}):  # fmt: skip
        try:
            parse_settings(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad}")


async def test_a_swapped_capsule_and_new_firmware_enter_the_passport(tmp_path: Path) -> None:
    """Reattached after a repair, the module's own report becomes signed repair events."""
    async with web_node(tmp_path) as web:
        await web.add_user("ada", "owner")
        with trio.fail_after(60):
            async with web.signed_in("ada") as ada:
                async with simulator("--tcp", "127.0.0.1:0", "--serial", "TM1-REP-1") as (_, t):
                    assert (await ada.post("/api/v1/mics", json={"target": t})).status_code == 201
                port = t.rsplit(":", 1)[1]
                repaired = ("--capsule-serial", "C-NEW-7", "--firmware", "2.0.0")
                async with simulator(
                    "--tcp", f"127.0.0.1:{port}", "--serial", "TM1-REP-1", *repaired
                ):
                    entries = await wait_for(
                        ada,
                        "/api/v1/mics/TM1-REP-1/passport",
                        lambda p: len(p["items"]) >= 3,
                    )
                kinds = [(e["kind"], e["body"].get("action")) for e in entries["items"]]
                assert kinds == [
                    ("hardware", None),
                    ("repair", "part-swapped"),
                    ("repair", "firmware-updated"),
                ]
                swap, firmware = entries["items"][1]["body"], entries["items"][2]["body"]
                assert swap["removed"]["serial"] == "C-TM1-REP-1"
                assert swap["installed"]["serial"] == "C-NEW-7"
                assert firmware["firmware_to"] == "2.0.0" and firmware["by"] == "ada"
                collective = web.node.identity.author_info("default").public.hex()
                assert {e["author"] for e in entries["items"]} == {collective}
                # The module can be offered with its passport.
                offer = await ada.post(
                    "/api/v1/offers",
                    json={"title": "Talas M1, new capsule", "category": "gear",
                          "offered": "mic", "wanted": "preamp", "condition": "good",
                          "hardware": "TM1-REP-1"},
                )  # fmt: skip
                assert offer.status_code == 201, offer.text


async def test_hot_plug_lists_ports_and_a_replugged_module_comes_back(tmp_path: Path) -> None:
    ports = tmp_path / "ports"
    ports.mkdir()
    link = str(ports / "ttyTALAS0")
    async with web_node(tmp_path, serial_directories=(str(ports),)) as web:
        await web.add_user("ada", "owner")
        with trio.fail_after(60):
            async with web.signed_in("ada") as ada:
                assert (await ada.get("/api/v1/mics/ports")).json()["items"] == []
                async with simulator("--pty", "--link", link, "--serial", "TM1-HOT-1"):
                    listed = await wait_for(ada, "/api/v1/mics/ports", lambda p: p["items"])
                    assert listed["items"] == [{"path": link, "attached": False}]
                    made = await ada.post("/api/v1/mics", json={"target": link})
                    assert made.json()["online"] is True
                # Unplugged: the port disappears and the module is offline.
                await wait_for(ada, "/api/v1/mics/ports", lambda p: not p["items"])
                await wait_for(ada, "/api/v1/mics/TM1-HOT-1", lambda m: not m["online"])
                await trio.Path(link).unlink(missing_ok=True)  # as the OS drops the device node
                async with simulator("--pty", "--link", link, "--serial", "TM1-HOT-1"):
                    await wait_for(ada, "/api/v1/mics/TM1-HOT-1", lambda m: m["online"])
                    ports_now = (await ada.get("/api/v1/mics/ports")).json()["items"]
                    assert ports_now == [{"path": link, "attached": True}]
