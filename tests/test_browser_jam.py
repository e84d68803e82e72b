"""The jam page in real headless Chromium: two federating ``talas run`` processes.

Node A hosts a jam; node B joins it by its code.  One browser context is
signed in to each node (cookies ignore ports, so one context per node) and
each page joins with Chromium's fake microphone, which beeps.  That B's page
receives A's browser audio is checked at the RTP level: an init script (test
instrumentation only, the page does not know it) keeps the page's peer
connections, and the test reads ``totalAudioEnergy`` of the inbound stream on
the receive slot that B's roster gives to A's participant; the other slots
stay silent.  Muting on A makes that slot's level meter on B fall to zero and
unmuting brings it back, which ties the audio to A's microphone.

ICE stays on this machine: the nodes gather on 127.0.0.1 only
(``--ice-address``), so every candidate pair ends on loopback; Chromium may use
loopback and announces raw addresses instead of mDNS host names, so nothing is
ever resolved or sent over mDNS.  The not_federating explanation is
checked on tests.test_browser's ``--no-p2p`` node.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect

from tests.processes import TALAS, clean_env, ok, talas
from tests.test_browser import (  # noqa: F401
    CHROMIUM,
    FLAGS,
    PASSWORD,
    Node,
    _collect_problems,
    node,
    playwright,
    sign_in,
)

MEDIA_FLAGS = [
    *FLAGS,
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
TITLE = "Friday <b>jam</b>"
JAM_URL = re.compile(r"#/jam/([0-9a-f]{32})$")

# Test instrumentation, injected before the page's own scripts (CSP does not
# apply to init scripts): remember every peer connection and microphone stream.
INSTRUMENT = """
(() => {
  window.__pcs = [];
  window.__streams = [];
  const Native = window.RTCPeerConnection;
  if (Native) {
    window.RTCPeerConnection = class extends Native {
      constructor(...args) { super(...args); window.__pcs.push(this); }
    };
  }
  const devices = navigator.mediaDevices;
  if (devices) {
    const original = devices.getUserMedia.bind(devices);
    devices.getUserMedia = async (constraints) => {
      const stream = await original(constraints);
      window.__streams.push(stream);
      return stream;
    };
  }
})();
"""
# Inbound audio energy per receive slot of the page's latest peer connection.
SLOT_ENERGY = """async () => {
  const pc = window.__pcs[window.__pcs.length - 1];
  if (!pc) return [];
  const energies = [];
  for (const transceiver of pc.getTransceivers()) {
    let energy = 0;
    (await transceiver.receiver.getStats()).forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') energy = s.totalAudioEnergy || 0;
    });
    energies.push(energy);
  }
  return energies;
}"""
ENERGY = 0.01
"""A slot's totalAudioEnergy (level squared times seconds) only sound reaches: silence stays 0."""


class Federating(Node):
    """A running ``talas run`` with its p2p listener: node id, p2p address, owner token."""

    def __init__(
        self, data: Path, process: subprocess.Popen[bytes], url: str, printed: str
    ) -> None:
        super().__init__(data, process, url)
        self.node_id = re.findall(r"node ([0-9a-f]{64})", printed)[0]
        self.p2p = re.findall(r"^\s*p2p\s+(\S+)", printed, re.MULTILINE)[0]
        self.token = (data / "api-token").read_text().strip()


def _start(data: Path, name: str, users: dict[str, str]) -> tuple[Path, subprocess.Popen[bytes]]:
    ok(talas(data, "init", "--name", name))
    for user, role in users.items():
        ok(talas(data, "user", "add", user, "--role", role, stdin=f"{PASSWORD}\n".encode()))
    log = data.parent / f"{name}.log"
    with log.open("wb") as out:  # a file, not a pipe: nobody has to keep reading it
        process = subprocess.Popen(
            [
                *TALAS, "--data", str(data), "run",
                "--http", "127.0.0.1:0", "--p2p", "127.0.0.1:0",
                "--no-discovery", "--ice-address", "127.0.0.1",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=clean_env(),
        )  # fmt: skip
    return log, process


def _started(data: Path, log: Path, process: subprocess.Popen[bytes]) -> Federating:
    deadline = time.monotonic() + 30
    printed = ""
    while "web UI" not in printed:
        assert process.poll() is None, f"node exited: {log.read_text()}"
        assert time.monotonic() < deadline, f"node did not start: {printed}"
        time.sleep(0.05)
        printed = log.read_text()
    return Federating(data, process, re.findall(r"web UI\s+(\S+)", printed)[0], printed)


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _links(talas_node: Federating) -> set[str]:
    response = httpx.get(
        talas_node.url + "/api/v1/peers",
        headers={"Authorization": f"Bearer {talas_node.token}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return {str(link.get("node_id")) for link in response.json()["links"]}


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federating, Federating]]:
    """Nodes A (users ada and cy) and B (user bob), B linked to A."""
    root = tmp_path_factory.mktemp("jam")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        started = []
        for name, users in (("a", {"ada": "owner", "cy": "member"}), ("b", {"bob": "owner"})):
            log, process = _start(root / name, f"Studio {name.upper()}", users)
            processes.append(process)
            started.append((root / name, log, process))
        a, b = (_started(*each) for each in started)  # both start at once
        added = httpx.post(
            b.url + "/api/v1/peers",
            json={"address": a.p2p, "node_id": a.node_id},
            headers={"Authorization": f"Bearer {b.token}"},
            timeout=5,
        )
        assert added.status_code == 201, added.text
        deadline = time.monotonic() + 20
        while not (a.node_id in _links(b) and b.node_id in _links(a)):
            assert time.monotonic() < deadline, "B never linked to A"
            time.sleep(0.1)
        yield a, b
    finally:
        for process in processes:
            _stop(process)


@pytest.fixture(scope="module")
def media_browser(playwright: Playwright) -> Iterator[Browser]:  # noqa: F811
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=MEDIA_FLAGS, timeout=30_000
    )
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def contexts(media_browser: Browser) -> Iterator[list[BrowserContext]]:
    made: list[BrowserContext] = []

    def new() -> BrowserContext:
        context = media_browser.new_context(
            viewport={"width": 1000, "height": 800},
            permissions=["microphone", "clipboard-read", "clipboard-write"],
        )
        context.set_default_timeout(10_000)
        context.add_init_script(INSTRUMENT)
        made.append(context)
        return context

    try:
        yield [new(), new(), new()]
    finally:
        for context in made:
            context.close()


@pytest.fixture
def transcript(pair: tuple[Federating, Federating]) -> Iterator[list[str]]:
    """The pages' console lines; printed with the nodes' logs after the test (shown if it fails)."""
    lines: list[str] = []
    yield lines
    print("\n".join(lines))
    for log in sorted(pair[0].data.parent.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text()[-4000:]}")


def _record(page: Page, tag: str, transcript: list[str]) -> None:
    page.on("console", lambda message: transcript.append(f"{tag}: {message.text}"))
    page.on("requestfailed", lambda request: transcript.append(f"{tag}: failed {request.url}"))


def row(name: str) -> str:
    return f'#jam-participants li.jam-participant[data-name="{name}"]'


def level_at_least(page: Page, name: str, level: float) -> None:
    """Wait (bounded) until ``name``'s level meter on ``page`` reaches ``level``."""
    page.wait_for_function(
        "([sel, level]) => Number(document.querySelector(sel)?.dataset.level) >= level",
        arg=[row(name) + " .jam-meter", level],
        polling=50,
        timeout=15_000,
    )


def level_zero(page: Page, name: str) -> None:
    page.wait_for_function(
        "sel => document.querySelector(sel)?.dataset.level === '0.000'",
        arg=row(name) + " .jam-meter",
        polling=50,
        timeout=15_000,
    )


def slot_energy(page: Page) -> list[float]:
    energies: list[float] = page.evaluate(SLOT_ENERGY)
    return energies


def test_a_browser_on_b_hears_a_browser_on_a_through_a_jam_joined_by_code(
    pair: tuple[Federating, Federating],
    contexts: list[BrowserContext],
    transcript: list[str],
) -> None:
    a, b = pair
    page_a, page_b, page_c = (context.new_page() for context in contexts)
    problems = [_collect_problems(page) for page in (page_a, page_b, page_c)]
    for tag, page in zip("abc", (page_a, page_b, page_c), strict=True):
        _record(page, tag, transcript)
    sign_in(page_a, a, "ada")
    sign_in(page_b, b, "bob")
    sign_in(page_c, a, "cy")

    # A creates the jam; its page shows the code to share, and Copy copies it.
    page_a.click("#nav-jam")
    expect(page_a).to_have_url(re.compile(r"#/jam$"))
    page_a.fill("#jam-title", TITLE)
    page_a.click("#jam-create")
    expect(page_a).to_have_url(JAM_URL)
    found = JAM_URL.search(page_a.url)
    assert found
    jam = found.group(1)
    code = f"{a.node_id}/{jam}"
    expect(page_a.locator("#jam-heading")).to_have_text(TITLE)
    expect(page_a.locator("#jam-host")).to_have_text("Hosted here")
    expect(page_a.locator("#jam-code")).to_have_text(code)
    expect(page_a.locator("#jam-end")).to_have_text("End jam")
    page_a.click("#jam-copy")
    expect(page_a.locator("#jam-status")).to_contain_text("copied")
    assert page_a.evaluate("navigator.clipboard.readText()") == code

    # B joins it by that code through its own page.
    page_b.goto(b.url + "/#/jam")
    page_b.fill("#jam-code-input", code)
    page_b.click("#jam-join-code")
    expect(page_b).to_have_url(f"{b.url}/#/jam/{jam}")
    expect(page_b.locator("#jam-heading")).to_have_text(TITLE)  # the title comes from A
    expect(page_b.locator("#jam-host")).to_contain_text("Hosted by")
    expect(page_b.locator("#jam-state")).to_contain_text("started")  # not "connecting…"
    expect(page_b.locator("#jam-end")).to_have_text("Leave jam")
    expect(page_b.locator("#jam-code")).to_have_text(code)
    page_b.set_viewport_size({"width": 360, "height": 740})  # a phone: the long code wraps
    width = page_b.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the jam page scrolls sideways on a phone ({width}px)"
    page_b.set_viewport_size({"width": 1000, "height": 800})

    # cy (on A) joins first and mutes at once, before bob is in: silence on its slot.
    page_c.goto(f"{a.url}/#/jam/{jam}")
    page_c.click("#jam-join-audio")
    page_c.click("#jam-mute")
    expect(page_c.locator("#jam-mute")).to_have_text("Unmute")
    expect(page_c.locator(row("cy"))).to_have_attribute("data-muted", "true")
    # Then ada (on A) and bob (on B) join with audio; the fake microphones beep.
    page_a.click("#jam-join-audio")
    expect(page_a.locator("#jam-leave-audio")).to_be_visible()
    expect(page_a.locator(row("ada"))).to_have_attribute("data-self", "true")
    page_b.click("#jam-join-audio")
    expect(page_b.locator("#jam-leave-audio")).to_be_visible()
    expect(page_b.locator("#jam-participants li.jam-participant")).to_have_count(3)
    ada_on_b, cy_on_b = page_b.locator(row("ada")), page_b.locator(row("cy"))
    for remote in (ada_on_b, cy_on_b):
        expect(remote).to_have_attribute("data-slot", re.compile(r"^[0-7]$"))
        expect(remote).to_have_attribute("data-node", a.node_id)
        expect(remote.locator(".jam-kind")).to_have_text("mic")
    expect(ada_on_b).to_have_attribute("data-muted", "false")
    expect(cy_on_b).to_have_attribute("data-muted", "true")
    expect(page_b.locator(row("bob"))).to_have_attribute("data-self", "true")
    expect(page_a.locator(row("bob"))).to_have_attribute("data-node", b.node_id)
    slot = int(ada_on_b.get_attribute("data-slot") or "")
    cy_slot = int(cy_on_b.get_attribute("data-slot") or "")
    assert slot != cy_slot

    # B's browser receives A's browser audio on the slot B's roster names, and only there.
    page_b.wait_for_function(
        f"({SLOT_ENERGY})().then((e) => (e[{slot}] || 0) > {ENERGY})", polling=100, timeout=15_000
    )
    energies = slot_energy(page_b)
    assert sum(e for i, e in enumerate(energies) if i != slot) < ENERGY / 10, energies
    # The meters move: ada's on B's page (cy's stays still), bob's and ada's own on A's page.
    level_at_least(page_b, "ada", 0.5)
    assert cy_on_b.locator(".jam-meter").get_attribute("data-level") == "0.000"
    level_at_least(page_a, "bob", 0.5)
    level_at_least(page_a, "ada", 0.5)

    # Mute on A: B's roster says so and ada's meter there falls silent; unmute brings it back.
    page_a.click("#jam-mute")
    expect(page_a.locator("#jam-mute")).to_have_text("Unmute")
    expect(ada_on_b).to_have_attribute("data-muted", "true")
    expect(ada_on_b.locator(".badge-muted")).to_have_text("muted")
    level_zero(page_b, "ada")
    level_zero(page_a, "ada")
    page_a.click("#jam-mute")
    expect(page_a.locator("#jam-mute")).to_have_text("Mute")
    expect(ada_on_b).to_have_attribute("data-muted", "false")
    level_at_least(page_b, "ada", 0.5)

    # The jam's chat crosses nodes with the audio; a line is text, never markup.
    page_a.fill("#jam-chat-text", "count in <b>4</b>")
    page_a.click("#jam-chat-send")
    line_on_b = page_b.locator("#jam-chat li.jam-chat-line")
    expect(line_on_b).to_have_count(1)
    expect(line_on_b.locator(".jam-chat-name")).to_have_text("ada")
    expect(line_on_b.locator(".jam-chat-text")).to_have_text("count in <b>4</b>")
    page_b.fill("#jam-chat-text", "ready")
    page_b.press("#jam-chat-text", "Enter")
    expect(page_a.locator("#jam-chat li.jam-chat-line .jam-chat-text")).to_have_text(
        ["count in <b>4</b>", "ready"]
    )

    # A records a moment; stopping publishes one library track per participant heard.
    page_a.click("#jam-record")
    expect(page_a.locator("#jam-recording")).to_be_visible()
    expect(page_b.locator("#jam-recording")).to_be_visible()  # B's page is told A records
    level_at_least(page_a, "bob", 0.5)  # bob was heard while recording
    page_a.click("#jam-record")
    expect(page_a.locator("#jam-recording")).to_be_hidden()
    for name in ("ada", "bob"):
        take = page_a.locator("#jam-recorded li.jam-recorded-track", has_text=f"— {name}")
        expect(take).to_have_count(1)
        expect(take.locator("a")).to_have_text(f"{TITLE} — {name}")
        expect(take.locator("a")).to_have_attribute("href", "#/library")

    # cy leaves the page: its socket, peer connection and microphone go, and B's roster shrinks.
    page_c.click("#nav-feed")
    expect(page_c).to_have_url(re.compile(r"#/feed$"))
    expect(page_b.locator("#jam-participants li.jam-participant")).to_have_count(2)
    expect(cy_on_b).to_have_count(0)
    assert page_c.evaluate("window.__pcs.map((pc) => pc.connectionState)") == ["closed"]
    assert page_c.evaluate(
        "window.__streams.flatMap((s) => s.getTracks()).map((t) => t.readyState)"
    ) == ["ended"]

    # ada leaves the audio: bob stays in, alone, still connected, and A's page still lists him.
    page_a.click("#jam-leave-audio")
    expect(page_a.locator("#jam-join-audio")).to_be_visible()
    expect(page_b.locator("#jam-participants li.jam-participant")).to_have_count(1)
    expect(page_b.locator(row("bob"))).to_be_visible()
    expect(page_b.locator("#jam-leave-audio")).to_be_visible()
    expect(page_b.locator("#jam-error")).to_be_hidden()
    assert page_b.evaluate("window.__pcs.map((pc) => pc.connectionState)") == ["connected"]
    expect(page_a.locator("#jam-participants li.jam-participant")).to_have_count(1)
    expect(page_a.locator(row("bob"))).to_have_attribute("data-node", b.node_id)
    assert page_a.evaluate("window.__pcs.map((pc) => pc.connectionState)") == ["closed"]

    # The jam is listed on A; its host ends it, and B's page says so.
    page_a.click("#nav-jam")
    page_a.click(f'#jam-list li.jam[data-id="{jam}"] a')
    expect(page_a.locator("#jam-heading")).to_have_text(TITLE)
    page_a.once("dialog", lambda dialog: dialog.accept())
    page_a.click("#jam-end")
    expect(page_a).to_have_url(re.compile(r"#/jam$"))
    expect(page_b.locator("#jam-error")).to_contain_text("ended")
    expect(page_b.locator("#jam-join-audio")).to_be_hidden()
    assert page_b.evaluate("window.__pcs.map((pc) => pc.connectionState)") == ["closed"]
    assert problems == [[], [], []]


def test_the_jam_page_explains_that_the_node_is_not_federating(
    node: Node,  # noqa: F811
    media_browser: Browser,
) -> None:
    context = media_browser.new_context(viewport={"width": 1000, "height": 800})
    try:
        page = context.new_page()
        problems = _collect_problems(page)
        sign_in(page, node, "ada")
        page.click("#nav-jam")
        expect(page).to_have_url(f"{node.url}/#/jam")
        expect(page.locator("#jam-error")).to_contain_text("not federating")
        expect(page.locator("#jam-list li.jam")).to_have_count(0)

        page.fill("#jam-title", "Nowhere")
        page.click("#jam-create")
        expect(page.locator("#jam-error")).to_contain_text("--p2p")
        expect(page).to_have_url(f"{node.url}/#/jam")
        page.fill("#jam-code-input", "not a code")
        page.click("#jam-join-code")
        expect(page.locator("#jam-error")).to_contain_text("64 hex digits")

        page.goto(f"{node.url}/#/jam/{'0' * 32}")
        expect(page.locator("#jam-error")).to_contain_text("not federating")
        expect(page.locator("#jam-join-audio")).to_be_hidden()
        page.click("#nav-feed")
        expect(page).to_have_url(f"{node.url}/#/feed")
        assert problems == []
    finally:
        context.close()
