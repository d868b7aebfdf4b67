"""End-to-end browser tests of the generated UI: headless Chromium driven by
Playwright against a live server running the sample CRM with demo data.

Each test opens its own browser context (signed in through the real sign-in page
once per user and module, then reusing the cookies) and makes its own records where
it changes data. Any uncaught JavaScript error, or error logged to the console, in a
page fails the test that opened it (the ``open_page`` fixture, in conftest.py).

They skip with the reason when Chromium or Playwright is missing, unless
``LOOMWORK_REQUIRE_BROWSER=1`` (as in CI), where a missing browser fails.
Screenshots land in ``test-artefacts/``.
"""
from __future__ import annotations

import re
import secrets
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips (or fails) with the reason
    expect = None

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
ARTEFACTS = REPO / "test-artefacts"
ZH_CATALOG = REPO / "platform" / "loomwork" / "web" / "translations" / "zh_CN" / "LC_MESSAGES" / "messages.po"
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


def _pick_lookup(page, field: str, typed: str, expected: str, shot: str | None = None) -> None:
    """Type part of a title into a lookup and choose the one suggestion with the keyboard
    (with ``shot``, a screenshot of the open suggestions is taken)."""
    box = page.locator(f"#f-{field}")
    listbox = page.locator(f"#f-{field}-list")
    box.click()
    box.press_sequentially(typed)
    expect(listbox).to_be_visible()
    expect(box).to_have_attribute("aria-expanded", "true")
    expect(listbox.get_by_role("option")).to_have_text([expected])
    box.press("ArrowDown")
    expect(listbox.locator("[role=option][aria-selected=true]")).to_have_text(expected)
    expect(box).to_have_attribute("aria-activedescendant", f"f-{field}-list-opt-0")
    if shot:
        _shot(page, shot)
    box.press("Enter")
    expect(listbox).to_be_hidden()
    expect(box).to_have_value(expected)


def _money(text: str) -> Decimal | None:
    digits = re.sub(r"[^0-9.\-]", "", text)
    return Decimal(digits) if digits else None


def _column(page, label: str) -> list[str]:
    return [t.strip() for t in page.locator(f'.lw-table tbody td[data-label="{label}"]').all_inner_texts()]


def _row_ids(page) -> list[str]:
    return [box.get_attribute("value") for box in page.locator("input.lw-row-select").all()]


def _query(page) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query, keep_blank_values=True)


def _add_condition(page, field: str, value: str, op: str | None = None) -> None:
    """Add one condition in the filter builder (opening the Filter panel first)."""
    panel = page.locator("details.filter-panel")
    if panel.get_attribute("open") is None:
        panel.locator("summary").click()
    page.get_by_role("button", name="+ Add condition").click()
    row = page.locator(".lw-filter-rows .lw-filter-row").last
    row.locator("select.lw-filter-field").select_option(label=field)
    if op is not None:
        row.locator("select.lw-filter-op").select_option(label=op)
    row.locator(".lw-filter-value select, .lw-filter-value input").first.select_option(label=value)


# -- 1. signing in and out -------------------------------------------------------------

def test_sign_in_navigation_and_sign_out(open_page, live):
    page = open_page("/", user=None)
    expect(page).to_have_url(re.compile(r"/login"))
    _shot(page, "login")
    live.sign_in(page, "admin", "wrong password")
    error = page.locator(".notice-error")
    expect(error).to_have_text("Wrong workspace, username or password.")
    expect(page.locator("#username")).to_have_value("admin")
    expect(page.locator("#password")).to_have_value("")
    _shot(page, "login-error")
    live.sign_in(page, "admin")
    page.wait_for_url(live.url("/"))
    # The navigation is grouped by the package that brought the objects.
    nav = page.get_by_role("navigation", name="Objects")
    expect(nav.locator("h2.nav-group")).to_have_text(["Sample CRM"])
    expect(nav.locator("h2.nav-group + ul a")).to_have_text(["Accounts", "Contacts", "Deals", "Quotes"])
    expect(page.locator("main h1")).to_have_text("Welcome, admin")
    _shot(page, "home")
    nav.get_by_role("link", name="Deals").click()
    expect(page).to_have_url(live.url("/app/deal"))
    expect(nav.get_by_role("link", name="Deals")).to_have_attribute("aria-current", "page")
    # The API works with the browser session; an unsafe request without the CSRF token does not.
    assert page.request.get(live.url("/api/v1/data/deal?limit=2")).status == 200
    assert page.request.post(live.url("/api/v1/data/account"), data={"name": "Nope"}).status == 403
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(live.url("/login"))
    page.goto(live.url("/app/deal"))
    expect(page).to_have_url(re.compile(r"/login\?next=/app/deal"))
    assert page.request.get(live.url("/api/v1/data/deal")).status == 401


def test_sign_in_to_another_workspace(open_page, live):
    """Defect 19 of issue 11: a Workspace field (listing no tenants) signs in to another
    tenant; an unknown one fails like a wrong password; the form remembers the last one."""
    from loomwork.runtime.context import Actor, Context

    name = _tag()
    platform = live.state.platform
    tenant = platform.create_tenant(name, "Second company")
    try:
        live.state.services.users.create(Context(tenant, Actor.system()), "olga", live.password, roles=("admin",))
        page = open_page("/login", user=None)
        workspace = page.get_by_label("Workspace")
        expect(workspace).to_have_value("main")
        assert name not in page.content()
        _shot(page, "login-workspace")
        workspace.fill("nope")
        live.sign_in(page, "olga")
        expect(page.locator(".notice-error")).to_have_text("Wrong workspace, username or password.")
        expect(workspace).to_have_value("nope")  # kept, to be corrected
        expect(page.locator("#username")).to_have_value("olga")
        workspace.fill(name.upper())  # names are lower case; what was typed is forgiven
        live.sign_in(page, "olga")
        page.wait_for_url(live.url("/"))
        expect(page.locator("main h1")).to_have_text("Welcome, olga")
        nav = page.get_by_role("navigation", name="Objects")
        expect(nav.locator("h2.nav-group")).to_have_count(0)  # the second tenant has no objects yet
        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(live.url("/login"))
        expect(page.get_by_label("Workspace")).to_have_value(name)  # remembered for the next sign-in
        _shot(page, "login-remembered-workspace")
    finally:
        platform.drop_tenant(name)


# -- 2. create, edit and delete a record ------------------------------------------------

def test_create_edit_and_delete_a_deal(open_page, live):
    tag = _tag()
    account = live.create("account", {"name": f"Zephyr Looms {tag}", "industry": "software"})
    page = open_page("/app/deal")
    page.get_by_role("link", name="New Deal").click()
    expect(page).to_have_url(live.url("/app/deal/new"))
    expect(page.locator("main h1")).to_have_text("New Deal")
    page.fill("#f-name", f"Loom deal {tag}")
    _pick_lookup(page, "account", f"looms {tag}", f"Zephyr Looms {tag}", shot="lookup")
    expect(page.locator('input[type=hidden][name="account"]')).to_have_value(str(account["id"]))
    page.select_option("#f-stage", label="Proposal")
    page.fill("#f-amount", "4321.5")
    _shot(page, "form")
    page.get_by_role("button", name="Save").click()

    page.wait_for_url(re.compile(r"/app/deal/\d+$"))
    record_url = page.url
    expect(page.locator(".notice-ok")).to_have_text("Deal created.")
    expect(page.locator("main h1")).to_have_text(f"Loom deal {tag}")
    expect(page.locator('[data-field="account"] dd')).to_have_text(f"Zephyr Looms {tag}")
    expect(page.locator('[data-field="stage"] dd')).to_have_text("Proposal")
    expect(page.locator('[data-field="amount"] dd')).to_have_text("$4,321.50")
    _shot(page, "record")

    page.get_by_role("link", name="Edit").click()
    expect(page).to_have_url(record_url + "/edit")
    expect(page.locator("#f-account")).to_have_value(f"Zephyr Looms {tag}")
    expect(page.locator("#f-amount")).to_have_value("4321.50")
    page.fill("#f-amount", "5000")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(record_url)
    expect(page.locator(".notice-ok")).to_have_text("Changes saved.")
    expect(page.locator('[data-field="amount"] dd')).to_have_text("$5,000.00")
    # "Weighted amount" changes too; the exact label picks the amount's own entry.
    change = page.locator(".timeline li").filter(has=page.get_by_text("Amount", exact=True))
    expect(change).to_have_count(1)
    expect(change.locator(".old")).to_have_text("$4,321.50")
    expect(change.locator(".new")).to_have_text("$5,000.00")
    expect(page.locator(".timeline li", has_text="Created the record")).to_have_count(1)

    page.locator(".page-actions").get_by_role("link", name="Delete").click()
    expect(page).to_have_url(record_url + "/delete")
    expect(page.locator("main h1")).to_have_text("Please confirm")
    expect(page.locator("main")).to_contain_text(f"Delete Deal “Loom deal {tag}”?")
    page.locator("form.actions").get_by_role("button", name="Delete").click()
    page.wait_for_url(live.url("/app/deal"))
    expect(page.locator(".notice-ok")).to_have_text("Deal deleted.")
    expect(page.locator(".lw-table")).not_to_contain_text(f"Loom deal {tag}")
    gone = page.goto(record_url)
    assert gone is not None and gone.status == 404
    expect(page.locator("main h1")).to_have_text("Not found")


def test_new_deal_from_the_form_gets_its_default_probability(open_page, live):
    tag = _tag()
    account = live.create("account", {"name": f"Default Dyes {tag}"})
    page = open_page(f"/app/deal/new?account={account['id']}")  # as "+ New" on an account does
    expect(page.locator("#f-account")).to_have_value(f"Default Dyes {tag}")
    page.fill("#f-name", f"Default {tag}")
    page.select_option("#f-stage", label="Proposal")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url(re.compile(r"/app/deal/\d+$"))
    expect(page.locator('[data-field="account"] dd')).to_have_text(f"Default Dyes {tag}")
    # The API, given no probability, fills 50 for a proposal; the form should too.
    expect(page.locator('[data-field="probability"] dd')).to_have_text("50%", timeout=1000)


# -- 3. errors at the field ------------------------------------------------------------------

def test_invalid_value_is_shown_at_the_field_and_required_is_checked_first(open_page, live):
    tag = _tag()
    live.create("account", {"name": f"Quill Works {tag}"})
    page = open_page("/app/deal/new")
    page.fill("#f-name", f"Bad amount {tag}")
    _pick_lookup(page, "account", f"works {tag}", f"Quill Works {tag}")
    page.fill("#f-amount", "12x")
    page.get_by_role("button", name="Save").click()
    # The server answers with the form again (422), the error inline at the field.
    expect(page.locator(".notice-error")).to_have_text("Please correct the errors below.")
    amount = page.locator("#f-amount")
    expect(page.locator("#f-amount-error")).not_to_be_empty()
    expect(amount).to_have_value("12x")
    expect(amount).to_have_attribute("aria-invalid", "true")
    expect(page.locator('.lw-field[data-field="amount"]')).to_have_class(re.compile(r"\bhas-error\b"))
    expect(amount).to_have_attribute("aria-describedby", re.compile(r"\bf-amount-error\b"))
    expect(page.locator("#f-name")).to_have_value(f"Bad amount {tag}")
    expect(page.locator("#f-account")).to_have_value(f"Quill Works {tag}")
    expect(page.locator("#f-name-error")).to_be_empty()
    _shot(page, "form-errors")
    # Typing in the field clears its error.
    amount.fill("12")
    expect(page.locator("#f-amount-error")).to_be_empty()
    expect(amount).not_to_have_attribute("aria-invalid", "true")

    # An empty required field stops the post in the browser, with the focus on it.
    page.fill("#f-name", "")
    trips = _navigations(page)
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#f-name-error")).to_have_text("This field is required.")
    expect(page.locator("#f-name")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-name")).to_be_focused()
    assert trips == [], "the required check must not post the form"


# -- 4. a conditional field ------------------------------------------------------------------

def test_conditional_field_appears_becomes_required_and_hides_again(open_page, live):
    tag = _tag()
    live.create("account", {"name": f"Cond Mills {tag}"})
    page = open_page("/app/deal/new")
    trips = _navigations(page)
    wrap = page.locator('.lw-field[data-field="lost_reason"]')
    reason = page.locator("#f-lost_reason")
    expect(wrap).to_be_hidden()
    page.fill("#f-name", f"Conditional {tag}")
    _pick_lookup(page, "account", f"mills {tag}", f"Cond Mills {tag}")
    page.select_option("#f-stage", label="Closed lost")
    expect(wrap).to_be_visible()
    expect(wrap).to_have_class(re.compile(r"\bis-required\b"))
    expect(reason).to_have_attribute("aria-required", "true")
    expect(wrap.locator(".lw-req")).to_be_visible()
    _shot(page, "conditional")

    page.get_by_role("button", name="Save").click()
    expect(page.locator("#f-lost_reason-error")).to_have_text("This field is required.")
    expect(reason).to_be_focused()
    expect(reason).to_have_attribute("aria-invalid", "true")

    page.select_option("#f-stage", label="Negotiation")
    expect(wrap).to_be_hidden()
    expect(wrap).not_to_have_class(re.compile(r"\bis-required\b"))
    expect(reason).not_to_have_attribute("aria-required", "true")
    assert trips == [], "conditions must apply in the browser, without a round trip"


# -- 5. sorting, filtering and paging a list ---------------------------------------------------

def test_list_sort_filter_and_paging(open_page, live):
    page = open_page("/app/deal?view=")
    expect(page.locator("main h1")).to_have_text("Deals")
    amount_th = page.locator("th", has_text="Amount")
    expect(amount_th).not_to_have_attribute("aria-sort", re.compile("."))
    _shot(page, "list")

    amount_th.get_by_role("link").click()
    expect(page.locator("th", has_text="Amount")).to_have_attribute("aria-sort", "ascending")
    assert _query(page)["sort"] == ["amount"]
    ascending = [v for v in map(_money, _column(page, "Amount")) if v is not None]
    assert len(ascending) >= 10 and ascending == sorted(ascending)
    page.locator("th", has_text="Amount").get_by_role("link").click()
    expect(page.locator("th", has_text="Amount")).to_have_attribute("aria-sort", "descending")
    assert _query(page)["sort"] == ["-amount"]
    descending = [v for v in map(_money, _column(page, "Amount")) if v is not None]
    assert descending == sorted(descending, reverse=True)
    assert descending[0] >= ascending[-1] and descending[-1] <= ascending[0]

    _add_condition(page, "Stage", "Closed won")
    _shot(page, "filter")
    page.locator("form.lw-filter").get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"[?&]filter="))
    assert _query(page)["filter"] == ['{"field":"stage","op":"eq","value":"won"}']
    stages = _column(page, "Stage")
    assert stages and set(stages) == {"Closed won"}
    expect(page.locator("details.filter-panel summary .badge-on")).to_be_visible()
    # The builder shows the applied filter again.
    row = page.locator(".lw-filter-rows .lw-filter-row")
    expect(row).to_have_count(1)
    expect(row.locator("select.lw-filter-field")).to_have_value("stage")

    page.goto(live.url("/app/deal?view="))
    page.select_option("#lw-page-size", "10")
    page.locator("form.lw-filter").get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"page_size=10"))
    first = _row_ids(page)
    assert len(first) == 10
    expect(page.locator(".pager")).to_contain_text("10 shown")
    page.get_by_role("link", name="Next page").click()
    page.wait_for_url(re.compile(r"cursor="))
    second = _row_ids(page)
    assert second and not set(second) & set(first)
    page.get_by_role("link", name="First page").click()
    page.wait_for_url(lambda url: "cursor=" not in url)
    assert _row_ids(page) == first


def test_lookups_filter_and_sort_by_title(open_page, live):
    """Issue 11, defect 1: a related list's "View all" says "Account is <name>", the
    builder picks the account by searching its name and the chip follows, and sorting
    by the Account column sorts by the accounts' names, page after page."""
    tag = _tag()
    aardvark = live.create("account", {"name": f"Aardvark {tag}"})
    zebra = live.create("account", {"name": f"Zebra {tag}"})
    for acc, names in ((aardvark, ("one", "two")), (zebra, ("three",))):
        for name in names:
            live.create("deal", {"name": f"{name} {tag}", "account": acc["id"]})

    page = open_page(f"/app/account/{aardvark['id']}")
    page.locator("section.related", has_text="Deals").get_by_role("link", name="View all").click()
    chip = page.locator(".filter-chip")
    expect(chip).to_have_count(1)
    expect(chip.locator(".filter-chip-text")).to_have_text(f"Account is Aardvark {tag}")
    assert sorted(_column(page, "Deal name")) == [f"one {tag}", f"two {tag}"]
    expect(page.locator("details.filter-panel")).to_have_attribute("open", "")  # a filter from the address
    box = page.locator(".lw-filter-row [role=combobox]")
    expect(box).to_have_value(f"Aardvark {tag}")
    _shot(page, "list-lookup-view-all")

    # Pick another account by typing part of its name.
    box.fill("")
    box.press_sequentially(f"zebra {tag}")
    listbox = page.locator(".lw-filter-row [role=listbox]")
    expect(listbox.get_by_role("option")).to_have_text([f"Zebra {tag}"])
    _shot(page, "list-lookup-search")
    box.press("ArrowDown")
    box.press("Enter")
    expect(box).to_have_value(f"Zebra {tag}")
    page.locator("form.lw-filter").get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"[?&]filter="))
    assert _query(page)["filter"] == [f'{{"field":"account","op":"eq","value":{zebra["id"]}}}']
    expect(page.locator(".filter-chip-text")).to_have_text(f"Account is Zebra {tag}")
    assert _column(page, "Deal name") == [f"three {tag}"]

    # The chip's × drops the condition.
    page.get_by_role("link", name=f"Remove the condition Account is Zebra {tag}").click()
    expect(page.locator(".filter-chip")).to_have_count(0)
    assert len(_row_ids(page)) > 1

    # Sorting by the Account column sorts by the accounts' names, across pages.
    page.goto(live.url("/app/deal?view=&columns=name,account&page_size=10"))
    page.locator("th", has_text="Account").get_by_role("link").click()
    expect(page.locator("th", has_text="Account")).to_have_attribute("aria-sort", "ascending")
    assert _query(page)["sort"] == ["account"]
    titles = _column(page, "Account")
    _shot(page, "list-sorted-by-account")
    page.get_by_role("link", name="Next page").click()
    page.wait_for_url(re.compile(r"cursor="))
    titles += _column(page, "Account")
    assert len(titles) == 20 and titles == sorted(titles), titles
    page.goto(live.url("/app/deal?view=&columns=name,account&sort=-account&page_size=50"))
    expect(page.locator("th", has_text="Account")).to_have_attribute("aria-sort", "descending")
    names = _column(page, "Account")
    assert names == sorted(names, reverse=True)


# -- 6. saved views --------------------------------------------------------------------------

def test_save_a_view_and_open_it_again(open_page, live):
    name = f"Big negotiations {_tag()}"
    page = open_page("/app/deal?view=")
    _add_condition(page, "Stage", "Negotiation")
    page.locator("form.lw-filter").get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"[?&]filter="))
    page.locator("th", has_text="Amount").get_by_role("link").click()
    expect(page.locator("th", has_text="Amount")).to_have_attribute("aria-sort", "ascending")
    expected = _column(page, "Deal name")
    assert expected

    page.locator("details.save-view summary").click()
    page.fill("#view-label", name)
    page.get_by_role("button", name="Save view").click()
    page.wait_for_url(re.compile(r"[?&]view=\w+"))
    expect(page.locator(".notice-ok")).to_have_text(f"View “{name}” saved.")

    page.goto(live.url("/app/deal"))
    expect(page.locator("main h1 .view-name")).to_have_text("· Open deals")  # the default view
    menu = page.locator("details.menu")
    menu.locator("summary").click()
    expect(menu.locator(".menu-body")).to_be_visible()
    _shot(page, "view")
    menu.get_by_role("link", name=name).click()
    page.wait_for_url(re.compile(r"[?&]view=\w+"))
    expect(page.locator("main h1 .view-name")).to_have_text(f"· {name}")
    expect(page.locator("th", has_text="Amount")).to_have_attribute("aria-sort", "ascending")
    assert set(_column(page, "Stage")) == {"Negotiation"}
    assert _column(page, "Deal name") == expected
    menu.locator("summary").click()
    expect(menu.get_by_role("link", name=name)).to_have_attribute("aria-current", "true")

    menu.get_by_role("button", name=f"Delete view {name}").click()
    expect(page.locator(".notice-ok")).to_have_text("View deleted.")
    page.locator("details.menu summary").click()
    expect(page.locator("details.menu").get_by_role("link", name=name)).to_have_count(0)


# -- 7. bulk actions --------------------------------------------------------------------------

def test_bulk_update_and_bulk_delete_with_confirmation(open_page, live):
    tag = _tag()
    account = live.create("account", {"name": f"Bulk Forge {tag}"})
    deals = [live.create("deal", {"name": f"Bulk {tag} {n}", "account": account["id"], "amount": amount,
                                  "stage": "prospecting"}) for n, amount in (("A", "100"), ("B", "200"))]
    page = open_page(f"/app/deal?view=&q={tag}")
    expect(page.locator(".lw-table tbody tr")).to_have_count(2)
    bar = page.locator(".lw-bulk-bar")
    expect(bar).to_be_hidden()
    for box in page.locator("input.lw-row-select").all():
        box.check()
    expect(bar).to_be_visible()
    expect(bar.locator(".lw-bulk-count")).to_have_text("2 selected")
    expect(page.locator("input.lw-select-all")).to_be_checked()
    page.select_option("#lw-bulk-field", label="Stage")
    value = page.locator("#lw-bulk-value-input")
    expect(value).to_have_js_property("tagName", "SELECT")
    value.select_option(label="Qualification")
    _shot(page, "bulk")
    bar.get_by_role("button", name="Update").click()
    expect(page.locator(".notice-ok")).to_have_text("2 records updated.")
    assert _column(page, "Stage") == ["Qualification", "Qualification"]
    expect(bar).to_be_hidden()

    page.locator("input.lw-select-all").check()
    expect(bar.locator(".lw-bulk-count")).to_have_text("2 selected")
    bar.get_by_role("button", name="Delete").click()
    expect(page.locator("main h1")).to_have_text("Please confirm")
    expect(page.locator("main")).to_contain_text("Delete 2 selected records?")
    assert all(live.state.services.records.get(live.ctx(), "deal", d["id"]) for d in deals), \
        "nothing is deleted before the confirmation"
    _shot(page, "bulk-confirm")
    page.locator("form.actions").get_by_role("button", name="Delete").click()
    expect(page.locator(".notice-ok")).to_have_text("2 records deleted.")
    expect(page.locator(".empty")).to_contain_text("No records match.")
    for d in deals:
        assert page.request.get(live.url(f"/app/deal/{d['id']}")).status == 404


# -- 8. Simplified Chinese ---------------------------------------------------------------------

def test_chinese_profile_list_and_form(open_page, live):
    page = open_page("/profile", user="lin")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    page.select_option("#locale", label="简体中文")
    page.locator("form:has(input[name=form][value=language])").get_by_role("button").click()
    page.wait_for_url(live.url("/profile"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("#locale")).to_have_value("zh-CN")
    expect(page.locator("#lw-nav h2.nav-group")).to_have_text(["示例 CRM"])
    _shot(page, "profile")

    page.goto(live.url("/app/deal"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator("main h1")).to_contain_text("商机")
    expect(page.locator("main h1 .view-name")).to_have_text("· 进行中商机")
    expect(page.locator(".lw-table thead")).to_contain_text("金额")
    dates = [d for d in _column(page, "预计成交日期") if d]
    assert dates and all(re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日", d) for d in dates), dates[:5]
    amounts = [a for a in _column(page, "金额") if a]
    assert amounts and all(a.startswith("US$") for a in amounts), amounts[:5]
    assert set(_column(page, "阶段")) <= {"初步接洽", "需求确认", "方案报价", "谈判"}
    _shot(page, "zh-CN-list")

    page.goto(live.url("/app/deal/new"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator('label[for="f-amount"]')).to_contain_text("金额")
    expect(page.locator('label[for="f-name"]')).to_contain_text("商机名称")
    expect(page.locator("#f-stage option[value=won]")).to_have_text("赢单")
    save = page.locator(".form-actions button[type=submit]")
    if ZH_CATALOG.is_file():
        expect(save).not_to_have_text("Save")
    _shot(page, "zh-CN-form")


def test_language_saved_notice_is_in_the_new_language(open_page, live):
    page = open_page("/profile", user="mei")
    page.select_option("#locale", label="简体中文")
    page.locator("form:has(input[name=form][value=language])").get_by_role("button").click()
    page.wait_for_url(live.url("/profile"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    expect(page.locator(".notice-ok")).not_to_have_text("Language saved.", timeout=1000)


# -- 9. phones ------------------------------------------------------------------------------------

def test_phone_list_cards_menu_and_one_column_form(open_page, live):
    page = open_page("/app/deal", user="sam", viewport=PHONE, is_mobile=True, has_touch=True)
    expect(page.locator(".lw-table tbody tr").first).to_be_visible()
    expect(page.locator(".lw-table thead")).to_be_hidden()
    first_row = page.locator(".lw-table tbody tr").first
    assert first_row.evaluate("tr => getComputedStyle(tr).display") == "block"
    cells = first_row.evaluate("""tr => [...tr.querySelectorAll('td[data-label]')].map(td => ({
        label: td.dataset.label, before: getComputedStyle(td, '::before').content,
        text: td.innerText.trim(), visible: td.getBoundingClientRect().height > 0}))""")
    stage = next(c for c in cells if c["label"] == "Stage")
    assert stage["before"] == '"Stage"' and stage["text"] and stage["visible"], stage
    assert all(c["visible"] for c in cells)
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    _shot(page, "phone-list")

    nav = page.locator("#lw-nav")
    toggle = page.get_by_role("button", name="Menu")
    expect(nav).to_be_hidden()
    toggle.click()
    expect(nav).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    _shot(page, "phone-nav")
    nav.get_by_role("link", name="Accounts").click()
    page.wait_for_url(live.url("/app/account"))
    expect(page.locator("#lw-nav")).to_be_hidden()

    page.goto(live.url("/app/deal/new"))
    name_box = page.locator('.lw-field[data-field="name"]').bounding_box()
    account_box = page.locator('.lw-field[data-field="account"]').bounding_box()
    assert name_box and account_box
    assert abs(name_box["x"] - account_box["x"]) < 1 and account_box["y"] > name_box["y"]
    assert name_box["x"] + name_box["width"] <= PHONE["width"]
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    _shot(page, "phone-form")


# -- 10. keyboard and labels ---------------------------------------------------------------------

FOCUS_RING = """el => { const s = getComputedStyle(el);
    return (s.boxShadow && s.boxShadow !== 'none') || (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0); }"""

UNLABELLED = """root => [...root.querySelectorAll('input, select, textarea')]
    .filter(el => el.type !== 'hidden' && el.getClientRects().length > 0)
    .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                  && !el.getAttribute('aria-labelledby'))
    .map(el => el.outerHTML.slice(0, 120))"""


def test_keyboard_skip_link_focus_ring_and_labels(open_page, live):
    page = open_page("/app/deal/new")
    page.keyboard.press("Tab")
    skip = page.locator("a.skip-link")
    expect(skip).to_be_focused()
    expect(skip).to_be_in_viewport()
    assert skip.evaluate(FOCUS_RING), "the focused skip link must show a focus ring"
    page.keyboard.press("Enter")
    expect(page.locator("#main")).to_be_focused()
    for _ in range(6):  # past the breadcrumb to the first field
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "f-name":
            break
    expect(page.locator("#f-name")).to_be_focused()
    assert page.locator("#f-name").evaluate(FOCUS_RING), "a focused input must show a focus ring"
    page.keyboard.press("Tab")
    expect(page.locator("#f-account")).to_be_focused()
    assert page.locator("#f-account").evaluate(FOCUS_RING)

    unlabelled = page.locator("form.lw-form").evaluate(UNLABELLED)
    assert unlabelled == [], unlabelled
    # The list page's controls (search, filter builder rows, bulk bar) are labelled too.
    page.goto(live.url("/app/deal?view="))
    page.locator("details.filter-panel summary").click()
    page.get_by_role("button", name="+ Add condition").click()
    page.locator("input.lw-row-select").first.check()
    unlabelled = page.locator("main").evaluate(UNLABELLED)
    assert unlabelled == [], unlabelled


# -- 10. script actions (last: it publishes a script into the shared demo) ------------------------

def test_an_action_button_runs_its_script(open_page, live):
    import copy

    from loomwork.runtime.scripts import SCRIPTS_FLAG

    st = live.state
    ctx = live.ctx("admin")
    st.platform.set_flag(st.settings.default_tenant, SCRIPTS_FLAG, True)
    doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
    doc["scripts"] = {"mark_won": {
        "object": "deal", "trigger": {"action": True}, "label": {"en": "Mark as won", "zh-CN": "标记为赢单"},
        "source": "record['stage'] = 'won'\nrecord['probability'] = Decimal(100)\nresult = 'won ' + record['name']\n"}}
    st.services.metadata.publish(ctx, doc, comment="browser test: an action")
    tag = _tag()
    account = live.create("account", {"name": f"Action Co {tag}"})
    deal = live.create("deal", {"name": f"Act {tag}", "account": account["id"], "stage": "proposal"})
    page = open_page(f"/app/deal/{deal['id']}")
    # the deal's rules still apply to what the script changes: a won deal needs its amount
    page.locator(".page-actions").get_by_role("button", name="Mark as won").click()
    page.wait_for_url(live.url(f"/app/deal/{deal['id']}"))
    expect(page.locator(".notice-error")).to_have_text("Mark as won refused: A won deal needs its amount")
    expect(page.locator('[data-field="stage"] dd')).to_have_text("Proposal")
    st.services.records.update(ctx, "deal", deal["id"], {"amount": "900.00"})
    page.reload()
    page.locator(".page-actions").get_by_role("button", name="Mark as won").click()
    page.wait_for_url(live.url(f"/app/deal/{deal['id']}"))
    expect(page.locator(".notice-ok")).to_have_text(f"Mark as won done: won Act {tag}")
    expect(page.locator('[data-field="stage"] dd')).to_have_text("Closed won")
    expect(page.locator('[data-field="probability"] dd')).to_have_text("100%")
    _shot(page, "action")


# -- 11. an approval with two people (last: it publishes a process into the shared demo) --------

def test_an_approval_from_submit_to_approved_with_two_users(open_page, live):
    import copy

    st = live.state
    ctx = live.ctx("admin")
    doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
    doc["approvals"] = {"deal_review": {
        "object": "deal", "label": {"en": "Deal review", "zh-CN": "商机评审"},
        "nodes": [{"name": "review", "type": "approval", "label": {"en": "Review"}, "approvers": [{"user": "admin"}]}],
        "on_approved": [{"set": {"notes": '"Approved: send the contract"'}}]}}
    st.services.metadata.publish(ctx, doc, comment="browser test: an approval")
    tag = _tag()
    account = live.create("account", {"name": f"Review Co {tag}"}, username="sam")
    deal = live.create("deal", {"name": f"Review {tag}", "account": account["id"], "stage": "proposal"},
                       username="sam")

    sam = open_page(f"/app/deal/{deal['id']}", user="sam")
    sam.get_by_role("button", name="Submit for approval: Deal review").click()
    sam.wait_for_url(live.url(f"/app/deal/{deal['id']}"))
    expect(sam.locator(".notice-ok")).to_have_text("Submitted for approval.")
    expect(sam.locator(".approval-panel .lw-chip")).to_have_text("Waiting for approval")
    _shot(sam, "approval-submitted")

    admin = open_page("/app/approvals", user="admin")
    row = admin.locator("tbody tr", has_text=f"Review {tag}")
    expect(row).to_have_count(1)
    _shot(admin, "approval-inbox")
    row.get_by_role("link", name=f"Review {tag}").click()
    admin.fill("#decision-comment", "Good margin, go ahead")
    admin.get_by_role("button", name="Approve").click()
    admin.wait_for_url(live.url(f"/app/deal/{deal['id']}"))
    expect(admin.locator(".notice-ok")).to_have_text("Approved.")

    sam.reload()
    expect(sam.locator(".approval-panel .lw-chip")).to_have_text("Approved")
    expect(sam.locator(".approval-history")).to_contain_text("Good margin, go ahead")
    expect(sam.locator('[data-field="notes"] dd')).to_have_text("Approved: send the contract")
    _shot(sam, "approval-done")


def test_locks_reasons_and_disabled_buttons_come_from_the_services(open_page, live):
    """Issue 11, defects 3, 4, 6 and 7 in a real browser: submit disabled with why, the
    edit page of a locked record says so before typing, the approval shows the path
    taken, and a workflow transition is disabled with its message."""
    import copy

    from loomwork.metadata.packages import load_package
    from loomwork.plugins import crm_sample

    st = live.state
    ctx = live.ctx("admin")
    doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
    doc.setdefault("approvals", {})["quote_discount"] = load_package(crm_sample.PATH).approvals["quote_discount"]
    doc["objects"]["ticket"] = {"label": {"en": "Ticket", "zh-CN": "工单"}, "fields": {
        "title": {"type": "text", "required": True},
        "status": {"type": "choice", "options": [{"value": s} for s in ("new", "open", "closed")]},
        "resolution": {"type": "text"}}}
    doc["roles"]["sales"]["permissions"]["ticket"] = ["create", "read", "update"]
    doc.setdefault("workflows", {})["tickets"] = {
        "object": "ticket", "field": "status", "initial": "new",
        "states": [{"name": "new"}, {"name": "open"}, {"name": "closed", "final": True, "edit": {"roles": []}}],
        "transitions": [{"name": "open", "from": ["new"], "to": "open", "label": {"en": "Open"}},
                        {"name": "close", "from": ["open"], "to": "closed", "label": {"en": "Close"},
                         "condition": "not is_blank(resolution)",
                         "message": {"en": "Fill in the resolution first", "zh-CN": "请先填写解决方案"}}]}
    st.services.metadata.publish(ctx, doc, comment="browser test: locks and reasons")
    tag = _tag()
    small = live.create("quote", {"name": f"Small {tag}", "list_price": "100", "discount": "5"}, username="sam")
    big = live.create("quote", {"name": f"Big {tag}", "list_price": "100", "discount": "30"}, username="sam")

    sam = open_page(f"/app/quote/{small['id']}", user="sam")
    button = sam.get_by_role("button", name="Submit for approval: Discount approval")
    expect(button).to_be_disabled()
    expect(sam.locator(".approval-panel")).to_contain_text("Discount approval does not apply to this record")
    _shot(sam, "abilities-submit-disabled")

    sam.goto(live.url(f"/app/quote/{big['id']}"))
    sam.get_by_role("button", name="Submit for approval: Discount approval").click()
    expect(sam.locator(".notice-ok")).to_have_text("Submitted for approval.")
    expect(sam.locator(".approval-panel .step-title")).to_have_text(["Manager"])  # not the branch not taken
    expect(sam.locator(".approval-history")).not_to_contain_text("Routed")
    expect(sam.get_by_role("link", name="Edit")).to_have_count(0)
    expect(sam.locator(".lock-reason")).to_have_text("Locked while it waits for approval (Discount approval)")
    _shot(sam, "abilities-locked-record")
    sam.goto(live.url(f"/app/quote/{big['id']}/edit"))
    expect(sam.locator("#lock-notice")).to_contain_text("You cannot change this record now.")
    expect(sam.locator("#f-name")).to_be_disabled()
    expect(sam.get_by_role("button", name="Save")).to_have_count(0)
    _shot(sam, "abilities-locked-edit")

    ticket = live.create("ticket", {"title": f"Printer {tag}"}, username="sam")
    st.services.records.update(live.ctx("sam"), "ticket", ticket["id"], {"status": "open"})
    sam.goto(live.url(f"/app/ticket/{ticket['id']}"))
    close = sam.get_by_role("button", name="Close")
    expect(close).to_be_disabled()
    expect(sam.locator(".page-actions")).to_contain_text("Fill in the resolution first")
    expect(sam.locator(".page-actions")).not_to_contain_text("is_blank")
    _shot(sam, "abilities-transition-disabled")
    sam.goto(live.url(f"/app/ticket/{ticket['id']}/edit"))
    expect(sam.locator("#f-status option")).to_have_count(1 + sam.locator("#f-status option[value='']").count())
    expect(sam.locator("#f-status option[value='closed']")).to_have_count(0)
