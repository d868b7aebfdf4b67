"""Authentication end to end: bearer tokens, browser sessions with CSRF, passwords,
throttling, the HTML sign-in page, security headers, and role permissions."""
from __future__ import annotations

import re

import pytest

from loomwork.testing import assert_problem as problem

pytestmark = pytest.mark.usefixtures("fast_setup")


def login(client, username="admin", password="admin-password", **extra):
    return client.post("/api/v1/auth/login", json={"username": username, "password": password, **extra})


def form_csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


# -- bearer tokens ------------------------------------------------------------------
def test_requests_without_valid_credentials_are_401(anon, api, subtests):
    real = api.token
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer   "},
                    {"Authorization": "Basic YWRtaW46YWRtaW4tcGFzc3dvcmQ="}, {"Authorization": "Token " + real},
                    {"Authorization": "Bearer lw_main.nope"}, {"Authorization": "Bearer lw_nope.x"},
                    {"Authorization": "Bearer lw_BAD!.x"}, {"Authorization": "Bearer " + "x" * 5000},
                    {"Authorization": "Bearer " + real + "x"}, {"Authorization": "Bearer " + real[:-1]},
                    {"Authorization": "Bearer lw_.x"}, {"Authorization": "Bearer " + real.upper()}):
        with subtests.test(headers=str(headers)[:60]):
            for method, path in (("GET", "/api/v1/data/account"), ("POST", "/api/v1/data/account"),
                                 ("GET", "/api/v1/meta"), ("GET", "/api/v1/openapi.json"),
                                 ("GET", "/api/v1/auth/me"), ("GET", "/api/v1/meta/schemas/object")):
                resp = anon.request(method, path, json={"name": "x"} if method == "POST" else None, headers=headers)
                problem(resp, 401)
                assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert anon.get("/api/v1/data/account", headers={"Authorization": "bearer " + real}).status_code == 200
    assert api.get("/api/v1/data/account?count=exact").json["count"] == 0


def test_tokens_created_over_the_api(api, api_as):
    made = api.post("/api/v1/auth/tokens", json={"name": "ci"})
    assert made.status_code == 201 and made.json["token"].startswith("lw_main.")
    assert made.headers["Cache-Control"] == "no-store"
    me = api.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {made.json['token']}"})
    assert me.json["user"]["username"] == "admin" and me.json["tenant"] == "main"
    assert "csrf_token" not in me.json  # only sessions need one
    vera = api_as("vera")
    own = vera.post("/api/v1/auth/tokens", json={"name": "mine"}).json["token"]
    assert api.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {own}"}).json["user"]["username"] == "vera"
    for body, key in (({}, "name"), ({"name": ""}, "name"), ({"name": 5}, "name"), ({"name": "x" * 201}, "name"),
                      ({"name": "ok", "user_id": 1}, "user_id")):
        assert key in problem(vera.post("/api/v1/auth/tokens", json=body), 422)["errors"]


def test_tokens_are_listed_and_revoked_over_the_api(api, api_as, anon):
    sam = api_as("sam")
    made = sam.post("/api/v1/auth/tokens", json={"name": "ci"}).json["token"]
    mine = sam.get("/api/v1/auth/tokens").json["data"]
    assert [t["name"] for t in mine] == ["test", "ci"]
    ci = mine[1]
    assert made.endswith(ci["hint"]) and ci["revoked_at"] is None and ci["created_at"].endswith("+00:00")
    assert made not in str(mine) and "token_hash" not in ci
    ci_client = type(sam)(sam.client.application, made)
    assert ci_client.get("/api/v1/auth/me").status_code == 200
    # Nobody else's tokens exist for sam; an administrator sees and revokes anyone's.
    vera = api_as("vera")
    vera_id = vera.get("/api/v1/auth/me").json["user"]["id"]
    vera_token = api.get(f"/api/v1/users/{vera_id}/tokens").json["data"][0]
    problem(sam.delete(f"/api/v1/auth/tokens/{vera_token['id']}"), 404)
    problem(sam.get(f"/api/v1/users/{vera_id}/tokens"), 403)
    sam_id = sam.get("/api/v1/auth/me").json["user"]["id"]
    assert sam.get(f"/api/v1/users/{sam_id}/tokens").json == sam.get("/api/v1/auth/tokens").json
    problem(api.get("/api/v1/users/99999/tokens"), 404)
    # Revoked: it stops at once, stays listed with the time, and revoking again changes nothing.
    assert sam.delete(f"/api/v1/auth/tokens/{ci['id']}").status_code == 204
    problem(ci_client.get("/api/v1/auth/me"), 401)
    revoked = sam.get("/api/v1/auth/tokens").json["data"][1]
    assert revoked["revoked_at"] is not None
    assert sam.delete(f"/api/v1/auth/tokens/{ci['id']}").status_code == 204
    assert sam.get("/api/v1/auth/tokens").json["data"][1]["revoked_at"] == revoked["revoked_at"]
    assert api.delete(f"/api/v1/auth/tokens/{vera_token['id']}").status_code == 204
    problem(vera.get("/api/v1/auth/me"), 401)
    for bad in ("abc", "0", "-1", "99999999999", "9" * 30, "1.5"):
        problem(sam.delete(f"/api/v1/auth/tokens/{bad}"), 404)
    for path in ("/api/v1/auth/tokens", "/api/v1/auth/tokens/1", f"/api/v1/users/{vera_id}/tokens"):
        problem(anon.request("DELETE" if path.endswith("/1") else "GET", path), 401)


def test_a_session_revokes_tokens_with_its_csrf_token(anon):
    csrf = login(anon, "sam", "sales-password").json["csrf_token"]
    made = anon.post("/api/v1/auth/tokens", json={"name": "t"}, headers={"X-CSRF-Token": csrf})
    token_id = anon.get("/api/v1/auth/tokens").json["data"][0]["id"]
    assert made.status_code == 201
    problem(anon.delete(f"/api/v1/auth/tokens/{token_id}"), 403)
    assert anon.delete(f"/api/v1/auth/tokens/{token_id}", headers={"X-CSRF-Token": csrf}).status_code == 204


# -- sessions and CSRF ------------------------------------------------------------------
def test_session_login_csrf_and_logout(anon):
    resp = login(anon)
    assert resp.status_code == 200, resp.json
    assert resp.json["user"]["username"] == "admin" and resp.json["tenant"] == "main"
    csrf = resp.json["csrf_token"]
    cookie = resp.headers["Set-Cookie"]
    assert "loomwork_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    me = anon.get("/api/v1/auth/me")
    assert me.status_code == 200 and me.json["csrf_token"] == csrf
    assert anon.get("/api/v1/data/account").status_code == 200
    # Unsafe requests made with the cookie need the CSRF token.
    for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": ""}, {"X-CSRF-Token": "é" * 10}):
        assert "CSRF" in problem(anon.post("/api/v1/data/account", json={"name": "A"}, headers=headers), 403)["detail"]
    made = anon.post("/api/v1/data/account", json={"name": "A"}, headers={"X-CSRF-Token": csrf})
    assert made.status_code == 201
    path = f"/api/v1/data/account/{made.json['id']}"
    problem(anon.patch(path, json={"name": "B"}), 403)
    problem(anon.delete(path), 403)
    problem(anon.post(f"{path}/restore"), 403)
    problem(anon.post("/api/v1/auth/tokens", json={"name": "t"}), 403)
    problem(anon.put("/api/v1/meta/objects/x", json={"object": {"fields": {"a": {"type": "text"}}}}), 403)
    assert anon.patch(path, json={"name": "B"}, headers={"X-CSRF-Token": csrf}).status_code == 200
    assert anon.post("/api/v1/auth/tokens", json={"name": "t"}, headers={"X-CSRF-Token": csrf}).status_code == 201
    # Logging out needs the token too (no cross-site sign-out), then the session is gone.
    problem(anon.post("/api/v1/auth/logout"), 403)
    assert anon.get("/api/v1/auth/me").status_code == 200
    out = anon.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf})
    assert out.status_code == 204
    problem(anon.get("/api/v1/auth/me"), 401)
    problem(anon.post("/api/v1/data/account", json={"name": "C"}, headers={"X-CSRF-Token": csrf}), 401)
    assert anon.post("/api/v1/auth/logout").status_code == 204  # without a session: nothing to do


def test_a_bearer_token_needs_no_csrf_even_with_a_cookie(anon, api):
    assert login(anon).status_code == 200
    resp = anon.post("/api/v1/data/account", json={"name": "T"}, headers={"Authorization": f"Bearer {api.token}"})
    assert resp.status_code == 201


def test_login_input_and_wrong_credentials(anon, subtests):
    for body, status in [({}, 422), ({"username": "admin"}, 422), ({"username": "admin", "password": 5}, 422),
                         ({"username": ["admin"], "password": "x"}, 422),
                         ({"username": "admin", "password": "x", "tenant": 5}, 422),
                         ({"username": "admin", "password": "admin-password", "remember": True}, 422),
                         ({"username": "a" * 201, "password": "x"}, 422),
                         ({"username": "admin", "password": "wrong"}, 401),
                         ({"username": "nobody", "password": "admin-password"}, 401),
                         ({"username": "admin", "password": "admin-password", "tenant": "nope"}, 401),
                         ({"username": "admin", "password": "admin-password", "tenant": "BAD!"}, 401),
                         ({"username": "admin", "password": "x" * 5000}, 422)]:
        with subtests.test(body=str(body)[:60]):
            doc = problem(anon.post("/api/v1/auth/login", json=body), status)
            if status == 401:
                assert doc["detail"] == "wrong tenant, username or password"
    assert anon.get("/api/v1/auth/me").status_code == 401
    assert login(anon, tenant="main").status_code == 200


def test_change_password(anon):
    csrf = login(anon, "sam", "sales-password").json["csrf_token"]
    h = {"X-CSRF-Token": csrf}
    wrong = problem(anon.post("/api/v1/auth/password", json={"old_password": "nope-nope-nope",
                                                             "new_password": "brand-new-password"}, headers=h), 422)
    assert "old_password" in wrong["errors"]
    short = problem(anon.post("/api/v1/auth/password", json={"old_password": "sales-password",
                                                             "new_password": "short"}, headers=h), 422)
    assert "new_password" in short["errors"]
    for body in ({"new_password": "brand-new-password"}, {"old_password": "sales-password", "new_password": 5},
                 {"old_password": "sales-password", "new_password": "brand-new-password", "user_id": 1}):
        problem(anon.post("/api/v1/auth/password", json=body, headers=h), 422)
    problem(anon.post("/api/v1/auth/password", json={"old_password": "sales-password",
                                                     "new_password": "brand-new-password"}), 403)  # no CSRF
    ok = anon.post("/api/v1/auth/password", json={"old_password": "sales-password",
                                                  "new_password": "brand-new-password"}, headers=h)
    assert ok.status_code == 204
    anon.post("/api/v1/auth/logout", headers=h)
    problem(login(anon, "sam", "sales-password"), 401)
    assert login(anon, "sam", "brand-new-password").status_code == 200


def test_login_throttling(crm_app, anon):
    crm_app.extensions["loomwork"].login_throttle.attempts = 3
    for _ in range(3):
        problem(login(anon, "sam", "wrong"), 401)
    throttled = problem(login(anon, "sam", "wrong"), 429)
    assert "too many" in throttled["detail"]
    resp = login(anon, "sam", "sales-password")
    problem(resp, 429)  # even the right password waits
    assert 1 <= int(resp.headers["Retry-After"]) <= 300
    # Per account: another user from the same address may still sign in.
    assert login(anon, "vera", "viewer-password").status_code == 200
    # The HTML form is throttled by the same rule.
    page = anon.client.get("/login")
    form = {"csrf_token": form_csrf(page.get_data(as_text=True)), "username": "sam", "password": "sales-password"}
    page = anon.client.post("/login", data=form)
    assert page.status_code == 429 and int(page.headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in page.get_data(as_text=True)


def test_address_throttle_is_wider_than_per_account(crm_app, anon):
    crm_app.extensions["loomwork"].login_throttle.attempts = 1  # 1 per account, 10 per address
    for i in range(9):
        problem(login(anon, f"ghost{i}", "wrong"), 401)
    assert login(anon, "admin", "admin-password").status_code == 200
    problem(login(anon, "ghost-last", "wrong"), 401)
    problem(login(anon, "admin", "admin-password"), 429)  # now the address is throttled


# -- HTML pages --------------------------------------------------------------------------
def test_html_login_form(anon):
    web = anon.client
    home = web.get("/")
    assert home.status_code == 302 and home.headers["Location"].endswith("/login")
    page = web.get("/login")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and 'name="username"' in html and 'type="password"' in html
    csrf = form_csrf(html)
    creds = {"username": "admin", "password": "admin-password", "tenant": "main"}
    assert web.post("/login", data=creds).status_code == 403  # no CSRF field
    assert web.post("/login", data={**creds, "csrf_token": "forged"}).status_code == 403
    bad = web.post("/login", data={**creds, "password": "wrong", "csrf_token": csrf})
    assert bad.status_code == 401 and "Wrong workspace, username or password." in bad.get_data(as_text=True)
    assert 'value="admin"' in bad.get_data(as_text=True)  # the username is kept
    ok = web.post("/login", data={**creds, "csrf_token": csrf})
    assert ok.status_code == 302 and ok.headers["Location"] == "/"
    home = web.get("/")
    text = home.get_data(as_text=True)
    assert home.status_code == 200
    for label in ("Accounts", "Contacts", "Deals", "/app/deal", "/api/v1/openapi.json", "admin"):
        assert label in text
    # The session also works for the API, and sign-out needs the form's token.
    assert anon.get("/api/v1/auth/me").json["user"]["username"] == "admin"
    csrf = form_csrf(text)
    assert web.post("/logout", data={}).status_code == 403
    out = web.post("/logout", data={"csrf_token": csrf})
    assert out.status_code == 302 and out.headers["Location"].endswith("/login")
    assert web.get("/").status_code == 302


def test_html_password_page(anon):
    web = anon.client
    assert web.get("/profile").status_code == 302
    assert web.get("/password").headers["Location"].endswith("/profile")
    csrf = form_csrf(web.get("/login").get_data(as_text=True))
    web.post("/login", data={"username": "vera", "password": "viewer-password", "csrf_token": csrf})
    page = web.get("/profile")
    assert page.status_code == 200
    csrf = form_csrf(page.get_data(as_text=True))
    change = {"form": "password", "old_password": "viewer-password", "new_password": "another-password"}
    assert web.post("/profile", data=change).status_code == 403
    wrong = web.post("/profile", data={**change, "old_password": "nope", "csrf_token": csrf})
    assert wrong.status_code == 422 and "is not your current password" in wrong.get_data(as_text=True)
    done = web.post("/profile", data={**change, "csrf_token": csrf})
    assert done.status_code == 302
    assert "has been changed" in web.get("/profile").get_data(as_text=True)


def test_security_headers_everywhere(anon, api):
    for resp in (anon.client.get("/login"), anon.get("/api/v1/data/account"), api.get("/api/v1/data/account"),
                 api.get("/api/v1/nope"), api.put("/api/v1/data/account"), anon.client.get("/nope")):
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["Referrer-Policy"] == "same-origin"
    for resp in (api.get("/api/v1/data/account"), api.get("/api/v1/meta"), anon.get("/api/v1/auth/me")):
        assert resp.headers["Cache-Control"] == "no-store"


# -- permissions ---------------------------------------------------------------------------
def test_viewer_reads_but_cannot_write(api, api_as):
    acc = api.post("/api/v1/data/account", json={"name": "Acme"}).json
    deal = api.post("/api/v1/data/deal", json={"name": "D", "account": acc["id"]}).json
    vera = api_as("vera")
    assert [r["name"] for r in vera.get("/api/v1/data/account").json["data"]] == ["Acme"]
    assert vera.get(f"/api/v1/data/deal/{deal['id']}").json["name"] == "D"
    assert vera.get(f"/api/v1/data/deal/{deal['id']}/history").status_code == 200
    assert vera.get("/api/v1/data/deal?account.name=Acme").json["data"][0]["id"] == deal["id"]
    for resp in (vera.post("/api/v1/data/account", json={"name": "X"}),
                 vera.post("/api/v1/data/account", json=[{"name": "X"}]),
                 vera.patch(f"/api/v1/data/account/{acc['id']}", json={"name": "Y"}),
                 vera.delete(f"/api/v1/data/deal/{deal['id']}"),
                 vera.post(f"/api/v1/data/deal/{deal['id']}/restore")):
        assert "you may not" in problem(resp, 403)["detail"]
    assert api.get(f"/api/v1/data/account/{acc['id']}").json["name"] == "Acme"
    assert api.get("/api/v1/data/account?count=exact").json["count"] == 1


def test_sales_cannot_delete_accounts_but_can_delete_deals(api, api_as):
    sam = api_as("sam")
    acc = sam.post("/api/v1/data/account", json={"name": "Acme"})
    assert acc.status_code == 201 and acc.json["owner_id"] == acc.json["created_by"]
    deal = sam.post("/api/v1/data/deal", json={"name": "D", "account": acc.json["id"]}).json
    assert sam.patch(f"/api/v1/data/account/{acc.json['id']}", json={"employees": 3}).status_code == 200
    assert "delete account" in problem(sam.delete(f"/api/v1/data/account/{acc.json['id']}"), 403)["detail"]
    assert sam.delete(f"/api/v1/data/deal/{deal['id']}").status_code == 204
    assert sam.post(f"/api/v1/data/deal/{deal['id']}/restore").status_code == 200
    assert sam.delete(f"/api/v1/data/deal/{deal['id']}").status_code == 204
    assert api.delete(f"/api/v1/data/account/{acc.json['id']}").status_code == 204


def test_password_change_ends_other_sessions_but_keeps_this_one(crm_app):
    first, second = crm_app.test_client(), crm_app.test_client()
    csrf = login(first).get_json()["csrf_token"]
    assert login(second).status_code == 200
    changed = first.post("/api/v1/auth/password", json={"old_password": "admin-password",
                                                          "new_password": "another-password-1"},
                         headers={"X-CSRF-Token": csrf})
    assert changed.status_code == 204
    assert first.get("/api/v1/auth/me").status_code == 200
    problem(second.get("/api/v1/auth/me"), 401)


def test_hsts_only_when_cookies_are_secure(crm_app, tmp_path):
    from loomwork import create_app

    assert "Strict-Transport-Security" not in crm_app.test_client().get("/login").headers
    secure = create_app({"database_url": f"sqlite:///{tmp_path / 'secure'}", "secret_key": "x",
                         "instance_dir": str(tmp_path / "secure"), "secure_cookies": True})
    try:
        assert secure.test_client().get("/login?tenant=none").headers["Strict-Transport-Security"].startswith("max-age=")
    finally:
        secure.extensions["loomwork"].platform.dispose()
