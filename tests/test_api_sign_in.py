"""Sign-in under attack and sessions that really end (issue 12 §2).

Guesses sent in parallel, through one app, two apps over one database and two server
processes, reach the password check at most the limit's times; old passwords are
throttled with sign-ins; the window moves with the app's clock. Signing out, changing
the password and deactivation end sessions for every copy of their cookie.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from loomwork.runtime.context import Actor, Clock, Context, utcnow
from loomwork.testing import assert_problem as problem
from loomwork.testing import wait_until_serving

pytestmark = pytest.mark.usefixtures("fast_setup")
COOKIE = "loomwork_session"


def login(client, username="admin", password="admin-password", **extra):
    return client.post("/api/v1/auth/login", json={"username": username, "password": password, **extra})


@pytest.fixture
def checks(monkeypatch):
    """Counts password checks (Argon2 verifies), each made slow as a real one is, so
    guesses sent together really overlap."""
    from loomwork.runtime import users as users_mod

    real, made, lock = users_mod._hasher, [], threading.Lock()

    class Slow:
        def __getattr__(self, name):
            return getattr(real, name)

        def verify(self, stored, password):
            with lock:
                made.append(stored)
            time.sleep(0.05)
            return real.verify(stored, password)

    monkeypatch.setattr(users_mod, "_hasher", Slow())
    return made


def at_once(n: int, send) -> list[int]:
    """``send(i)`` from ``n`` threads released together; their status codes."""
    start = threading.Barrier(n)

    def run(i: int) -> int:
        start.wait()
        return send(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def twin_app(app):
    """A second app over the same database and namespace: what another gunicorn worker is."""
    from loomwork import create_app

    cfg = app.extensions["loomwork"].settings
    twin = create_app({"database_url": cfg.database_url, "namespace": cfg.namespace, "secret_key": cfg.secret_key,
                       "instance_dir": cfg.instance_dir, "secure_cookies": False})
    twin.config["TESTING"] = True
    return twin


def keep_cookie(client, app):
    """Another client holding a copy of ``client``'s session cookie."""
    copy = app.test_client()
    copy.set_cookie(COOKIE, client.get_cookie(COOKIE).value)
    return copy


# -- the throttle ---------------------------------------------------------------------------
def test_parallel_guesses_through_one_app_check_at_most_the_limit(crm_app, checks):
    codes = at_once(30, lambda i: login(crm_app.test_client(), "sam", f"wrong-{i}").status_code)
    assert len(checks) == 10 == codes.count(401) and codes.count(429) == 20
    problem(login(crm_app.test_client(), "sam", "sales-password"), 429)  # the right one waits too
    assert len(checks) == 10


def test_parallel_guesses_through_two_apps_over_one_database_share_the_limit(crm_app, checks):
    twin = twin_app(crm_app)
    try:
        apps = (crm_app, twin)
        codes = at_once(30, lambda i: login(apps[i % 2].test_client(), "sam", f"wrong-{i}").status_code)
        assert len(checks) == 10 == codes.count(401)
        # One after another through both: the shared count still says no.
        problem(login(twin.test_client(), "sam", "wrong"), 429)
        problem(login(crm_app.test_client(), "sam", "wrong"), 429)
        assert len(checks) == 10
    finally:
        twin.extensions["loomwork"].platform.dispose()


def test_the_window_moves_with_the_apps_clock(crm_app, anon):
    st = crm_app.extensions["loomwork"]
    st.clock = clock = Clock(utcnow())
    for _ in range(10):
        problem(login(anon, "sam", "wrong"), 401)
    resp = login(anon, "sam", "sales-password")
    problem(resp, 429)
    assert resp.headers["Retry-After"] == "300"
    clock.advance(seconds=299)
    problem(login(anon, "sam", "sales-password"), 429)
    clock.advance(seconds=1)
    assert login(anon, "sam", "sales-password").status_code == 200
    problem(login(anon, "sam", "wrong"), 401)  # the success forgot the run of wrong ones


def test_old_passwords_are_throttled_with_sign_ins(crm_app, anon, checks):
    csrf = login(anon, "sam", "sales-password").json["csrf_token"]
    del checks[:]

    def change(old: str):
        return anon.post("/api/v1/auth/password", json={"old_password": old, "new_password": "brand-new-password"},
                         headers={"X-CSRF-Token": csrf})

    codes = at_once(15, lambda i: change(f"wrong-{i}").status_code)
    assert len(checks) == 10 == codes.count(422) and codes.count(429) == 5
    resp = change("sales-password")
    assert "too many wrong passwords" in problem(resp, 429)["detail"] and int(resp.headers["Retry-After"]) >= 1
    problem(login(crm_app.test_client(), "sam", "sales-password"), 429)  # one count per account
    # A new password refused for its length is no check of the old one.
    short = anon.post("/api/v1/auth/password", json={"old_password": "x", "new_password": "short"},
                      headers={"X-CSRF-Token": csrf})
    assert "new_password" in problem(short, 422)["errors"] and len(checks) == 10


def test_the_profile_page_says_when_old_passwords_are_throttled(crm_app, web_as):
    web = web_as("vera", "viewer-password")
    form = {"form": "password", "old_password": "nope", "new_password": "another-password"}
    for _ in range(10):
        assert web.post("/profile", form).status_code == 422
    page = web.post("/profile", {**form, "old_password": "viewer-password"})
    assert page.status_code == 429 and int(page.headers["Retry-After"]) >= 1
    assert "Too many wrong passwords" in page.get_data(as_text=True)


SERVER_LOGINS = 24


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> int:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.mark.slow
def test_parallel_guesses_through_two_server_processes_check_at_most_the_limit(app):
    """Two ``loomwork serve`` processes over one database (SQLite file or PostgreSQL
    schema), real Argon2: a 401 is a guess that reached the check, a 429 one that did not."""
    cfg = app.extensions["loomwork"].settings
    settings = {"database_url": cfg.database_url, "namespace": cfg.namespace, "secret_key": cfg.secret_key,
                "instance_dir": cfg.instance_dir, "secure_cookies": False}
    env = {**os.environ, **{f"LOOMWORK_{k.upper()}": str(v) for k, v in settings.items()}}
    exe = str(Path(sys.executable).with_name("loomwork"))
    procs, urls = [], []
    try:
        for _ in range(2):
            port = _free_port()
            procs.append(subprocess.Popen([exe, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        for url, proc in zip(urls, procs, strict=True):
            wait_until_serving(url, proc, deadline)
        codes = at_once(SERVER_LOGINS, lambda i: _post(f"{urls[i % 2]}/api/v1/auth/login",
                                                       {"username": "admin", "password": f"wrong-{i}"}))
        assert codes.count(401) == 10 and codes.count(429) == SERVER_LOGINS - 10, codes
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()


# -- sessions -------------------------------------------------------------------------------
def test_signing_out_ends_the_session_for_a_kept_cookie(crm_app, anon):
    csrf = login(anon).json["csrf_token"]
    kept = keep_cookie(anon.client, crm_app)
    assert kept.get("/api/v1/auth/me").status_code == 200
    assert anon.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    problem(kept.get("/api/v1/auth/me"), 401)
    page = kept.get("/")
    assert page.status_code == 302 and page.headers["Location"].endswith("/login")


def test_signing_out_on_the_page_ends_the_session_in_another_app_too(crm_app, web_as):
    web = web_as("sam", "sales-password")
    twin = twin_app(crm_app)
    try:
        kept = keep_cookie(web.client, twin)  # the same cookie, served by another worker
        assert kept.get("/").status_code == 200
        assert web.post("/logout").status_code == 302
        assert kept.get("/").headers["Location"].endswith("/login")
        problem(kept.get("/api/v1/data/account"), 401)
    finally:
        twin.extensions["loomwork"].platform.dispose()


def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(crm_app, web_as, api_as):
    here = web_as("sam", "sales-password")
    there = web_as("sam", "sales-password")
    kept_here, kept_there = keep_cookie(here.client, crm_app), keep_cookie(there.client, crm_app)
    changed = here.post("/profile", {"form": "password", "old_password": "sales-password",
                                     "new_password": "brand-new-password"})
    assert changed.status_code == 302
    assert here.client.get("/").status_code == 200 and kept_here.get("/").status_code == 200
    for client in (there.client, kept_there):
        assert client.get("/").headers["Location"].endswith("/login")
    # API tokens are kept; a change through a token keeps no session at all.
    sam = api_as("sam")
    assert sam.get("/api/v1/auth/me").status_code == 200
    assert sam.post("/api/v1/auth/password", json={"old_password": "brand-new-password",
                                                   "new_password": "newer-password-1"}).status_code == 204
    assert sam.get("/api/v1/auth/me").status_code == 200
    problem(kept_here.get("/api/v1/auth/me"), 401)


def test_deactivation_ends_sessions_for_good(crm_app, anon):
    st = crm_app.extensions["loomwork"]
    assert login(anon, "vera", "viewer-password").status_code == 200
    kept = keep_cookie(anon.client, crm_app)
    ctx = Context(st.platform.tenant("main"), Actor.system())
    vera = st.services.users.by_username(ctx, "vera")
    st.services.users.set_active(ctx, vera.id, False)
    problem(kept.get("/api/v1/auth/me"), 401)
    st.services.users.set_active(ctx, vera.id, True)
    problem(anon.get("/api/v1/auth/me"), 401)  # reactivating opens no old cookie
    assert login(anon, "vera", "viewer-password").status_code == 200


def test_an_idle_session_ends_by_the_apps_clock(crm_app, anon):
    from loomwork.runtime.users import SESSION_IDLE

    st = crm_app.extensions["loomwork"]
    st.clock = clock = Clock(utcnow())
    assert login(anon).status_code == 200
    for _ in range(3):  # used now and then, it lives on
        clock.advance(seconds=SESSION_IDLE.total_seconds() - 60)
        assert anon.get("/api/v1/auth/me").status_code == 200
    clock.advance(seconds=SESSION_IDLE.total_seconds())
    assert "session has ended" in problem(anon.get("/api/v1/auth/me"), 401)["detail"]


def test_a_cookie_from_before_sessions_were_rows_signs_in_again(crm_app, anon):
    """Cookies of older versions named the user (uid) and a stamp; they open nothing now."""
    from flask.sessions import SecureCookieSessionInterface

    old = SecureCookieSessionInterface().get_signing_serializer(crm_app).dumps(
        {"uid": 1, "tenant": "main", "auth_version": "x", "csrf": "x", "_permanent": True})
    anon.client.set_cookie(COOKIE, old)
    problem(anon.get("/api/v1/auth/me"), 401)
    assert anon.client.get("/").headers["Location"].endswith("/login")
