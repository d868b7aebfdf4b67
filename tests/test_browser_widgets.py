"""Browser tests of the form and list modules (lw-ui.js, lw-form.js, lw-list.js).

Headless Chromium opens small fixture pages (tests/js/*_fixture.html) shaped like the
server's templates, served from the repository by http.server in a thread, so the
pages import the real modules from /platform/loomwork/web/static/. The API is mocked
with ``page.route``. Condition trees in the form fixture are written as
``{"$expr": source}`` and compiled here by the server's expression compiler, so the
browser evaluates the trees the server would send.

They skip with the reason when Chromium or Playwright is missing, unless
``LOOMWORK_REQUIRE_BROWSER=1`` (as in CI). Screenshots land in ``test-artefacts/``.
"""
from __future__ import annotations

import functools
import json
import re
import threading
from collections.abc import Callable
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

from loomwork.metadata import filters
from loomwork.runtime.expr import FieldInfo, Scope, builtin_functions, compile_expression

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "js"
ARTEFACTS = REPO / "test-artefacts"
DATA_SCRIPT = re.compile(r'(<script type="application/json" id="lw-(?:form|list)-data">)(.*?)(</script>)', re.S)


class _QuietHandler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript", ".mjs": "text/javascript"}

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="module")
def static_server():
    """The repository over HTTP on a free port (module scripts need http, not file:)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(REPO)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(5000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def _shot(page, name: str) -> None:
    ARTEFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


# -- typed trees, as rules_document ships them ----------------------------------------

def _field(name: str, ty: str | None, field_type: str, options: tuple[str, ...] = (),
           target: str | None = None) -> FieldInfo:
    return FieldInfo(name, ty, field_type, options, target)


SCOPE = Scope("deal", {
    "deal": {f.name: f for f in (
        _field("name", "text", "text"),
        _field("stage", "choice", "choice", ("new", "open", "won", "lost")),
        _field("amount", "decimal", "currency"),
        _field("account", "number", "lookup", target="account"),
        _field("industry_note", "text", "text"),
        _field("approver", "text", "text"),
        _field("total", "decimal", "formula"),
        _field("close_reason", "text", "text"),
        _field("priority", "choice", "choice", ("low", "high")),
        _field("discount", "decimal", "decimal"),
        _field("sub_stage", "choice", "choice", ("fresh", "active", "stalled", "signed", "price", "timing")),
        _field("is_big", "boolean", "boolean"),
        _field("tags", "list", "multi_choice", ("standard", "vip", "strategic")),
        _field("close_date", "date", "date"),
        _field("next_call", "datetime", "datetime"),
    )},
    "account": {"name": _field("name", "text", "text"),
                "industry": _field("industry", "choice", "choice", ("tech", "retail"))},
})
FUNCTIONS = builtin_functions()


def _compile_markers(node: Any) -> Any:
    """Replace each ``{"$expr": source}`` with the typed tree the server compiles, and
    ``{"$filter_rules": true}`` with the filter rules the list page serves."""
    if isinstance(node, dict):
        if set(node) == {"$expr"}:
            return compile_expression(node["$expr"], SCOPE, FUNCTIONS).tree
        if set(node) == {"$filter_rules"}:
            return filters.rules_document()
        return {k: _compile_markers(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_compile_markers(v) for v in node]
    return node


def open_fixture(page, base: str, name: str, change: Callable[[dict[str, Any]], None] | None = None,
                 markup: Callable[[str], str] | None = None) -> None:
    """Serve tests/js/<name> with its page data compiled (and changed by ``change``, its
    markup by ``markup``), and open it."""
    html = (FIXTURES / name).read_text(encoding="utf-8")
    if markup:
        html = markup(html)
    match = DATA_SCRIPT.search(html)
    assert match, f"{name} has no page data"
    data = _compile_markers(json.loads(match.group(2)))
    if change:
        change(data)
    text = json.dumps(data).replace("</", "<\\/")
    body = html[:match.start(2)] + text + html[match.end(2):]
    url = f"{base}/tests/js/{name}"
    page.route(url, lambda route: route.fulfill(status=200, content_type="text/html; charset=utf-8", body=body))
    page.goto(url)
    page.wait_for_function("document.readyState === 'complete'")


def capture_posts(page, base: str, path: str) -> list[list[tuple[str, str]]]:
    """Record form posts to ``path`` (as lists of pairs) and answer them with a small page."""
    posts: list[list[tuple[str, str]]] = []

    def handle(route):
        posts.append(parse_qsl(route.request.post_data or "", keep_blank_values=True))
        route.fulfill(status=200, content_type="text/html", body="<p id=done>posted</p>")

    page.route(f"{base}{path}", handle)
    return posts


ACCOUNTS = [{"id": 3, "name": "Acme", "industry": "retail"}, {"id": 4, "name": "Acme Labs", "industry": "tech"},
            {"id": 5, "name": "Borealis", "industry": "tech"}]


def mock_api(page) -> list[str]:
    """Answer /api/v1/data/account searches and reads from ACCOUNTS; returns the URLs asked for."""
    asked: list[str] = []

    def handle(route):
        url = route.request.url
        asked.append(url)
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        one = re.fullmatch(r"/api/v1/data/account/(\d+)", parts.path)
        if one:
            row = next((a for a in ACCOUNTS if a["id"] == int(one.group(1))), None)
            route.fulfill(status=200 if row else 404, content_type="application/json", body=json.dumps(row or {}))
            return
        q = query.get("search", [""])[0].lower()
        rows = [{"id": a["id"], "name": a["name"]} for a in ACCOUNTS if q in a["name"].lower()]
        route.fulfill(status=200, content_type="application/json", body=json.dumps({"data": rows, "next_cursor": None}))

    page.route("**/api/v1/data/**", handle)
    return asked


def attr(page, selector: str, name: str) -> str | None:
    return page.get_attribute(selector, name)


def is_hidden(page, selector: str) -> bool:
    return page.eval_on_selector(selector, "el => el.hidden")


def options(page, selector: str) -> list[str]:
    return page.eval_on_selector(selector, "s => [...s.options].map(o => o.value)")


def form_values(page, name: str) -> list[str]:
    return page.evaluate(f"new FormData(document.querySelector('form.lw-form')).getAll({name!r})")


def on_its_tab(page, selector: str) -> None:
    """Select the tab whose panel holds ``selector`` (a user cannot reach a hidden field)."""
    page.eval_on_selector(selector, """el => { const p = el.closest('[role=tabpanel]');
        if (p && p.hidden) document.querySelector(`[role=tab][aria-controls="${p.id}"]`).click(); }""")


def select(page, selector: str, value: str) -> None:
    on_its_tab(page, selector)
    page.select_option(selector, value)


def fill(page, selector: str, value: str) -> None:
    on_its_tab(page, selector)
    page.fill(selector, value)


def check(page, selector: str) -> None:
    on_its_tab(page, selector)
    page.check(selector)


# -- forms ---------------------------------------------------------------------------

def test_conditions_show_and_require_as_the_stage_changes(page, static_server):
    open_fixture(page, static_server, "form_fixture.html")
    assert is_hidden(page, "[data-field=close_reason]")
    assert is_hidden(page, "[data-section=loss]"), "a section whose fields are all hidden is hidden"
    assert "is-required" in attr(page, "[data-field=name]", "class")
    assert attr(page, "#f-name", "aria-required") == "true"

    select(page, "#f-stage", "lost")
    assert not is_hidden(page, "[data-field=close_reason]")
    assert not is_hidden(page, "[data-section=loss]")
    assert "is-required" in attr(page, "[data-field=close_reason]", "class")
    assert attr(page, "#f-close_reason", "aria-required") == "true"
    assert attr(page, "#f-close_reason", "required") is None, "the form has novalidate; no native required"
    assert "is-required" in attr(page, "[data-field=close_date]", "class"), "required_if without visible_if"
    _shot(page, "widgets-form-lost")

    select(page, "#f-stage", "open")
    assert is_hidden(page, "[data-field=close_reason]")
    assert attr(page, "#f-close_reason", "aria-required") is None
    assert "is-required" not in attr(page, "[data-field=close_date]", "class")

    # A condition on a formula sees it recomputed: total = amount - discount.
    assert not is_hidden(page, "[data-field=approver]")
    fill(page, "#f-amount", "900")
    assert is_hidden(page, "[data-field=approver]")
    fill(page, "#f-amount", "1005.00")
    assert not is_hidden(page, "[data-field=approver]")
    fill(page, "#f-discount", "5.01")
    assert is_hidden(page, "[data-field=approver]")


def _editing_won(data: dict[str, Any]) -> None:
    data["editing"] = True
    data["env"]["old"] = {"id": 9, "name": "Big deal", "stage": "won", "priority": "high", "discount": "5.00",
                          "amount": "1200.00", "sub_stage": "fresh", "is_big": False, "tags": ["standard"]}


def test_read_only_if_is_judged_on_the_stored_record(page, static_server):
    open_fixture(page, static_server, "form_fixture.html", _editing_won)
    # The stored stage is won: discount and priority are locked, whatever the form shows.
    assert page.eval_on_selector("#f-discount", "el => el.readOnly")
    assert "is-readonly" in attr(page, "[data-field=discount]", "class")
    assert page.eval_on_selector_all("#f-priority input", "els => els.every(e => e.disabled)")
    assert form_values(page, "priority") == ["high"], "a hidden copy still posts the locked value"
    assert form_values(page, "discount") == ["5.00"]
    select(page, "#f-stage", "open")
    assert page.eval_on_selector("#f-discount", "el => el.readOnly"), "changing the locking field does not unlock"
    assert form_values(page, "priority") == ["high"]


def test_a_locked_select_posts_its_value_once(page, static_server):
    """The server renders a locked select disabled with a hidden copy; the module keeps one copy."""
    def change(data):
        _editing_won(data)
        data["rules"]["fields"]["sub_stage"]["read_only_if"] = [
            compile_expression("stage == 'won'", SCOPE, FUNCTIONS).tree]

    def markup(html):
        html = html.replace('<select id="f-sub_stage" name="sub_stage"', '<select disabled id="f-sub_stage" name="sub_stage"')
        return html.replace('<p class="lw-error" id="f-sub_stage-error">',
                            '<input type="hidden" name="sub_stage" value="fresh"><p class="lw-error" id="f-sub_stage-error">')

    open_fixture(page, static_server, "form_fixture.html", change, markup)
    assert page.eval_on_selector("#f-sub_stage", "el => el.disabled")
    assert "is-readonly" in attr(page, "[data-field=sub_stage]", "class")
    assert form_values(page, "sub_stage") == ["fresh"]


def test_read_only_if_does_not_lock_administrators(page, static_server):
    def admin(data):
        _editing_won(data)
        data["env"]["user_role"] = "admin"

    open_fixture(page, static_server, "form_fixture.html", admin)
    assert not page.eval_on_selector("#f-discount", "el => el.readOnly")
    assert not page.eval_on_selector_all("#f-priority input", "els => els.some(e => e.disabled)")


def test_read_only_if_on_create_locks_and_clears(page, static_server):
    open_fixture(page, static_server, "form_fixture.html")
    assert not page.eval_on_selector("#f-discount", "el => el.readOnly")
    select(page, "#f-stage", "won")
    assert page.eval_on_selector("#f-discount", "el => el.readOnly")
    assert page.input_value("#f-discount") == "", "the server takes no value for a locked field on create"
    assert form_values(page, "priority") == []
    select(page, "#f-stage", "open")
    assert not page.eval_on_selector("#f-discount", "el => el.readOnly")
    assert not page.eval_on_selector_all("#f-priority input", "els => els.some(e => e.disabled)")
    fill(page, "#f-discount", "7.5")
    assert form_values(page, "discount") == ["7.5"]


def test_dependent_choices_follow_their_controller(page, static_server):
    open_fixture(page, static_server, "form_fixture.html")
    assert options(page, "#f-sub_stage") == ["", "fresh"]
    assert page.input_value("#f-sub_stage") == "fresh"
    page.evaluate("""() => { window.subChanges = 0;
        document.querySelector('#f-sub_stage').addEventListener('change', () => window.subChanges++); }""")
    select(page, "#f-stage", "open")
    assert options(page, "#f-sub_stage") == ["", "active", "stalled"]
    assert page.input_value("#f-sub_stage") == ""
    assert page.evaluate("window.subChanges") == 1, "clearing a disallowed value fires change"
    select(page, "#f-sub_stage", "stalled")
    select(page, "#f-stage", "lost")
    assert options(page, "#f-sub_stage") == ["", "price", "timing"]
    assert page.input_value("#f-sub_stage") == ""
    select(page, "#f-stage", "")
    assert options(page, "#f-sub_stage") == [""], "an empty controller allows nothing"

    # A boolean controller is looked up as "true" / "false".
    page.click("#tab-more")
    visible = "els => els.filter(e => !e.closest('label').hidden).map(e => e.value)"
    assert page.eval_on_selector_all("#f-tags input", visible) == ["standard"]
    assert form_values(page, "tags") == ["standard"]
    check(page, "#f-is_big")
    assert page.eval_on_selector_all("#f-tags input", visible) == ["vip", "strategic"]
    assert form_values(page, "tags") == []
    check(page, "#f-tags input[value=vip]")
    assert form_values(page, "tags") == ["vip"]


def test_required_fields_block_the_post_and_take_the_focus(page, static_server):
    open_fixture(page, static_server, "form_fixture.html")
    posts = capture_posts(page, static_server, "/submitted")
    select(page, "#f-stage", "lost")
    page.click("button[type=submit]")
    assert page.inner_text("#f-close_reason-error") == "This field is required."
    assert attr(page, "#f-close_reason", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "f-close_reason"
    assert posts == []

    # The next missing field is on a tab not shown, in a collapsed section: both open.
    fill(page, "#f-close_reason", "Too expensive")
    assert page.inner_text("#f-close_reason-error") == "", "editing a field clears its error"
    assert attr(page, "#f-close_reason", "aria-invalid") is None
    page.click("#tab-more")
    page.click(".lw-collapse")
    assert is_hidden(page, "#sec-terms")
    page.click("#tab-main")
    page.click("button[type=submit]")
    assert attr(page, "#tab-more", "aria-selected") == "true"
    assert not is_hidden(page, "#panel-more") and not is_hidden(page, "#sec-terms")
    assert page.evaluate("document.activeElement.id") == "f-close_date"
    assert page.inner_text("#f-close_date-error") == "This field is required."
    _shot(page, "widgets-form-required")
    assert posts == []

    fill(page, "#f-close_date", "2026-12-01")
    select(page, "#f-sub_stage", "price")
    page.click("button[type=submit]")
    page.wait_for_selector("#done")
    assert len(posts) == 1
    sent = dict(posts[0])
    assert sent["stage"] == "lost" and sent["close_reason"] == "Too expensive"
    assert sent["close_date"] == "2026-12-01" and sent["sub_stage"] == "price"
    assert [v for k, v in posts[0] if k == "is_big"] == ["false"]


def test_lookup_autocomplete_with_the_keyboard(page, static_server):
    asked = mock_api(page)
    posts = capture_posts(page, static_server, "/submitted")
    open_fixture(page, static_server, "form_fixture.html")
    box = "#f-account"
    page.click(box)
    page.keyboard.type("ac")
    page.wait_for_selector("#f-account-list:not([hidden]) [role=option]")
    assert page.eval_on_selector_all("#f-account-list [role=option]", "els => els.map(e => e.textContent)") == [
        "Acme", "Acme Labs"]
    assert attr(page, box, "aria-expanded") == "true"
    search = [u for u in asked if "search=" in u][-1]
    assert parse_qs(urlsplit(search).query) == {"search": ["ac"], "limit": ["8"], "fields": ["id,name"]}

    page.keyboard.press("ArrowDown")
    assert attr(page, box, "aria-activedescendant") == "f-account-list-opt-0"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert attr(page, box, "aria-activedescendant") == "f-account-list-opt-0", "the list wraps round"
    page.keyboard.press("ArrowUp")
    assert attr(page, box, "aria-activedescendant") == "f-account-list-opt-1"
    assert attr(page, "#f-account-list-opt-1", "aria-selected") == "true"
    page.keyboard.press("Enter")
    assert page.input_value("[data-field=account] input[type=hidden]") == "4"
    assert page.input_value(box) == "Acme Labs"
    assert is_hidden(page, "#f-account-list") and attr(page, box, "aria-expanded") == "false"
    assert posts == [], "Enter in the list picks; it does not post the form"

    # The conditions read account.industry through the path, fetched for the pick.
    page.wait_for_selector("[data-field=industry_note]:not([hidden])")
    assert any(urlsplit(u).path == "/api/v1/data/account/4" and "fields=industry" in u for u in asked)

    page.fill(box, "zz")
    page.wait_for_selector("#f-account-list:not([hidden])")
    assert page.inner_text("#f-account-list") == "No matches"
    page.keyboard.press("Escape")
    assert is_hidden(page, "#f-account-list")
    page.click("#f-name")
    assert page.input_value(box) == "Acme Labs", "leaving puts the chosen title back"

    page.fill(box, "")
    assert page.input_value("[data-field=account] input[type=hidden]") == ""
    page.wait_for_selector("[data-field=industry_note][hidden]", state="attached")

    # A click picks too.
    page.click(box)
    page.keyboard.type("bor")
    page.click("#f-account-list [role=option]")
    assert page.input_value("[data-field=account] input[type=hidden]") == "5"
    page.wait_for_selector("[data-field=industry_note]:not([hidden])")


def test_lookup_search_failure_shows_a_message(page, static_server):
    page.route("**/api/v1/data/**", lambda route: route.fulfill(status=500, body="boom"))
    open_fixture(page, static_server, "form_fixture.html")
    page.click("#f-account")
    page.keyboard.type("a")
    page.wait_for_selector("#f-account-list:not([hidden])")
    assert page.inner_text("#f-account-list") == "Suggestions could not be loaded."


def test_json_box_is_checked_as_typed(page, static_server):
    posts = capture_posts(page, static_server, "/submitted")
    open_fixture(page, static_server, "form_fixture.html")
    page.click("#tab-notes")
    assert page.inner_text("#f-config-error").startswith("must be an object")
    fill(page, "#f-config", '{"a": ')
    assert page.inner_text("#f-config-error").startswith("Not valid JSON: ")
    assert attr(page, "#f-config", "aria-invalid") == "true"
    page.click("#tab-main")
    page.click("button[type=submit]")
    assert posts == []
    assert page.evaluate("document.activeElement.id") == "f-config"
    fill(page, "#f-config", '{"a": 2}')
    assert page.inner_text("#f-config-error") == ""
    assert attr(page, "#f-config", "aria-invalid") is None


def test_translated_messages(page, static_server):
    page.add_init_script("window.LW_MESSAGES = {'This field is required.': '此字段为必填项。'};")
    open_fixture(page, static_server, "form_fixture.html")
    fill(page, "#f-name", "")
    page.click("button[type=submit]")
    assert page.inner_text("#f-name-error") == "此字段为必填项。"


# -- page behaviour (lw-ui.js) ------------------------------------------------------

def test_tabs_move_with_the_keyboard(page, static_server):
    open_fixture(page, static_server, "form_fixture.html")
    assert not is_hidden(page, "#panel-main") and is_hidden(page, "#panel-more") and is_hidden(page, "#panel-notes")
    page.focus("#tab-main")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-more"
    assert attr(page, "#tab-more", "aria-selected") == "true" and attr(page, "#tab-main", "aria-selected") == "false"
    assert attr(page, "#tab-more", "tabindex") == "0" and attr(page, "#tab-main", "tabindex") == "-1"
    assert is_hidden(page, "#panel-main") and not is_hidden(page, "#panel-more")
    page.keyboard.press("End")
    assert page.evaluate("document.activeElement.id") == "tab-notes"
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.id") == "tab-main"
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.activeElement.id") == "tab-notes"
    page.keyboard.press("Home")
    assert page.evaluate("document.activeElement.id") == "tab-main"
    assert not is_hidden(page, "#panel-main")
    page.click("#tab-notes")
    assert not is_hidden(page, "#panel-notes") and is_hidden(page, "#panel-main")
    # Collapsible sections.
    page.click("#tab-more")
    page.click(".lw-collapse")
    assert attr(page, ".lw-collapse", "aria-expanded") == "false" and is_hidden(page, "#sec-terms")
    page.click(".lw-collapse")
    assert attr(page, ".lw-collapse", "aria-expanded") == "true" and not is_hidden(page, "#sec-terms")


def test_without_javascript_every_panel_shows(browser, static_server):
    context = browser.new_context(java_script_enabled=False)
    pg = context.new_page()
    pg.goto(f"{static_server}/tests/js/form_fixture.html")
    assert pg.eval_on_selector_all("[role=tabpanel]", "els => els.filter(e => e.hidden).length") == 0
    context.close()


def test_nav_toggle_on_a_phone(browser, static_server):
    context = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    pg = context.new_page()
    open_fixture(pg, static_server, "list_fixture.html")
    assert not pg.is_visible("#lw-nav")
    pg.click(".lw-nav-toggle")
    assert pg.is_visible("#lw-nav") and pg.get_attribute(".lw-nav-toggle", "aria-expanded") == "true"
    _shot(pg, "widgets-list-phone-nav")
    pg.keyboard.press("Escape")
    assert not pg.is_visible("#lw-nav") and pg.get_attribute(".lw-nav-toggle", "aria-expanded") == "false"
    assert pg.evaluate("document.activeElement.className").startswith("lw-nav-toggle")
    context.close()


# -- lists ---------------------------------------------------------------------------

ROUND_TRIP = {"or": [
    {"field": "stage", "op": "in", "value": ["won", "lost"]},
    {"field": "amount", "op": "gte", "value": "1000.50"},
    {"field": "employees", "op": "between", "value": [10, 50]},
    {"field": "employees", "op": "in", "value": [1, 2]},
    {"field": "close_date", "op": "lt", "value": "2026-12-31"},
    {"field": "close_date", "op": "gte", "value": "$today"},
    {"field": "is_big", "op": "eq", "value": True},
    {"field": "name", "op": "icontains", "value": "acme"},
    {"field": "account", "op": "is_null", "value": False},
    {"field": "account", "op": "eq", "value": 12},
    {"field": "created_at", "op": "gte", "value": "2026-01-01T10:00:00Z"},
    {"field": "created_at", "op": "lt", "value": "2026-01-02T10:00:30Z"},
    {"field": "tags", "op": "contains", "value": "vip"},
]}


def capture_gets(page, base: str, path: str) -> list[dict[str, list[str]]]:
    seen: list[dict[str, list[str]]] = []

    def handle(route):
        seen.append(parse_qs(urlsplit(route.request.url).query, keep_blank_values=True))
        route.fulfill(status=200, content_type="text/html", body="<p id=done>listed</p>")

    page.route(f"{base}{path}*", handle)
    return seen


def _with_filter(ast: Any) -> Callable[[dict[str, Any]], None]:
    def change(data):
        data["filter"] = ast
    return change


def submit_filter(page, seen) -> dict[str, list[str]]:
    page.click(".lw-filter button[type=submit]")
    page.wait_for_selector("#done")
    return seen[-1]


def test_filter_builder_round_trip(page, static_server):
    seen = capture_gets(page, static_server, "/listed")
    open_fixture(page, static_server, "list_fixture.html", _with_filter(ROUND_TRIP))
    rows = page.locator(".lw-filter-rows .lw-filter-row")
    assert rows.count() == len(ROUND_TRIP["or"])
    assert page.input_value(".lw-filter-join") == "or"
    first = rows.nth(0)
    assert first.locator("select.lw-filter-field").input_value() == "stage"
    assert first.locator("select.lw-filter-op").input_value() == "in"
    assert first.locator("select[multiple]").evaluate("s => [...s.selectedOptions].map(o => o.value)") == ["won", "lost"]
    labels = page.eval_on_selector_all(".lw-filter-row select, .lw-filter-row input, .lw-filter-row button",
                                       "els => els.filter(e => !e.getAttribute('aria-label')).length")
    assert labels == 0, "every control of a row has an aria-label"
    _shot(page, "widgets-list-filter")
    query = submit_filter(page, seen)
    assert json.loads(query["filter"][0]) == ROUND_TRIP
    assert query["q"] == [""] and query["sort"] == ["-amount"]
    assert not any("__" in k or k in ROUND_TRIP for k in query), "row controls submit nothing of their own"


def test_filter_builder_single_condition_and_editing(page, static_server):
    seen = capture_gets(page, static_server, "/listed")
    single = {"field": "stage", "op": "eq", "value": "won"}
    open_fixture(page, static_server, "list_fixture.html", _with_filter(single))
    assert json.loads(submit_filter(page, seen)["filter"][0]) == single

    open_fixture(page, static_server, "list_fixture.html", _with_filter(single))
    page.click(".lw-filter-remove")
    assert page.evaluate("document.activeElement.classList.contains('lw-add-condition')")
    assert "filter" not in submit_filter(page, seen), "no conditions: no filter in the address"

    open_fixture(page, static_server, "list_fixture.html")
    page.click(".lw-add-condition")
    row = page.locator(".lw-filter-row").last
    assert page.evaluate("document.activeElement.classList.contains('lw-filter-field')")
    assert row.locator(".lw-filter-op").input_value() == "eq"
    row.locator(".lw-filter-field").select_option("employees")
    row.locator(".lw-filter-op").select_option("between")
    inputs = row.locator(".lw-filter-value input")
    assert inputs.count() == 2
    inputs.nth(0).fill("5")
    inputs.nth(1).fill("9")
    page.click(".lw-add-condition")
    row2 = page.locator(".lw-filter-row").last
    row2.locator(".lw-filter-field").select_option("amount")
    row2.locator(".lw-filter-op").select_option("gt")
    row2.locator(".lw-filter-value input").fill("10.5")
    row2.locator(".lw-filter-op").select_option("in")
    assert row2.locator(".lw-filter-value input").input_value() == "10.5", "the value carries over"
    page.click(".lw-add-condition")  # left empty: dropped
    page.click(".lw-add-condition")
    row4 = page.locator(".lw-filter-row").last
    row4.locator(".lw-filter-field").select_option("close_date")
    row4.locator(".lw-filter-op").select_option("is_null")
    page.select_option(".lw-filter-join", "or")
    assert json.loads(submit_filter(page, seen)["filter"][0]) == {"or": [
        {"field": "employees", "op": "between", "value": [5, 9]},
        {"field": "amount", "op": "in", "value": ["10.5"]},
        {"field": "close_date", "op": "is_null", "value": True},
    ]}


def test_filter_built_elsewhere_is_kept_until_edited(page, static_server):
    seen = capture_gets(page, static_server, "/listed")
    foreign = {"not": {"field": "stage", "op": "eq", "value": "won"}}

    def change(data):
        data["filter"] = foreign

    open_fixture(page, static_server, "list_fixture.html", change)
    page.eval_on_selector(".lw-filter input[name=filter]", f"(el) => {{ el.value = {json.dumps(json.dumps(foreign))}; }}")
    assert "built elsewhere" in page.inner_text(".lw-filter-note")
    assert page.locator(".lw-filter-row").count() == 0
    assert json.loads(submit_filter(page, seen)["filter"][0]) == foreign

    open_fixture(page, static_server, "list_fixture.html", change)
    page.click(".lw-add-condition")
    page.locator(".lw-filter-row .lw-filter-field").select_option("is_big")
    assert json.loads(submit_filter(page, seen)["filter"][0]) == {"field": "is_big", "op": "eq", "value": True}


def test_filter_builder_follows_the_served_rules(page, static_server):
    """The builder knows operators and caps only from the rules the page serves."""
    def change(data):
        data["rules"]["max_conditions"] = 2
        data["filter"] = {"field": "stage", "op": "in", "value": ["won"]}

    open_fixture(page, static_server, "list_fixture.html", change)
    assert page.locator(".lw-filter-row").count() == 1
    page.click(".lw-add-condition")
    assert page.locator(".lw-filter-row").count() == 2
    assert page.is_disabled(".lw-add-condition"), "no more rows than a filter may have conditions"
    page.locator(".lw-filter-remove").first.click()
    assert not page.is_disabled(".lw-add-condition")

    def unknown(data):
        del data["rules"]["operators"]["in"]
        data["filter"] = {"field": "stage", "op": "in", "value": ["won"]}

    open_fixture(page, static_server, "list_fixture.html", unknown)
    assert "built elsewhere" in page.inner_text(".lw-filter-note")


def _with_lookup(ast: Any, titles: dict[str, str] | None = None) -> Callable[[dict[str, Any]], None]:
    """The page as the server renders it for a user who may read accounts."""
    def change(data):
        data["fields"]["account"]["lookup"] = {"object": "account", "title_field": "name"}
        data["filter"] = ast
        data["titles"] = {"account": titles or {}}
    return change


def test_filter_builder_picks_lookup_records_by_searching(page, static_server):
    """A lookup condition takes its record by search-as-you-type and shows titles;
    the filter still holds ids."""
    asked = mock_api(page)
    seen = capture_gets(page, static_server, "/listed")
    open_fixture(page, static_server, "list_fixture.html",
                 _with_lookup({"field": "account", "op": "eq", "value": "3"}, {"3": "Acme"}))
    row = page.locator(".lw-filter-row").first
    box = row.locator("[role=combobox]")
    assert box.input_value() == "Acme", "the title, not the id"
    assert box.get_attribute("aria-label") == "Value"
    box.fill("")
    box.type("bor")
    page.wait_for_selector(".lw-filter-row [role=listbox]:not([hidden]) [role=option]")
    search = [u for u in asked if "search=" in u][-1]
    assert parse_qs(urlsplit(search).query)["search"] == ["bor"]
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    assert box.input_value() == "Borealis"
    _shot(page, "widgets-list-filter-lookup")
    # Switching to "is any of" keeps the pick as a token; another is added by searching.
    row.locator(".lw-filter-op").select_option("in")
    tokens = row.locator(".lw-token")
    assert tokens.count() == 1 and tokens.first.inner_text().startswith("Borealis")
    adder = row.locator("[role=combobox]")
    assert adder.get_attribute("aria-label") == "Add a record"
    adder.type("acme l")
    page.wait_for_selector(".lw-filter-row [role=listbox]:not([hidden]) [role=option]")
    page.click(".lw-filter-row [role=option]")
    assert [t.split("\n")[0].strip("× ") for t in tokens.all_inner_texts()] == ["Borealis", "Acme Labs"]
    assert adder.input_value() == ""
    _shot(page, "widgets-list-filter-lookup-tokens")
    assert json.loads(submit_filter(page, seen)["filter"][0]) == {"field": "account", "op": "in", "value": [5, 4]}

    open_fixture(page, static_server, "list_fixture.html",
                 _with_lookup({"field": "account", "op": "in", "value": [3, 4]}, {"3": "Acme"}))
    tokens = page.locator(".lw-filter-row .lw-token")
    assert [t.split("\n")[0].strip("× ") for t in tokens.all_inner_texts()] == ["Acme", "#4"]
    page.click(".lw-filter-row .lw-token button[aria-label='Remove Acme']")
    assert json.loads(submit_filter(page, seen)["filter"][0]) == {"field": "account", "op": "in", "value": [4]}


def test_bulk_selection_count_and_select_all(page, static_server):
    page.add_init_script("window.LW_MESSAGES = {'%(n)s selected': '已选 %(n)s 条'};")
    posts = capture_posts(page, static_server, "/bulk")
    open_fixture(page, static_server, "list_fixture.html")
    assert is_hidden(page, ".lw-bulk-bar")
    page.check(".lw-row-select[value='1']")
    assert not is_hidden(page, ".lw-bulk-bar")
    assert page.inner_text(".lw-bulk-count") == "已选 1 条"
    assert page.eval_on_selector(".lw-select-all", "el => el.indeterminate && !el.checked")
    page.check(".lw-row-select[value='3']")
    assert page.inner_text(".lw-bulk-count") == "已选 2 条"
    page.check(".lw-select-all")
    assert page.eval_on_selector_all(".lw-row-select", "els => els.every(e => e.checked)")
    assert page.eval_on_selector(".lw-select-all", "el => el.checked && !el.indeterminate")
    assert page.inner_text(".lw-bulk-count") == "已选 3 条"
    page.uncheck(".lw-select-all")
    assert is_hidden(page, ".lw-bulk-bar")
    assert page.eval_on_selector_all(".lw-row-select", "els => els.every(e => !e.checked)")

    page.check(".lw-row-select[value='2']")
    page.select_option(".lw-bulk-field", "tags")
    page.select_option(".lw-bulk-value select", ["vip"])
    _shot(page, "widgets-list-bulk")
    page.click("button[name=action][value=update]")
    page.wait_for_selector("#done")
    sent = posts[-1]
    assert ("ids", "2") in sent and ("field", "tags") in sent and ("value", "vip") in sent
    assert ("action", "update") in sent


def test_bulk_value_control_follows_the_field(page, static_server):
    open_fixture(page, static_server, "list_fixture.html")
    page.check(".lw-row-select[value='1']")
    control = ".lw-bulk-value [name=value]"

    def shape() -> dict[str, Any]:
        return page.eval_on_selector(control, """el => ({tag: el.tagName.toLowerCase(), type: el.type,
            multiple: !!el.multiple, id: el.id, options: el.options ? [...el.options].map(o => o.value) : null})""")

    assert shape()["type"] == "text"
    page.select_option(".lw-bulk-field", "stage")
    assert shape() == {"tag": "select", "type": "select-one", "multiple": False, "id": "lw-bulk-value-input",
                       "options": ["", "new", "open", "won", "lost"]}
    page.select_option(".lw-bulk-field", "tags")
    assert shape()["multiple"] and shape()["options"] == ["standard", "vip"]
    page.select_option(".lw-bulk-field", "is_big")
    assert shape()["options"] == ["true", "false"]
    page.select_option(".lw-bulk-field", "close_date")
    assert shape()["type"] == "date"
    page.select_option(".lw-bulk-field", "employees")
    assert shape()["type"] == "number"
    page.select_option(".lw-bulk-field", "amount")
    assert shape()["type"] == "text" and page.get_attribute(control, "inputmode") == "decimal"
    assert page.locator(".lw-bulk-value [name=value]").count() == 1
    assert page.get_attribute(".lw-bulk-value label", "for") == "lw-bulk-value-input"
