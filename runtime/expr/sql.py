"""The SQL back end: a typed tree compiled to a SQLAlchemy expression.

A formula field that has no column is compiled in place wherever a list query
selects, filters or sorts on it, on SQLite (3.40+) and PostgreSQL (15+). The
Python back end (:mod:`.python`) is the reference: for every record, the value
selected here is the value Python computes, NULLs included. How each trap is met:

* NULL is SQL NULL and ``and``/``or``/``not`` are SQL's, which is exactly the
  three-valued logic Python implements. ``x if c else y`` is ``CASE WHEN``.
* ``/`` divides as floats (or as decimals), and ``x / 0`` is NULL (``NULLIF``).
* Text orders by code point: PostgreSQL comparisons, ``min`` and ``max`` use
  ``COLLATE "C"``; SQLite's default ``BINARY`` already does.
* ``upper``/``lower`` use full Unicode case mapping: PostgreSQL's ICU root
  collation (``und-x-icu``; PostgreSQL must be built with ICU, as the common
  packages are), a registered Python function on SQLite (whose own are ASCII-only).
* Decimals are ``NUMERIC`` on PostgreSQL; a number meeting a decimal is converted
  through its shortest text (``CAST(CAST(x AS TEXT) AS NUMERIC)``), which is what
  ``Decimal(repr(x))`` does in Python. On SQLite a decimal is a REAL holding the
  double nearest to it; arithmetic on decimals is done exactly by registered
  functions (Python's :class:`~decimal.Decimal`) and rounded back to that double, so
  ``0.1 + 0.2 == 0.3`` holds as in Python. Decimals of more than 15 significant
  digits therefore compare approximately on SQLite.
* ``round`` is half away from zero, on the decimal text of a float as in Python.
* Dates and datetimes: PostgreSQL works on UTC wall-clock time (``AT TIME ZONE
  'UTC'``) whatever the session's time zone; SQLite compares the text SQLAlchemy
  stores (``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM:SS.ffffff``), and month/day arithmetic is
  done by registered functions that keep that format.
* ``regex_match`` runs RE2 on SQLite (a registered function). PostgreSQL has no RE2,
  so the pattern is translated to an equivalent advanced regular expression: ``.``,
  ``\\d``, ``\\w``, ``\\s`` and ``\\b`` keep RE2's ASCII meaning, ``(?i)`` is spelt
  out letter by letter (with RE2's case-folding orbits, ``k`` = ``K`` = KELVIN SIGN).
  RE2 searches UTF-8 bytes, so an empty match may start inside a character, where
  ``\\B`` holds; a pattern that can match that way also matches any non-ASCII
  character on PostgreSQL. A pattern outside the translatable subset (``\\pL``, POSIX
  classes, scoped ``(?m)``, case-insensitive non-ASCII letters other than ``ſ`` and
  the Kelvin sign, repeats above 255...) is an :class:`ExpressionError` on
  PostgreSQL only.
* ``min``/``max`` are NULL when any argument is; ``concat`` reads NULL as ``''``.
* Registered SQLite functions are in :mod:`.sqlite_functions`, deterministic and
  NULL-safe; ``runtime/tenancy.py`` registers them on every connection.
* Text results carry no collation of their own (except after ``upper``, ``lower``,
  ``min`` and ``max``, which give ``COLLATE "C"``): to *sort* by code point on
  PostgreSQL as SQLite does, the caller adds ``.collate("C")``.

Where SQL still differs, it is in errors, not values. Python raises
:class:`EvaluationError` at its caps (text over 100,000 characters, numbers beyond
1e300 or 2**63, decimals beyond 1e18, exponents beyond 1000, ``round`` digits beyond
18, day or month counts beyond the years 1-9999 or not whole). On SQLite the
registered functions enforce the same caps (text repetition, ``**``, ``round``,
``floor``/``ceil``, date arithmetic, ``regex_match``) and fail the statement; the rest
are left to the database: integer overflow becomes a REAL on SQLite and an error on
PostgreSQL, which also raises on float overflow and underflow (where Python gives
0.0), accepts any ``round`` digits and truncates a fractional day or month count
given as an expression. Literal arguments out of range are an
:class:`ExpressionError` here already. SQL evaluates every operand, so an operand
that fails fails the statement even where Python would not have evaluated it (after
a NULL left operand, or past a deciding ``and``/``or`` argument). Decimal quotients
carry PostgreSQL's precision (at least 16 significant digits) rather than Python's
28, and integers beyond 2**53 meeting floats are compared as floats.

Expressions are bounded (500 nodes), but a few translations repeat an argument
(``CASE WHEN a IS NULL ...``); the compiled size is counted and capped at
:data:`MAX_SQL_WEIGHT` so nesting cannot blow it up.
"""
from __future__ import annotations

import datetime as dt
import functools
import warnings
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from re import _constants as sre  # the stdlib regex parser's opcodes
from re import _parser as sre_parse  # used as a tokenizer of RE2 syntax
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..context import utcnow
from ..sqltypes import JSONDoc, UTCDateTime
from .functions import BUILTIN_FUNCTIONS, Function, compile_regex
from .syntax import ExpressionError
from .types import NUMERIC, TEXTUAL

#: Most SQL nodes one expression may compile to, counting repeated arguments.
MAX_SQL_WEIGHT = 5000
#: PostgreSQL's collation that orders text by code point, like Python.
PG_CODE_POINT = "C"
#: PostgreSQL's collation whose upper()/lower() follow Unicode, like Python's.
PG_UNICODE_CASE = "und-x-icu"
#: What ``trim`` strips (functions._BLANKS).
BLANKS = " \t\r\n"

_INT_MAX = 2**31 - 1
#: One more than the most days or months add_days()/add_months() accept (functions._whole).
_MAX_SHIFT = 3_660_001
_BUILTINS: Mapping[str, Function] = {f.name: f for f in BUILTIN_FUNCTIONS}


class SqlEnv:
    """What an expression compiled to SQL sees besides the row: user and clock,
    bound as parameters."""

    __slots__ = ("user_id", "user_role", "now", "today")

    def __init__(self, *, user_id: int | None = None, user_role: str | None = None,
                 now: dt.datetime | None = None) -> None:
        now = now or utcnow()
        if now.tzinfo is None:
            raise ValueError("SqlEnv needs an aware datetime for now")
        self.user_id = user_id
        self.user_role = user_role
        self.now = now.astimezone(dt.UTC)
        self.today = self.now.date()


# -- result types ------------------------------------------------------------
# Datetimes and lists come back as the columns store them (runtime.sqltypes).
class SqlNumber(sa.types.TypeDecorator):
    """A ``number`` result: integers stay ``int``, anything else becomes ``float``."""

    impl = sa.Float
    cache_ok = True

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        def process(value: Any) -> Any:
            if value is None or type(value) in (int, float):
                return value
            return float(value)
        return process


class SqlDecimal(sa.types.TypeDecorator):
    """A ``decimal`` result as :class:`~decimal.Decimal`: ``NUMERIC`` on PostgreSQL, the
    REAL nearest to it on SQLite (read back through its shortest text)."""

    impl = sa.Numeric
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.Float())
        return dialect.type_descriptor(sa.Numeric(asdecimal=True))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is not None and dialect.name == "sqlite":
            return float(value)
        return value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None or isinstance(value, Decimal):
            return value
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def result_type(ty: str) -> sa.types.TypeEngine:
    """The SQLAlchemy type of an expression of type ``ty``."""
    return {"text": sa.Text(), "choice": sa.Text(), "number": SqlNumber(), "decimal": SqlDecimal(),
            "boolean": sa.Boolean(), "date": sa.Date(), "datetime": UTCDateTime(), "list": JSONDoc(),
            }.get(ty, sa.types.NullType())


def _pg_cast_type(ty: str) -> sa.types.TypeEngine | None:
    return {"text": sa.Text(), "choice": sa.Text(), "number": sa.Float(), "decimal": sa.Numeric(),
            "boolean": sa.Boolean(), "date": sa.Date(), "datetime": sa.DateTime(timezone=True),
            "list": postgresql.JSONB()}.get(ty)


# -- the compiler ------------------------------------------------------------
class _Compiler:
    def __init__(self, column: Callable[[list[str]], sa.ColumnElement], dialect: str,
                 functions: Mapping[str, Function], env: SqlEnv) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise ExpressionError(f"expressions cannot be compiled for {dialect!r}")
        self.column = column
        self.pg = dialect == "postgresql"
        self.dialect = dialect
        self.functions = functions
        self.env = env
        self._weight = 0
        self._weights: dict[int, int] = {}

    # -- plumbing -----------------------------------------------------------
    def error(self, node: Mapping[str, Any], message: str) -> ExpressionError:
        line, col = node.get("pos", (None, None))
        return ExpressionError(message, line, col)

    def compile(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        outer = self._weight
        self._weight = 0
        expr = getattr(self, f"_{node['t']}")(node)
        weight = self._weight + 1
        self._weights[id(node)] = weight
        self._weight = outer + weight
        if self._weight > MAX_SQL_WEIGHT:
            raise self.error(node, "this expression is too complex to run in SQL")
        return expr

    def repeat(self, node: Mapping[str, Any], extra: int = 1) -> None:
        """Count ``node``'s SQL ``extra`` more times: the translation repeats it."""
        self._weight += extra * self._weights.get(id(node), 1)

    def null(self, ty: str) -> sa.ColumnElement:
        """A NULL of type ``ty`` (PostgreSQL must know the type of a bare NULL)."""
        cast_to = _pg_cast_type(ty) if self.pg else None
        value = sa.cast(sa.null(), cast_to) if cast_to is not None else sa.null()
        return sa.type_coerce(value, result_type(ty))

    @staticmethod
    def is_null(node: Mapping[str, Any]) -> bool:
        return node["t"] == "lit" and node["v"] is None

    def literal(self, value: Any) -> sa.ColumnElement:
        if isinstance(value, bool):
            return sa.literal(value, sa.Boolean())
        if isinstance(value, int):
            return sa.literal(value, sa.BigInteger())
        if isinstance(value, float):
            return sa.literal(value, sa.Float())
        if isinstance(value, Decimal):
            return sa.literal(value, SqlDecimal())
        if isinstance(value, str):
            return sa.literal(value, sa.Text())
        raise TypeError(f"no SQL literal for {type(value).__name__}")

    def as_decimal(self, node: Mapping[str, Any], expr: sa.ColumnElement) -> sa.ColumnElement:
        """``expr`` (of ``node``'s type) as a decimal: Python's ``Decimal(repr(x))``."""
        if node["ty"] != "number":
            return expr
        if node["t"] == "lit":
            return self.literal(Decimal(repr(node["v"])) if isinstance(node["v"], float) else Decimal(node["v"]))
        if self.pg:
            return sa.cast(sa.cast(expr, sa.Text()), sa.Numeric())
        return expr

    def as_type(self, node: Mapping[str, Any], expr: sa.ColumnElement, ty: str) -> sa.ColumnElement:
        """Bring one alternative of a unified result (``if``, ``coalesce``...) to ``ty``."""
        return self.as_decimal(node, expr) if ty == "decimal" else expr

    def text_order(self, expr: sa.ColumnElement) -> sa.ColumnElement:
        """Text compared by code point."""
        return expr.collate(PG_CODE_POINT) if self.pg else expr

    def float_(self, expr: sa.ColumnElement) -> sa.ColumnElement:
        return sa.cast(expr, sa.Float())

    def pg_int(self, node: Mapping[str, Any], expr: sa.ColumnElement, lo: int | None,
               hi: int = _INT_MAX) -> sa.ColumnElement:
        """A number as a PostgreSQL ``integer``: truncated like Python's ``int()``,
        clamped to ``lo``..``hi`` (a clamp Python's slicing does implicitly)."""
        if node["t"] == "lit":
            v = int(node["v"])
            return sa.literal(min(max(v, lo) if lo is not None else v, hi), sa.Integer())
        whens = [(expr > hi, sa.literal(hi, sa.Integer()))]
        if lo is not None:
            whens.insert(0, (expr < lo, sa.literal(lo, sa.Integer())))
        self.repeat(node, len(whens))
        return sa.case(*whens, else_=sa.cast(sa.func.trunc(self.float_(expr)), sa.Integer()))

    def typed(self, expr: sa.ColumnElement, ty: str) -> sa.ColumnElement:
        # Group first: SQLAlchemy does not parenthesise a type-coerced AND/OR inside
        # NOT or "=", which would change the meaning.
        return sa.type_coerce(expr.self_group(), result_type(ty))

    # -- leaves -------------------------------------------------------------
    def _lit(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        if node["v"] is None:
            return self.null("null")
        return self.literal(node["v"])

    def _field(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        return self.column(list(node["path"]))

    def _old(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        raise self.error(node, f"old values exist only while saving; old.{node['field']} cannot be "
                               "used in a list filter, sort or column")

    def _changed(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        raise self.error(node, "changed() exists only while saving; it cannot be used in a list "
                               "filter, sort or column")

    def _var(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        if node["name"] == "user.id":
            value, ty = self.env.user_id, "number"
        else:
            value, ty = self.env.user_role, "text"
        return self.null(ty) if value is None else self.literal(value)

    # -- logic --------------------------------------------------------------
    def _neg(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        if self.is_null(node["a"]):
            return self.null(node["ty"])
        return -self.compile(node["a"])

    def condition(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        if self.is_null(node):
            return self.null("boolean")
        return self.typed(self.compile(node), "boolean")

    def _not(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        return sa.not_(self.condition(node["a"]))

    def _and(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        return sa.and_(*(self.condition(a) for a in node["args"]))

    def _or(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        return sa.or_(*(self.condition(a) for a in node["args"]))

    def _if(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        ty = node["ty"]
        branches = []
        for side in (node["a"], node["b"]):
            branches.append(self.null(ty) if self.is_null(side) else self.as_type(side, self.compile(side), ty))
        return sa.case((self.condition(node["c"]), branches[0]), else_=branches[1])

    # -- operators ----------------------------------------------------------
    def _arith(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        op, ty = node["op"], node["ty"]
        a, b = self.compile(node["a"]), self.compile(node["b"])
        if ty == "text":
            if op == "+":
                return a.op("||", return_type=sa.Text())(b)
            if self.pg:
                return sa.func.repeat(a, self.pg_int(node["b"], b, 0), type_=sa.Text())
            return sa.func.lw_repeat(a, b, type_=sa.Text())
        if op == "**":
            if self.pg:
                return sa.func.power(self.float_(a), self.float_(b), type_=SqlNumber())
            return sa.func.lw_pow(a, b, type_=SqlNumber())
        if ty == "decimal":
            if not self.pg:  # exact decimal arithmetic on SQLite's REALs
                name = {"+": "lw_dadd", "-": "lw_dsub", "*": "lw_dmul", "/": "lw_ddiv"}[op]
                return getattr(sa.func, name)(a, b, type_=SqlDecimal())
            a, b = self.as_decimal(node["a"], a), self.as_decimal(node["b"], b)
            if op == "/":
                b = sa.func.nullif(b, self.literal(Decimal(0)))
            return a.op(op, return_type=SqlDecimal())(b)
        if op == "/":
            zero = self.literal(0.0)
            return self.float_(a).op("/", return_type=SqlNumber())(sa.func.nullif(self.float_(b), zero))
        return a.op(op, return_type=SqlNumber())(b)

    def _cmp(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        op = {"==": "=", "!=": "<>"}.get(node["op"], node["op"])
        na, nb = node["a"], node["b"]
        a, b = self.compile(na), self.compile(nb)
        types = {na["ty"], nb["ty"]}
        if types == {"number", "decimal"}:
            a, b = self.as_decimal(na, a), self.as_decimal(nb, b)
        elif types <= TEXTUAL and op not in ("=", "<>"):
            a, b = self.text_order(a), self.text_order(b)
        return a.op(op, is_comparison=True, return_type=sa.Boolean())(b)

    def _in(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        a = self.compile(node["a"])
        if node["a"]["ty"] == "decimal":
            items = [self.as_decimal(i, None) for i in node["items"]]
        else:
            items = [self.literal(i["v"]) for i in node["items"]]
        return a.not_in(items) if node["neg"] else a.in_(items)

    # -- calls ----------------------------------------------------------------
    def _call(self, node: Mapping[str, Any]) -> sa.ColumnElement:
        name = node["fn"]
        fn = self.functions.get(name)
        if fn is None:
            raise self.error(node, f"unknown function {name}()")
        args: Sequence[Mapping[str, Any]] = node["args"]
        if fn.sql is not None:
            compiled = [self.null(a["ty"]) if self.is_null(a) else self.compile(a) for a in args]
            return self.typed(fn.sql(compiled, [a["ty"] for a in args], self.dialect), node["ty"])
        if _BUILTINS.get(name) != fn:
            raise self.error(node, f"{name}() has no SQL form, so this expression cannot be used in a "
                                   "list filter, sort or column")
        if not fn.null_aware and any(self.is_null(a) for a in args):
            return self.null(node["ty"])  # a NULL argument makes the result NULL
        return self.typed(getattr(self, f"_fn_{name}")(node, args), node["ty"])

    # math
    def _fn_round(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        x = self.compile(args[0])
        digits_node = args[1] if len(args) > 1 else {"t": "lit", "v": 0, "ty": "number"}
        if digits_node["t"] == "lit" and not -18 <= int(digits_node["v"]) <= 18:
            raise self.error(node, "round() takes -18 to 18 digits")
        digits = self.compile(digits_node) if len(args) > 1 else self.literal(0)
        if not self.pg:
            return sa.func.lw_round(x, digits)
        d = self.pg_int(digits_node, digits, -1000, 1000)  # no cast overflow next to a NULL
        if args[0]["ty"] == "decimal":
            return sa.func.round(x, d)
        rounded = sa.func.round(self.as_decimal(args[0], x), d)
        if digits_node["t"] == "lit" and int(digits_node["v"]) <= 0:
            return sa.cast(rounded, sa.BigInteger())  # Python gives an int here
        return self.float_(rounded)

    def _fn_abs(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return sa.func.abs(self.compile(args[0]))

    def _fn_floor(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        x = self.compile(args[0])
        return sa.cast(sa.func.floor(x), sa.BigInteger()) if self.pg else sa.func.lw_floor(x)

    def _fn_ceil(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        x = self.compile(args[0])
        return sa.cast(sa.func.ceil(x), sa.BigInteger()) if self.pg else sa.func.lw_ceil(x)

    def _minmax(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]], pick: str) -> sa.ColumnElement:
        ty = node["ty"]
        values = [self.as_type(a, self.compile(a), ty) for a in args]
        if len(values) == 1:
            return values[0]
        if not self.pg:  # SQLite's scalar min()/max() are NULL when any argument is
            return getattr(sa.func, pick)(*values)
        if ty in TEXTUAL:
            values = [self.text_order(v) for v in values]
        for a in args:
            self.repeat(a)
        best = getattr(sa.func, {"min": "least", "max": "greatest"}[pick])(*values)
        return sa.case((sa.or_(*(v.is_(None) for v in values)), self.null(ty)), else_=best)

    def _fn_min(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return self._minmax(node, args, "min")

    def _fn_max(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return self._minmax(node, args, "max")

    # text
    def _fn_len(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        x = self.compile(args[0])
        if args[0]["ty"] != "list":
            return sa.func.length(x)
        self.repeat(args[0])
        if self.pg:
            return sa.case((sa.func.jsonb_typeof(x) == "array", sa.func.jsonb_array_length(x)))
        return sa.case((sa.func.json_type(x) == "array", sa.func.json_array_length(x)))

    def _case_mapping(self, args: Sequence[Mapping[str, Any]], which: str) -> sa.ColumnElement:
        x = self.compile(args[0])
        if self.pg:
            mapped = getattr(sa.func, which)(x.collate(PG_UNICODE_CASE), type_=sa.Text())
            # Leave no ICU collation behind: it would clash with COLLATE "C" elsewhere.
            return mapped.collate(PG_CODE_POINT)
        return getattr(sa.func, f"lw_{which}")(x, type_=sa.Text())

    def _fn_upper(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return self._case_mapping(args, "upper")

    def _fn_lower(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return self._case_mapping(args, "lower")

    def _fn_trim(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        x = self.compile(args[0])
        return getattr(sa.func, "btrim" if self.pg else "trim")(x, self.literal(BLANKS), type_=sa.Text())

    def _fn_concat(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        parts = []
        for a in args:
            if self.is_null(a):
                continue
            x = self.compile(a)
            parts.append(x if a["t"] == "lit" else sa.func.coalesce(x, self.literal(""), type_=sa.Text()))
        if not parts:
            return self.literal("")
        out = parts[0]
        for p in parts[1:]:
            out = out.op("||", return_type=sa.Text())(p)
        return out

    def _fn_contains(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        hay, needle = self.compile(args[0]), self.compile(args[1])
        if args[0]["ty"] != "list":
            found = sa.func.strpos(hay, needle) if self.pg else sa.func.instr(hay, needle)
            return found > 0
        self.repeat(args[0])
        self.repeat(args[1])
        if self.pg:
            is_array = sa.func.jsonb_typeof(hay) == "array"
            has = hay.op("@>", is_comparison=True)(sa.func.jsonb_build_array(needle))
        else:
            is_array = sa.func.json_type(hay) == "array"
            each = sa.func.json_each(hay).table_valued("value")
            has = sa.exists(sa.select(1).select_from(each).where(each.c.value == needle))
        return sa.case((needle.is_(None), self.null("boolean")), (is_array, has))

    def _fn_starts_with(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        text, prefix = self.compile(args[0]), self.compile(args[1])
        if self.pg:
            return sa.func.starts_with(text, prefix, type_=sa.Boolean())
        return sa.func.instr(text, prefix) == 1

    def _fn_substr(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        values = [self.compile(a) for a in args]
        if not self.pg:
            return sa.func.lw_substr(*values, type_=sa.Text())
        # Python slices: a start before 1 counts from 1, a negative length is 0.
        start = self.pg_int(args[1], values[1], 1)
        if len(values) == 2:
            return sa.func.substr(values[0], start, type_=sa.Text())
        return sa.func.substr(values[0], start, self.pg_int(args[2], values[2], 0), type_=sa.Text())

    def _fn_regex_match(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        text = self.compile(args[0])
        pattern = args[1]["v"]
        if not self.pg:
            return sa.func.lw_regex_match(text, self.literal(pattern))
        try:
            translated = pg_regex(pattern)
        except ValueError as exc:
            raise self.error(args[1], f"{exc}; this pattern cannot run in SQL on PostgreSQL") from None
        return text.op("~", is_comparison=True, return_type=sa.Boolean())(self.literal(translated))

    # dates
    def _fn_today(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return sa.literal(self.env.today, sa.Date())

    def _fn_now(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return sa.literal(self.env.now, UTCDateTime())

    def _fn_date(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return sa.literal(self._literal_call(node, args), sa.Date())

    def _fn_datetime(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return sa.literal(self._literal_call(node, args), UTCDateTime())

    def _literal_call(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> Any:
        try:
            return self.functions[node["fn"]].python(args[0]["v"])
        except ValueError as exc:
            raise self.error(node, str(exc)) from None

    def utc_date(self, node: Mapping[str, Any], expr: sa.ColumnElement) -> sa.ColumnElement:
        """A date or datetime as the UTC calendar date (text ``YYYY-MM-DD`` on SQLite)."""
        if not self.pg:
            return sa.func.substr(expr, 1, 10)
        if node["ty"] == "datetime":
            return sa.cast(self.utc_wall(expr), sa.Date())
        return expr

    @staticmethod
    def utc_wall(expr: sa.ColumnElement) -> sa.ColumnElement:
        """A ``timestamptz`` as UTC wall-clock time (``x AT TIME ZONE 'UTC'``)."""
        return sa.func.timezone("UTC", expr, type_=sa.DateTime())

    def _fn_date_diff(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        start, end = (self.utc_date(a, self.compile(a)) for a in args)
        if self.pg:
            return sa.cast(end.op("-")(start), sa.BigInteger())
        return sa.cast(sa.func.julianday(end) - sa.func.julianday(start), sa.Integer())

    def _shift(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]], unit: str) -> sa.ColumnElement:
        fn = f"add_{unit}s"
        count = args[1]
        if count["t"] == "lit":
            v = count["v"]
            if isinstance(v, float) and not v.is_integer() or abs(v) > _MAX_SHIFT - 1:
                raise self.error(count, f"{fn}() needs a whole number of {unit}s within the years 1 to 9999")
        value, n = self.compile(args[0]), self.compile(count)
        if not self.pg:
            return getattr(sa.func, f"lw_{fn}")(value, n)
        # Beyond the cap the result is out of range anyway (an error in both back ends); the
        # clamp keeps a huge count next to an empty date from failing the cast instead.
        n = self.pg_int(count, n, -_MAX_SHIFT, _MAX_SHIFT)
        step = n.op("*", return_type=postgresql.INTERVAL())(
            sa.literal_column(f"INTERVAL '1 {unit}'", type_=postgresql.INTERVAL()))
        if args[0]["ty"] == "datetime":  # calendar arithmetic in UTC, whatever the session's zone
            return sa.func.timezone("UTC", self.utc_wall(value).op("+")(step), type_=UTCDateTime())
        if unit == "day":
            return value.op("+", return_type=sa.Date())(n)
        return sa.cast(value.op("+")(step), sa.Date())

    def _fn_add_days(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return self._shift(node, args, "day")

    def _fn_add_months(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return self._shift(node, args, "month")

    def _date_part(self, args: Sequence[Mapping[str, Any]], field: str) -> sa.ColumnElement:
        x = self.compile(args[0])
        if self.pg:
            x = self.utc_wall(x) if args[0]["ty"] == "datetime" else x
            return sa.cast(sa.func.date_part(field, x), sa.BigInteger())
        if field == "year":
            return sa.cast(sa.func.substr(x, 1, 4), sa.Integer())
        if field == "month":
            return sa.cast(sa.func.substr(x, 6, 2), sa.Integer())
        # %w is Sunday 0 ... Saturday 6; ISO is Monday 1 ... Sunday 7.
        w = sa.cast(sa.func.strftime("%w", sa.func.substr(x, 1, 10)), sa.Integer())
        return (w + 6) % 7 + 1

    def _fn_year(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return self._date_part(args, "year")

    def _fn_month(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return self._date_part(args, "month")

    def _fn_weekday(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        return self._date_part(args, "isodow")

    # logic
    def _fn_coalesce(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        ty = node["ty"]
        values = [self.as_type(a, self.compile(a), ty) for a in args if not self.is_null(a)]
        if not values:
            return self.null(ty)
        return values[0] if len(values) == 1 else sa.func.coalesce(*values)

    def _fn_is_blank(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        a = args[0]
        if self.is_null(a):
            return sa.literal(True, sa.Boolean())
        x = self.compile(a)
        if a["ty"] in TEXTUAL:
            return sa.func.coalesce(x, self.literal("")) == self.literal("")
        if a["ty"] == "list":  # NULL, JSON null or []
            if self.pg:
                self.repeat(a)
                size = sa.case((sa.func.jsonb_typeof(x) == "array", sa.func.jsonb_array_length(x)), else_=0)
            else:
                size = sa.func.coalesce(sa.func.json_array_length(x), 0)
            return size == 0
        return x.is_(None)

    def _fn_case(self, node: Mapping[str, Any], args: Sequence[Mapping[str, Any]]) -> sa.ColumnElement:
        ty = node["ty"]
        subject, rest = args[0], args[1:]
        pairs, default = [(rest[i], rest[i + 1]) for i in range(0, len(rest) - 1, 2)], rest[-1]

        def result(n: Mapping[str, Any]) -> sa.ColumnElement:
            return self.null(ty) if self.is_null(n) else self.as_type(n, self.compile(n), ty)

        pairs = [(m, r) for m, r in pairs if not self.is_null(m)]
        if self.is_null(subject) or not pairs:
            return result(default)
        # Matches compare like ==: a number meeting a decimal is compared as a decimal.
        numeric = {subject["ty"], *(m["ty"] for m, _ in pairs)}
        as_dec = "decimal" in numeric and numeric <= NUMERIC

        def match(n: Mapping[str, Any]) -> sa.ColumnElement:
            x = self.compile(n)
            return self.as_decimal(n, x) if as_dec else x

        whens = [(match(m), result(r)) for m, r in pairs]
        return sa.case(*whens, value=match(subject), else_=result(default))


# -- regular expressions for PostgreSQL -----------------------------------------
_WORD = "0-9A-Za-z_"
_SPACE = "\t\n\f\r "
#: RE2's case-folding orbits that leave ASCII (see functions.compile_regex).
_FOLD_EXTRA = {"k": "\u212a", "s": "\u017f"}


def _cased(c: str) -> bool:
    return c.lower() != c or c.upper() != c or c.casefold() != c


def _orbit(c: str) -> str:
    """What ``c`` matches under RE2's ``(?i)``."""
    if c.isascii():
        if c.isalpha():
            low = c.lower()
            return low + low.upper() + _FOLD_EXTRA.get(low, "")
        return c
    for low, extra in _FOLD_EXTRA.items():
        if c == extra:
            return low + low.upper() + extra
    if _cased(c):
        raise ValueError(f"case-insensitive matching of {c!r} is not supported")
    return c


def _ch(c: str) -> str:
    """One character, safe both in and outside a bracket expression."""
    if c.isascii() and c.isalnum():
        return c
    code = ord(c)
    if code == 0 or 0xD800 <= code <= 0xDFFF:
        raise ValueError("the pattern matches a character text cannot hold")
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _class_items(items: list, icase: bool) -> tuple[bool, str]:
    """A bracket expression's contents: (negated, body)."""
    negate = bool(items) and items[0][0] is sre.NEGATE
    items = items[1:] if negate else items
    body: list[str] = []
    for op, av in items:
        if op is sre.LITERAL:
            body.extend(_ch(x) for x in (_orbit(chr(av)) if icase else chr(av)))
        elif op is sre.RANGE:
            lo, hi = av
            body.append(f"{_ch(chr(lo))}-{_ch(chr(hi))}")
            if icase:
                if hi >= 0x80:
                    raise ValueError("case-insensitive ranges beyond ASCII are not supported")
                extra = {x for c in range(lo, hi + 1) for x in _orbit(chr(c))} - {chr(c) for c in range(lo, hi + 1)}
                body.extend(_ch(x) for x in sorted(extra))
        elif op is sre.CATEGORY:
            name = {sre.CATEGORY_DIGIT: "digit", sre.CATEGORY_WORD: "word", sre.CATEGORY_SPACE: "space",
                    sre.CATEGORY_NOT_DIGIT: "not digit", sre.CATEGORY_NOT_WORD: "not word",
                    sre.CATEGORY_NOT_SPACE: "not space"}.get(av)
            if name is None:
                raise ValueError("unsupported character class")
            if name.startswith("not "):
                if len(items) != 1:
                    raise ValueError(r"\D, \W or \S inside [...] is not supported")
                negate = not negate
                name = name[4:]
            body.append(_category(name, icase))
        else:
            raise ValueError("unsupported bracket expression")
    return negate, "".join(body)


def _category(name: str, icase: bool) -> str:
    if name == "digit":
        return "0-9"
    if name == "space":
        return "".join(_ch(c) for c in _SPACE)
    return _WORD + ("".join(_ch(c) for c in _FOLD_EXTRA.values()) if icase else "")


def _quantifier(lo: int, hi: int | None) -> str:
    if lo > 255 or (hi is not None and hi > 255):
        raise ValueError("repeat counts above 255 are not supported")
    if hi is None:
        return {0: "*", 1: "+"}.get(lo, f"{{{lo},}}")
    if (lo, hi) == (0, 1):
        return "?"
    return f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"


def _translate(seq: Any, icase: bool, dotall: bool) -> str:
    out = []
    word = f"[{_WORD}]"
    for op, av in seq:
        if op is sre.LITERAL:
            chars = _orbit(chr(av)) if icase else chr(av)
            out.append(_ch(chars) if len(chars) == 1 else "[" + "".join(_ch(c) for c in chars) + "]")
        elif op is sre.NOT_LITERAL:
            out.append("[^" + "".join(_ch(c) for c in (_orbit(chr(av)) if icase else chr(av))) + "]")
        elif op is sre.ANY:
            out.append("." if dotall else "[^" + _ch("\n") + "]")
        elif op is sre.IN:
            negate, body = _class_items(av, icase)
            out.append(("[^" if negate else "[") + body + "]")
        elif op is sre.BRANCH:
            out.append("(?:" + "|".join(_translate(alt, icase, dotall) for alt in av[1]) + ")")
        elif op is sre.SUBPATTERN:
            _group, add, remove, inner = av
            if (add | remove) & sre.SRE_FLAG_MULTILINE:
                raise ValueError("(?m) is supported only at the very start")
            i = (icase or bool(add & sre.SRE_FLAG_IGNORECASE)) and not remove & sre.SRE_FLAG_IGNORECASE
            s = (dotall or bool(add & sre.SRE_FLAG_DOTALL)) and not remove & sre.SRE_FLAG_DOTALL
            out.append("(?:" + _translate(inner, i, s) + ")")
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            # Only whether there is a match counts, so laziness can be dropped.
            lo, hi, inner = av
            out.append("(?:" + _translate(inner, icase, dotall) + ")"
                       + _quantifier(lo, None if hi is sre.MAXREPEAT else hi))
        elif op is sre.AT and av in (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING, sre.AT_END):
            out.append({sre.AT_BEGINNING: "^", sre.AT_BEGINNING_STRING: "\\A", sre.AT_END: "$"}[av])
        elif op is sre.AT and av is sre.AT_BOUNDARY:  # RE2's \b is an ASCII word boundary
            out.append(f"(?:(?<={word})(?!{word})|(?<!{word})(?={word}))")
        elif op is sre.AT and av is sre.AT_NON_BOUNDARY:
            out.append(f"(?:(?<={word})(?={word})|(?<!{word})(?!{word}))")
        else:
            raise ValueError(f"{str(op).lower()} is not supported")
    return "".join(out)


def _empty_inside_a_character(seq: Any) -> bool:
    """Whether ``seq`` can match the empty text between two bytes of a character, where
    ``^``, ``$``, ``\\A`` and ``\\b`` fail and ``\\B`` holds."""
    for op, av in seq:
        if op is sre.AT:
            if av is not sre.AT_NON_BOUNDARY:
                return False
        elif op is sre.BRANCH:
            if not any(_empty_inside_a_character(alt) for alt in av[1]):
                return False
        elif op is sre.SUBPATTERN:
            if not _empty_inside_a_character(av[3]):
                return False
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            if av[0] > 0 and not _empty_inside_a_character(av[2]):
                return False
        else:  # consumes a character
            return False
    return True


def _unescaped(pattern: str, pair: str) -> bool:
    """Whether ``pair`` occurs in ``pattern`` with its first character not escaped."""
    i = 0
    while i < len(pattern) - 1:
        if pattern[i] == "\\":
            i += 2
            continue
        if pattern.startswith(pair, i):
            return True
        i += 1
    return False


@functools.lru_cache(maxsize=512)
def pg_regex(pattern: str) -> str:
    """Translate an RE2 ``pattern`` into a PostgreSQL advanced regular expression that
    finds a match in exactly the same texts. :raises ValueError: outside the subset."""
    compile_regex(pattern)  # the RE2 meaning is the one to keep
    if _unescaped(pattern, "[:"):
        raise ValueError("POSIX classes such as [[:alpha:]] are not supported; write [a-zA-Z]")
    if _unescaped(pattern, "{,"):  # a literal in RE2, a repeat to Python's parser
        raise ValueError("'{,' is ambiguous; write {0,n} for a repeat or \\{ for the brace")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = sre_parse.parse(pattern)
    except (sre.error, RecursionError, OverflowError) as exc:
        raise ValueError(f"unsupported syntax ({exc})") from None
    flags = tree.state.flags
    body = _translate(tree, bool(flags & sre.SRE_FLAG_IGNORECASE), bool(flags & sre.SRE_FLAG_DOTALL))
    if "\\B" in pattern and _empty_inside_a_character(tree):
        # RE2 searches UTF-8 bytes, and an empty match may start between the bytes of one
        # character, where \B holds (no word character on either side): such a pattern
        # matches any text with a non-ASCII character.
        body = f"(?:{body})|[^{_ch(chr(1))}-{_ch(chr(127))}]"
    # (?w): ^ and $ also match at newlines, nothing else changes (RE2's (?m)).
    return ("(?w)" if flags & sre.SRE_FLAG_MULTILINE else "") + body


def to_sql(tree: Mapping[str, Any], column: Callable[[list[str]], sa.ColumnElement], dialect: str,
           functions: Mapping[str, Function], env: SqlEnv) -> sa.ColumnElement:
    """Compile a typed expression tree (:attr:`Expression.tree`) to a SQLAlchemy expression.

    :param column: the SQL value of a field path (``["amount"]``, ``["account", "industry"]``);
        decimals as numbers (REAL on SQLite, NUMERIC on PostgreSQL), dates and datetimes as
        stored by ``sa.Date`` and ``UTCDateTime``.
    :param dialect: ``sqlite`` or ``postgresql``.
    :param env: the user and clock, bound as parameters.
    :returns: an expression typed by :func:`result_type`, so selected values come back as the
        Python back end's (booleans as ``bool``, dates as ``date``, decimals as ``Decimal``).
    :raises ExpressionError: for what exists only while saving (``old``, ``changed``), a
        function without a SQL form, or a regular expression PostgreSQL cannot run.
    """
    return sa.type_coerce(_Compiler(column, dialect, functions, env).compile(tree), result_type(tree["ty"]))


__all__ = ["MAX_SQL_WEIGHT", "SqlDecimal", "SqlEnv", "SqlNumber", "pg_regex",
           "result_type", "to_sql"]
