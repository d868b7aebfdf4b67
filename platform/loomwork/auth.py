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
from collections import deque

from flask import g, request, session

from loomwork.metadata.errors import (
    AuthenticationRequired,
    LoomworkError,
    NotFound,
    PermissionDenied,
)
from loomwork.runtime.context import Actor, Context
from loomwork.runtime.users import refuse_sign_in, token_tenant

from .state import state

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class TooManyAttempts(LoomworkError):
    status = 429
    title = "Too many attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(max(1, retry_after))}


class LoginThrottle:
    """At most N failed logins per (tenant, username) in a window, and ``ADDRESS_FACTOR``
    times as many per client address.

    The address limit is wider on purpose: people behind one NAT or proxy share an
    address, and a limit as tight as the per-account one would let anyone lock a whole
    office out with a handful of wrong passwords. Keys without recent failures are
    forgotten, and at most ``MAX_KEYS`` are kept, so random usernames cannot grow memory.
    """

    ADDRESS_FACTOR = 10
    MAX_KEYS = 100_000

    def __init__(self, attempts: int, window: int) -> None:
        self.attempts, self.window = attempts, window
        self._fails: dict[tuple, deque] = {}
        self._lock = threading.Lock()

    def _limit(self, key: tuple) -> int:
        return self.attempts * self.ADDRESS_FACTOR if key[0] == "addr" else self.attempts

    def _recent(self, key: tuple, now: float) -> deque:
        q = self._fails.get(key)
        if q is None:
            return deque()
        cutoff = now - self.window
        while q and q[0] < cutoff:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def check(self, *keys: tuple) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                q = self._recent(k, now)
                if len(q) >= self._limit(k):
                    wait = int(q[0] + self.window - now) + 1
                    raise TooManyAttempts("too many failed sign-ins; wait a few minutes and try again", wait)

    def failed(self, *keys: tuple) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                q = self._fails.get(k)
                if q is None:
                    while len(self._fails) >= self.MAX_KEYS:  # forget the longest-known key
                        del self._fails[next(iter(self._fails))]
                    q = self._fails[k] = deque()
                q.append(now)
                while len(q) > self._limit(k):
                    q.popleft()

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
    if (not isinstance(expected, str) or not isinstance(sent, str) or not sent
            or not hmac.compare_digest(expected.encode(), sent.encode("utf-8", "replace"))):
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
        ctx = Context(tenant, user.actor(), _language(user), time_zone=user.time_zone)
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
        if not user.active or session.get("auth_version") != user.stamp:
            session.clear()
            raise AuthenticationRequired("your session has ended; sign in again")
        if request.method not in SAFE_METHODS:
            check_csrf(request.headers.get("X-CSRF-Token") or request.form.get("csrf_token"))
        ctx = Context(tenant, user.actor(), _language(user), time_zone=user.time_zone)
    g.lw_ctx = ctx
    return ctx


def _language(user) -> str:
    """The language a user reads: the one they chose, else their browser's (Accept-Language)."""
    if user.locale_chosen:
        return user.locale
    from .web.i18n import negotiate  # the shell's languages; imported late, web imports this module

    return negotiate(request.headers.get("Accept-Language", ""))


def refresh_session(ctx: Context) -> None:
    """Keep the current browser session valid after its own user changed password."""
    if session.get("uid") == ctx.actor.id:
        session["auth_version"] = state().services.users.get(ctx, ctx.actor.id).stamp


def login(tenant_name: str | None, username: str, password: str):
    """Check credentials, throttled, and start a browser session. Returns the user."""
    st = state()
    tenant_name = tenant_name or st.settings.default_tenant
    # Bounded keys: the throttle must not keep a megabyte "username" in memory.
    keys = (("user", str(tenant_name)[:64], str(username)[:200]), ("addr", request.remote_addr))
    throttle: LoginThrottle = st.login_throttle
    throttle.check(*keys)
    try:
        try:
            ctx = anonymous_context(tenant_name)
        except NotFound:  # no such workspace: answered like a wrong password, as slowly
            refuse_sign_in(password)
        user = st.services.users.authenticate(ctx, username, password)
    except AuthenticationRequired:
        throttle.failed(*keys)
        raise AuthenticationRequired("wrong tenant, username or password") from None
    throttle.succeeded(keys[0])
    session.clear()
    session["uid"], session["tenant"] = user.id, tenant_name
    session["auth_version"] = user.stamp
    session.permanent = True
    csrf_token()
    return user


def logout() -> None:
    session.clear()
