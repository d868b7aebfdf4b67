"""Fixtures for Loomwork's own tests. The storage fixtures (``lw_*``) come from the
``loomwork.testing`` plugin, which template and plugin authors use too."""
from __future__ import annotations

import pytest

from loomwork.plugins import crm_sample

SAMPLE_PACKAGE = crm_sample.PATH
_PACKAGES: dict = {}


@pytest.fixture
def fast_setup(lw_cheap_passwords, monkeypatch):
    """Cheap Argon2 and a parsed-once sample package, for tests whose subject is
    neither the key derivation nor the package loader (both have their own tests)."""
    import copy

    import loomwork.metadata.packages as packages

    real = packages.load_package

    def load_package(folder):
        key = str(folder)
        if key not in _PACKAGES:
            _PACKAGES[key] = real(folder)
        return copy.deepcopy(_PACKAGES[key])

    monkeypatch.setattr(packages, "load_package", load_package)


@pytest.fixture
def cli(lw_database_url, tmp_path, monkeypatch):
    """Run ``loomwork`` against a fresh platform (its own namespace, dropped afterwards):
    ``cli(*args, input=None, ok=True)`` checks the command succeeded (or, with
    ``ok=False``, failed) and returns its output; ``cli.database_url`` is the database.
    A test module adds set-up by overriding it (``def cli(cli): ...``)."""
    import secrets

    from click.testing import CliRunner

    from loomwork import create_app
    from loomwork.cli import main

    monkeypatch.setenv("LOOMWORK_NAMESPACE", f"lwt{secrets.token_hex(4)}")
    monkeypatch.setenv("LOOMWORK_SECRET_KEY", "cli-test")
    monkeypatch.setenv("LOOMWORK_INSTANCE_DIR", str(tmp_path / "inst"))
    runner = CliRunner()

    def run(*args: str, input: str | None = None, ok: bool = True) -> str:
        result = runner.invoke(main, ["--database-url", lw_database_url, *args], input=input,
                               catch_exceptions=False)
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    run.database_url = lw_database_url
    yield run
    st = create_app({"database_url": lw_database_url}).extensions["loomwork"]
    st.platform.drop_all()
    st.platform.dispose()


@pytest.fixture
def meta(lw_services):
    """The metadata service."""
    return lw_services.metadata


@pytest.fixture
def rec(lw_services):
    """The record service."""
    return lw_services.records


@pytest.fixture
def app(lw_database_url, tmp_path):
    """An app over a fresh platform with tenant ``main`` and its administrator ``admin``."""
    import secrets

    from loomwork import create_app
    from loomwork.runtime.context import Actor, Context

    app = create_app({
        "database_url": lw_database_url, "namespace": f"lwt{secrets.token_hex(4)}",
        "secret_key": "test-secret", "instance_dir": str(tmp_path / "inst"), "secure_cookies": False,
    })
    app.config["TESTING"] = True
    st = app.extensions["loomwork"]
    tenant = st.platform.create_tenant("main")
    ctx = Context(tenant, Actor.system())
    st.services.users.create(ctx, "admin", "admin-password", roles=("admin",))
    yield app
    st.platform.drop_all()
    st.platform.dispose()


@pytest.fixture
def crm_app(app):
    """``app`` with the sample CRM package installed and users sam (sales) and vera (viewer)
    (after the install: a user's roles must be the tenant's)."""
    from loomwork.metadata.packages import load_package
    from loomwork.runtime.context import Actor, Context

    st = app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    st.services.packages.install(ctx, load_package(SAMPLE_PACKAGE))
    st.services.users.create(ctx, "sam", "sales-password", roles=("sales",))
    st.services.users.create(ctx, "vera", "viewer-password", roles=("viewer",))
    return app


class ApiClient:
    """A test client that authenticates with a bearer token and speaks JSON."""

    def __init__(self, app, token: str | None) -> None:
        self.client = app.test_client()
        self.token = token

    def _headers(self, headers):
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        h.update(headers or {})
        return h

    def request(self, method: str, path: str, json=None, headers=None, **kw):
        return self.client.open(path, method=method, json=json, headers=self._headers(headers), **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json, **kw)

    def patch(self, path, json=None, **kw):
        return self.request("PATCH", path, json=json, **kw)

    def put(self, path, json=None, **kw):
        return self.request("PUT", path, json=json, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def token_for(app, username: str, tenant: str = "main") -> str:
    from loomwork.runtime.context import Actor, Context

    st = app.extensions["loomwork"]
    ctx = Context(st.platform.tenant(tenant), Actor.system())
    user = next(u for u in st.services.users.list(ctx) if u.username == username)
    return st.services.users.create_token(ctx, user.id, "test")


@pytest.fixture
def api(crm_app):
    """An administrator's API client on the CRM app."""
    return ApiClient(crm_app, token_for(crm_app, "admin"))


@pytest.fixture
def api_as(crm_app):
    """``api_as("sam")``: an API client for another user."""
    return lambda username: ApiClient(crm_app, token_for(crm_app, username))


@pytest.fixture
def anon(crm_app):
    return ApiClient(crm_app, None)


class WebClient:
    """A test client signed in through the sign-in page, keeping the page's CSRF token."""

    def __init__(self, app, username: str, password: str) -> None:
        self.client = app.test_client()
        page = self.client.get("/login").get_data(as_text=True)
        resp = self.client.post("/login", data={"username": username, "password": password,
                                                "csrf_token": csrf_of(page)})
        assert resp.status_code == 302 and "/login" not in resp.headers["Location"]
        self.csrf = csrf_of(self.client.get("/").get_data(as_text=True))

    def text(self, path: str, status: int = 200) -> str:
        resp = self.client.get(path)
        assert resp.status_code == status, resp.get_data(as_text=True)[:1000]
        return resp.get_data(as_text=True)

    def post(self, path: str, data: dict | None = None):
        return self.client.post(path, data={"csrf_token": self.csrf, **(data or {})})


def csrf_of(html: str) -> str:
    import re

    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def web_as(crm_app):
    """``web_as("sam", "sales-password")``: the CRM app's pages, signed in as that user."""
    return lambda username, password: WebClient(crm_app, username, password)


# -- browser tests (test_browser*.py) ---------------------------------------------------------
# Headless Chromium through Playwright: ``browser`` for any page, and for the generated UI
# ``live`` (the sample CRM with demo data on a live server), ``sessions`` and ``open_page``.
# Each skips with the reason when Chromium or Playwright is missing, unless
# ``LOOMWORK_REQUIRE_BROWSER=1`` (as in CI), where a missing browser fails.

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
BROWSER_VIEWPORT = {"width": 1280, "height": 800}
BROWSER_TIMEOUT_MS = 5000
#: Console noise that is not a fault of the page: Chromium logs every 4xx document.
CONSOLE_NOISE = ("Failed to load resource",)


def _chromium() -> str | None:
    import os
    import shutil

    for candidate in (os.environ.get("LOOMWORK_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per test module."""
    import os

    required = os.environ.get("LOOMWORK_REQUIRE_BROWSER") == "1"
    exe = _chromium()
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        if required:
            pytest.fail("playwright is required (LOOMWORK_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("playwright is not installed")
    if exe is None:
        if required:
            pytest.fail("Chromium is required (LOOMWORK_REQUIRE_BROWSER=1) but /usr/bin/chromium is missing")
        pytest.skip("Chromium not found (install Debian's chromium)")
    expect.set_options(timeout=BROWSER_TIMEOUT_MS)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Live:
    """The running demo: its address, the demo password and direct access to the services."""

    def __init__(self, base: str, password: str, state) -> None:
        self.base, self.password, self.state = base, password, state

    def ctx(self, username: str = "admin"):
        from loomwork.runtime.context import Context

        tenant = self.state.platform.tenant(self.state.settings.default_tenant)
        return Context(tenant, self.user(username).actor())

    def user(self, username: str):
        from loomwork.runtime.context import Actor, Context

        tenant = self.state.platform.tenant(self.state.settings.default_tenant)
        return self.state.services.users.by_username(Context(tenant, Actor.system()), username)

    def create(self, object_name: str, data: dict, username: str = "admin") -> dict:
        return self.state.services.records.create(self.ctx(username), object_name, data)

    def url(self, path: str) -> str:
        return self.base + path

    def sign_in(self, page, username: str, password: str | None = None) -> None:
        """Fill in and send the sign-in form open in ``page`` (in whatever language it is)."""
        page.fill("#username", username)
        page.fill("#password", password or self.password)
        page.locator("form button[type=submit]").click()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The sample CRM on SQLite with demo data, served by werkzeug on a free port in a thread.

    Users: ``admin`` (administrator), ``sam`` (sales, from the demo) and ``lin``, ``mei``,
    ``kai`` (sales, for the tests that change their language or time zone), all with the
    demo password.
    """
    import threading

    from werkzeug.serving import make_server

    from loomwork import create_app
    from loomwork.demo import setup_demo
    from loomwork.runtime.context import Actor, Context

    root = tmp_path_factory.mktemp("browser")
    app = create_app({"database_url": f"sqlite:///{root / 'instance'}", "instance_dir": str(root / "instance"),
                      "secret_key": "browser-test", "secure_cookies": False})
    st = app.extensions["loomwork"]
    login = setup_demo(st, 60, echo=lambda _m: None)
    tenant = st.platform.tenant(st.settings.default_tenant)
    for username, full_name in (("lin", "Lin Chen"), ("mei", "Mei Wang"), ("kai", "Kai Liu")):
        st.services.users.create(Context(tenant, Actor.system()), username, login["password"], roles=("sales",),
                                 full_name=full_name)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Live(f"http://127.0.0.1:{server.server_port}", login["password"], st)
    server.shutdown()
    st.platform.dispose()


@pytest.fixture(scope="module")
def sessions(browser, live):
    """``sessions(username)``: the cookies of a user signed in through the sign-in page
    (once per user and module, from a browser in UTC)."""
    cache: dict[str, dict] = {}

    def get(username: str) -> dict:
        if username not in cache:
            context = browser.new_context(timezone_id="UTC")
            page = context.new_page()
            page.goto(live.url("/login"))
            live.sign_in(page, username)
            page.wait_for_url(live.url("/"))
            cache[username] = context.storage_state()
            context.close()
        return cache[username]

    return get


@pytest.fixture
def open_page(browser, live, sessions):
    """Open a page in a fresh browser context; fails the test on any JavaScript error.

    ``open_page(path, user="admin", viewport=BROWSER_VIEWPORT, **context_options)``;
    ``user=None`` opens it signed out.
    """
    contexts = []
    problems: list[str] = []

    def opener(path: str | None = None, *, user: str | None = "admin", viewport: dict = BROWSER_VIEWPORT,
               **options):
        context = browser.new_context(viewport=viewport, storage_state=sessions(user) if user else None, **options)
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: problems.append(f"uncaught on {page.url}: {exc}"))
        page.on("console", lambda msg: problems.append(f"console.error on {page.url}: {msg.text}")
                if msg.type == "error" and not msg.text.startswith(CONSOLE_NOISE) else None)
        if path is not None:
            page.goto(live.url(path))
        return page

    yield opener
    for context in contexts:
        context.close()
    assert not problems, "JavaScript errors in the pages:\n" + "\n".join(problems)
