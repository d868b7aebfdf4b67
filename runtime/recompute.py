"""Recomputing stored formulas and roll-ups after their definition changes, as a job.

A publish that adds a stored formula or roll-up, or changes its definition, leaves
existing rows to be computed. The publish writes a ``recompute`` job (``lw_job``) in
its own transaction, so the work exists exactly when the new version does, and runs it
right after it commits. The job walks its passes (an object's stored formulas, then the
roll-ups over that object; or one roll-up) in keyset batches, each batch one short
write transaction that also saves how far the job got (a row whose value moves gets a
new ``row_version`` and ``updated_at``, as every derived write does). So no table is
locked for the whole pass, readers and writers go on meanwhile (they see the old value
of a row until its batch commits), and a pass interrupted anywhere — an error, a
process that died — goes on from its last committed batch when ``loomwork worker``
(or an embedded server's job thread) takes the job again: at once after an error's
back-off, after the lease for a process that died (decision D69). Batches are
idempotent: a row is written only when its value moves.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from loomwork.metadata.model import AppMetadata

from . import rollups
from .compiled import CompiledApp, Runtime
from .context import Context
from .evaluation import coerce, make_env
from .expr import EvaluationError

#: Rows (or roll-up parents) per batch, each its own transaction.
BATCH = 1000
#: The ``lw_job`` kind of a recomputation.
JOB = "recompute"


@dataclass(frozen=True)
class Target:
    object: str
    field: str
    kind: str  # formula or rollup


def changed_targets(old: AppMetadata | None, new: CompiledApp) -> list[Target]:
    """Stored formulas and roll-ups that are new or whose definition changed."""
    out = []
    for obj in new.objects.values():
        for name, f in obj.fields.items():
            if f.column is None or not f.ftype.computed:
                continue
            before = old.objects[obj.name].fields.get(name) if old and obj.name in old.objects else None
            raw = new.meta.objects[obj.name].fields[name]
            if before is None or before != raw:
                out.append(Target(obj.name, name, f.defn.type))
    return out


def plan(app: CompiledApp, targets: list[Target], batch: int | None = None) -> dict[str, Any]:
    """The state a recompute job starts from: its passes in order, nothing done yet.

    A formula target recomputes every stored formula of its object (once), and the
    roll-ups over that object with it (they may sum or filter on its formulas); a roll-up
    target recomputes that roll-up. Every formula pass comes before every roll-up, so a
    roll-up sums formulas already computed (a stored formula never reads a roll-up:
    nothing would recompute it). Each pass reports under the key of the target that
    asked for it (``opp.net``) or of its roll-up (``account.pipeline``)."""
    formulas: dict[str, dict[str, Any]] = {}
    rollup_passes: dict[str, dict[str, Any]] = {}

    def rollup(parent: str, field: str) -> None:
        rollup_passes.setdefault(f"{parent}.{field}", {"kind": "rollup", "object": parent, "field": field})

    for target in targets:
        if target.kind != "formula":
            rollup(target.object, target.field)
        elif target.object not in formulas:
            formulas[target.object] = {"key": f"{target.object}.{target.field}", "kind": "formulas",
                                       "object": target.object}
            for r in app.object(target.object).rules.feeds:
                rollup(r.parent, r.field)
    passes = [*formulas.values(), *({"key": k, **p} for k, p in rollup_passes.items())]
    return {"version": app.version, "batch": batch or BATCH, "passes": passes, "at": 0, "after": 0, "rows": {}}


def step(ctx: Context, conn: sa.Connection, runtime: Runtime, state: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Run one batch of a recompute job in ``conn``; return the state to save and
    whether the job is finished. A pass whose object or field is gone (a later publish
    dropped it) is finished."""
    out = {**state, "rows": dict(state["rows"])}
    passes = out["passes"]
    if out["at"] >= len(passes):
        return out, True
    p = passes[out["at"]]
    app = runtime.compiled(ctx.tenant, conn)
    if p["kind"] == "formulas":
        moved = _formulas_batch(ctx, conn, app, p["object"], out["after"], out["batch"])
    else:
        moved = _rollup_batch(ctx, conn, app, p["object"], p["field"], out["after"], out["batch"])
    out["rows"].setdefault(p["key"], 0)
    if moved is None:  # the pass is done: on to the next one
        out["at"], out["after"] = out["at"] + 1, 0
    else:
        out["after"], count = moved
        out["rows"][p["key"]] += count
    return out, out["at"] >= len(passes)


def _formulas_batch(ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str, after: int,
                    batch: int) -> tuple[int, int] | None:
    """Recompute the stored formulas of the rows after id ``after`` (one batch); return
    (last id, rows updated), or None when no rows (or no stored formulas) are left."""
    obj = app.objects.get(object_name)
    formulas = obj.rules.stored_formulas if obj is not None else ()
    if not formulas:
        return None
    t = obj.table
    rows = list(conn.execute(sa.select(t).where(t.c.id > after).order_by(t.c.id).limit(batch)).mappings())
    if not rows:
        return None
    updates = []
    for row in rows:
        rec = dict(row)
        env = make_env(ctx, rec, None)
        change: dict[str, Any] = {}
        for name, e in formulas:
            try:
                value = coerce(obj, name, e(env))
            except EvaluationError:
                value = None
            rec[name] = value
            if value != row[name]:
                change[name] = value
        if change:
            updates.append((row["id"], row["row_version"], change))
    # One statement per set of changed columns keeps executemany batches whole.
    by_cols: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for rid, version, change in updates:
        by_cols.setdefault(tuple(sorted(change)), []).append(
            {"lw_id": rid, "lw_rv": version, **{f"lw_{k}": v for k, v in change.items()}})
    now = ctx.now()
    for cols, params in by_cols.items():
        # A row changed since it was read was computed by that write itself. A
        # recomputed row is a derived write: its ETag and updated_at move.
        conn.execute(t.update().where(t.c.id == sa.bindparam("lw_id"),
                                      t.c.row_version == sa.bindparam("lw_rv")).values(
            {**{c: sa.bindparam(f"lw_{c}", type_=t.c[c].type) for c in cols},
             "row_version": t.c.row_version + 1, "updated_at": now}), params)
    return rows[-1]["id"], len(updates)


def _rollup_batch(ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str, field: str, after: int,
                  batch: int) -> tuple[int, int] | None:
    """One batch of roll-up ``object_name.field``: (last parent id, parents visited), or None."""
    rollup = next((r for o in app.objects.values() for r in o.rules.feeds
                   if r.parent == object_name and r.field == field), None)
    if rollup is None:
        return None
    return rollups.recompute(conn, app, rollup, after, batch, ctx.now())
