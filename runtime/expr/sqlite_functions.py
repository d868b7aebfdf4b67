"""SQL functions SQLite lacks, registered on every connection (see ``runtime/tenancy.py``).

The SQL back end (:mod:`.sql`) calls these where SQLite's own functions would disagree
with the Python back end: ASCII-only ``upper``/``lower``, no RE2, no month arithmetic,
binary floats for decimals. Each one runs the Python back end's own implementation, so
the two agree by construction. All are deterministic (usable in indexes and by the
planner) and NULL-safe: a NULL argument gives NULL. A cap the Python back end enforces
(:class:`~loomwork.runtime.expr.EvaluationError`) makes the statement fail.

Values arrive as SQLite stores them: decimals as REALs (converted through their
shortest text, like ``Decimal(repr(x))``), dates as ``YYYY-MM-DD`` and datetimes as
SQLAlchemy's ``YYYY-MM-DD HH:MM:SS.ffffff`` text in UTC, which is the format returned.
"""
from __future__ import annotations

import datetime as dt
import functools
import operator
import sqlite3
from collections.abc import Callable
from decimal import Decimal, DivisionByZero, InvalidOperation
from typing import Any

from .functions import _add_days, _add_months, _ceil, _floor, _regex_match, _round, _substr
from .python import _arith, _checked, _dec


def _null_safe(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def run(*args: Any) -> Any:
        if any(a is None for a in args):
            return None
        return fn(*args)
    return run


def _sqlite_value(value: Any) -> Any:
    """A Python back end result as a value SQLite can hold (decimals become REALs)."""
    value = _checked(value)
    if isinstance(value, Decimal):
        return float(value)
    return value


def _decimal_op(op: str) -> Callable[..., Any]:
    """Exact decimal arithmetic, as the Python back end does it (``Decimal(repr(x))`` for
    a REAL), rounded back to the nearest REAL. Without the 1e18 cap: PostgreSQL's
    NUMERIC has none either, and SQL evaluates operands Python would skip."""
    fn = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op]

    def run(a: Any, b: Any) -> Any:
        try:
            return float(fn(_dec(a), _dec(b)))
        except (DivisionByZero, InvalidOperation, ZeroDivisionError):
            return None  # x / 0
    return run


def _shift(impl: Callable[[Any, Any], Any]) -> Callable[[str, Any], str]:
    """Date arithmetic on stored text: the date part moves, a time part stays as it was
    (whole days and months in UTC do not change the time of day)."""
    def run(value: str, n: Any) -> str:
        day = dt.date.fromisoformat(value[:10])
        return impl(day, n).isoformat() + value[10:]
    return run


def _upper(text: str) -> str:
    return text.upper()


def _lower(text: str) -> str:
    return text.lower()


#: name, number of arguments, implementation (before NULL-safety).
FUNCTIONS: tuple[tuple[str, int, Callable[..., Any]], ...] = (
    ("lw_upper", 1, _upper),
    ("lw_lower", 1, _lower),
    ("lw_repeat", 2, _arith("*", "text")),
    ("lw_pow", 2, _arith("**", "number")),
    ("lw_dadd", 2, _decimal_op("+")),
    ("lw_dsub", 2, _decimal_op("-")),
    ("lw_dmul", 2, _decimal_op("*")),
    ("lw_ddiv", 2, _decimal_op("/")),
    ("lw_round", 2, lambda x, digits: _sqlite_value(_round(x, digits))),
    ("lw_floor", 1, lambda x: _sqlite_value(_floor(x))),
    ("lw_ceil", 1, lambda x: _sqlite_value(_ceil(x))),
    ("lw_substr", 2, _substr),
    ("lw_substr", 3, _substr),
    ("lw_regex_match", 2, _regex_match),
    ("lw_add_days", 2, _shift(_add_days)),
    ("lw_add_months", 2, _shift(_add_months)),
)


def register(dbapi_connection: sqlite3.Connection) -> None:
    """Register the expression functions on a new SQLite connection."""
    for name, nargs, impl in FUNCTIONS:
        dbapi_connection.create_function(name, nargs, _null_safe(impl), deterministic=True)
