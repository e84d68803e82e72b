"""End to end in a real headless Chromium (Debian's package, driven by playwright).

One ``talas run`` process and one browser serve every test in this module;
each test opens its own browser context (cookies, storage and service
workers are per context), so tests do not see each other's sessions.
Never ``playwright install``: the browser is /usr/bin/chromium.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    FilePayload,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.audio_files import wav_bytes
from tests.processes import TALAS, clean_env, ok, talas

PASSWORD = "correct horse battery"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
# Assertions wait for the page; a loaded 2-core CI machine needs more than 5 s.
expect.set_options(timeout=15_000)

XSS_POST = '<img src=x onerror="window.__xss = 1">'
XSS_TITLE = "<script>window.__xss = 2</script><b>title</b>"


def payload(name: str, content: bytes) -> FilePayload:
    return {"name": name, "mimeType": "audio/wav", "buffer": content}


class Node:
    def __init__(self, data: Path, process: subprocess.Popen[bytes], url: str) -> None:
        self.data, self.process, self.url = data, process, url.rstrip("/")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    data = tmp_path_factory.mktemp("browser") / "node"
    ok(talas(data, "init", "--name", "Studio <b>Nord</b>"))
    for name, role in (("ada", "owner"), ("gus", "guest")):
        ok(talas(data, "user", "add", name, "--role", role, stdin=f"{PASSWORD}\n".encode()))
    process = subprocess.Popen(
        [*TALAS, "--data", str(data), "run", "--http", "127.0.0.1:0", "--no-p2p", "--no-discovery"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=clean_env(),
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    url = ""
    seen = []
    while not url and time.monotonic() < deadline:
        line = process.stdout.readline().decode()
        if not line:
            break
        seen.append(line)
        if "web UI" in line:
            url = line.split()[-1]
    assert url, f"node did not start: {''.join(seen)}"
    try:
        yield Node(data, process, url)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert Path(CHROMIUM).exists(), "chromium is missing: scripts/test installs it"
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=FLAGS, timeout=30_000
    )
    try:
        yield launched
    finally:
        launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    made = browser.new_context(viewport={"width": 1000, "height": 800})
    made.set_default_timeout(10_000)
    try:
        yield made
    finally:
        made.close()


def _collect_problems(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            problems.append(f"console: {msg.text}")
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    return problems


def sign_in(page: Page, node: Node, name: str) -> None:
    page.goto("about:blank")  # a fresh load even when the page shows the sign-in form already
    page.goto(node.url + "/#/signin")
    # signin.js draws the form once GET /setup answered, then focuses the name:
    # typing before that can land in a form about to be replaced.
    expect(page.locator("#signin-username")).to_be_focused()
    page.fill("#signin-username", name)
    page.fill("#signin-password", PASSWORD)
    page.click("#signin-submit")
    expect(page.locator("#whoami-name")).to_have_text(name)
    expect(page).to_have_url(re.compile(r"#/feed$"))


def test_sign_in_through_the_form_post_and_see_it_in_the_feed(
    node: Node, context: BrowserContext
) -> None:
    page = context.new_page()
    problems = _collect_problems(page)
    page.goto(node.url + "/#/signin")
    page.fill("#signin-username", "ada")
    page.fill("#signin-password", "wrong password!")
    page.click("#signin-submit")
    wrong = re.compile("wrong user ?name or password", re.IGNORECASE)
    expect(page.locator("#signin-error")).to_contain_text(wrong)
    sign_in(page, node, "ada")
    expect(page.locator("#whoami-role")).to_contain_text("owner")
    page.fill("#compose-text", "First light at the studio")
    page.click("#compose-submit")
    first = page.locator("#feed-list article.post").first
    expect(first.locator(".post-text")).to_have_text("First light at the studio")
    page.reload()
    expect(page.locator("#feed-list article.post .post-text").first).to_have_text(
        "First light at the studio"
    )
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["talas_session"]["httpOnly"] is True
    assert cookies["talas_session"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie").find("talas_session") == -1
    assert problems == []


def test_xss_in_a_post_and_a_track_title_never_runs(node: Node, context: BrowserContext) -> None:
    page = context.new_page()
    problems = _collect_problems(page)
    sign_in(page, node, "ada")
    page.fill("#compose-text", XSS_POST)
    page.click("#compose-submit")
    expect(page.locator("#feed-list .post-text").first).to_have_text(XSS_POST)

    page.goto(node.url + "/#/library")
    page.set_input_files(
        "#track-file",
        files=[payload("x.wav", wav_bytes(0.5))],
    )
    page.fill("#track-title", XSS_TITLE)
    page.click("#track-upload")
    expect(page.locator("#track-list li.track .track-title").first).to_have_text(XSS_TITLE)
    page.goto(node.url + "/#/feed")
    expect(page.locator("#feed-list .post-text").first).to_have_text(XSS_POST)
    page.wait_for_timeout(300)  # an injected handler would have fired by now
    assert page.evaluate("window.__xss") is None
    assert page.locator("#feed-list img[src='x']").count() == 0
    assert page.locator("#track-list b, #view script").count() == 0
    assert problems == []


def test_upload_a_generated_wav_and_play_it(node: Node, context: BrowserContext) -> None:
    page = context.new_page()
    problems = _collect_problems(page)
    sign_in(page, node, "ada")
    page.goto(node.url + "/#/library")
    page.set_input_files(
        "#track-file",
        files=[payload("../../tone.wav", wav_bytes(3.0))],
    )
    page.fill("#track-title", "Tone study")
    page.click("#track-upload")
    track = page.locator("#track-list li.track", has_text="Tone study").first
    expect(track.locator(".track-duration")).to_have_text("0:03")
    audio = track.locator("audio.track-audio")
    src = audio.get_attribute("src") or ""
    assert re.search(r"/media/tracks/[0-9a-f]{64}\?", src), src
    audio.evaluate("a => a.play()")
    page.wait_for_function(
        "a => a.currentTime > 0.3 && !a.paused", arg=audio.element_handle(), timeout=10_000
    )
    assert problems == []

    bad = page.locator("#track-file")
    bad.set_input_files(files=[payload("notes.wav", b"just text" * 100)])
    page.fill("#track-title", "Not audio")
    page.click("#track-upload")
    expect(page.locator("#library-error")).to_contain_text("audio")
    expect(page.locator("#track-list li.track", has_text="Not audio")).to_have_count(0)


def test_create_an_offer_in_the_market(node: Node, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, node, "ada")
    page.goto(node.url + "/#/market")
    page.fill("#offer-title", "Tube preamp")
    page.select_option("#offer-category", "gear")
    page.fill("#offer-offered", "Two-channel tube preamp, serviced")
    page.fill("#offer-wanted", "A ribbon mic")
    page.select_option("#offer-condition", "good")
    page.click("#offer-submit")
    expect(page.locator("#offer-list article.offer").first).to_contain_text("Tube preamp")
    page.select_option("#offer-scope", "federated")
    expect(page.locator("#offer-list article.offer", has_text="Tube preamp")).to_have_count(0)


def test_a_guest_cannot_post(node: Node, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, node, "gus")
    expect(page.locator("#whoami-role")).to_contain_text("guest")
    expect(page.locator("#compose-text")).to_have_count(0)
    expect(page.locator("#nav-members")).to_be_hidden()
    # The server enforces it too: a forged request with the guest's own CSRF token.
    status = page.evaluate(
        """async () => {
            const me = await (await fetch('/api/v1/me')).json();
            const r = await fetch('/api/v1/posts', {method: 'POST',
                headers: {'Content-Type': 'application/json', 'X-CSRF-Token': me.csrf},
                body: JSON.stringify({text: 'guest post'})});
            return r.status;
        }"""
    )
    assert status == 403


def test_service_worker_registers_and_the_app_is_installable(
    node: Node, playwright: Playwright, tmp_path: Path
) -> None:
    # Installability needs a real profile: Chromium never installs from incognito.
    context = playwright.chromium.launch_persistent_context(
        tmp_path / "profile", executable_path=CHROMIUM, headless=True, args=FLAGS
    )
    context.set_default_timeout(10_000)
    try:
        _check_installable(node, context)
    finally:
        context.close()


def _check_installable(node: Node, context: BrowserContext) -> None:
    page = context.new_page()
    sign_in(page, node, "ada")
    scope = page.evaluate("navigator.serviceWorker.ready.then(r => r.scope)")
    assert scope == node.url + "/"
    cdp = context.new_cdp_session(page)
    errors: dict[str, Any] = cdp.send("Page.getInstallabilityErrors")
    assert errors["installabilityErrors"] == []
    manifest = cdp.send("Page.getAppManifest")
    assert manifest["errors"] == []
    assert json.loads(manifest["data"])["display"] == "standalone"


def test_usable_on_a_phone_sized_screen(node: Node, browser: Browser) -> None:
    phone = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    try:
        page = phone.new_page()
        sign_in(page, node, "ada")
        for route in ("feed", "library", "market", "courses", "members", "peers", "settings"):
            page.goto(f"{node.url}/#/{route}")
            expect(page.locator(f"#nav-{route}")).to_be_visible()
            page.wait_for_timeout(100)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"#/{route} scrolls sideways ({width}px)"
    finally:
        phone.close()


def test_offline_shell_lists_every_static_file() -> None:
    """The service worker precaches the shell: a file it forgets breaks offline use."""
    static = Path(__file__).parent.parent / "webui" / "static"
    worker = (static / "sw.js").read_text()
    listed = set(re.findall(r"'(/static/[^']+)'", worker))
    present = {
        "/static/" + str(p.relative_to(static))
        for p in static.rglob("*")
        if p.is_file() and p.suffix in {".js", ".css", ".png", ".svg"} and p.name != "sw.js"
    }
    assert present <= listed, sorted(present - listed)


def test_api_token_works_for_scripts(node: Node) -> None:
    token = ok(talas(node.data, "token", "create", "--user", "ada")).strip()
    with httpx.Client(base_url=node.url, timeout=10) as client:
        made = client.post(
            "/api/v1/posts",
            json={"text": "from a script"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert made.status_code == 201, made.text
        ok(talas(node.data, "token", "revoke", token))
        refused = client.get("/api/v1/feed", headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 401
