"""Direct messages in a real headless Chromium (see tests/test_browser.py).

The fixtures come from tests.test_browser: this module gets its own
``talas run`` process (module scope) with the owner ``ada`` and guest ``gus``;
the member ``mia`` is added through the API by ada.
"""

from __future__ import annotations

from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.test_browser import (  # noqa: F401
    PASSWORD,
    Node,
    _collect_problems,
    browser,
    context,
    node,
    playwright,
    sign_in,
)

XSS_DM = '<img src=x onerror="window.__xss=1">'


def _api(page: Page, method: str, path: str, body: object = None) -> tuple[int, object]:
    """Call the API from the page with its session cookie and CSRF token."""
    result: list[object] = page.evaluate(
        """async ([method, path, body]) => {
            const me = await (await fetch('/api/v1/me')).json();
            const init = {method, headers: {'X-CSRF-Token': me.csrf}};
            if (body !== null) {
                init.headers['Content-Type'] = 'application/json';
                init.body = JSON.stringify(body);
            }
            const r = await fetch('/api/v1' + path, init);
            return [r.status, await r.json().catch(() => null)];
        }""",
        [method, path, body],
    )
    return int(str(result[0])), result[1]


def _author_of(page: Page, name: str) -> str:
    status, users = _api(page, "GET", "/users")
    assert status == 200, users
    assert isinstance(users, dict)
    found = [u["author"] for u in users["items"] if u["name"] == name]
    assert found, users
    return str(found[0])


def _add_mia(page: Page) -> str:
    status, made = _api(
        page, "POST", "/users", {"name": "mia", "role": "member", "password": PASSWORD}
    )
    assert status in (201, 409), made
    return _author_of(page, "mia")


def test_write_to_a_member_and_read_the_answer(
    node: Node,  # noqa: F811
    browser: Browser,  # noqa: F811
    context: BrowserContext,  # noqa: F811
) -> None:
    page = context.new_page()
    problems = _collect_problems(page)
    sign_in(page, node, "ada")
    mia = _add_mia(page)
    ada = _author_of(page, "ada")

    page.click("#nav-messages")
    expect(page.locator("#dm-partners li.dm-partner")).to_have_count(0)
    page.fill("#dm-new-to", "not an id")
    page.click("#dm-new-open")
    expect(page.locator("#dm-new-error")).to_contain_text("64 hex")
    page.fill("#dm-new-to", mia.upper())
    page.click("#dm-new-open")
    expect(page).to_have_url(f"{node.url}/#/messages/{mia}")
    expect(page.locator("#dm-with")).to_have_text("mia")

    page.click("#dm-send")
    expect(page.locator("#dm-error")).to_contain_text("Write something")
    page.fill("#dm-text", XSS_DM)
    page.click("#dm-send")
    mine = page.locator("#dm-thread li.dm-message.mine")
    expect(mine).to_have_count(1)
    expect(mine.locator(".dm-text")).to_have_text(XSS_DM)
    expect(page.locator("#dm-text")).to_have_value("")
    expect(page.locator("#dm-error")).to_be_hidden()
    partner = page.locator("#dm-partners li.dm-partner")
    expect(partner).to_have_count(1)  # listed once the first message is sent
    expect(partner).to_contain_text("mia")

    # The profile offers a "Message" link to others, not on one's own profile.
    page.goto(f"{node.url}/#/author/{mia}")
    expect(page.locator("#author-message")).to_have_attribute("href", f"#/messages/{mia}")
    page.goto(f"{node.url}/#/author/{ada}")
    expect(page.locator("#author-name")).to_be_visible()
    expect(page.locator("#author-message")).to_have_count(0)

    # mia, in her own browser context, sees the conversation and answers.
    other = browser.new_context(viewport={"width": 1000, "height": 800})
    other.set_default_timeout(10_000)
    try:
        page2 = other.new_page()
        problems2 = _collect_problems(page2)
        sign_in(page2, node, "mia")
        page2.click("#nav-messages")
        row = page2.locator("#dm-partners li.dm-partner")
        expect(row).to_have_count(1)
        expect(row).to_contain_text("ada")
        row.locator("a").click()
        expect(page2).to_have_url(f"{node.url}/#/messages/{ada}")
        theirs = page2.locator("#dm-thread li.dm-message:not(.mine)")
        expect(theirs.locator(".dm-text")).to_have_text([XSS_DM])
        page2.fill("#dm-text", "Got it\nsee you")
        page2.press("#dm-text", "Control+Enter")
        expect(page2.locator("#dm-thread li.dm-message.mine .dm-text")).to_have_text(
            ["Got it\nsee you"]
        )
        assert page2.evaluate("window.__xss") is None
        assert page2.locator("#view img").count() == 0
        assert problems2 == []
    finally:
        other.close()

    # ada's open conversation picks the answer up by itself (refresh every 3 s).
    page.goto(f"{node.url}/#/messages/{mia}")
    expect(page.locator("#dm-thread li.dm-message")).to_have_count(2)
    expect(page.locator("#dm-thread li.dm-message:not(.mine) .dm-text")).to_have_text(
        "Got it\nsee you"
    )
    assert page.evaluate("window.__xss") is None
    assert page.locator("#view img").count() == 0
    assert problems == []


def test_the_open_conversation_refreshes_and_stops_on_leaving(
    node: Node,  # noqa: F811
    context: BrowserContext,  # noqa: F811
) -> None:
    page = context.new_page()
    page.clock.install()  # the page's timers run only when the test says so
    problems = _collect_problems(page)
    sign_in(page, node, "ada")
    mia = _add_mia(page)
    page.goto(f"{node.url}/#/messages/{mia}")
    thread = page.locator("#dm-thread li.dm-message")
    expect(page.locator("#dm-partners li.dm-partner")).to_have_count(1)
    before = thread.count()
    status, sent = _api(page, "POST", "/dms", {"to": mia, "text": "sent elsewhere"})
    assert status == 201, sent
    page.clock.run_for(3_100)
    expect(thread).to_have_count(before + 1)
    expect(thread.last.locator(".dm-text")).to_have_text("sent elsewhere")

    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url) if "/api/v1/dms" in r.url else None)
    page.click("#nav-feed")
    expect(page.locator("#feed-list")).to_be_attached()
    requests.clear()
    page.clock.run_for(10_000)
    page.wait_for_timeout(100)
    assert requests == []
    assert problems == []


def test_guests_have_no_messages(node: Node, context: BrowserContext) -> None:  # noqa: F811
    page = context.new_page()
    sign_in(page, node, "gus")
    expect(page.locator("#nav-feed")).to_be_visible()
    expect(page.locator("#nav-messages")).to_have_count(0)
    page.goto(f"{node.url}/#/messages")
    expect(page.locator("#dm-error")).to_contain_text("cannot")
    expect(page.locator("#dm-partners")).to_have_count(0)


def test_messages_fit_a_phone_screen(node: Node, browser: Browser) -> None:  # noqa: F811
    phone = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    phone.set_default_timeout(10_000)
    try:
        page = phone.new_page()
        sign_in(page, node, "ada")
        mia = _add_mia(page)
        for route in ("messages", f"messages/{mia}"):
            page.goto(f"{node.url}/#/{route}")
            expect(page.locator("#nav-messages")).to_be_visible()
            page.wait_for_timeout(150)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"#/{route} scrolls sideways ({width}px)"
        expect(page.locator("#dm-text")).to_be_visible()
        expect(page.locator("#dm-partners")).to_be_hidden()
        page.click(".dm-back")
        expect(page.locator("#dm-partners")).to_be_visible()
    finally:
        phone.close()
