"""Live chat in a real headless Chromium (see tests/test_browser.py).

The fixtures come from tests.test_browser: its node runs ``talas run --no-p2p``,
so every chat endpoint answers 409 ``not_federating``; the page must say so
clearly instead of breaking.
"""

from __future__ import annotations

from playwright.sync_api import Browser, BrowserContext, expect

from tests.test_browser import (  # noqa: F401
    Node,
    _collect_problems,
    browser,
    context,
    node,
    playwright,
    sign_in,
)


def test_chat_explains_that_the_node_is_not_federating(
    node: Node,  # noqa: F811
    context: BrowserContext,  # noqa: F811
) -> None:
    page = context.new_page()
    problems = _collect_problems(page)
    sign_in(page, node, "ada")
    page.click("#nav-chat")
    expect(page).to_have_url(f"{node.url}/#/chat")
    expect(page.locator("#chat-error")).to_contain_text("not federating")
    expect(page.locator("#chat-rooms li.chat-room")).to_have_count(0)

    # Joining fails with the same clear message, and the page keeps working.
    page.fill("#chat-room-name", "jam")
    page.fill("#chat-room-peers", "")
    page.click("#chat-join")
    expect(page.locator("#chat-error")).to_contain_text("--p2p")
    expect(page).to_have_url(f"{node.url}/#/chat")

    # A room page: the history cannot load either; compose is there for a poster.
    page.goto(f"{node.url}/#/chat/jam")
    expect(page.locator("#chat-error")).to_contain_text("not federating")
    expect(page.locator("#chat-text")).to_be_visible()
    expect(page.locator("#chat-thread li.chat-message")).to_have_count(0)
    page.click("#nav-feed")
    expect(page).to_have_url(f"{node.url}/#/feed")
    assert problems == []


def test_a_guest_sees_no_join_form_and_no_compose_box(
    node: Node,  # noqa: F811
    context: BrowserContext,  # noqa: F811
) -> None:
    page = context.new_page()
    problems = _collect_problems(page)
    sign_in(page, node, "gus")
    page.click("#nav-chat")
    expect(page.locator("#chat-error")).to_contain_text("not federating")
    expect(page.locator("#chat-room-name")).to_have_count(0)
    expect(page.locator("#chat-join")).to_have_count(0)
    page.goto(f"{node.url}/#/chat/jam")
    expect(page.locator("#chat-error")).to_be_visible()
    expect(page.locator("#chat-text")).to_have_count(0)
    expect(page.locator("#chat-send")).to_have_count(0)
    assert problems == []


def test_chat_fits_a_phone_screen(node: Node, browser: Browser) -> None:  # noqa: F811
    phone = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    try:
        page = phone.new_page()
        sign_in(page, node, "ada")
        for route in ("chat", "chat/jam"):
            page.goto(f"{node.url}/#/{route}")
            expect(page.locator("#chat-error")).to_be_visible()
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 360, f"#/{route} scrolls sideways ({width}px)"
    finally:
        phone.close()
