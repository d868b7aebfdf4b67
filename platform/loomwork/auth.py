"""Who is calling: a bearer API token or a browser session, resolved to a Context.

Tokens carry their tenant (``lw_<tenant>.<secret>``) and are checked inside it, so a
token of tenant A can never be looked up in tenant B. Browser sessions hold the tenant
and the secret of a session row (``lw_session``) in a signed cookie: every request looks
the row up, so signing out, a password change or deactivation, which delete rows, end
the session in every process, even for a copy of the cookie. Unsafe requests made with a
session must carry the session's CSRF token (bearer-token clients are exempt, since a
browser never attaches those by itself).

Password checks (signing in, the old password of a password change) go through the
platform's :class:`~loomwork.runtime.throttle.AttemptThrottle`, counted before they run.
"""
from __future__ import annotations

import hmac
import secrets

from flask import g, request, session

from loomwork.metadata.errors import AuthenticationRequired, NotFound, PermissionDenied
from loomwork.runtime import throttle
from loomwork.runtime.context import Actor, Context
from loomwork.runtime.users import check_password_strength, refuse_sign_in, token_tenant

from .state import state

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


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
    return Context(tenant, Actor(None, "anonymous", frozenset()), clock=st.clock)


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
        anon = Context(tenant, Actor(None, "anonymous", frozenset()), clock=st.clock)
        user = st.services.users.user_for_token(anon, token)
    else:
        secret, tname = session.get("sid"), session.get("tenant")
        if not secret or not isinstance(tname, str):
            raise AuthenticationRequired("sign in or send an API token")
        try:
            tenant = st.platform.tenant(tname)
            user = st.services.users.user_for_session(Context(tenant, Actor.system(), clock=st.clock), secret)
        except (NotFound, AuthenticationRequired):
            session.clear()
            raise AuthenticationRequired("your session has ended; sign in again") from None
        if request.method not in SAFE_METHODS:
            check_csrf(request.headers.get("X-CSRF-Token") or request.form.get("csrf_token"))
        g.lw_session = secret
    ctx = Context(tenant, user.actor(), _language(user), st.clock, user.time_zone)
    g.lw_ctx = ctx
    return ctx


def _language(user) -> str:
    """The language a user reads: the one they chose, else their browser's (Accept-Language)."""
    if user.locale_chosen:
        return user.locale
    from .web.i18n import negotiate  # the shell's languages; imported late, web imports this module

    return negotiate(request.headers.get("Accept-Language", ""))


def session_secret() -> str | None:
    """The secret of the session this request was authenticated by (None for a token)."""
    return g.get("lw_session")


def _keys(tenant_name: str, username: str) -> tuple[throttle.Key, throttle.Key]:
    return throttle.account(tenant_name, username), throttle.address(request.remote_addr)


def login(tenant_name: str | None, username: str, password: str):
    """Check credentials, throttled, and start a browser session. Returns the user."""
    st = state()
    tenant_name = tenant_name or st.settings.default_tenant
    keys = _keys(tenant_name, username)
    st.login_throttle.reserve(keys, st.clock())
    try:
        try:
            ctx = anonymous_context(tenant_name)
        except NotFound:  # no such workspace: answered like a wrong password, as slowly
            refuse_sign_in(password)
        user = st.services.users.authenticate(ctx, username, password)
    except AuthenticationRequired:
        raise AuthenticationRequired("wrong tenant, username or password") from None  # the check stays counted
    st.login_throttle.succeeded(keys)
    logout()  # a session this browser had ends first
    session["sid"] = st.services.users.start_session(ctx, user.id)
    session["tenant"] = tenant_name
    session.permanent = True
    csrf_token()
    return user


def change_password(ctx: Context, old_password: str, new_password: str) -> None:
    """Change the caller's own password; ``old_password`` is a password check, throttled
    with sign-ins to the same account. The user's other sessions end, this one stays.

    :raises ValidationError: ``password`` (the new one) or ``old_password``.
    :raises TooManyAttempts: after too many wrong old passwords.
    """
    st = state()
    check_password_strength(new_password)  # before the check is counted: a refusal here checks nothing
    keys = _keys(ctx.tenant.name, ctx.actor.username)
    st.login_throttle.reserve(keys, ctx.now(), "too many wrong passwords; wait a few minutes and try again")
    st.services.users.set_password(ctx, ctx.actor.id, new_password, old_password=old_password,
                                   keep_session=session_secret())
    st.login_throttle.succeeded(keys)


def logout() -> None:
    """End the browser's session: its row goes (a kept copy of the cookie opens nothing),
    then the cookie is cleared."""
    secret, tname = session.get("sid"), session.get("tenant")
    if secret and isinstance(tname, str):
        st = state()
        try:
            tenant = st.platform.tenant(tname)
        except NotFound:  # the tenant was removed, and its sessions with it
            tenant = None
        if tenant is not None:
            st.services.users.end_session(Context(tenant, Actor.system(), clock=st.clock), secret)
    session.clear()
