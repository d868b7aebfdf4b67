"""The explicit context every runtime service takes: tenant, actor, locale, clock."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .tenancy import Tenant


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


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
    tenant: Tenant
    actor: Actor
    locale: str = "en"
    clock: Callable[[], dt.datetime] = field(default=utcnow, compare=False)

    def now(self) -> dt.datetime:
        return self.clock()
