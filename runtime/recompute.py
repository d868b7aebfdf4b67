"""Recomputing stored formulas and roll-ups after their definition changes.

A publish that adds a stored formula or roll-up, or changes its definition, leaves
existing rows to be computed. That runs after the publish commits, in keyset batches
of short write transactions (a row whose value moves gets a new ``row_version`` and
``updated_at``, as every derived write does), so no table is locked for the whole pass and readers
and writers go on meanwhile (they see the old value of a row until its batch
commits). A pass that is interrupted leaves old values behind; ``loomwork meta
recompute`` runs it again (it is idempotent).
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

BATCH = 1000


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


def recompute_formulas(ctx: Context, runtime: Runtime, object_name: str, batch: int = BATCH) -> int:
    """Recompute every stored formula of ``object_name``; return the rows updated."""
    last, done = 0, 0
    while True:
        with ctx.tenant.write() as conn:
            app = runtime.compiled(ctx.tenant, conn)
            obj = app.object(object_name)
            formulas = obj.rules.stored_formulas
            if not formulas:
                return done
            t = obj.table
            rows = list(conn.execute(sa.select(t).where(t.c.id > last).order_by(t.c.id).limit(batch)).mappings())
            if not rows:
                return done
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
            done += len(updates)
            last = rows[-1]["id"]


def recompute_rollup(ctx: Context, runtime: Runtime, object_name: str, field: str, batch: int = BATCH) -> int:
    """Recompute roll-up ``object_name.field`` for every parent; return the parents visited."""
    last, done = 0, 0
    while True:
        with ctx.tenant.write() as conn:
            app = runtime.compiled(ctx.tenant, conn)
            rollup = next((r for o in app.objects.values() for r in o.rules.feeds
                           if r.parent == object_name and r.field == field), None)
            if rollup is None:
                return done
            step = rollups.recompute(conn, app, rollup, last, batch, ctx.now())
            if step is None:
                return done
            last, count = step
            done += count


def recompute(ctx: Context, runtime: Runtime, targets: list[Target], batch: int = BATCH) -> Mapping[str, int]:
    """Run the recomputations a publish asked for; return rows touched per target."""
    out: dict[str, int] = {}
    formulas_done: set[str] = set()
    for target in targets:
        key = f"{target.object}.{target.field}"
        if target.kind == "formula":
            if target.object not in formulas_done:
                out[key] = recompute_formulas(ctx, runtime, target.object, batch)
                formulas_done.add(target.object)
                # Roll-ups over the recomputed object may sum or filter on its formulas.
                app = runtime.compiled(ctx.tenant)
                for r in app.object(target.object).rules.feeds:
                    rkey = f"{r.parent}.{r.field}"
                    if rkey not in out:
                        out[rkey] = recompute_rollup(ctx, runtime, r.parent, r.field, batch)
        else:
            out[key] = recompute_rollup(ctx, runtime, target.object, target.field, batch)
    return out
