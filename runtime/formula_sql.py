"""Fields and expressions of an object as SQL, for list queries and roll-ups.

A virtual formula has no column: wherever a query selects, filters or sorts on it,
its expression is compiled in place (:mod:`loomwork.runtime.expr.sql`). Decimal
columns are scaled integers on SQLite, so they are read as numbers here before any
arithmetic touches them.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from .compiled import CompiledApp, CompiledObject
from .expr import ExpressionError
from .expr.sql import SqlEnv, result_type, to_sql
from .sqltypes import ExactDecimal

Resolver = Callable[[list[str]], sa.ColumnElement]


def column_sql(app: CompiledApp, obj: CompiledObject, table: sa.FromClause, name: str, dialect: str, *,
               resolve: Resolver | None = None, env: SqlEnv | None = None) -> sa.ColumnElement:
    """Field ``name`` of ``table`` (an object table or an alias of one) as a SQL value."""
    f = obj.fields.get(name)
    if f is not None and f.column is None:
        tree = obj.rules.formulas[name].tree
        return expression_sql(app, obj, table, tree, dialect, resolve=resolve, env=env)
    col = table.c[name]
    if isinstance(col.type, ExactDecimal):
        if dialect == "sqlite":
            return sa.type_coerce(sa.type_coerce(col, sa.BigInteger) / float(10 ** col.type.scale), sa.Float)
        return sa.type_coerce(col, sa.Numeric(18, col.type.scale))
    return col


def expression_sql(app: CompiledApp, obj: CompiledObject, table: sa.FromClause, tree: Mapping[str, Any],
                   dialect: str, *, resolve: Resolver | None = None, env: SqlEnv | None = None) -> sa.ColumnElement:
    """A typed expression tree over ``table`` as SQL. Lookup paths go through ``resolve``
    (the query engine's joins); without one they are an error."""

    def column(path: list[str]) -> sa.ColumnElement:
        if len(path) == 1:
            return column_sql(app, obj, table, path[0], dialect, resolve=resolve, env=env)
        if resolve is None:
            raise ExpressionError(f"{'.'.join(path)}: lookups cannot be followed here")
        return resolve(path)

    return to_sql(tree, column, dialect, app.functions, env or SqlEnv())


def path_sql(app: CompiledApp, obj: CompiledObject, table: sa.FromClause, path: list[str], dialect: str,
             env: SqlEnv, readable: frozenset[str] | None = None) -> sa.ColumnElement:
    """A lookup path (``account.industry``) read with a correlated subquery per hop: a
    missing or deleted record on the way gives NULL, as an outer join would, and so does
    an object outside ``readable`` (a formula must not show what a filter may not)."""
    hop, rest = path[0], path[1:]
    target = app.object(obj.fields[hop].defn.prop("target"))
    tt = target.table.alias()
    if len(rest) == 1:
        inner = column_sql(app, target, tt, rest[0], dialect,
                           resolve=lambda p: path_sql(app, target, tt, p, dialect, env, readable), env=env)
    else:
        inner = path_sql(app, target, tt, rest, dialect, env, readable)
    if readable is not None and target.name not in readable:
        return sa.type_coerce(sa.null(), inner.type)
    return sa.select(inner).where(tt.c.id == table.c[hop], tt.c.deleted_at.is_(None)).scalar_subquery()


def query_source(app: CompiledApp, obj: CompiledObject, dialect: str, env: SqlEnv,
                 readable: frozenset[str] | None = None) -> sa.FromClause:
    """What list queries read ``obj`` from: its table, or, when it has virtual formulas,
    a subquery adding them as columns. Both databases flatten the subquery, so filters
    and sorts on stored fields still use their indexes; a filter or sort on a virtual
    formula is computed per row."""
    virtual = obj.rules.virtual_formulas
    if not virtual:
        return obj.table
    if app.artefact("query.deterministic", lambda: all(
            e.deps.deterministic for o in app.objects.values() for _, e in o.rules.virtual_formulas)):
        key = ",".join(sorted(readable)) if readable is not None else "*"
        return app.artefact(f"query.source:{obj.name}:{dialect}:{key}",
                            lambda: formula_source(app, obj, dialect, SqlEnv(), readable=readable))
    return formula_source(app, obj, dialect, env, readable=readable)


def sql_problems(app: CompiledApp, obj: CompiledObject, dialect: str) -> dict[str, str]:
    """Virtual formulas the database cannot compute (a plugin function without SQL, a
    regular expression PostgreSQL cannot run), with the reason. Lists compute them in
    Python for the page; they cannot be filtered or sorted on."""

    def build() -> dict[str, str]:
        out = {}
        t = obj.table
        env = SqlEnv()
        for name, _ in obj.rules.virtual_formulas:
            try:
                column_sql(app, obj, t, name, dialect, env=env, resolve=lambda p: path_sql(app, obj, t, p, dialect, env))
            except ExpressionError as exc:
                out[name] = exc.message
        return out

    return app.artefact(f"query.sql_problems:{obj.name}:{dialect}", build)


def formula_source(app: CompiledApp, obj: CompiledObject, dialect: str, env: SqlEnv,
                   alias: str | None = None, readable: frozenset[str] | None = None) -> sa.FromClause:
    """``obj``'s table with its virtual formulas as columns, as a subquery named ``alias``."""
    t = obj.table
    cols: list[Any] = [t]
    problems = sql_problems(app, obj, dialect)
    for name, e in obj.rules.virtual_formulas:
        if name in problems:
            cols.append(sa.type_coerce(sa.null(), result_type(e.type)).label(name))
            continue
        expr = column_sql(app, obj, t, name, dialect, env=env,
                          resolve=lambda p: path_sql(app, obj, t, p, dialect, env, readable))
        f = obj.fields[name]
        declared = f.ftype.expression_type(f.defn)
        if declared == "decimal":
            # Values at the field's scale, as the record service computes them.
            expr = sa.func.round(expr, f.defn.prop("scale", 2))
        # Read back as the declared type (a decimal expression may feed a number formula).
        cols.append(sa.type_coerce(expr, result_type(declared)).label(name))
    return sa.select(*cols).subquery(alias or f"lw_v_{obj.name}")
