"""Keeping roll-up fields current as their child records change.

A child write moves its parents' roll-ups as *derived writes*: the parents' rows are
locked and read (in id order, so concurrent writers cannot deadlock on them), their
new values computed, and written with ``row_version``, ``updated_at`` and
``updated_by`` (the child's writer) moved and a history entry marked ``derived``, so a parent's ETag changes with its totals. Counts
and sums move by deltas: no child row is read, so a parent with 100k children costs
the same as one with ten. Min and max read the children only when the extreme itself
left; averages are recomputed with one aggregate over the affected parents' children
(served by the lookup's index). A parent whose roll-up feeds a roll-up of its own
parent passes the change on.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from . import history
from .compiled import CompiledApp, CompiledObject
from .evaluation import virtual_values
from .expr import Env, EvaluationError
from .rules import Rollup
from .sqltypes import ExactDecimal

if TYPE_CHECKING:
    from .context import Context
    from .pipeline import Origin

Pair = tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]
#: Roll-ups of roll-ups of roll-ups...: past this, the chain is refused at publish anyway.
MAX_CHAIN = 8


def _counts(app: CompiledApp, child: CompiledObject, r: Rollup, row: Mapping[str, Any] | None) -> bool:
    if row is None or row.get("deleted_at") is not None or row.get(r.via) is None:
        return False
    if r.filter is None:
        return True
    rec = virtual_values(app, child, dict(row), None) if child.rules.virtual_formulas else row
    try:
        return r.filter(Env(rec)) is True
    except EvaluationError:
        return False  # as the SQL aggregate's WHERE would not match


def maintain(conn: sa.Connection, ctx: Context, app: CompiledApp, child: CompiledObject,
             pairs: Iterable[Pair], origin: Origin, *, _depth: int = 0) -> None:
    """Apply child changes (``(before, after)`` rows; ``None`` for created or deleted)
    to the roll-ups they feed, as derived writes of the parents.

    :param origin: the origin of the derived writes (``cause.derived()``).
    """
    pairs = list(pairs)
    by_parent: dict[str, list[Rollup]] = defaultdict(list)
    for r in child.rules.feeds:
        by_parent[r.parent].append(r)
    for parent_name in sorted(by_parent):
        rollups = by_parent[parent_name]
        parent = app.object(parent_name)
        touched = {row[r.via] for r in rollups for pair in pairs for row in pair
                   if row is not None and row.get(r.via) is not None}
        if not touched:
            continue
        current = _lock_read(conn, parent.table, touched)
        new: dict[int, dict[str, Any]] = defaultdict(dict)
        for r in rollups:
            for pid, value in _new_values(conn, app, child, r, parent, pairs, current).items():
                if pid in current and value != current[pid][r.field]:
                    new[pid][r.field] = value
        if not new:
            continue
        now, by = ctx.now(), history.author(ctx, origin)
        pt = parent.table
        by_cols: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for pid, change in sorted(new.items()):
            by_cols[tuple(sorted(change))].append({"lw_pid": pid, **{f"lw_{k}": v for k, v in change.items()}})
        for cols, params in by_cols.items():
            conn.execute(pt.update().where(pt.c.id == sa.bindparam("lw_pid")).values(
                {**{c: sa.bindparam(f"lw_{c}", type_=pt.c[c].type) for c in cols},
                 "row_version": pt.c.row_version + 1, "updated_at": now, "updated_by": by}), params)
        history.record(conn, ctx, parent_name, origin, (
            (pid, "update", f, parent.fields[f].dump(current[pid][f]), parent.fields[f].dump(v))
            for pid, change in sorted(new.items()) for f, v in change.items()))
        if parent.rules.feeds and _depth < MAX_CHAIN:
            moved = [(current[pid], {**current[pid], **change, "row_version": current[pid]["row_version"] + 1,
                                     "updated_at": now, "updated_by": by}) for pid, change in sorted(new.items())]
            maintain(conn, ctx, app, parent, moved, origin, _depth=_depth + 1)


def _lock_read(conn: sa.Connection, pt: sa.Table, ids: set[int]) -> dict[int, Mapping[str, Any]]:
    """The parents' rows, locked in id order on PostgreSQL (SQLite writers are serialised
    already). Locked first, an aggregate over their children runs in a statement of its
    own, with a snapshot that has every writer's child change that came before."""
    stmt = sa.select(pt).where(pt.c.id.in_(sorted(ids))).order_by(pt.c.id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return {row["id"]: row for row in conn.execute(stmt).mappings()}


def _new_values(conn: sa.Connection, app: CompiledApp, child: CompiledObject, r: Rollup, parent: CompiledObject,
                pairs: list[Pair], current: Mapping[int, Mapping[str, Any]]) -> dict[int, Any]:
    """Roll-up ``r``'s new value for each parent the pairs touch (where it may move)."""
    if r.function in ("count", "sum"):
        deltas: dict[int, Any] = defaultdict(int)
        for before, after in pairs:
            for row, sign in ((before, -1), (after, 1)):
                if not _counts(app, child, r, row):
                    continue
                value = 1 if r.function == "count" else row.get(r.source)  # type: ignore[union-attr]
                if value is not None:
                    deltas[row[r.via]] += sign * value  # type: ignore[index]
        return {pid: (current[pid][r.field] or 0) + d for pid, d in deltas.items() if d != 0 and pid in current}
    if r.function in ("min", "max"):
        return _extremes(conn, app, child, r, parent, pairs, current)
    touched = {row[r.via] for pair in pairs for row in pair if row is not None and row.get(r.via) is not None}
    return _aggregates(conn, app, r, parent, touched)


def _extremes(conn: sa.Connection, app: CompiledApp, child: CompiledObject, r: Rollup, parent: CompiledObject,
              pairs: list[Pair], current: Mapping[int, Mapping[str, Any]]) -> dict[int, Any]:
    """Min and max without reading the children unless the extreme itself left.

    A value that leaves a parent (deleted, changed, moved) needs the aggregate only
    where it *was* the parent's extreme; a value that arrives just wins or loses
    against the stored one.
    """
    better = max if r.function == "max" else min
    out: dict[int, Any] = {}
    recount: set[int] = set()
    for before, after in pairs:
        old = (before[r.via], before.get(r.source)) if _counts(app, child, r, before) else None  # type: ignore[index]
        new = (after[r.via], after.get(r.source)) if _counts(app, child, r, after) else None  # type: ignore[index]
        if old == new:
            continue
        if old is not None and old[1] is not None and old[0] in current and \
                old[1] == out.get(old[0], current[old[0]][r.field]):
            recount.add(old[0])
        if new is not None and new[1] is not None and new[0] in current:
            stored = out.get(new[0], current[new[0]][r.field])
            out[new[0]] = new[1] if stored is None else better(stored, new[1])
    if recount:
        out.update(_aggregates(conn, app, r, parent, recount))
    return out


def _aggregates(conn: sa.Connection, app: CompiledApp, r: Rollup, parent: CompiledObject,
                ids: set[int]) -> dict[int, Any]:
    """The roll-up computed over the children of each parent in ``ids``."""
    pt = parent.table
    value = aggregate(app, r, conn.dialect.name, pt)
    child = app.object(r.child)
    if r.function != "count" and child.fields[r.source].column is not None:
        # Read back in the children's type (a scaled integer on SQLite is the source's scale).
        value = sa.type_coerce(value, child.table.c[r.source].type)
    return {row[0]: row[1] for row in conn.execute(sa.select(pt.c.id, value).where(pt.c.id.in_(sorted(ids))))}


def aggregate(app: CompiledApp, r: Rollup, dialect: str, parent_table: sa.Table) -> sa.ColumnElement:
    """The roll-up's value for each row of ``parent_table``, as a correlated subquery."""
    from .formula_sql import column_sql, expression_sql

    child = app.object(r.child)
    ct = child.table
    where = [ct.c[r.via] == parent_table.c.id, ct.c.deleted_at.is_(None)]
    if r.filter is not None:
        where.append(expression_sql(app, child, ct, r.filter.tree, dialect) == sa.true())
    parent_col = parent_table.c[r.field]
    if r.function == "count":
        value = sa.func.count()
    else:
        source = ct.c[r.source] if child.fields[r.source].column is not None else \
            column_sql(app, child, ct, r.source, dialect)
        value = getattr(sa.func, r.function)(source)
        if r.function == "avg" and dialect == "sqlite" and isinstance(parent_col.type, ExactDecimal):
            # A decimal is a scaled integer on SQLite: keep the average one too.
            value = sa.cast(sa.func.round(value), sa.BigInteger)
    sub = sa.select(value).where(*where).scalar_subquery()
    if r.function in ("count", "sum"):
        sub = sa.func.coalesce(sub, 0)
    return sub


def recompute(conn: sa.Connection, app: CompiledApp, r: Rollup, after_id: int,
              batch: int, now: Any) -> tuple[int, int] | None:
    """Recompute one batch of parents (ids after ``after_id``); return (last id, parents),
    or None when there are none left. A parent whose value moves gets a new
    ``row_version`` and ``updated_at`` (no history row: the publish that asked for it
    is the record of why, see docs/decisions.md)."""
    pt = app.object(r.parent).table
    ids = [row[0] for row in conn.execute(sa.select(pt.c.id).where(pt.c.id > after_id)
                                          .order_by(pt.c.id).limit(batch))]
    if not ids:
        return None
    if conn.dialect.name == "postgresql":
        conn.execute(sa.select(pt.c.id).where(pt.c.id.in_(ids)).order_by(pt.c.id).with_for_update())
    value = aggregate(app, r, conn.dialect.name, pt)
    # Only parents whose value moves are written: their ETag changes, the others' not.
    conn.execute(pt.update().where(pt.c.id.between(ids[0], ids[-1]), pt.c[r.field].is_distinct_from(value))
                 .values({r.field: value, "row_version": pt.c.row_version + 1, "updated_at": now}))
    return ids[-1], len(ids)

