"""Profiles and blocks in a real headless Chromium (see tests/test_browser.py).

The fixtures come from tests.test_browser: this module gets its own
``talas run`` process (module scope) with the owner ``ada`` and guest ``gus``.
"""

from __future__ import annotations

from urllib.parse import quote

from playwright.sync_api import BrowserContext, expect

from tests.test_browser import (  # noqa: F401
    Node,
    _collect_problems,
    browser,
    context,
    node,
    playwright,
    sign_in,
)

XSS_NAME = '<img src=x onerror="window.__xss=1">'
XSS_BIO = "<script>window.__xss = 2</script><b>bold?</b>\nsecond line"
BLOCKED = "ab" * 32
REMOTE = "cd" * 32


def test_profile_name_with_markup_shows_as_text(node: Node, context: BrowserContext) -> None:  # noqa: F811
    page = context.new_page()
    problems = _collect_problems(page)
    sign_in(page, node, "ada")
    page.goto(node.url + "/#/settings")
    # Prefilled from GET /authors/<me> (no profile yet: the user name) and the collective.
    expect(page.locator("#profile-name")).to_have_value("ada")
    expect(page.locator("#collective-name")).to_have_value("Studio <b>Nord</b>")
    expect(page.locator("#collective-bio")).to_have_value("")

    page.fill("#profile-name", "")
    page.click("#profile-submit")
    expect(page.locator("#profile-error")).to_contain_text("name")

    page.fill("#profile-name", XSS_NAME)
    page.fill("#profile-bio", XSS_BIO)
    page.click("#profile-submit")
    expect(page.locator("#profile-status")).to_have_text("Profile published.")
    expect(page.locator("#profile-error")).to_be_hidden()

    me = page.evaluate("fetch('/api/v1/me').then(r => r.json()).then(m => m.user.author)")
    page.goto(f"{node.url}/#/author/{quote(me)}")
    expect(page.locator("#author-name")).to_have_text(XSS_NAME)
    expect(page.locator("#author-bio")).to_have_text(XSS_BIO)
    expect(page.locator("#block-author")).to_have_count(0)  # one's own author
    page.goto(node.url + "/#/settings")  # prefilled with the published profile
    expect(page.locator("#profile-name")).to_have_value(XSS_NAME)
    expect(page.locator("#profile-bio")).to_have_value(XSS_BIO)
    page.wait_for_timeout(200)  # an injected handler would have fired by now
    assert page.evaluate("window.__xss") is None
    assert page.locator("#view img, #view script, #view b").count() == 0
    assert problems == []


def test_block_and_unblock_from_the_peers_page(node: Node, context: BrowserContext) -> None:  # noqa: F811
    page = context.new_page()
    problems = _collect_problems(page)
    sign_in(page, node, "ada")
    page.goto(node.url + "/#/peers")
    blocks = page.locator("#block-list li.block")
    expect(page.locator("#block-list")).to_contain_text("Nothing is blocked")

    page.fill("#block-target", "not an id")
    page.click("#block-submit")
    expect(page.locator("#block-error")).to_contain_text("64 hex")

    page.fill("#block-target", BLOCKED.upper())
    page.select_option("#block-what", "node")
    page.click("#block-submit")
    expect(blocks).to_have_count(1)
    expect(blocks.first).to_contain_text(BLOCKED)
    expect(blocks.first).to_contain_text("node")
    expect(page.locator("#block-error")).to_be_hidden()
    page.reload()
    expect(blocks).to_have_count(1)

    blocks.first.locator(".block-remove").click()
    expect(blocks).to_have_count(0)
    expect(page.locator("#block-list")).to_contain_text("Nothing is blocked")
    assert problems == []


def test_block_a_remote_author_from_its_page(node: Node, context: BrowserContext) -> None:  # noqa: F811
    page = context.new_page()
    sign_in(page, node, "ada")
    page.goto(f"{node.url}/#/author/{REMOTE}")
    button = page.locator("#block-author")
    expect(button).to_have_text("Block")
    expect(page.locator("#author-blocked")).to_be_hidden()
    button.click()
    expect(button).to_have_text("Unblock")
    expect(page.locator("#author-blocked")).to_be_visible()
    page.reload()  # the state comes from GET /blocks
    expect(page.locator("#author-blocked")).to_be_visible()
    page.goto(node.url + "/#/peers")
    expect(page.locator(f"#block-list li.block[data-target='{REMOTE}']")).to_contain_text("author")
    page.goto(f"{node.url}/#/author/{REMOTE}")
    button.click()
    expect(button).to_have_text("Block")
    expect(page.locator("#author-blocked")).to_be_hidden()


def test_a_guest_sees_no_profile_form_nor_blocks(node: Node, context: BrowserContext) -> None:  # noqa: F811
    page = context.new_page()
    sign_in(page, node, "gus")
    page.goto(node.url + "/#/settings")
    expect(page.locator("#profile-readonly")).to_be_visible()
    expect(page.locator("#profile-name, #collective-name")).to_have_count(0)
    page.goto(node.url + "/#/peers")
    expect(page.locator("#peer-list")).to_be_attached()
    expect(page.locator("#block-list, #block-target")).to_have_count(0)
    page.goto(f"{node.url}/#/author/{REMOTE}")
    expect(page.locator("#author-name")).to_be_visible()
    expect(page.locator("#block-author")).to_have_count(0)
