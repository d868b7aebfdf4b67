"""How many password checks an account, and an address, may have in a window: counted
in the platform's registry, so every process of an installation (gunicorn workers,
hosts) shares one count.

A check is counted *before* it runs (:meth:`AttemptThrottle.reserve`), one atomic
upsert per key that adds one only while the count is under the limit. Guesses sent in
parallel therefore cannot all pass a look taken before any of them failed: at most the
limit reach the password hash per window, however many processes take them. A check
that succeeds gives its reservation back (:meth:`AttemptThrottle.succeeded`).

Windows are fixed: one starts at the first check counted after the previous one ended
and lasts ``window``; then the count starts again. Time is the caller's (the Context
clock), never the wall clock, so a test moves the window by moving a clock.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from loomwork.metadata.errors import TooManyAttempts

from .sqltypes import UTCDateTime
from .tenancy import attempts as table

if TYPE_CHECKING:
    from .tenancy import Platform

ACCOUNT, ADDRESS = "account", "address"


@dataclass(frozen=True)
class Key:
    """What a check is counted against: ``kind`` (:data:`ACCOUNT` or :data:`ADDRESS`),
    the tenant ('' for an address) and the username or address."""

    kind: str
    tenant: str
    subject: str


def account(tenant: str, username: str) -> Key:
    """An account's key: the workspace and username as given, cut to the column sizes
    (a megabyte "username" must not become a row; a workspace that does not exist is
    counted as well, so its answer tells nothing)."""
    return Key(ACCOUNT, str(tenant)[:64], str(username)[:200])


def address(remote: str | None) -> Key:
    """A client address's key (across every tenant)."""
    return Key(ADDRESS, "", str(remote or "")[:200])


class AttemptThrottle:
    """At most ``attempts`` password checks per account in a window that did not succeed,
    and ``ADDRESS_FACTOR`` times as many per client address.

    The address limit is wider on purpose: people behind one NAT or proxy share an
    address, and a limit as tight as the per-account one would let anyone lock a whole
    office out with a handful of wrong passwords. Rows of ended windows are deleted
    about once a window, so random usernames cannot grow the table without bound.
    """

    ADDRESS_FACTOR = 10

    def __init__(self, platform: Platform, attempts: int, window_seconds: int) -> None:
        self.platform = platform
        self.attempts = attempts
        self.window = dt.timedelta(seconds=window_seconds)
        self._purged_at: dt.datetime | None = None

    def limit(self, key: Key) -> int:
        return self.attempts * self.ADDRESS_FACTOR if key.kind == ADDRESS else self.attempts

    def reserve(self, keys: Iterable[Key], now: dt.datetime,
                message: str = "too many failed sign-ins; wait a few minutes and try again") -> None:
        """Count a check against every key, or against none when one of them has had its
        limit in the current window.

        :raises TooManyAttempts: with the seconds until that key's window ends.
        """
        self._purge(now)
        with self.platform.registry_write() as conn:  # all keys or none: raising rolls back
            for key in keys:
                if conn.execute(self._take(conn.dialect.name, key, now)).first() is None:
                    started = conn.execute(sa.select(table.c.window_start).where(*_is(key))).scalar_one()
                    raise TooManyAttempts(message, math.ceil((started + self.window - now).total_seconds()))

    def succeeded(self, keys: Iterable[Key]) -> None:
        """The check passed: an account's count is forgotten (the right password ends a run
        of wrong ones), an address gets its reservation back."""
        with self.platform.registry_write() as conn:
            for key in keys:
                if key.kind == ACCOUNT:
                    conn.execute(table.delete().where(*_is(key)))
                else:
                    conn.execute(table.update().where(*_is(key), table.c.checks > 0)
                                 .values(checks=table.c.checks - 1))

    def _take(self, dialect: str, key: Key, now: dt.datetime) -> sa.Executable:
        """One more check for ``key`` if it is under its limit or its window has ended
        (then a new window starts now); returns a row only when taken."""
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        ended = table.c.window_start <= now - self.window
        return insert.values(kind=key.kind, tenant=key.tenant, subject=key.subject, window_start=now,
                             checks=1).on_conflict_do_update(
            index_elements=[table.c.kind, table.c.tenant, table.c.subject],
            set_={"checks": sa.case((ended, 1), else_=table.c.checks + 1),
                  "window_start": sa.case((ended, sa.literal(now, UTCDateTime)), else_=table.c.window_start)},
            where=sa.or_(ended, table.c.checks < self.limit(key)),
        ).returning(table.c.checks)

    def _purge(self, now: dt.datetime) -> None:
        """Delete the rows of ended windows, at most about once a window per process."""
        last = self._purged_at
        if last is not None and dt.timedelta(0) <= now - last < self.window:
            return
        self._purged_at = now
        stale = sa.select(table.c.kind, table.c.tenant, table.c.subject).where(
            table.c.window_start <= now - self.window)
        if self.platform.kind == "postgresql":  # rows a sign-in holds are its business: skip them
            stale = stale.with_for_update(skip_locked=True)
        with self.platform.registry_write() as conn:
            conn.execute(table.delete().where(sa.tuple_(table.c.kind, table.c.tenant, table.c.subject).in_(stale)))


def _is(key: Key) -> tuple[sa.ColumnElement[bool], ...]:
    return (table.c.kind == key.kind, table.c.tenant == key.tenant, table.c.subject == key.subject)
