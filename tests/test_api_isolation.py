"""Tenants are separate namespaces: nothing of tenant ``other`` is reachable with the
credentials of tenant ``main`` (by id, by filter, by lookup path, by token or session)."""
from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from loomwork.testing import assert_problem as problem

pytestmark = pytest.mark.usefixtures("fast_setup")


class Client:
    """A bearer-token client (like conftest's ApiClient) for any tenant."""

    def __init__(self, app, token):
        self.client, self.token = app.test_client(), token

    def request(self, method, path, json=None, headers=None):
        return self.client.open(path, method=method, json=json,
                                headers={"Authorization": f"Bearer {self.token}", **(headers or {})})

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, json=None, **kw):
        return self.request("POST", path, json=json, **kw)


@pytest.fixture
def tenants(crm_app, api):
    """``main`` (the fixture tenant) and ``other``, with the same package and their own admins."""
    from loomwork.metadata.packages import load_package
    from loomwork.plugins import crm_sample
    from loomwork.runtime.context import Actor, Context

    st = crm_app.extensions["loomwork"]
    other = st.platform.create_tenant("other")
    ctx = Context(other, Actor.system())
    st.services.packages.install(ctx, load_package(crm_sample.PATH))
    admin = st.services.users.create(ctx, "admin", "other-admin-password", roles=("admin",))
    st.services.users.create(ctx, "olga", "olga-password", roles=("sales",))
    theirs = Client(crm_app, st.services.users.create_token(ctx, admin.id, "test"))
    mine = Client(crm_app, api.token)

    # other gets more rows than main, so ids that exist only there are easy to name.
    o_accounts = theirs.post("/api/v1/data/account", json=[
        {"name": "Secret Corp", "industry": "finance"}, {"name": "Hidden Ltd", "industry": "finance"},
        {"name": "Shadow Inc", "industry": "retail"}]).json["data"]
    o_deal = theirs.post("/api/v1/data/deal", json={"name": "Top secret deal", "account": o_accounts[2]["id"],
                                                     "amount": "999999"}).json
    m_account = mine.post("/api/v1/data/account", json={"name": "Main Co", "industry": "software"}).json
    m_deal = mine.post("/api/v1/data/deal", json={"name": "Main deal", "account": m_account["id"]}).json
    return {"mine": mine, "theirs": theirs, "o_accounts": o_accounts, "o_deal": o_deal,
            "m_account": m_account, "m_deal": m_deal}


def test_main_cannot_reach_other_by_id(tenants):
    mine, o_accounts = tenants["mine"], tenants["o_accounts"]
    only_there = o_accounts[2]["id"]  # main has a single account
    assert only_there != tenants["m_account"]["id"]
    problem(mine.get(f"/api/v1/data/account/{only_there}"), 404)
    problem(mine.get(f"/api/v1/data/account/{only_there}/history"), 404)
    problem(mine.request("PATCH", f"/api/v1/data/account/{only_there}", json={"name": "pwned"}), 404)
    problem(mine.request("DELETE", f"/api/v1/data/account/{only_there}"), 404)
    problem(mine.post(f"/api/v1/data/account/{only_there}/restore"), 404)
    # A lookup to an id that exists only in other is not a record of main.
    bad = mine.post("/api/v1/data/deal", json={"name": "x", "account": only_there})
    assert "account" in problem(bad, 422)["errors"]
    # Same id in both tenants: each sees its own row.
    same = tenants["m_account"]["id"]
    assert mine.get(f"/api/v1/data/account/{same}").json["name"] == "Main Co"
    assert tenants["theirs"].get(f"/api/v1/data/account/{same}").json["name"] == "Secret Corp"
    assert [a["name"] for a in tenants["theirs"].get("/api/v1/data/account?sort=name").json["data"]] == [
        "Hidden Ltd", "Secret Corp", "Shadow Inc"]


def test_main_cannot_reach_other_by_filter_search_or_lookup_path(tenants):
    mine = tenants["mine"]

    def listed(path):
        resp = mine.get(path)
        assert resp.status_code == 200, resp.json
        return resp.json["data"]

    assert listed("/api/v1/data/account?name=Secret%20Corp") == []
    assert listed("/api/v1/data/account?industry=finance") == []
    assert listed("/api/v1/data/account?search=shadow") == []
    assert listed("/api/v1/data/deal?account.name=Shadow%20Inc") == []
    assert listed("/api/v1/data/deal?account.industry__in=finance,retail") == []
    assert listed("/api/v1/data/deal?amount__gte=1000") == []
    ast = {"or": [{"field": "name", "op": "icontains", "value": "secret"},
                  {"field": "account.name", "op": "starts_with", "value": "Shadow"},
                  {"field": "id", "op": "gte", "value": 1}]}
    assert [d["name"] for d in listed(f"/api/v1/data/deal?filter={quote(json.dumps(ast))}")] == ["Main deal"]
    counted = mine.get("/api/v1/data/account?count=exact").json
    assert counted["count"] == 1
    # The other tenant's metadata and versions are not main's either.
    assert mine.get("/api/v1/meta").json["version"] == 1


def test_tokens_carry_their_tenant(tenants, crm_app):
    mine, theirs = tenants["mine"], tenants["theirs"]
    assert mine.token.startswith("lw_main.") and theirs.token.startswith("lw_other.")
    assert mine.get("/api/v1/auth/me").json["tenant"] == "main"
    assert theirs.get("/api/v1/auth/me").json["tenant"] == "other"
    forged = Client(crm_app, "lw_other." + mine.token.split(".", 1)[1])
    for method, path in (("GET", "/api/v1/data/account"), ("GET", "/api/v1/auth/me"),
                         ("GET", f"/api/v1/data/account/{tenants['o_accounts'][0]['id']}"),
                         ("POST", "/api/v1/data/account")):
        resp = forged.request(method, path, json={"name": "x"} if method == "POST" else None)
        assert "invalid API token" in problem(resp, 401)["detail"]
    back = Client(crm_app, "lw_main." + theirs.token.split(".", 1)[1])
    problem(back.get("/api/v1/data/account"), 401)
    assert [a["name"] for a in theirs.get("/api/v1/data/account?name=Main%20Co").json["data"]] == []


def test_sessions_stay_in_their_tenant(tenants, crm_app):
    web = crm_app.test_client()
    # main's credentials do not open other, and vice versa.
    problem(web.post("/api/v1/auth/login", json={"username": "admin", "password": "admin-password",
                                                 "tenant": "other"}), 401)
    problem(web.post("/api/v1/auth/login", json={"username": "olga", "password": "olga-password"}), 401)
    resp = web.post("/api/v1/auth/login", json={"username": "olga", "password": "olga-password", "tenant": "other"})
    assert resp.status_code == 200 and resp.json["tenant"] == "other"
    assert [a["name"] for a in web.get("/api/v1/data/account?sort=name").json["data"]] == [
        "Hidden Ltd", "Secret Corp", "Shadow Inc"]
    problem(web.get(f"/api/v1/data/deal/{tenants['m_deal']['id'] + 100}"), 404)
    # A cookie naming another tenant, signed without the app's secret, is no session at all.
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    evil = Flask("evil")
    evil.secret_key = "a guess"
    forged = SecureCookieSessionInterface().get_signing_serializer(evil).dumps(
        {"uid": 1, "tenant": "main", "auth_version": "admin", "csrf": "x", "_permanent": True})
    web.set_cookie("loomwork_session", forged)
    problem(web.get("/api/v1/auth/me"), 401)
    problem(web.get("/api/v1/data/account"), 401)


def test_metadata_and_openapi_are_per_tenant(tenants):
    mine, theirs = tenants["mine"], tenants["theirs"]
    deal = {k: v for k, v in theirs.get("/api/v1/meta/objects/deal").json.items() if k not in ("version", "name")}
    deal["fields"]["codename"] = {"type": "text"}
    assert theirs.request("PUT", "/api/v1/meta/objects/deal", json={"object": deal}).json["version"] == 2
    assert "codename" in theirs.get("/api/v1/openapi.json").json["components"]["schemas"]["Deal"]["properties"]
    assert "codename" not in mine.get("/api/v1/openapi.json").json["components"]["schemas"]["Deal"]["properties"]
    assert "codename" not in mine.get("/api/v1/meta/objects/deal").json["fields"]
    assert mine.get("/api/v1/meta").json["version"] == 1
    problem(mine.get("/api/v1/meta/versions/2"), 404)
    assert "codename" in problem(mine.post("/api/v1/data/deal", json={
        "name": "x", "account": tenants["m_account"]["id"], "codename": "y"}), 422)["errors"]


def test_sign_in_page_does_not_list_tenants(tenants, crm_app):
    web = crm_app.test_client()
    html = web.get("/login").get_data(as_text=True)
    assert "other" not in html and 'name="tenant" value="main"' in html
    page = web.get("/login?tenant=other").get_data(as_text=True)
    assert 'name="tenant" value="other"' in page
    csrf = page.split('name="csrf_token" value="')[1].split('"')[0]
    form = {"csrf_token": csrf, "tenant": "other", "username": "olga", "password": "olga-password"}
    assert web.post("/login", data={**form, "tenant": "nope"}).status_code == 401
    assert web.post("/login", data={**form, "tenant": "main"}).status_code == 401
    assert web.post("/login", data=form).status_code == 302
    assert web.get("/api/v1/auth/me").json["tenant"] == "other"
    # An unknown or malformed tenant in the link just shows the default workspace.
    assert 'value="main"' in crm_app.test_client().get("/login?tenant=BAD!").get_data(as_text=True)


def test_workspace_field_fails_like_a_wrong_password_and_is_remembered(tenants, crm_app, monkeypatch):
    """Defect 19 of issue 11: the sign-in form's Workspace field."""
    from loomwork.runtime import users as users_mod

    web = crm_app.test_client()
    html = web.get("/login").get_data(as_text=True)
    assert '<label for="workspace">Workspace</label>' in html and 'id="workspace" name="tenant" value="main"' in html
    csrf = html.split('name="csrf_token" value="')[1].split('"')[0]
    form = {"csrf_token": csrf, "tenant": "other", "username": "olga", "password": "olga-password"}
    verified = []
    real = users_mod._hasher

    class Counting:
        def __getattr__(self, name):
            return getattr(real, name)

        def verify(self, stored, password):
            verified.append(stored)
            return real.verify(stored, password)

    monkeypatch.setattr(users_mod, "_hasher", Counting())
    answers = {}
    for workspace, password in (("nope", "olga-password"), ("other", "wrong password"), ("BAD!", "olga-password")):
        resp = web.post("/login", data={**form, "tenant": workspace, "password": password})
        page = resp.get_data(as_text=True)
        answers[workspace] = (resp.status_code, page.split('role="alert">')[1].split("<")[0])
        assert f'name="tenant" value="{workspace}"' in page.replace("&#34;", '"')  # what was typed stays
        assert not [c for c in resp.headers.getlist("Set-Cookie") if c.startswith("loomwork_workspace=")]
    assert set(answers.values()) == {(401, "Wrong workspace, username or password.")}
    # The unknown workspace took a password check's time like the wrong password did.
    assert len(verified) == 3 and verified[0] == verified[2] == users_mod._DUMMY_HASH
    api = web.post("/api/v1/auth/login", json={"tenant": "nope", "username": "olga", "password": "olga-password"})
    assert api.status_code == 401 and len(verified) == 4
    monkeypatch.setattr(users_mod, "_hasher", real)

    ok = web.post("/login", data={**form, "tenant": " Other "})  # typed loosely
    assert ok.status_code == 302
    [cookie] = [c for c in ok.headers.getlist("Set-Cookie") if c.startswith("loomwork_workspace=")]
    assert cookie.startswith("loomwork_workspace=other;") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    web.post("/logout", data={"csrf_token": web.get("/").get_data(as_text=True)
                              .split('name="csrf_token" value="')[1].split('"')[0]})
    assert 'name="tenant" value="other"' in web.get("/login").get_data(as_text=True)  # remembered
    assert 'name="tenant" value="main"' in web.get("/login?tenant=main").get_data(as_text=True)  # a link wins
    assert 'name="tenant" value="other"' in web.get("/login?tenant=BAD!").get_data(as_text=True)
    web.set_cookie("loomwork_workspace", "<script>")  # a forged cookie is not shown
    assert 'name="tenant" value="main"' in web.get("/login").get_data(as_text=True)
