"""The Nearby page and a mic module's panel in a real headless Chromium.

The fixtures come from tests.test_browser: this module gets its own
``talas run --no-discovery`` process, so no node or module is seen on the
LAN; a simulated module (``python -m hardware.simulator --tcp``) is attached
by its address instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, Route, expect

from tests.processes import clean_env
from tests.test_browser import (  # noqa: F401
    Node,
    _collect_problems,
    browser,
    context,
    node,
    playwright,
    sign_in,
)

ROOT = Path(__file__).parent.parent
SERIAL = "TM2-BROWSER1"


class Simulator:
    def __init__(self, process: subprocess.Popen[bytes], target: str) -> None:
        self.process, self.target = process, target

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hardware.simulator",
            "--tcp",
            "127.0.0.1:0",
            "--serial",
            SERIAL,
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=clean_env(),
    )
    sim = Simulator(process, "")
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().strip()  # the first line is the target
        assert re.fullmatch(r"tcp://127\.0\.0\.1:\d+", line), f"simulator said {line!r}"
        sim.target = line
        yield sim
    finally:
        sim.stop()


def _api_calls(page: Page, path: str) -> list[str]:
    calls: list[str] = []

    def seen(request: Request) -> None:
        if request.url.split("?")[0].endswith(path):
            calls.append(request.method)

    page.on("request", seen)
    return calls


def test_nearby_page_without_discovery_and_its_timer_stops_on_leaving(
    node: Node,  # noqa: F811
    context: BrowserContext,  # noqa: F811
    browser: Browser,  # noqa: F811
) -> None:
    page = context.new_page()
    problems = _collect_problems(page)
    page.clock.install()
    sign_in(page, node, "ada")
    polls = _api_calls(page, "/api/v1/nearby")
    page.click("#nav-nearby")
    expect(page).to_have_url(re.compile(r"#/nearby$"))
    expect(page.locator("#nav-nearby")).to_have_attribute("aria-current", "page")
    expect(page.locator("#nearby-off")).to_be_visible()
    expect(page.locator("#nearby-off")).to_contain_text("Discovery is off")
    expect(page.locator("#nearby-nodes li.nearby-node")).to_have_count(0)
    expect(page.locator("#nearby-mics li.nearby-mic")).to_have_count(0)
    expect(page.locator("#mic-list")).to_contain_text("No mic module attached")
    expect(page.locator("#mic-target")).to_have_attribute(
        "placeholder", "/dev/ttyACM0 or tcp://host:port"
    )
    assert polls == ["GET"]

    page.clock.run_for(3_100)  # the page refreshes every 3 s while it is open
    page.wait_for_timeout(300)
    assert len(polls) == 2, polls

    page.click("#nav-feed")
    expect(page).to_have_url(re.compile(r"#/feed$"))
    # The URL changes before the hashchange event runs the router, which stops the
    # page's timer: wait for the feed to be drawn before moving the clock.
    expect(page.locator("#nav-feed")).to_have_attribute("aria-current", "page")
    page.clock.run_for(10_000)  # left the page: its timer is gone
    page.wait_for_timeout(300)
    assert len(polls) == 2, polls

    page.click("#nav-nearby")  # back again: one timer, not two
    expect(page.locator("#nearby-off")).to_be_visible()
    page.clock.run_for(3_100)
    page.wait_for_timeout(300)
    assert len(polls) == 4, polls

    page.fill("#mic-target", "COM3")
    page.click("#mic-attach")
    expect(page.locator("#mic-error")).to_contain_text("tcp://HOST:PORT")
    assert problems == []

    guest = browser.new_context(viewport={"width": 1000, "height": 800})
    try:
        guest.set_default_timeout(10_000)
        gus = guest.new_page()
        sign_in(gus, node, "gus")
        gus.goto(node.url + "/#/nearby")
        expect(gus.locator("#nearby-off")).to_be_visible()
        expect(gus.locator("#mic-list")).to_be_visible()
        expect(gus.locator("#mic-target")).to_have_count(0)  # no `hardware` permission
    finally:
        guest.close()


GENUINE = "ab" * 32
FORGED = "cd" * 32
PAIRED = "ef" * 32


def _nearby(now_ms: int) -> dict[str, Any]:
    def seen(node_id: str, name: str, paired: bool) -> dict[str, Any]:
        return {
            "node_id": node_id,
            "name": name,
            "version": "0.1.0",
            "addresses": ["192.0.2.10"],
            "http_port": 8765,
            "p2p_port": 8766,
            "first_seen_ms": now_ms - 60_000,
            "last_seen_ms": now_ms - 4_000,
            "service": "x",
            "paired": paired,
        }

    return {
        "discovery": True,
        "nodes": [
            seen(GENUINE, "Studio <i>Süd</i>", False),
            seen(FORGED, "Impostor", False),
            seen(PAIRED, "Old friend", True),
        ],
        "mics": [
            {
                "serial": "TM2-LAN0001",
                "model": "Talas TM-2",
                "firmware": "1.4.2",
                "addresses": ["192.0.2.7"],
                "port": 7700,
                "first_seen_ms": now_ms - 5_000,
                "last_seen_ms": now_ms - 1_000,
                "service": "y",
            }
        ],
    }


def test_pairing_and_attaching_from_what_discovery_reports(
    node: Node,  # noqa: F811
    context: BrowserContext,  # noqa: F811
) -> None:
    """Discovery is off on the test node: its answers are played back by the browser."""
    page = context.new_page()
    problems = _collect_problems(page)
    sent: list[tuple[str, Any]] = []

    def fake(route: Route) -> None:
        request = route.request
        path = request.url.split("?")[0].split("/api/v1", 1)[1]
        body = request.post_data_json if request.method != "GET" else None
        if path == "/nearby":
            sent.append(("GET /nearby", None))
            route.fulfill(json=_nearby(int(time.time() * 1000)))
            return
        sent.append((f"{request.method} {path}", body))
        if path == f"/nearby/{GENUINE}/pair":
            route.fulfill(json={"node_id": GENUINE, "address": "ws://x", "code": "123 456"})
        elif path == f"/nearby/{GENUINE}/pair/confirm":
            route.fulfill(status=201, json={"address": "ws://192.0.2.10:8766"})
        elif path == f"/nearby/{FORGED}/pair":
            error = {"code": "key_mismatch", "message": "the node does not hold the key"}
            route.fulfill(status=409, json={"error": error})
        elif path == "/mics" and request.method == "POST":
            error = {"code": "bad_request", "message": "no module answers there"}
            route.fulfill(status=400, json={"error": error})
        else:
            route.fallback()

    page.clock.install()
    sign_in(page, node, "ada")
    page.route(re.compile(r".*/api/v1/(nearby|mics)(/.*)?(\?.*)?$"), fake)
    page.goto(node.url + "/#/nearby")
    nodes = page.locator("#nearby-nodes li.nearby-node")
    expect(nodes).to_have_count(3)
    expect(page.locator("#nearby-off")).to_be_hidden()
    genuine = nodes.filter(has_text="Studio <i>Süd</i>")
    expect(genuine).to_contain_text("192.0.2.10")
    expect(genuine).to_contain_text(re.compile(r"seen \d+s ago"))
    expect(nodes.filter(has_text="Old friend")).to_contain_text("paired")
    expect(nodes.filter(has_text="Old friend").locator(".nearby-pair")).to_have_count(0)
    assert page.locator("#nearby-nodes i").count() == 0  # the name is text, not markup

    # The 3 s refresh rebuilds the list, but keyboard focus stays on its button.
    genuine.locator(".nearby-pair").focus()
    before = sent.count(("GET /nearby", None))
    page.clock.run_for(3_100)
    page.wait_for_timeout(300)
    assert sent.count(("GET /nearby", None)) == before + 1
    expect(genuine.locator(".nearby-pair")).to_be_focused()

    nodes.filter(has_text="Impostor").locator(".nearby-pair").click()
    expect(page.locator("#pair-error")).to_have_text(
        "This advertisement is not genuine: do not pair."
    )
    expect(page.locator("#pair-code")).to_be_hidden()

    genuine.locator(".nearby-pair").click()
    expect(page.locator("#pair-code")).to_have_text("123 456")
    expect(page.locator("#pair-panel")).to_contain_text(
        "Check that the other node shows the same code"
    )
    expect(page.locator("#pair-error")).to_be_hidden()
    page.click("#pair-confirm")
    expect(page.locator("#pair-status")).to_contain_text("Paired with")
    expect(page.locator("#pair-code")).to_be_hidden()
    assert (f"POST /nearby/{GENUINE}/pair/confirm", {"code": "123 456"}) in sent

    advertised = page.locator("#nearby-mics li.nearby-mic")
    expect(advertised).to_have_count(1)
    expect(advertised).to_contain_text("tcp://192.0.2.7:7700")
    advertised.locator(".nearby-mic-attach").click()
    expect(page.locator("#mic-error")).to_contain_text("no module answers there")
    assert ("POST /mics", {"target": "tcp://192.0.2.7:7700"}) in sent
    assert problems == []


def test_attach_a_simulated_mic_meters_controls_passport_and_unplug(
    node: Node,  # noqa: F811
    context: BrowserContext,  # noqa: F811
    browser: Browser,  # noqa: F811
    simulator: Simulator,
) -> None:
    page = context.new_page()
    problems = _collect_problems(page)
    sign_in(page, node, "ada")
    page.goto(node.url + "/#/nearby")
    page.fill("#mic-target", simulator.target)
    page.click("#mic-attach")
    mic = page.locator("#mic-list li.mic")
    expect(mic).to_have_count(1)
    expect(mic.locator(".mic-state")).to_have_text("online")
    expect(mic).to_contain_text(SERIAL)
    expect(mic).to_contain_text(simulator.target)
    expect(page.locator("#mic-error")).to_be_hidden()

    mic.locator(f"a[href='#/mic/{SERIAL}']").click()
    expect(page).to_have_url(re.compile(f"#/mic/{SERIAL}$"))
    expect(page.locator("#mic-heading")).to_contain_text("Talas TM-2")
    expect(page.locator("#mic-heading")).to_contain_text(SERIAL)
    expect(page.locator("#mic-online")).to_have_text("online")
    expect(page.locator("#mic-parts tbody tr")).to_have_count(4)
    expect(page.locator("#mic-parts")).to_contain_text(f"C-{SERIAL}")
    expect(page.locator("#mic-identity")).to_contain_text("1.4.2")

    # Live meters: two channels, and the numbers move.
    meters = page.locator("#mic-meters .meter")
    expect(meters).to_have_count(2)
    peak = meters.first.locator(".meter-peak")
    expect(peak).to_contain_text("dBFS")
    first = peak.text_content()
    page.wait_for_function(
        "before => document.querySelector('#mic-meters .meter-peak').textContent !== before",
        arg=first,
        timeout=5_000,
    )
    width = meters.first.locator(".meter-fill").evaluate("e => e.style.width")
    assert re.fullmatch(r"\d+(\.\d+)?%", width), width

    # Gain: the slider sends only gain_db; the module's answer sticks across a reload.
    with page.expect_response(
        lambda r: r.request.method == "PATCH" and r.url.endswith(f"/api/v1/mics/{SERIAL}")
    ) as changed:
        page.locator("#mic-gain").fill("36.5")
    response = changed.value
    assert response.ok, response.text()
    assert response.request.post_data_json == {"gain_db": 36.5}
    assert response.json()["gain_db"] == 36.5
    expect(page.locator("#mic-gain-value")).to_have_text("36.5 dB")
    page.select_option("#mic-pattern", "omni")
    expect(page.locator("#mic-pattern")).to_have_value("omni")
    page.reload()
    expect(page.locator("#mic-online")).to_have_text("online")
    expect(page.locator("#mic-gain")).to_have_value("36.5")
    expect(page.locator("#mic-gain-value")).to_have_text("36.5 dB")
    expect(page.locator("#mic-pattern")).to_have_value("omni")
    expect(page.locator("#mic-gain")).to_be_enabled()

    page.click("#mic-selftest")
    result = page.locator("#mic-selftest-result")
    expect(result).to_contain_text("Self-test passed", timeout=5_000)
    expect(result.locator(".selftest-check[data-status='pass']")).to_have_count(4)

    entries = page.locator("#mic-passport li.passport-entry")
    expect(entries).to_have_count(1)
    expect(entries.first).to_contain_text("Registered")
    expect(entries.first).to_contain_text(f"P-{SERIAL}")
    page.select_option("#repair-action", "inspected")
    page.fill("#repair-notes", "Cleaned the <b>grille</b>")
    page.click("#repair-submit")
    expect(entries).to_have_count(2)
    expect(entries.last).to_contain_text("Inspected")
    expect(entries.last).to_contain_text("Cleaned the <b>grille</b>")

    # Usable on a phone while it is online (meters, controls, table).
    phone = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    try:
        phone.set_default_timeout(10_000)
        small = phone.new_page()
        sign_in(small, node, "ada")
        for route, ready in ((f"mic/{SERIAL}", "#mic-meters .meter"), ("nearby", "li.mic")):
            small.goto(f"{node.url}/#/{route}")
            expect(small.locator(ready).first).to_be_visible()
            scroll = small.evaluate("document.documentElement.scrollWidth")
            assert scroll <= 360, f"#/{route} scrolls sideways ({scroll}px)"
    finally:
        phone.close()

    # Unplug: the panel says offline with the reason and the controls go grey.
    simulator.stop()
    expect(page.locator("#mic-online")).to_have_text("offline", timeout=5_000)
    expect(page.locator("#mic-last-error")).to_be_visible()
    expect(page.locator("#mic-gain")).to_be_disabled()
    expect(page.locator("#mic-selftest")).to_be_disabled()
    expect(page.locator("#mic-meters .meter-peak").first).to_have_text("\u2013")  # no level
    expect(page.locator("#mic-control-error")).to_be_hidden()
    expect(page.locator("#mic-page-error")).to_be_hidden()
    page.click("#nav-nearby")
    expect(mic.locator(".mic-state")).to_have_text("offline")
    expect(mic.locator(".mic-last-error")).to_be_visible()
    expect(page.locator("#mic-list-error")).to_be_hidden()
    assert problems == []
