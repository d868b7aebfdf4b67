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
