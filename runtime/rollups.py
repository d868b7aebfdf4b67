"""Keeping roll-up fields current as their child records change.

Counts and sums move by deltas: a child write adds or subtracts its own contribution
with one ``UPDATE parent SET f = f + :delta`` per parent, whatever the number of
children, so a parent with 100k children costs the same as one with ten and no
child rows are read or locked. Min, max and average cannot be maintained by deltas
(deleting the minimum needs the next one), so they are recomputed for the affected
parents with one aggregate over the children (served by the lookup's index). Parents
are updated in id order, so concurrent writers take parent row locks in the same
order and cannot deadlock on them.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa

from .compiled import CompiledApp, CompiledObject
from .evaluation import virtual_values
from .expr import Env, EvaluationError
from .rules import Rollup
from .sqltypes import ExactDecimal

Pair = tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]


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


def maintain(conn: sa.Connection, app: CompiledApp, child: CompiledObject, pairs: Iterable[Pair]) -> None:
    """Apply child changes (``(before, after)`` rows; ``None`` for created or deleted)."""
    pairs = list(pairs)
    for r in child.rules.feeds:
        parent = app.object(r.parent)
        pt = parent.table
        col = pt.c[r.field]
        if r.function in ("count", "sum"):
            deltas: dict[int, Any] = defaultdict(int)
            for before, after in pairs:
                for row, sign in ((before, -1), (after, 1)):
                    if not _counts(app, child, r, row):
                        continue
                    value = 1 if r.function == "count" else row.get(r.source)  # type: ignore[union-attr]
                    if value is None:
                        continue
                    deltas[row[r.via]] += sign * value  # type: ignore[index]
            items = [{"lw_pid": pid, "lw_delta": d} for pid, d in sorted(deltas.items()) if d != 0]
            if items:
                conn.execute(pt.update().where(pt.c.id == sa.bindparam("lw_pid")).values(
                    {r.field: sa.func.coalesce(col, 0) + sa.bindparam("lw_delta", type_=col.type)}), items)
            continue
        if r.function in ("min", "max"):
            _extremes(conn, app, child, r, pt, pairs)
            continue
        touched = set()
        for before, after in pairs:
            for row in (before, after):
                if row is not None and row.get(r.via) is not None:
                    touched.add(row[r.via])
        if touched:
            _lock(conn, pt, touched)
            conn.execute(pt.update().where(pt.c.id.in_(sorted(touched))).values(
                {r.field: aggregate(app, r, conn.dialect.name, pt)}))


def _extremes(conn: sa.Connection, app: CompiledApp, child: CompiledObject, r: Rollup, pt: sa.Table,
              pairs: list[Pair]) -> None:
    """Min and max without reading the children unless the extreme itself left.

    A value that leaves a parent (deleted, changed, moved) triggers the aggregate only
    where it *was* the parent's extreme; a value that arrives just wins or loses
    against the stored one.
    """
    col = pt.c[r.field]
    gone: list[dict[str, Any]] = []
    came: list[dict[str, Any]] = []
    for before, after in pairs:
        old = (before[r.via], before.get(r.source)) if _counts(app, child, r, before) else None  # type: ignore[index]
        new = (after[r.via], after.get(r.source)) if _counts(app, child, r, after) else None  # type: ignore[index]
        if old == new:
            continue
        if old is not None and old[1] is not None:
            gone.append({"lw_pid": old[0], "lw_value": old[1]})
        if new is not None and new[1] is not None:
            came.append({"lw_pid": new[0], "lw_value": new[1]})
    value = sa.bindparam("lw_value", type_=col.type)
    if gone:
        gone.sort(key=lambda p: p["lw_pid"])
        _lock(conn, pt, {p["lw_pid"] for p in gone})
        conn.execute(pt.update().where(pt.c.id == sa.bindparam("lw_pid"), col == value).values(
            {r.field: aggregate(app, r, conn.dialect.name, pt)}), gone)
    if came:
        came.sort(key=lambda p: p["lw_pid"])
        beats = value > col if r.function == "max" else value < col
        conn.execute(pt.update().where(pt.c.id == sa.bindparam("lw_pid"), sa.or_(col.is_(None), beats))
                     .values({r.field: value}), came)


def _lock(conn: sa.Connection, pt: sa.Table, ids: set[int]) -> None:
    """PostgreSQL: lock the parents (in id order) before an aggregate over their children.

    An UPDATE that waits for another writer's parent lock re-checks the parent row but
    not its subquery, which keeps the snapshot taken before the wait and would miss that
    writer's child change. Locked first, the aggregate runs in a statement of its own,
    with a snapshot that has it. (SQLite writers are serialised already.)"""
    if conn.dialect.name == "postgresql" and ids:
        conn.execute(sa.select(pt.c.id).where(pt.c.id.in_(sorted(ids))).order_by(pt.c.id).with_for_update())


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
              batch: int) -> tuple[int, int] | None:
    """Recompute one batch of parents (ids after ``after_id``); return (last id, parents),
    or None when there are none left."""
    pt = app.object(r.parent).table
    ids = [row[0] for row in conn.execute(sa.select(pt.c.id).where(pt.c.id > after_id)
                                          .order_by(pt.c.id).limit(batch))]
    if not ids:
        return None
    _lock(conn, pt, set(ids))
    conn.execute(pt.update().where(pt.c.id.between(ids[0], ids[-1])).values(
        {r.field: aggregate(app, r, conn.dialect.name, pt)}))
    return ids[-1], len(ids)

