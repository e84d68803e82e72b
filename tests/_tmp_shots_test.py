from tests.test_browser import node, browser, playwright, context, sign_in  # noqa
from tests.test_browser_nearby import simulator, SERIAL  # noqa
from playwright.sync_api import expect

def test_shots(node, context, browser, simulator):
    for w in (1000, 360):
        ctx = browser.new_context(viewport={"width": w, "height": 900}, is_mobile=(w == 360))
        ctx.set_default_timeout(10_000)
        page = ctx.new_page()
        sign_in(page, node, "ada")
        page.goto(node.url + "/#/nearby")
        if w == 1000:
            page.fill("#mic-target", simulator.target)
            page.click("#mic-attach")
        expect(page.locator("li.mic .mic-state")).to_have_text("online")
        page.screenshot(path=f"/tmp/shots/nearby-{w}.png", full_page=True)
        page.goto(node.url + f"/#/mic/{SERIAL}")
        expect(page.locator("#mic-meters .meter")).to_have_count(2)
        if w == 1000:
            page.click("#mic-selftest")
            expect(page.locator("#mic-selftest-result")).to_contain_text("passed")
        page.wait_for_timeout(500)
        page.screenshot(path=f"/tmp/shots/mic-{w}.png", full_page=True)
        page.locator("#mic-identity").screenshot(path=f"/tmp/shots/ident-{w}.png")
        ctx.close()
    simulator.stop()
    ctx = browser.new_context(viewport={"width": 1000, "height": 900})
    page = ctx.new_page()
    sign_in(page, node, "ada")
    page.goto(node.url + f"/#/mic/{SERIAL}")
    expect(page.locator("#mic-online")).to_have_text("offline")
    page.wait_for_timeout(3500)
    page.screenshot(path="/tmp/shots/mic-offline.png", full_page=True)
    ctx.close()
