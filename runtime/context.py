"""The explicit context every runtime service takes: tenant, actor, locale, clock."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tenancy import Tenant


def utcnow() -> dt.datetime:
    """The wall clock, in UTC: the default of :attr:`Context.clock` and nowhere else."""
    return dt.datetime.now(dt.UTC)


class Clock:
    """A clock that stands still until moved: for tests, simulations and replays.

    ``Context(tenant, actor, clock=Clock(t0))``; then ``clock.now = t1`` or
    ``clock.advance(minutes=5)``. Every service reads time from the context, so
    scripts, jobs, approvals and deadlines all see the same moment.
    """

    def __init__(self, now: dt.datetime) -> None:
        if now.tzinfo is None:
            raise ValueError("a Clock needs an aware datetime (UTC)")
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        """Move forward by ``datetime.timedelta(**delta)``; return the new time."""
        self.now = self.now + dt.timedelta(**delta)
        return self.now


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user of the tenant, or the system (CLI, installs, jobs)."""

    id: int | None
    username: str
    roles: frozenset[str] = frozenset({"user"})

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @classmethod
    def system(cls) -> Actor:
        return cls(None, "system", frozenset({"admin"}))


@dataclass(frozen=True)
class Context:
    """Who acts, in which tenant, in which language, at what time (``clock``).

    Runtime code takes time only from :meth:`now`, never from the wall clock, so a
    test or a replay that sets ``clock`` sees every service agree on the moment.
    ``time_zone`` is the actor's (an IANA name, None when not known): where pages show
    times; the clock and every stored time stay UTC.
    """

    tenant: Tenant
    actor: Actor
    locale: str = "en"
    clock: Callable[[], dt.datetime] = field(default=utcnow, compare=False)
    time_zone: str | None = None

    def now(self) -> dt.datetime:
        return self.clock()

    def as_actor(self, actor: Actor) -> Context:
        """The same tenant, locale, clock and time zone, acting as ``actor``."""
        return Context(self.tenant, actor, self.locale, self.clock, self.time_zone)
