"""The function library: what an expression may call.

Functions are registered through the ``loomwork_expression_functions`` hook; the
built-ins here are the default plugin's (:mod:`loomwork.plugins.core_functions`).
A function declares its parameters with type classes, so the checker can reject
``round("x")`` at publish, and a Python implementation. Unless ``null_aware``, a
NULL argument makes the result NULL without calling it (SQL's rule). The SQL and
JavaScript back ends implement the built-ins by name (``sql.py``, ``lw-expr.js``); a
plugin function may bring ``sql`` and then works in list filters too.
"""
from __future__ import annotations

import calendar
import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import re2

from .syntax import EvaluationError
from .types import NUMERIC, TEMPORAL, TEXTUAL, unify

#: Longest text ``regex_match`` looks at (RE2 is linear, but time still grows with input).
MAX_REGEX_INPUT = 100_000
#: Longest text a function or ``*`` may produce.
MAX_TEXT_RESULT = 100_000

_CLASSES: Mapping[str, frozenset[str]] = {
    "numeric": NUMERIC,
    "number": frozenset({"number"}),
    "text": TEXTUAL,
    "boolean": frozenset({"boolean"}),
    "date": frozenset({"date"}),
    "temporal": TEMPORAL,
    "list": frozenset({"list"}),
    "text_or_list": TEXTUAL | {"list"},
    "any": frozenset({"text", "number", "decimal", "boolean", "date", "datetime", "choice", "list"}),
    "orderable": NUMERIC | TEXTUAL | TEMPORAL,
}


@dataclass(frozen=True)
class Function:
    """A callable of the expression language.

    :param params: type classes (``numeric``, ``text``, ``date``, ``temporal``, ``list``,
        ``boolean``, ``any``, ``orderable``, ``text_or_list``); ``?`` marks an optional
        trailing parameter, ``*`` a repeating last one.
    :param returns: a type, ``"arg0"`` (the first argument's type) or ``"unify"``
        (the common type of all arguments).
    :param literal_args: positions that must be literal text (a regex, a date).
    """

    name: str
    params: tuple[str, ...]
    returns: str
    python: Callable[..., Any]
    null_aware: bool = False
    literal_args: tuple[int, ...] = ()
    #: ``sql(args, arg_types, dialect) -> ColumnElement`` for plugin functions.
    sql: Callable[..., Any] | None = None
    doc: str = ""
    #: False for functions whose value changes between calls (``now``): never stored.
    deterministic: bool = True

    def arity(self) -> tuple[int, int | None]:
        required = sum(1 for p in self.params if not p.endswith(("?", "*")))
        if self.params and self.params[-1].endswith("*"):
            return required, None
        return required, len(self.params)

    def signature(self) -> str:
        return f"{self.name}({', '.join(self.params)})"

    def result_type(self, arg_types: Sequence[str]) -> str:
        """The result type for these argument types. :raises ValueError: with the reason."""
        lo, hi = self.arity()
        n = len(arg_types)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} to {hi}" if hi is not None else f"at least {lo}"
            raise ValueError(f"{self.name}() takes {want} argument{'s' if (hi or 2) != 1 else ''}, got {n}")
        for i, ty in enumerate(arg_types):
            spec = self.params[min(i, len(self.params) - 1)].rstrip("?*")
            if ty == "null":
                continue
            if ty not in _CLASSES[spec]:
                raise ValueError(f"argument {i + 1} of {self.name}() must be {_describe(spec)}, not {ty}")
        if self.returns == "arg0":
            return arg_types[0] if arg_types[0] != "null" else "null"
        if self.returns == "unify":
            ty = unify(list(arg_types))
            if ty is None:
                raise ValueError(f"the arguments of {self.name}() must have one type, not {', '.join(arg_types)}")
            return ty
        return self.returns


def _describe(spec: str) -> str:
    return {"numeric": "a number", "number": "a number", "text": "text", "boolean": "a boolean",
            "date": "a date", "temporal": "a date or datetime", "list": "a multi-choice value",
            "text_or_list": "text or a multi-choice value", "any": "a value",
            "orderable": "a number, text, date or datetime"}[spec]


# -- math -----------------------------------------------------------------
_QUANTA = {n: Decimal(1).scaleb(-n) for n in range(-18, 19)}


def _round(x: Any, digits: Any = 0) -> Any:
    """Half away from zero, as SQL does (Python's round() would round half to even)."""
    digits = int(digits)
    if not -18 <= digits <= 18:
        raise EvaluationError("round() takes -18 to 18 digits")
    d = x if isinstance(x, Decimal) else Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
    try:
        q = d.quantize(_QUANTA[digits], rounding=ROUND_HALF_UP) if d.is_finite() else d
    except InvalidOperation:
        raise EvaluationError("round(): number out of range") from None
    if isinstance(x, Decimal):
        return q
    if isinstance(x, int) and digits >= 0:
        return x
    return float(q) if digits > 0 else int(q)


def _floor(x: Any) -> int:
    if isinstance(x, Decimal):
        return int(x.to_integral_value(rounding=ROUND_FLOOR))
    return math.floor(x)


def _ceil(x: Any) -> int:
    if isinstance(x, Decimal):
        return int(x.to_integral_value(rounding=ROUND_CEILING))
    return math.ceil(x)


def _minmax(pick: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        if any(isinstance(a, Decimal) for a in args) and not all(isinstance(a, Decimal) for a in args):
            args = tuple(a if isinstance(a, Decimal) else Decimal(repr(a)) if isinstance(a, float) else Decimal(a)
                         for a in args)
        return pick(args)
    return run


# -- text -----------------------------------------------------------------
_BLANKS = " \t\r\n"


def _len(x: Any) -> int:
    return len(x)


def _trim(x: str) -> str:
    return x.strip(_BLANKS)


def _concat(*args: Any) -> str:
    out = "".join(a for a in args if a is not None)
    if len(out) > MAX_TEXT_RESULT:
        raise EvaluationError(f"concat() would make text longer than {MAX_TEXT_RESULT} characters")
    return out


def _contains(haystack: Any, needle: str) -> bool:
    return needle in haystack


def _substr(text: str, start: Any, length: Any = None) -> str:
    """1-based like SQL; a start before 1 counts from 1, a negative length gives ''."""
    begin = max(int(start), 1) - 1
    if length is None:
        return text[begin:]
    return text[begin:begin + max(int(length), 0)]


_REGEX_CACHE: dict[str, Any] = {}
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # errors reach the admin as messages, not stderr noise


def compile_regex(pattern: str) -> Any:
    """An RE2 pattern (linear time: no backtracking blow-up). :raises ValueError:"""
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        try:
            compiled = re2.compile(pattern, _RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise ValueError(f"invalid regular expression: {reason}") from None
        if len(_REGEX_CACHE) < 1000:
            _REGEX_CACHE[pattern] = compiled
    return compiled


def _regex_match(text: str, pattern: str) -> bool:
    if len(text) > MAX_REGEX_INPUT:
        raise EvaluationError(f"regex_match() looks at most {MAX_REGEX_INPUT} characters")
    return compile_regex(pattern).search(text) is not None


# -- dates ----------------------------------------------------------------
def _date_literal(text: str) -> dt.date:
    if len(text) != 10:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD)")
    return dt.date.fromisoformat(text)


def _datetime_literal(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} needs a time zone offset, for example 2026-01-31T09:30:00+08:00")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 has no UTC time
        raise ValueError(f"{text!r} is outside the years 1 to 9999 in UTC") from None


def _date_diff(start: Any, end: Any) -> int:
    """Whole days from ``start`` to ``end`` (negative when ``end`` is earlier); datetimes
    count calendar days in UTC."""
    if isinstance(start, dt.datetime):
        start = start.astimezone(dt.UTC).date()
    if isinstance(end, dt.datetime):
        end = end.astimezone(dt.UTC).date()
    return (end - start).days


def _utc(value: Any) -> Any:
    return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value


def _add_days(value: Any, days: Any) -> Any:
    value = _utc(value)
    try:
        return value + dt.timedelta(days=_whole(days, "add_days"))
    except OverflowError:
        raise EvaluationError("add_days() goes beyond the years 1 to 9999") from None


def _add_months(value: Any, months: Any) -> Any:
    """Calendar months; the day is clipped to the month's end (31 Jan + 1 month = 28/29 Feb)."""
    n = _whole(months, "add_months")
    value = _utc(value)  # calendar months of UTC, as year() and month() read them
    total = value.year * 12 + value.month - 1 + n
    year, month = divmod(total, 12)
    if not 1 <= year <= 9999:
        raise EvaluationError("add_months() goes beyond the years 1 to 9999")
    day = min(value.day, calendar.monthrange(year, month + 1)[1])
    return value.replace(year=year, month=month + 1, day=day)


def _whole(n: Any, fn: str) -> int:
    if isinstance(n, float) and not n.is_integer() or isinstance(n, Decimal) and n != n.to_integral_value():
        raise EvaluationError(f"{fn}() needs a whole number")
    if abs(n) > 3_660_000:
        raise EvaluationError(f"{fn}() goes beyond the years 1 to 9999")
    return int(n)


def _utc_date(value: Any) -> dt.date:
    return value.astimezone(dt.UTC).date() if isinstance(value, dt.datetime) else value


def _year(value: Any) -> int:
    return _utc_date(value).year


def _month(value: Any) -> int:
    return _utc_date(value).month


def _weekday(value: Any) -> int:
    """ISO: Monday 1 ... Sunday 7."""
    return _utc_date(value).isoweekday()


# -- logic ----------------------------------------------------------------
def _coalesce(*args: Any) -> Any:
    for a in args:
        if a is not None:
            return a
    return None


def _is_blank(value: Any) -> bool:
    return value is None or value == "" or value == []


def _case(*args: Any) -> Any:
    """``case(x, v1, r1, v2, r2, ..., default)``: the result after the first ``v`` equal to ``x``."""
    subject, rest = args[0], args[1:]
    pairs, default = rest[:-1], rest[-1]
    if subject is not None:
        for i in range(0, len(pairs), 2):
            if pairs[i] is not None and pairs[i] == subject:
                return pairs[i + 1]
    return default


def _never(*_: Any) -> Any:  # today()/now() read the evaluation environment instead
    raise AssertionError("evaluated by the environment")


BUILTIN_FUNCTIONS: tuple[Function, ...] = (
    Function("round", ("numeric", "number?"), "arg0", _round, doc="Round half away from zero to n digits."),
    Function("abs", ("numeric",), "arg0", abs),
    Function("floor", ("numeric",), "number", _floor),
    Function("ceil", ("numeric",), "number", _ceil),
    Function("min", ("orderable", "orderable*"), "unify", _minmax(min), doc="Smallest; NULL if any is NULL."),
    Function("max", ("orderable", "orderable*"), "unify", _minmax(max), doc="Largest; NULL if any is NULL."),
    Function("len", ("text_or_list",), "number", _len),
    Function("upper", ("text",), "text", str.upper),
    Function("lower", ("text",), "text", str.lower),
    Function("trim", ("text",), "text", _trim),
    Function("concat", ("text", "text*"), "text", _concat, null_aware=True, doc="Joins texts; NULL counts as ''."),
    Function("contains", ("text_or_list", "text"), "boolean", _contains),
    Function("starts_with", ("text", "text"), "boolean", str.startswith),
    Function("substr", ("text", "number", "number?"), "text", _substr, doc="1-based start, optional length."),
    Function("regex_match", ("text", "text"), "boolean", _regex_match, literal_args=(1,),
             doc="RE2 syntax (linear time); the pattern must be literal text."),
    Function("today", (), "date", _never, deterministic=False, doc="Today's date in UTC."),
    Function("now", (), "datetime", _never, deterministic=False),
    Function("date", ("text",), "date", _date_literal, literal_args=(0,), doc='date("2026-01-31")'),
    Function("datetime", ("text",), "datetime", _datetime_literal, literal_args=(0,),
             doc='datetime("2026-01-31T09:30:00+08:00")'),
    Function("date_diff", ("temporal", "temporal"), "number", _date_diff, doc="Days from the first to the second."),
    Function("add_days", ("temporal", "number"), "arg0", _add_days),
    Function("add_months", ("temporal", "number"), "arg0", _add_months),
    Function("year", ("temporal",), "number", _year),
    Function("month", ("temporal",), "number", _month),
    Function("weekday", ("temporal",), "number", _weekday, doc="Monday 1 to Sunday 7."),
    Function("coalesce", ("any", "any*"), "unify", _coalesce, null_aware=True),
    Function("is_blank", ("any",), "boolean", _is_blank, null_aware=True),
    Function("case", ("any", "any", "any", "any", "any*"), "case", _case, null_aware=True,
             doc="case(x, value1, result1, ..., default)"),
)
