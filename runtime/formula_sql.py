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
from .expr.sql import SqlEnv, to_sql
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
