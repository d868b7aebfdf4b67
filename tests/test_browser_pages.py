"""Browser tests of the record pages, forms, recycle bin and profile (issue 11, defects
2, 9, 12 and 13): headless Chromium driven by Playwright against a live server running
the sample CRM with demo data (the ``live`` and ``open_page`` fixtures of conftest.py).

Each test opens its own browser context (signed in through the real sign-in page once
per user and module) and makes its own records. Any uncaught JavaScript error, or error
logged to the console, fails the test that opened the page. They skip with the reason
when Chromium or Playwright is missing, unless ``LOOMWORK_REQUIRE_BROWSER=1`` (as in CI).
Screenshots land in ``test-artefacts/``.
"""
from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) with the reason
    expect = None

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
ARTEFACTS = REPO / "test-artefacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}


def _shot(page, name: str) -> None:
    ARTEFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def _tag() -> str:
    """A short unique word for the names of records a test makes."""
    return "t" + secrets.token_hex(3)


def _navigations(page) -> list[str]:
    """Document requests the page makes from now on (a server round trip shows up here)."""
    seen: list[str] = []
    page.on("request", lambda r: seen.append(f"{r.method} {r.url}") if r.is_navigation_request() else None)
    return seen


# -- defect 2: a server error goes once what caused it changes ------------------------------

def test_a_server_error_goes_when_what_caused_it_changes(open_page, live):
    tag = _tag()
    account = live.create("account", {"name": f"Stale Mills {tag}"})
    page = open_page(f"/app/deal/new?account={account['id']}")
    page.fill("#f-name", f"Stale {tag}")
    page.select_option("#f-stage", label="Closed won")
    page.get_by_role("button", name="Save").click()
    amount_error = page.locator("#f-amount-error")
    expect(amount_error).to_have_text("A won deal needs its amount")
    expect(page.locator(".lw-errors-banner")).to_be_visible()
    expect(page.locator("#f-amount")).to_have_attribute("aria-invalid", "true")
    _shot(page, "server-error-at-field")
    trips = _navigations(page)
    page.fill("#f-name", f"Still stale {tag}")  # not what the rule reads: the message stays
    expect(amount_error).to_have_text("A won deal needs its amount")
    page.select_option("#f-stage", label="Closed lost")  # what the rule reads: it no longer holds
    expect(amount_error).to_be_empty()
    expect(page.locator("#f-amount")).not_to_have_attribute("aria-invalid", "true")
    expect(page.locator('.lw-field[data-field="amount"]')).not_to_have_class(re.compile(r"\bhas-error\b"))
    expect(page.locator(".lw-errors-banner")).to_be_hidden()
    _shot(page, "server-error-settled")
    assert trips == [], "the message is settled in the browser"


def test_a_rule_is_checked_again_and_its_message_stays_while_it_holds(open_page, live):
    tag = _tag()
    account = live.create("account", {"name": f"Won Works {tag}"})
    deal = live.create("deal", {"name": f"Won {tag}", "account": account["id"], "stage": "won", "amount": "10"})
    page = open_page(f"/app/deal/{deal['id']}/edit")
    page.select_option("#f-stage", label="Closed lost")
    page.select_option("#f-lost_reason", label="Price")
    page.get_by_role("button", name="Save").click()
    stage_error = page.locator("#f-stage-error")
    expect(stage_error).to_have_text("A won deal cannot be reopened")
    page.select_option("#f-stage", label="Negotiation")  # changed, and still not won: the rule holds
    expect(stage_error).to_have_text("A won deal cannot be reopened")
    page.select_option("#f-stage", label="Closed won")
    expect(stage_error).to_be_empty()
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(live.url(f"/app/deal/{deal['id']}"))
    expect(page.locator(".notice-ok")).to_have_text("Changes saved.")


# -- defect 9: a refused delete keeps the user on the record; the recycle bin restores ---------

def test_a_refused_delete_links_to_what_holds_the_record(open_page, live):
    tag = _tag()
    account = live.create("account", {"name": f"Held Co {tag}"})
    for n in (1, 2):
        live.create("deal", {"name": f"Holder {n} {tag}", "account": account["id"]})
    page = open_page(f"/app/account/{account['id']}")
    page.locator(".page-actions").get_by_role("link", name="Delete").click()
    expect(page.locator("main")).to_contain_text("It goes to the recycle bin, where it can be restored.")
    page.locator("form.actions").get_by_role("button", name="Delete").click()
    page.wait_for_url(live.url(f"/app/account/{account['id']}"))
    notice = page.locator(".notice-error")
    expect(notice).to_have_text("Not deleted: other records refer to this Account. "
                                "Delete them or link them elsewhere first: 2 Deals")
    expect(page.locator("main h1")).to_have_text(f"Held Co {tag}")
    _shot(page, "delete-refused")
    notice.get_by_role("link", name="2 Deals").click()
    page.wait_for_url(re.compile(r"/app/deal\?"))
    expect(page.locator(".lw-table tbody tr")).to_have_count(2)
    expect(page.locator(".lw-table tbody")).to_contain_text(f"Holder 1 {tag}")


def test_the_recycle_bin_lists_who_deleted_what_and_restores(open_page, live):
    tag = _tag()
    account = live.create("account", {"name": f"Bin Co {tag}"})
    contact = live.create("contact", {"last_name": f"Binned {tag}", "account": account["id"]}, username="sam")
    page = open_page(f"/app/contact/{contact['id']}/delete", user="sam")
    page.locator("form.actions").get_by_role("button", name="Delete").click()
    page.wait_for_url(live.url("/app/contact"))
    page.get_by_role("link", name="Recycle bin").click()
    page.wait_for_url(live.url("/app/contact/deleted"))
    row = page.locator("tbody tr", has_text=f"Binned {tag}")
    expect(row).to_have_count(1)
    sam = live.user("sam")
    expect(row.locator('td[data-label="Deleted by"]')).to_have_text(sam.full_name)
    expect(row.locator('td[data-label="Deleted"]')).to_contain_text("UTC")
    _shot(page, "recycle-bin")
    page.fill("#bin-search", f"nothing-{tag}")
    page.get_by_role("button", name="Search").click()
    expect(page.locator(".empty")).to_have_text("No deleted records match.")
    page.goto(live.url("/app/contact/deleted"))
    page.locator("tbody tr", has_text=f"Binned {tag}").get_by_role("button", name="Restore").click()
    page.wait_for_url(live.url(f"/app/contact/{contact['id']}"))
    expect(page.locator(".notice-ok")).to_have_text("Contact restored.")
    expect(page.locator(".timeline li").first).to_contain_text("Restored the record")
    # On a phone too the list leads to its bin, which fits the screen.
    phone = open_page("/app/contact", user="admin", viewport=PHONE, is_mobile=True, has_touch=True)
    phone.get_by_role("link", name="Recycle bin").click()
    expect(phone.locator("main h1")).to_contain_text("Recycle bin")
    assert phone.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    _shot(phone, "recycle-bin-phone")


# -- defect 12: Profile on phones, the browser's language and time zone ------------------------

def test_profile_is_in_the_phone_menu(open_page, live):
    page = open_page("/app/deal", user="sam", viewport=PHONE, is_mobile=True, has_touch=True)
    expect(page.locator(".user-name")).to_be_hidden()  # the top bar's link does not fit
    page.get_by_role("button", name="Menu").click()
    nav = page.locator("#lw-nav")
    link = nav.get_by_role("link", name="Profile · sam")
    expect(link).to_be_visible()
    _shot(page, "phone-menu-profile")
    link.click()
    page.wait_for_url(live.url("/profile"))
    expect(page.locator("main h1")).to_have_text("Profile")
    expect(page.locator("#locale")).to_be_visible()
    expect(page.locator("#time_zone")).to_be_visible()
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    _shot(page, "phone-profile")
    desktop = open_page("/app/deal", user="sam")
    expect(desktop.locator("#lw-nav .nav-profile")).to_be_hidden()  # on wide screens the top bar has it


def test_a_new_user_reads_the_browsers_language_and_time_zone(browser, live):
    """Signed in through the sign-in page from a Chinese browser in Shanghai: the pages are
    Chinese and in Shanghai time until the user chooses otherwise in Profile."""
    tag = _tag()
    deal = live.create("deal", {"name": f"Zoned {tag}", "account": live.create("account", {"name": f"Z {tag}"})["id"],
                                "next_step_at": "2026-03-05T14:30:00Z"})
    context = browser.new_context(viewport=DESKTOP, locale="zh-CN", timezone_id="Asia/Shanghai")
    try:
        page = context.new_page()
        page.goto(live.url("/login"))
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        live.sign_in(page, "kai")
        page.wait_for_url(live.url("/"))
        assert live.user("kai").time_zone == "Asia/Shanghai"
        page.goto(live.url(f"/app/deal/{deal['id']}"))
        expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
        expect(page.locator('[data-field="next_step_at"] dd')).to_have_text("2026年3月5日 22:30 +0800")
        _shot(page, "zh-browser-shanghai")
        page.goto(live.url("/profile"))
        expect(page.locator("#locale")).to_have_value("zh-CN")  # what the pages follow now
        expect(page.locator("#time_zone")).to_have_value("Asia/Shanghai")
        page.select_option("#time_zone", "Europe/Berlin")
        page.locator("form:has(input[name=form][value=time_zone]) button").click()
        page.wait_for_url(live.url("/profile"))
        expect(page.locator(".notice-ok")).to_have_text("时区已保存。")
        page.select_option("#locale", "en")
        page.locator("form:has(input[name=form][value=language]) button").click()
        page.wait_for_url(live.url("/profile"))
        expect(page.locator("html")).to_have_attribute("lang", "en")  # chosen: the browser's no longer counts
        page.goto(live.url(f"/app/deal/{deal['id']}"))
        expect(page.locator('[data-field="next_step_at"] dd')).to_have_text("Mar 5, 2026 3:30\u202fPM +0100")
        page.goto(live.url(f"/app/deal/{deal['id']}/edit"))
        expect(page.locator("#f-next_step_at")).to_have_attribute("value", "2026-03-05T15:30:00")
        expect(page.locator('[data-field="next_step_at"] .affix-text')).to_have_text("Europe/Berlin")
    finally:
        context.close()


def test_a_session_without_a_time_zone_sends_the_browsers_once(open_page, live):
    from loomwork.runtime import systables

    open_page("/", user="mei").close()  # signed in (the sign-in stored that browser's zone)
    with live.ctx("mei").tenant.write() as conn:
        conn.execute(systables.users.update().where(systables.users.c.username == "mei").values(time_zone=None))
    page = open_page(user="mei", timezone_id="America/Sao_Paulo")
    with page.expect_response(lambda r: r.url.endswith("/profile/time-zone")) as sent:
        page.goto(live.url("/"))
    assert sent.value.status == 200
    assert live.user("mei").time_zone == "America/Sao_Paulo"
    page.reload()
    expect(page.locator("html")).to_have_attribute("data-time-zone", "America/Sao_Paulo")
    assert page.locator("html").get_attribute("data-lw-save-time-zone") is None


# -- defect 13: formulas computed as the user types; money keeps its currency -------------------
# (last: it publishes a formula into the shared demo)

def test_formulas_are_previewed_as_the_user_types_and_money_keeps_its_symbol(open_page, live):
    import copy

    tag = _tag()
    account = live.create("account", {"name": f"Preview Co {tag}"})
    page = open_page(f"/app/deal/new?account={account['id']}")
    trips = _navigations(page)
    weighted = page.locator("#f-weighted_amount")
    note = page.locator('.lw-field[data-field="weighted_amount"] .lw-computed-note')
    expect(weighted).to_have_text("$0.00")
    expect(note).to_be_hidden()
    page.fill("#f-amount", "1234.5")
    page.fill("#f-probability", "33.3")
    expect(weighted).to_have_text("$411.09")  # round(1234.5 * 33.3 / 100, 2), as the server rounds
    _shot(page, "formula-preview")
    assert trips == [], "the preview needs no round trip"
    page.fill("#f-name", f"Preview {tag}")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"/app/deal/\d+$"))
    expect(page.locator('[data-field="weighted_amount"] dd')).to_have_text("$411.09")
    deal_id = int(page.url.rsplit("/", 1)[1])
    live.create("deal", {"name": f"Won {tag}", "account": account["id"], "stage": "won", "amount": "2500"})
    page.goto(live.url(f"/app/account/{account['id']}"))
    expect(page.locator('[data-field="won_amount"] dd')).to_have_text("$2,500.00")  # a sum of amounts is money

    # A formula following a lookup is the server's: the form keeps the saved value and says so.
    st, ctx = live.state, live.ctx("admin")
    doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
    doc["objects"]["quote"]["fields"]["deal_name"] = {
        "type": "formula", "result_type": "text", "expression": "deal.name", "label": {"en": "Deal name"}}
    st.services.metadata.publish(ctx, doc, comment="browser test: a formula through a lookup")
    quote = live.create("quote", {"name": f"Q {tag}", "list_price": "200", "discount": "10", "deal": deal_id})
    page.goto(live.url(f"/app/quote/{quote['id']}/edit"))
    expect(page.locator("#f-deal_name")).to_have_text(f"Preview {tag}")
    expect(page.locator('.lw-field[data-field="deal_name"] .lw-computed-note')).to_have_text("Computed when saved")
    page.fill("#f-discount", "25")
    expect(page.locator("#f-net_price")).to_have_text("$150.00")
    expect(page.locator('.lw-field[data-field="net_price"] .lw-computed-note')).to_be_hidden()
    _shot(page, "formula-computed-on-save")
