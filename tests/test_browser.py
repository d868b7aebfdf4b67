"""Browser tests: headless Chromium driven by Playwright against a live server.

They skip with the reason when Chromium or Playwright is missing, unless
``LOOMWORK_REQUIRE_BROWSER=1`` (as in CI), where a missing browser fails.
Screenshots land in ``test-artefacts/``.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ARTEFACTS = Path(__file__).resolve().parent.parent / "test-artefacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _chromium() -> str | None:
    for candidate in (os.environ.get("LOOMWORK_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    required = os.environ.get("LOOMWORK_REQUIRE_BROWSER") == "1"
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if required:
            pytest.fail("playwright is required (LOOMWORK_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("playwright is not installed")
    if exe is None:
        if required:
            pytest.fail("Chromium is required (LOOMWORK_REQUIRE_BROWSER=1) but /usr/bin/chromium is missing")
        pytest.skip("Chromium not found (install Debian's chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def live_server(tmp_path_factory):
    """The sample CRM on SQLite, served by werkzeug on a free port in a thread."""
    from werkzeug.serving import make_server

    from loomwork import create_app
    from loomwork.demo import setup_demo

    root = tmp_path_factory.mktemp("browser")
    app = create_app({"database_url": f"sqlite:///{root / 'instance'}", "instance_dir": str(root / "instance"),
                      "secret_key": "browser-test", "secure_cookies": False})
    login = setup_demo(app.extensions["loomwork"], 60, echo=lambda _m: None)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", login
    server.shutdown()
    app.extensions["loomwork"].platform.dispose()


def _shot(page, name: str) -> None:
    ARTEFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)


def test_sign_in_see_objects_and_sign_out(browser, live_server):
    base, login = live_server
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(base + "/")
    assert page.url.endswith("/login")
    _shot(page, "login")
    page.fill("#username", login["username"])
    page.fill("#password", "wrong password")
    page.click("button.primary")
    assert "wrong tenant, username or password" in page.inner_text(".error")
    _shot(page, "login-error")
    page.fill("#password", login["password"])
    page.click("button.primary")
    page.wait_for_url(base + "/")
    text = page.inner_text("main")
    for label in ("Accounts", "Contacts", "Deals"):
        assert label in text
    _shot(page, "home")
    # The API link works with the browser session (cookie auth, GET needs no CSRF token).
    response = page.request.get(base + "/api/v1/data/deal?limit=2")
    assert response.status == 200 and len(response.json()["data"]) == 2
    # An unsafe request with only the cookie is refused without the CSRF token.
    refused = page.request.post(base + "/api/v1/data/account", data={"name": "Nope"})
    assert refused.status == 403
    page.click("text=Sign out")
    page.wait_for_url(base + "/login")
    assert page.request.get(base + "/api/v1/data/deal").status == 401
    page.close()


def test_change_password_and_phone_layout(browser, live_server):
    base, login = live_server
    page = browser.new_page(viewport={"width": 375, "height": 740}, is_mobile=True)
    page.goto(base + "/login")
    page.fill("#username", "sam")
    page.fill("#password", login["password"])
    page.click("button.primary")
    page.wait_for_url(base + "/")
    page.click("text=Password")
    page.fill("#old_password", "not it at all")
    page.fill("#new_password", "a-new-password-1")
    page.click("button.primary")
    assert "not your current password" in page.inner_text(".error")
    page.fill("#old_password", login["password"])
    page.fill("#new_password", "a-new-password-1")
    page.click("button.primary")
    assert "has been changed" in page.inner_text(".ok")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, "the page must not scroll sideways on a phone"
    _shot(page, "password-phone")
    page.close()
