"""Who is calling: a bearer API token or a browser session, resolved to a Context.

Tokens carry their tenant (``lw_<tenant>.<secret>``) and are checked inside it, so a
token of tenant A can never be looked up in tenant B. Browser sessions hold the
tenant and user id in a signed cookie; unsafe requests made with a session must
carry the session's CSRF token (bearer-token clients are exempt, since a browser
never attaches those by itself).
"""
from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import defaultdict, deque

from flask import g, request, session

from loomwork.metadata.errors import AuthenticationRequired, LoomworkError, NotFound, PermissionDenied
from loomwork.runtime.context import Actor, Context
from loomwork.runtime.users import token_tenant

from .state import state

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TooManyAttempts(LoomworkError):
    status = 429
    title = "Too many attempts"


class LoginThrottle:
    """At most N failed logins per (tenant, username) and per client address in a window."""

    def __init__(self, attempts: int, window: int) -> None:
        self.attempts, self.window = attempts, window
        self._fails: dict[tuple, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def _recent(self, key: tuple) -> deque:
        q = self._fails[key]
        cutoff = time.monotonic() - self.window
        while q and q[0] < cutoff:
            q.popleft()
        return q

    def check(self, *keys: tuple) -> None:
        with self._lock:
            if any(len(self._recent(k)) >= self.attempts for k in keys):
                raise TooManyAttempts("too many failed logins; wait a few minutes and try again")

    def failed(self, *keys: tuple) -> None:
        with self._lock:
            for k in keys:
                self._recent(k).append(time.monotonic())

    def succeeded(self, *keys: tuple) -> None:
        with self._lock:
            for k in keys:
                self._fails.pop(k, None)


def csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf(sent: str | None) -> None:
    expected = session.get("csrf")
    if not expected or not sent or not hmac.compare_digest(expected, sent):
        raise PermissionDenied("missing or wrong CSRF token; reload the page and try again")


def anonymous_context(tenant_name: str | None = None) -> Context:
    st = state()
    tenant = st.platform.tenant(tenant_name or st.settings.default_tenant)
    return Context(tenant, Actor(None, "anonymous", frozenset()))


def current_context() -> Context:
    """The caller's context. :raises AuthenticationRequired: when nobody is signed in."""
    cached = g.get("lw_ctx")
    if cached is not None:
        return cached
    st = state()
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationRequired("use Authorization: Bearer <token>")
        token = token.strip()
        name = token_tenant(token)
        try:
            tenant = st.platform.tenant(name) if name else None
        except NotFound:
            tenant = None
        if tenant is None:
            raise AuthenticationRequired("invalid API token")
        anon = Context(tenant, Actor(None, "anonymous", frozenset()))
        user = st.services.users.user_for_token(anon, token)
        ctx = Context(tenant, user.actor(), user.locale)
    else:
        uid, tname = session.get("uid"), session.get("tenant")
        if not uid or not tname:
            raise AuthenticationRequired("sign in or send an API token")
        try:
            tenant = st.platform.tenant(tname)
            user = st.services.users.get(Context(tenant, Actor.system()), uid)
        except NotFound:
            session.clear()
            raise AuthenticationRequired("your session has ended; sign in again") from None
        if not user.active or session.get("auth_version") != _auth_version(user):
            session.clear()
            raise AuthenticationRequired("your session has ended; sign in again")
        if request.method not in SAFE_METHODS:
            check_csrf(request.headers.get("X-CSRF-Token") or request.form.get("csrf_token"))
        ctx = Context(tenant, user.actor(), user.locale)
    g.lw_ctx = ctx
    return ctx


def _auth_version(user) -> str:
    """Roles in the session cookie must match the user's, or the session is stale."""
    return ",".join(sorted(user.roles))


def login(tenant_name: str | None, username: str, password: str):
    """Check credentials, throttled, and start a browser session. Returns the user."""
    st = state()
    tenant_name = tenant_name or st.settings.default_tenant
    keys = (("user", tenant_name, username), ("addr", request.remote_addr))
    throttle: LoginThrottle = st.login_throttle
    throttle.check(*keys)
    try:
        ctx = anonymous_context(tenant_name)
        user = st.services.users.authenticate(ctx, username, password)
    except (AuthenticationRequired, NotFound):
        throttle.failed(*keys)
        raise AuthenticationRequired("wrong tenant, username or password") from None
    throttle.succeeded(keys[0])
    session.clear()
    session["uid"], session["tenant"] = user.id, tenant_name
    session["auth_version"] = _auth_version(user)
    session.permanent = True
    csrf_token()
    return user


def logout() -> None:
    session.clear()
