"""Field history: who changed which field of which record from what to what, and how.

Every write of the pipeline records here in its own transaction, and so do the
writes it derives (a roll-up moving on a parent, a cascade on a child): those are
marked with the origin ``derived``, so the record page can tell "Amy changed the
stage" from "the total moved because a line changed".
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import systables
from .tenancy import json_dumps

if TYPE_CHECKING:
    from .context import Context
    from .pipeline import Origin

#: ``(record_id, action, field, old, new)``: one history entry, values already JSON-ready.
Entry = tuple[int, str, "str | None", Any, Any]


def author(ctx: Context, origin: Origin) -> int | None:
    """Who a write is recorded as made by: the user a system write acts for, else the actor."""
    return origin.on_behalf_of if origin.on_behalf_of is not None else ctx.actor.id


def record(conn: sa.Connection, ctx: Context, object_name: str, origin: Origin, entries: Iterable[Entry]) -> None:
    """Insert history ``entries`` of ``object_name`` in one statement."""
    by, now = author(ctx, origin), ctx.now()
    rows = [{"object": object_name, "record_id": rid, "action": action, "field": field,
             "old": None if old is None else json_dumps(old), "new": None if new is None else json_dumps(new),
             "changed_by": by, "changed_at": now, "origin": origin.kind,
             "via": origin.detail[:80] if origin.detail else None}
            for rid, action, field, old, new in entries]
    if rows:
        conn.execute(systables.history.insert(), rows)
