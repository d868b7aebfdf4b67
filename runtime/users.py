"""Users, passwords, browser sessions and API tokens of a tenant.

Passwords are hashed with Argon2id (memory-hard). API tokens and session secrets are
random, shown once (a session's lives in its signed cookie), and stored as SHA-256
digests: they are already high-entropy, so a slow hash would only slow every request.
All live in the tenant's namespace, so a token or a session can only ever open its own
tenant. A session is a row: signing out, a password change, a change of roles and
deactivation delete rows, and a cookie whose row is gone opens nothing.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from marshmallow import ValidationError as _NotAnEmail
from marshmallow.validate import Email

from loomwork.metadata import store
from loomwork.metadata.errors import (
    AuthenticationRequired,
    ConflictError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from loomwork.metadata.model import BUILTIN_ROLES

from . import systables
from .context import Actor, Context
from .timezones import check_time_zone

TOKEN_PREFIX = "lw_"


def token_tenant(token: str) -> str | None:
    """The tenant name a token was issued in (``lw_<tenant>.<secret>``), or ``None``."""
    if not token.startswith(TOKEN_PREFIX) or "." not in token:
        return None
    return token[len(TOKEN_PREFIX):].split(".", 1)[0] or None
_hasher = PasswordHasher()  # argon2id, library defaults (64 MiB, t=3)
# A verify against this keeps the time of "no such user" equal to "wrong password".
_DUMMY_HASH = _hasher.hash("not a password")


@dataclass(frozen=True)
class User:
    id: int
    username: str
    email: str | None
    full_name: str
    roles: frozenset[str]
    locale: str
    active: bool
    manager_id: int | None = None
    #: Where pages show this user times (IANA name); None until known.
    time_zone: str | None = None
    #: Whether ``locale`` was chosen; until then pages follow the browser's language.
    locale_chosen: bool = True

    def actor(self) -> Actor:
        return Actor(self.id, self.username, self.roles)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "username": self.username, "email": self.email, "full_name": self.full_name,
                "roles": sorted(self.roles), "locale": self.locale, "active": self.active,
                "manager_id": self.manager_id, "time_zone": self.time_zone}


def _user(row: Any) -> User:
    return User(row.id, row.username, row.email, row.full_name,
                frozenset(r for r in row.roles.split(",") if r), row.locale, row.active,
                getattr(row, "manager_id", None), getattr(row, "time_zone", None), _locale_chosen(row))


def _locale_chosen(row: Any) -> bool:
    """Users from before ``locale_chosen`` (NULL) chose a language if it is not the default."""
    chosen = getattr(row, "locale_chosen", None)
    return bool(chosen) if chosen is not None else row.locale != "en"


#: "Leave as it is" for :meth:`UserService.update`'s optional changes (``None`` clears).
UNCHANGED: Any = type("Unchanged", (), {"__repr__": lambda self: "UNCHANGED"})()
_email = Email(error="is not an email address")


def generate_password() -> str:
    """A random password for an operator to hand over (16 URL-safe characters)."""
    return secrets.token_urlsafe(12)


def known_roles(conn: sa.Connection) -> set[str]:
    """The roles a user may be given: the built-in ones and those the tenant's published
    metadata defines."""
    return set(BUILTIN_ROLES) | set(store.get(conn, store.head(conn)).doc.get("roles", {}))


def _check_roles(conn: sa.Connection, roles: Any, granted: frozenset[str] = frozenset()) -> frozenset[str]:
    """``roles`` as a set, each one a role of the tenant. Roles the user already holds
    (``granted``) pass even if the metadata no longer has them, so an admin can change a
    user's other settings, or take such a role away, after a role was deleted.

    :raises ValidationError: for no roles or a role the tenant does not have.
    """
    if isinstance(roles, str) or not all(isinstance(r, str) for r in roles):
        raise ValidationError({"roles": ["must be a list of role names"]})
    chosen = frozenset(roles)
    if not chosen:
        raise ValidationError({"roles": ["give at least one role"]})
    known = known_roles(conn)
    unknown = sorted(chosen - granted - known)
    if unknown:
        have = ", ".join(sorted(known))
        raise ValidationError({"roles": [f"no role {', '.join(map(repr, unknown))} in this tenant (it has {have})"]})
    return chosen


def _check_email(email: Any) -> str | None:
    """``email`` normalised (blank is none). :raises ValidationError: if it is not an address."""
    if email is None or (isinstance(email, str) and not email.strip()):
        return None
    if not isinstance(email, str) or len(email) > 320:
        raise ValidationError({"email": ["is not an email address"]})
    try:
        return _email(email.strip())
    except _NotAnEmail:
        raise ValidationError({"email": ["is not an email address"]}) from None


def _check_locale(locale: Any, supported: Any) -> None:
    """:raises ValidationError: for a language not among ``supported`` (the web shell's)."""
    if locale not in supported:
        raise ValidationError({"locale": [f"must be one of {', '.join(supported)}"]})


def _check_manager(managers: dict[int, int | None], user_id: int, manager_id: Any) -> None:
    """:raises ValidationError: for an unknown manager or a reporting chain that loops."""
    if manager_id is None:
        return
    if not isinstance(manager_id, int) or isinstance(manager_id, bool) or manager_id not in managers:
        raise ValidationError({"manager_id": [f"no user {manager_id}"]})
    seen, at = {user_id}, manager_id
    while at is not None:
        if at in seen:
            raise ValidationError({"manager_id": ["would make a loop in the reporting chain"]})
        seen.add(at)
        at = managers.get(at)


def _is_admin(roles: str) -> bool:
    return "admin" in roles.split(",")


def _keep_an_admin(conn: sa.Connection, user_id: int) -> None:
    """:raises ConflictError: when ``user_id`` is the tenant's last active administrator
    (taking that away would leave nobody able to manage the tenant from the app)."""
    u = systables.users
    admins = [r.id for r in conn.execute(sa.select(u.c.id, u.c.roles).where(u.c.active)) if _is_admin(r.roles)]
    if admins == [user_id]:
        raise ConflictError("this is the tenant's last active administrator; make someone else one first")


def refuse_sign_in(password: Any) -> None:
    """Refuse a sign-in that cannot succeed (an unknown workspace, say) as slowly and in
    the same words as a wrong password, so the answer tells nothing about what exists.

    :raises AuthenticationRequired: always.
    """
    try:
        _hasher.verify(_DUMMY_HASH, password if isinstance(password, str) else "")
    except (VerificationError, InvalidHashError):
        raise AuthenticationRequired("wrong username or password") from None
    raise AuthenticationRequired("wrong username or password")  # even the dummy's own password


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password_strength(password: Any) -> None:
    if not isinstance(password, str) or len(password) < 10:
        raise ValidationError({"password": ["must be at least 10 characters"]})
    if len(password) > 1000:
        raise ValidationError({"password": ["must be at most 1000 characters"]})


#: A browser session unused this long ends; each use moves its end on, in a write at most
#: every :data:`SESSION_RENEW` (so reading pages does not write on every request).
SESSION_IDLE = dt.timedelta(hours=12)
SESSION_RENEW = dt.timedelta(minutes=10)


def _end_sessions(conn: sa.Connection, user_id: int, keep: str | None = None) -> None:
    """Delete ``user_id``'s sessions but the one whose secret is ``keep``."""
    s = systables.sessions
    where = [s.c.user_id == user_id, *([s.c.secret_hash != _digest(keep)] if keep else [])]
    conn.execute(s.delete().where(*where))


#: A verified API token is trusted this long (seconds) without another lookup.
#: Revoking a token, changing a password or deactivating a user clears the cache
#: in the process that made the change; other processes notice within this time.
TOKEN_CACHE_SECONDS = 5.0


class UserService:
    def __init__(self) -> None:
        self._tokens: dict[tuple[tuple[str, str], str], tuple[User, float, Any]] = {}
        self._lock = threading.Lock()

    def _forget_tokens(self, ctx: Context) -> None:
        with self._lock:
            for key in [k for k in self._tokens if k[0] == ctx.tenant.cache_key]:
                del self._tokens[key]

    def create(self, ctx: Context, username: str, password: str | None, *, roles: tuple[str, ...] = ("user",),
               email: str | None = None, full_name: str = "", locale: str | None = None) -> User:
        """:param locale: the user's language; without one, pages follow the browser's."""
        if not ctx.actor.is_admin:
            raise PermissionDenied("only administrators may create users")
        if not isinstance(username, str) or not 1 <= len(username) <= 150 or not username.isprintable():
            raise ValidationError({"username": ["must be 1-150 printable characters"]})
        if password is not None:
            check_password_strength(password)
        email = _check_email(email)
        u = systables.users
        with ctx.tenant.write() as conn:
            chosen = _check_roles(conn, roles)
            exists = conn.execute(sa.select(u.c.id).where(u.c.username == username)).first()
            if exists:
                raise ConflictError(f"user {username!r} already exists")
            uid = conn.execute(u.insert().values(
                username=username, email=email, full_name=full_name or username,
                password_hash=_hasher.hash(password) if password else None,
                roles=",".join(sorted(chosen)), locale=locale or "en", locale_chosen=locale is not None,
                active=True, created_at=ctx.now(),
            )).inserted_primary_key[0]
            return _user(conn.execute(sa.select(u).where(u.c.id == uid)).one())

    def get(self, ctx: Context, user_id: int) -> User:
        u = systables.users
        with ctx.tenant.read() as conn:
            row = conn.execute(sa.select(u).where(u.c.id == user_id)).first()
        if row is None:
            raise NotFound(f"no user {user_id}")
        return _user(row)

    def by_username(self, ctx: Context, username: str) -> User:
        """:raises NotFound: if the tenant has no user called ``username``."""
        u = systables.users
        with ctx.tenant.read() as conn:
            row = conn.execute(sa.select(u).where(u.c.username == username)).first() \
                if isinstance(username, str) and "\x00" not in username else None
        if row is None:
            raise NotFound(f"no user {username!r}")
        return _user(row)

    def list(self, ctx: Context) -> list[User]:
        u = systables.users
        with ctx.tenant.read() as conn:
            return [_user(r) for r in conn.execute(sa.select(u).order_by(u.c.username))]

    def update(self, ctx: Context, user_id: int, *, roles: Any = UNCHANGED, email: Any = UNCHANGED,
               full_name: Any = UNCHANGED, manager_id: Any = UNCHANGED, locale: Any = UNCHANGED,
               supported_locales: Any = ()) -> User:
        """Change a user's roles, email, full name, manager or language (administrators
        only); what is left :data:`UNCHANGED` stays. ``email``/``manager_id`` ``None`` clear them.

        Roles are checked against the tenant's roles (:func:`known_roles`); a change of roles
        ends the user's sessions. The last active administrator keeps ``admin``.

        :param supported_locales: the languages offered, when ``locale`` is given.
        :raises ValidationError: naming each bad value. :raises NotFound: for no such user.
        """
        if not ctx.actor.is_admin:
            raise PermissionDenied("only administrators may change users")
        values: dict[str, Any] = {}
        if email is not UNCHANGED:
            values["email"] = _check_email(email)
        if full_name is not UNCHANGED:
            if not isinstance(full_name, str) or len(full_name.strip()) > 200:
                raise ValidationError({"full_name": ["must be a text of at most 200 characters"]})
            values["full_name"] = full_name.strip()
        if locale is not UNCHANGED:
            _check_locale(locale, supported_locales)
            values["locale"], values["locale_chosen"] = locale, True
        u = systables.users
        with ctx.tenant.write() as conn:
            row = conn.execute(sa.select(u).where(u.c.id == user_id)).first()
            if row is None:
                raise NotFound(f"no user {user_id}")
            if roles is not UNCHANGED:
                chosen = _check_roles(conn, roles, frozenset(row.roles.split(",")))
                if _is_admin(row.roles) and "admin" not in chosen and row.active:
                    _keep_an_admin(conn, user_id)
                values["roles"] = ",".join(sorted(chosen))
            if manager_id is not UNCHANGED:
                _check_manager(dict(conn.execute(sa.select(u.c.id, u.c.manager_id)).all()), user_id, manager_id)
                values["manager_id"] = manager_id
            if "full_name" in values and not values["full_name"]:
                values["full_name"] = row.username  # as create does: a display name is never blank
            if values:
                conn.execute(u.update().where(u.c.id == user_id).values(**values))
            if values.get("roles", row.roles) != row.roles:
                _end_sessions(conn, user_id)
            updated = _user(conn.execute(sa.select(u).where(u.c.id == user_id)).one())
        self._forget_tokens(ctx)
        return updated

    def names(self, ctx: Context, ids: set[int]) -> dict[int, str]:
        """Display names (full name, else username) of the users among ``ids``."""
        u = systables.users
        with ctx.tenant.read() as conn:
            rows = conn.execute(sa.select(u.c.id, u.c.username, u.c.full_name).where(u.c.id.in_(sorted(ids))))
            return {r.id: r.full_name or r.username for r in rows}

    def set_manager(self, ctx: Context, user_id: int, manager_id: int | None) -> None:
        """Who a user reports to (approvals by manager chain). Administrators only; a
        chain may not loop back to the user (see :meth:`update`)."""
        self.update(ctx, user_id, manager_id=manager_id)

    def manager_chain(self, conn: sa.Connection, user_id: int, limit: int = 20) -> list[User]:
        """``user_id``'s manager, their manager, … (nearest first, at most ``limit``)."""
        u = systables.users
        rows = {r.id: r for r in conn.execute(sa.select(u))}
        chain: list[User] = []
        at = rows[user_id].manager_id if user_id in rows else None
        while at is not None and at in rows and len(chain) < limit and all(m.id != at for m in chain):
            chain.append(_user(rows[at]))
            at = rows[at].manager_id
        return chain

    def delegate(self, ctx: Context, user_id: int, delegate_id: int, starts_at: dt.datetime,
                 ends_at: dt.datetime) -> int:
        """From ``starts_at`` to ``ends_at`` the approvals of ``user_id`` go to
        ``delegate_id``. The user themself or an administrator sets it."""
        if ctx.actor.id != user_id and not ctx.actor.is_admin:
            raise PermissionDenied("you may delegate only your own approvals")
        errors = {}
        if not systables.is_row_id(delegate_id):
            errors["delegate_id"] = ["must be a user's id"]
        elif delegate_id == user_id:
            errors["delegate_id"] = ["must be someone else"]
        if not (isinstance(starts_at, dt.datetime) and isinstance(ends_at, dt.datetime)) or \
                starts_at.tzinfo is None or ends_at.tzinfo is None or ends_at <= starts_at:
            errors["ends_at"] = ["give a time zone, and an end after the start"]
        if errors:
            raise ValidationError(errors)
        u, d = systables.users, systables.delegations
        with ctx.tenant.write() as conn:
            found = set(conn.execute(sa.select(u.c.id).where(u.c.id.in_([user_id, delegate_id]), u.c.active)).scalars())
            if user_id not in found:
                raise NotFound(f"no user {user_id}")
            if delegate_id not in found:
                raise ValidationError({"delegate_id": [f"no active user {delegate_id}"]})
            return conn.execute(d.insert().values(user_id=user_id, delegate_id=delegate_id, starts_at=starts_at,
                                                  ends_at=ends_at, created_at=ctx.now())).inserted_primary_key[0]

    def delegations(self, ctx: Context, user_id: int) -> list[dict[str, Any]]:
        d = systables.delegations
        with ctx.tenant.read() as conn:
            return [dict(id=r.id, user_id=r.user_id, delegate_id=r.delegate_id, starts_at=r.starts_at.isoformat(),
                         ends_at=r.ends_at.isoformat())
                    for r in conn.execute(sa.select(d).where(d.c.user_id == user_id).order_by(d.c.starts_at))]

    def remove_delegation(self, ctx: Context, delegation_id: int) -> None:
        d = systables.delegations
        with ctx.tenant.write() as conn:
            row = conn.execute(sa.select(d).where(d.c.id == delegation_id)).first()
            if row is None:
                raise NotFound(f"no delegation {delegation_id}")
            if ctx.actor.id != row.user_id and not ctx.actor.is_admin:
                raise PermissionDenied("you may remove only your own delegations")
            conn.execute(d.delete().where(d.c.id == delegation_id))

    @staticmethod
    def delegate_at(conn: sa.Connection, user_id: int, at: dt.datetime) -> int | None:
        """Who acts for ``user_id`` at ``at`` (the latest delegation covering it), if anyone."""
        d, u = systables.delegations, systables.users
        return conn.execute(sa.select(d.c.delegate_id).join(u, u.c.id == d.c.delegate_id).where(
            d.c.user_id == user_id, d.c.starts_at <= at, d.c.ends_at > at, u.c.active)
            .order_by(d.c.id.desc()).limit(1)).scalar_one_or_none()

    def set_locale(self, ctx: Context, user_id: int, locale: str, supported: Any) -> None:
        """Change a user's language. :raises ValidationError: for a language not offered."""
        _check_locale(locale, supported)
        u = systables.users
        with ctx.tenant.write() as conn:
            if conn.execute(u.update().where(u.c.id == user_id).values(locale=locale, locale_chosen=True)
                            ).rowcount != 1:
                raise NotFound(f"no user {user_id}")
        self._forget_tokens(ctx)

    def set_time_zone(self, ctx: Context, user_id: int, zone: str, *, if_unset: bool = False) -> bool:
        """Set the zone pages show a user's times in (the user themself or an administrator).
        With ``if_unset``, only when the user has none yet (the browser's, at sign-in);
        returns whether it was stored.

        :raises ValidationError: for a name that is not a zone. :raises NotFound:
        """
        check_time_zone(zone)
        if ctx.actor.id != user_id and not ctx.actor.is_admin:
            raise PermissionDenied("you may only change your own time zone")
        u = systables.users
        with ctx.tenant.write() as conn:
            if conn.execute(sa.select(u.c.id).where(u.c.id == user_id)).first() is None:
                raise NotFound(f"no user {user_id}")
            where = [u.c.id == user_id, *([u.c.time_zone.is_(None)] if if_unset else [])]
            stored = conn.execute(u.update().where(*where).values(time_zone=zone)).rowcount == 1
        self._forget_tokens(ctx)
        return stored

    def authenticate(self, ctx: Context, username: str, password: str) -> User:
        """:raises AuthenticationRequired: on a wrong name or password (same message, same time)."""
        u = systables.users
        # Not a name anyone could have (PostgreSQL refuses NUL in a query): same answer.
        if not isinstance(username, str) or not isinstance(password, str) or "\x00" in username \
                or len(username) > 150:
            raise AuthenticationRequired("wrong username or password")
        with ctx.tenant.read() as conn:
            row = conn.execute(sa.select(u).where(u.c.username == username)).first()
        stored = row.password_hash if row is not None and row.password_hash else _DUMMY_HASH
        try:
            _hasher.verify(stored, password)
            ok = row is not None and row.password_hash is not None and row.active
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            raise AuthenticationRequired("wrong username or password")
        with ctx.tenant.write() as conn:
            values: dict[str, Any] = {"last_login_at": ctx.now()}
            if _hasher.check_needs_rehash(row.password_hash):
                values["password_hash"] = _hasher.hash(password)
            conn.execute(u.update().where(u.c.id == row.id).values(**values))
        return _user(row)

    def set_password(self, ctx: Context, user_id: int, new_password: str, *, old_password: str | None = None,
                     keep_session: str | None = None) -> None:
        """Change a password: users give their old one; administrators may reset anyone's.
        The user's sessions end, but the one whose secret is ``keep_session`` (the caller's
        own, so changing your password does not sign you out). API tokens stay.

        :raises ValidationError: ``old_password`` when it is wrong.
        """
        check_password_strength(new_password)
        u = systables.users
        with ctx.tenant.write() as conn:
            row = conn.execute(sa.select(u).where(u.c.id == user_id)).first()
            if row is None:
                raise NotFound(f"no user {user_id}")
            is_self = ctx.actor.id == user_id
            if not is_self and not ctx.actor.is_admin:
                raise PermissionDenied("you may only change your own password")
            if is_self:
                try:
                    _hasher.verify(row.password_hash or _DUMMY_HASH, old_password or "")
                except (VerificationError, InvalidHashError):
                    raise ValidationError({"old_password": ["is not your current password"]}) from None
            conn.execute(u.update().where(u.c.id == user_id).values(password_hash=_hasher.hash(new_password)))
            _end_sessions(conn, user_id, keep_session if is_self else None)
        self._forget_tokens(ctx)

    def set_active(self, ctx: Context, user_id: int, active: bool) -> None:
        """Deactivate (or reactivate) a user: their sessions end and their tokens stop working.
        The last active administrator cannot be deactivated."""
        if not ctx.actor.is_admin:
            raise PermissionDenied("only administrators may deactivate users")
        u = systables.users
        with ctx.tenant.write() as conn:
            roles = conn.execute(sa.select(u.c.roles).where(u.c.id == user_id, u.c.active)).scalar_one_or_none()
            if not active and roles is not None and _is_admin(roles):
                _keep_an_admin(conn, user_id)
            if conn.execute(u.update().where(u.c.id == user_id).values(active=bool(active))).rowcount != 1:
                raise NotFound(f"no user {user_id}")
            if not active:
                _end_sessions(conn, user_id)  # so reactivating opens no old cookie again
        self._forget_tokens(ctx)

    # -- sessions ---------------------------------------------------------
    def start_session(self, ctx: Context, user_id: int) -> str:
        """Open a browser session for ``user_id`` (signed in a moment ago) and return its
        secret, which only the cookie keeps; sessions of the tenant that ended are removed."""
        secret = secrets.token_urlsafe(32)
        s, now = systables.sessions, ctx.now()
        with ctx.tenant.write() as conn:
            conn.execute(s.delete().where(s.c.expires_at <= now))
            conn.execute(s.insert().values(user_id=user_id, secret_hash=_digest(secret), created_at=now,
                                           expires_at=now + SESSION_IDLE))
        return secret

    def user_for_session(self, ctx: Context, secret: str) -> User:
        """The active user whose open session has ``secret``; its end moves on (idle time).

        :raises AuthenticationRequired: for a secret of no session, one that has ended, or a
            user who is deactivated.
        """
        s, u = systables.sessions, systables.users
        if not isinstance(secret, str) or not 1 <= len(secret) <= 100:
            raise AuthenticationRequired("your session has ended; sign in again")
        now = ctx.now()
        with ctx.tenant.read() as conn:
            row = conn.execute(sa.select(u, s.c.id.label("session_id"), s.c.expires_at.label("session_ends"))
                               .join(s, s.c.user_id == u.c.id).where(s.c.secret_hash == _digest(secret))).first()
        if row is None or row.session_ends <= now or not row.active:
            raise AuthenticationRequired("your session has ended; sign in again")
        if row.session_ends - now < SESSION_IDLE - SESSION_RENEW:
            with ctx.tenant.write() as conn:
                conn.execute(s.update().where(s.c.id == row.session_id).values(expires_at=now + SESSION_IDLE))
        return _user(row)

    def end_session(self, ctx: Context, secret: str) -> None:
        """Sign out: the session whose secret is ``secret`` ends (nothing if there is none)."""
        if isinstance(secret, str):
            s = systables.sessions
            with ctx.tenant.write() as conn:
                conn.execute(s.delete().where(s.c.secret_hash == _digest(secret)))

    # -- tokens -----------------------------------------------------------
    def create_token(self, ctx: Context, user_id: int, name: str) -> str:
        """Create an API token for a user and return it; only its digest is stored."""
        if ctx.actor.id != user_id and not ctx.actor.is_admin:
            raise PermissionDenied("you may only create tokens for yourself")
        if not isinstance(name, str) or not 1 <= len(name) <= 200:
            raise ValidationError({"name": ["must be 1-200 characters"]})
        self.get(ctx, user_id)
        # The tenant travels in the token, so the API knows which namespace to look in;
        # the digest is only ever looked up inside that tenant.
        token = f"{TOKEN_PREFIX}{ctx.tenant.name}.{secrets.token_urlsafe(32)}"
        with ctx.tenant.write() as conn:
            conn.execute(systables.tokens.insert().values(
                user_id=user_id, name=name, prefix=token[-6:], token_hash=_digest(token), created_at=ctx.now()))
        return token

    def user_for_token(self, ctx: Context, token: str) -> User:
        t, u = systables.tokens, systables.users
        if not isinstance(token, str) or not token.startswith(f"{TOKEN_PREFIX}{ctx.tenant.name}.") or len(token) > 300:
            raise AuthenticationRequired("invalid API token")
        key = (ctx.tenant.cache_key, _digest(token))
        hit = self._tokens.get(key)
        if hit is not None and time.monotonic() < hit[1] and (hit[2] is None or hit[2] > ctx.now()):
            return hit[0]
        with ctx.tenant.read() as conn:
            row = conn.execute(
                sa.select(u, t.c.expires_at, t.c.revoked_at).join(t, t.c.user_id == u.c.id)
                .where(t.c.token_hash == key[1])
            ).first()
        if row is None or row.revoked_at is not None or not row.active or (
                row.expires_at is not None and row.expires_at <= ctx.now()):
            raise AuthenticationRequired("invalid API token")
        user = _user(row)
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[key] = (user, time.monotonic() + TOKEN_CACHE_SECONDS, row.expires_at)
        return user

    def list_tokens(self, ctx: Context, user_id: int) -> list[dict[str, Any]]:
        """A user's tokens without their secrets (the ids are what :meth:`revoke_token` takes)."""
        if ctx.actor.id != user_id and not ctx.actor.is_admin:
            raise PermissionDenied("you may only list your own tokens")
        t = systables.tokens
        with ctx.tenant.read() as conn:
            rows = conn.execute(sa.select(t.c.id, t.c.name, t.c.prefix, t.c.created_at, t.c.expires_at,
                                          t.c.revoked_at).where(t.c.user_id == user_id).order_by(t.c.id))
            return [{"id": r.id, "name": r.name, "hint": r.prefix, "created_at": r.created_at,
                     "expires_at": r.expires_at, "revoked_at": r.revoked_at} for r in rows]

    def revoke_token(self, ctx: Context, token_id: int, *, user_id: int | None = None) -> None:
        """Revoke a token of your own (administrators: anyone's); with ``user_id``, only if it
        is that user's. Revoking it again keeps the first time.

        :raises NotFound: for a token that is not there (or not yours to see).
        """
        t = systables.tokens
        row = None
        if systables.is_row_id(token_id):
            with ctx.tenant.write() as conn:
                row = conn.execute(sa.select(t).where(t.c.id == token_id)).first()
                if row is not None and (row.user_id == ctx.actor.id or ctx.actor.is_admin) \
                        and user_id in (None, row.user_id):
                    conn.execute(t.update().where(t.c.id == token_id, t.c.revoked_at.is_(None))
                                 .values(revoked_at=ctx.now()))
                else:
                    row = None
        if row is None:
            raise NotFound(f"no token {token_id}")
        self._forget_tokens(ctx)
