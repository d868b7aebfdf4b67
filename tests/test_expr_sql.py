"""The SQL back end of expressions (runtime/expr/sql.py) against the Python one.

The Python back end is the reference. A conformance suite evaluates every case in
``CASES`` (every node kind, every built-in function, NULL in each position, unicode,
month ends and leap years, decimals) on every record of ``RECORDS`` in Python and in a
``SELECT`` over the same rows on SQLite and PostgreSQL, and requires the same values
(numbers to a relative 1e-9; everything else exactly, types included). A hypothesis
property then does the same for random records, and the RE2-to-PostgreSQL regex
translation is checked against RE2 itself.
"""
from __future__ import annotations

import datetime as dt
import math
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomwork.runtime.expr import (
    Env,
    EvaluationError,
    Expression,
    ExpressionError,
    FieldInfo,
    Function,
    Scope,
    builtin_functions,
    compile_expression,
)
from loomwork.runtime.expr.functions import compile_regex
from loomwork.runtime.expr.sql import MAX_SQL_WEIGHT, SqlEnv, pg_regex, to_sql
from loomwork.runtime.sqltypes import ExactDecimal, JSONDoc, UTCDateTime

UTC = dt.UTC
NOW = dt.datetime(2026, 2, 28, 22, 30, 15, 123456, tzinfo=UTC)
USER_ID, USER_ROLE = 7, "sales"
FUNCTIONS = builtin_functions()
OPTIONS = ("new", "won", "lost", "Ärger")
TAGS = ("a", "b", "c")

# name: (expression type, storage field type)
FIELDS: Mapping[str, str] = {
    "t": "text", "t2": "text", "c": "choice", "i": "number", "f": "number", "d": "decimal",
    "d2": "decimal", "b": "boolean", "day": "date", "day2": "date", "ts": "datetime",
    "ts2": "datetime", "tags": "list", "tags2": "list",
}
SCALES = {"d": 4, "d2": 2}


def _scope() -> Scope:
    rec = {name: FieldInfo(name, ty, ty, options=OPTIONS if ty == "choice" else TAGS if ty == "list" else ())
           for name, ty in FIELDS.items()}
    rec["acc"] = FieldInfo("acc", "number", "lookup", target="acc")
    acc = {"name": FieldInfo("name", "text", "text"), "size": FieldInfo("size", "number", "integer")}
    return Scope("rec", {"rec": rec, "acc": acc})


SCOPE = _scope()


def _table(name: str, metadata: sa.MetaData) -> sa.Table:
    types = {"text": sa.Text, "choice": sa.Text, "boolean": sa.Boolean, "date": sa.Date, "datetime": UTCDateTime,
             "list": JSONDoc}
    cols = []
    for field, ty in FIELDS.items():
        if field == "i":
            cols.append(sa.Column(field, sa.BigInteger))
        elif field == "f":
            cols.append(sa.Column(field, sa.Float(precision=53)))
        elif ty == "decimal":
            cols.append(sa.Column(field, ExactDecimal(18, SCALES[field])))
        else:
            cols.append(sa.Column(field, types[ty]()))
    return sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True), *cols,
                    sa.Column("acc_name", sa.Text), sa.Column("acc_size", sa.BigInteger))


def d(text: str) -> Decimal:
    return Decimal(text)


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(UTC)


# Values as they come back from the database (decimals at their scale, datetimes in UTC).
RECORDS: list[dict[str, Any]] = [
    {},  # every field empty
    {"t": "Hello World", "t2": "World", "c": "won", "i": 42, "f": 2.5, "d": d("1234.5678"), "d2": d("0.10"),
     "b": True, "day": day("2024-02-29"), "day2": day("2024-03-31"), "ts": ts("2024-02-29T23:59:59.999999+00:00"),
     "ts2": ts("2025-01-01T00:00:00+00:00"), "tags": ["a", "b"], "tags2": ["a", "b"], "acc_name": "Acme",
     "acc_size": 10},
    {"t": "straße ǅ ΟΔΟΣ İı ﬁ", "t2": "ß", "c": "Ärger", "i": -7, "f": -0.5, "d": d("-2.5000"), "d2": d("-0.05"),
     "b": False, "day": day("2023-01-31"), "day2": day("2023-01-01"), "ts": ts("2023-12-31T23:00:00-02:00"),
     "ts2": ts("2024-01-01T00:30:00+01:00"), "tags": ["c"], "tags2": ["c", "a"], "acc_name": "Ünïcode"},
    {"t": "  \t padded \r\n", "t2": "", "c": "new", "i": 0, "f": 0.0, "d": d("0.0000"), "d2": d("0.00"),
     "day": day("1900-03-01"), "day2": day("1900-02-28"), "ts": ts("1900-03-01T00:00:00+00:00"),
     "tags": [], "acc_size": 0},
    {"t": "😀a😀", "t2": "a", "i": 2**40, "f": 1e-7, "d": d("99999999999999.9999"), "d2": d("0.30"),
     "b": True, "day": day("2000-02-29"), "day2": day("1999-12-31"), "ts": ts("2000-02-29T12:00:00+00:00"),
     "ts2": ts("1999-12-31T23:59:59+00:00"), "tags2": ["b"]},
    {"t": "abc", "t2": "abd", "c": "lost", "i": -15, "f": 2.675, "d": d("2.6750"), "d2": d("-2.50"),
     "day": day("2025-01-31"), "day2": day("2025-12-31"), "ts": ts("2025-01-31T10:15:00.5+00:00"),
     "ts2": ts("2025-01-31T10:15:00.500001+00:00"), "tags": ["a", "b", "c"], "tags2": ["b", "a"]},
    {"t": "Z", "t2": "a", "c": "won", "i": 3, "f": 3.0, "d": d("3.0000"), "d2": d("3.00"), "b": False,
     "day": day("2024-12-31"), "day2": day("2024-01-01"), "ts": ts("2024-03-31T01:30:00+02:00"),
     "ts2": ts("2024-10-27T02:30:00+01:00"), "tags": ["b"], "tags2": ["b"], "acc_name": "", "acc_size": -1},
    {"t": "é", "t2": "f", "c": "new", "i": -2**53, "f": -2.5, "d": d("-0.0001"), "d2": d("12345678.99"),
     "b": None, "day": day("2023-08-31"), "day2": day("2023-02-28"), "ts": ts("2023-08-31T23:59:59+00:00"),
     "ts2": ts("2023-08-31T00:00:00-05:00"), "tags": ["c", "a"], "tags2": ["a", "c"]},
    {"t": "B", "t2": "a", "i": 15, "f": 1e15, "d": d("-1234.5000"), "d2": d("0.01"), "b": True,
     "day": day("2026-02-28"), "day2": day("2026-02-28"), "ts": ts("2026-02-28T22:30:15.123456+00:00")},
    {"t": "Mississippi\nRiver", "t2": "ss", "c": "lost", "i": 1, "f": 0.1, "d": d("0.1000"), "d2": d("0.20"),
     "b": False, "day": day("2023-05-31"), "ts2": ts("2023-05-31T12:00:00+00:00"), "tags": ["a"],
     "acc_name": "Acme", "acc_size": 3},
    {"t": "ΣΑΣ 123 x_y", "t2": "123", "c": "won", "i": 100, "f": -1e-9, "d": d("0.0005"), "d2": d("-0.01"),
     "b": True, "day": day("2021-11-30"), "day2": day("2020-02-29"), "ts": ts("2021-11-30T23:59:59+00:00"),
     "ts2": ts("2020-02-29T00:00:00+00:00")},
]
for _n, _r in enumerate(RECORDS, start=1):
    _r["id"] = _n


def env_for(rec: Mapping[str, Any]) -> Env:
    row = {name: rec.get(name) for name in FIELDS}
    paths = {"acc.name": rec.get("acc_name"), "acc.size": rec.get("acc_size")}
    return Env(row, paths=paths, user_id=USER_ID, user_role=USER_ROLE, now=NOW)


# -- the database -----------------------------------------------------------------
@dataclass
class Db:
    tenant: Any
    rec: sa.Table
    rnd: sa.Table
    subjects: sa.Table

    @property
    def dialect(self) -> str:
        return self.tenant.dialect

    def column(self, table: sa.Table):
        def column(path: list[str]) -> sa.ColumnElement:
            name = "_".join(path)
            col = table.c[name]
            if name in SCALES:  # as runtime/formula_sql.py reads decimals
                if self.dialect == "sqlite":
                    return sa.type_coerce(sa.type_coerce(col, sa.BigInteger) / float(10 ** SCALES[name]), sa.Float)
                return sa.type_coerce(col, sa.Numeric(18, SCALES[name]))
            return col
        return column

    def sql(self, source: str | Expression, table: sa.Table | None = None, env: SqlEnv | None = None):
        expr = source if isinstance(source, Expression) else compile_expression(source, SCOPE, FUNCTIONS)
        table = self.rec if table is None else table
        return to_sql(expr.tree, self.column(table), self.dialect, FUNCTIONS,
                      env or SqlEnv(user_id=USER_ID, user_role=USER_ROLE, now=NOW))

    def values(self, source: str | Expression, ids: list[int] | None = None) -> dict[int, Any]:
        stmt = sa.select(self.rec.c.id, self.sql(source))
        if ids is not None:
            stmt = stmt.where(self.rec.c.id.in_(ids))
        with self.tenant.read() as conn:
            return dict(conn.execute(stmt).all())


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, tmp_path_factory) -> Iterator[Db]:
    from loomwork.runtime.tenancy import Platform
    from loomwork.testing import postgres_url

    url = f"sqlite:///{tmp_path_factory.mktemp('exprsql') / 'instance'}" if request.param == "sqlite" \
        else postgres_url()
    platform = Platform(url, namespace=f"lwt{secrets.token_hex(4)}")
    try:
        tenant = platform.create_tenant("expr")
        metadata = sa.MetaData()
        rec, rnd = _table("lw_expr_rec", metadata), _table("lw_expr_rnd", metadata)
        subjects = sa.Table("lw_expr_subjects", metadata, sa.Column("id", sa.Integer, primary_key=True),
                            sa.Column("t", sa.Text))
        rows = [{c.name: r.get(c.name) for c in rec.columns} for r in RECORDS]
        with tenant.write() as conn:
            metadata.create_all(conn)
            conn.execute(rec.insert(), rows)
            conn.execute(subjects.insert(), [{"id": n, "t": s} for n, s in enumerate(SUBJECTS, start=1)])
        yield Db(tenant, rec, rnd, subjects)
    finally:
        platform.drop_all()
        platform.dispose()


# -- comparing ----------------------------------------------------------------------
_PY_TYPES = {"text": str, "choice": str, "boolean": bool, "list": list, "decimal": Decimal}


def same(ty: str, expected: Any, got: Any) -> bool:
    if expected is None or got is None:
        return expected is None and got is None
    if ty in ("number", "decimal"):
        if ty == "number" and type(got) not in (int, float):
            return False
        if ty == "decimal" and not isinstance(got, Decimal):
            return False
        return math.isclose(float(expected), float(got), rel_tol=1e-9, abs_tol=1e-300)
    if ty == "date":
        return type(got) is dt.date and got == expected
    if ty == "datetime":
        return isinstance(got, dt.datetime) and got.tzinfo is not None and got == expected
    return isinstance(got, _PY_TYPES[ty]) and got == expected


def python_values(expr: Expression, records: list[dict[str, Any]]) -> dict[int, Any]:
    """Python's value for each record; records where Python raises (a cap) are left out."""
    out = {}
    for rec in records:
        try:
            out[rec["id"]] = expr(env_for(rec))
        except EvaluationError:
            continue
    return out


def check(db: Db, source: str) -> None:
    expr = compile_expression(source, SCOPE, FUNCTIONS)
    expected = python_values(expr, RECORDS)
    got = db.values(expr, sorted(expected))
    assert got.keys() == expected.keys()
    bad = {i: (expected[i], got[i]) for i in expected if not same(expr.type, expected[i], got[i])}
    assert not bad, f"{source} ({expr.type}) on {db.dialect}: record: (python, sql) {bad}"


# -- the conformance suite ------------------------------------------------------------
CASES = [
    # leaves
    "t", "c", "i", "f", "d", "d2", "b", "day", "ts", "tags", "acc.name", "acc.size",
    "1", "-3", "2.5", '"x"', '"ünï 😀"', "True", "False", "None", "$user.id", "$user.role", "$user.id + 1",
    '$user.role == "sales"',
    # neg / not / and / or
    "-i", "-f", "-d", "-(i + f)", "-acc.size",
    "not b", "not (i > 0)", "not None", "not not b",
    "b and i > 0", "b or f < 0", "b and None", "b or None", "None and False", "None or True",
    "i > 0 and f > 0 and d > 0", "1 < i < 50", "b or not b", "is_blank(t) or t < t2",
    # if
    "t if b else t2", "i if b else f", "d if b else i", "i if b else d", "day if b else None", "None if b else ts",
    "tags if b else tags2", "1 if None else 2", 'c if i > 0 else "x"', "b if i > 0 else not b",
    "(d if b else 1.5) + d2",
    # arithmetic: numbers
    "i + f", "i - 3", "i * 2", "i * i", "i / 3", "i / 0", "f / i", "i / f", "f - f", "0.1 + 0.2", "i / 0.0",
    "7 / 2", "-7 / 2", "i ** 2", "f ** 2", "2 ** -1", "f ** 0.5", "acc.size / i", "(i + 1) * (f - 1) / 3",
    # arithmetic: decimals
    "d + d2", "d - d2", "d * d2", "d / d2", "d / 0", "d + i", "d * f", "d / 3", "f + d2", "d2 + 0.1",
    "d2 * 3", "d2 / 3 * 3", "d - d", "-d2 * -d", "d * 1.1", "(d + d2) / (i + 1)", "d ** 2",
    # arithmetic: text
    "t + t2", 't + "!"', "c + t", "t * 2", '"ab" * i', "t2 * -1", '"x" * 2.7', '"ab" * acc.size',
    # comparisons
    "i == 42", "i != 42", "i < f", "f >= i", "d == d2", "d > i", "d2 == 0.1", "d2 + d2 + d2 == 0.30",
    "d2 * 3 == 0.9", "d2 - 0.1 == 0", "f == 2.5", "i == f", "i == d", "f == d2", "f < d",
    "t < t2", "t <= t2", "t > t2", "t >= t2", "t == t2", 't != "abc"', 'c == "won"', 'c < t', "t2 < c",
    '"B" < "a"', '"é" > "f"', '"Z" < "a"', "upper(t) < t2", "max(upper(t), t2) > lower(t)",
    "b == True", "b != False", "b == b", "day < day2", "day >= day2", 'day == date("2024-02-29")',
    "ts < ts2", "ts == ts2", 'ts >= datetime("2024-02-29T23:59:59+00:00")', "tags == tags2", "tags != tags2",
    'acc.name == "Acme"',
    # in
    'c in ["won", "lost"]', 'c not in ["won"]', "i in [0, 42, 3.0]", "f in [2.5, 3]", "d2 in [0.1, 0.3, -0.05]",
    "d in [0, 3]", 't in ["abc", "é"]', "b in [True]", 't2 not in ["", "a"]', "i not in [1, 2]",
    'acc.name in ["Acme"]',
    # round / abs / floor / ceil
    "round(f)", "round(f, 2)", "round(d, 2)", "round(d)", "round(i, -1)", "round(f, -1)", "round(d, -2)",
    "round(2.5)", "round(-2.5)", "round(0.5)", "round(i / 7, 3)", "round(d2 * 3, 1)", "round(f, i)",
    "round(d, acc.size)", "round(1.005, 2)", "round(2.675, 2)", "round(d2 / 3, 4)",
    "abs(i)", "abs(f)", "abs(d)", "abs(-0.5)",
    "floor(f)", "ceil(f)", "floor(d)", "ceil(d)", "floor(i)", "floor(-0.5)", "ceil(-0.5)", "floor(i / 2)",
    # min / max
    "min(i, f)", "max(i, f, 3)", "min(d, i)", "max(d, d2)", "min(t, t2)", 'max(t, t2, "m")', "min(c, t)",
    "max(day, day2)", "min(ts, ts2)", "max(i)", "min(d, 1.5)", "max(d2, f)", "min(t, None)",
    # text
    "len(t)", "len(tags)", "len(c)", "len(acc.name)",
    "upper(t)", "lower(t)", "upper(c)", "lower(upper(t)) == lower(t)", "upper(t) + lower(t2)",
    "min(upper(t), lower(t))",
    "trim(t)", "len(trim(t))", 'trim("\\t x \\n")',
    "concat(t, t2)", "concat(t, None, c)", "concat(None)", "concat(t)", 'concat("a", t2, acc.name)',
    "contains(t, t2)", 'contains(t, "")', 'contains(t, "o")', 'contains(tags, "a")', "contains(tags, t2)",
    "contains(tags, c)", 'contains(tags2, "b")',
    "starts_with(t, t2)", 'starts_with(t, "")', 'starts_with(t, "He")', "starts_with(t2, t)",
    "substr(t, 2)", "substr(t, 0, 2)", "substr(t, -1, 3)", "substr(t, 2, -1)", "substr(t, 2.7, 1.9)",
    "substr(t, i)", "substr(t, 1, i)", "substr(t, 3, 100)", "substr(t, 1e12)", "substr(t, f, acc.size)",
    'regex_match(t, "o")', 'regex_match(t, "^H.*d$")', 'regex_match(t, "(?i)hello")', 'regex_match(t, "\\\\d")',
    'regex_match(t, "\\\\bWorld\\\\b")', 'regex_match(t, "[ßé]")', 'regex_match(t, "s.R")',
    'regex_match(t, "(?s)i.R")', 'regex_match(c, "^(won|lost)$")',
    # dates
    "today()", "now()", "date_diff(day, today())", "ts < now()", 'date("2024-02-29")',
    'datetime("2026-01-31T09:30:00+08:00")',
    "date_diff(day, day2)", "date_diff(ts, ts2)", "date_diff(day, ts)", "date_diff(ts, day)",
    "add_days(day, 1)", "add_days(day, -366)", "add_days(ts, 1)", "add_days(day, i)", "add_days(ts, -30)",
    "add_days(day2, 1.0)", "add_days(ts2, acc.size)",
    "add_months(day, 1)", "add_months(day, -1)", "add_months(day, 12)", "add_months(day, 13)",
    "add_months(ts, 1)", "add_months(day, i)", "add_months(ts, -13)", "add_months(add_days(day, 1), 1)",
    "year(day)", "month(day)", "weekday(day)", "year(ts)", "month(ts)", "weekday(ts)", "weekday(day2)",
    # logic functions
    "coalesce(t, t2)", 'coalesce(t, "none")', "coalesce(None, i)", "coalesce(d, i)", "coalesce(f, d)",
    "coalesce(b, False)", "coalesce(day, day2)", "coalesce(tags, tags2)", "coalesce(None)", "coalesce(i)",
    "coalesce(ts, now())", "coalesce(c, t)",
    "is_blank(t)", "is_blank(t2)", "is_blank(i)", "is_blank(tags)", "is_blank(tags2)", "is_blank(None)",
    "is_blank(b)", "is_blank(day)", "is_blank(c)", "is_blank(d)", "is_blank(acc.name)",
    'case(c, "won", 1, "lost", 2, 0)', 'case(i, 42, "answer", 0, "zero", None)', 'case(c, None, 1, "new", 2, 3)',
    'case(d, i, "same", "different")', 'case(b, True, "yes", False, "no", "unknown")', "case(day, day2, 1, 2)",
    "case(i, 1, d, f)", 'case(None, 1, "a", "b")', "case(t, t2, tags, tags2)", 'case(i, 3, 3.5, 15, d2, None)',
    'case(d2, 0.1, "ten", "other")', 'case(d2, f / 25, "same", "other")', 'case(f / 25, d2, "same", "other")',
    # nesting
    "round(d * (1 - coalesce(f, 0) / 100), 2)", 'upper(substr(t, 1, 3)) + "-" + concat(c)',
    'case(weekday(day), 6, "weekend", 7, "weekend", "weekday")', "date_diff(add_months(day, 1), day2) > 0",
    "len(concat(t, t2)) == len(t) + len(t2)", "max(round(f, 1), abs(i) / 10, d)",
    'is_blank(t) or regex_match(trim(t), "^[A-Za-z ]+$")',
]


@pytest.mark.parametrize("source", CASES)
def test_sql_agrees_with_python(db, source):
    check(db, source)


def test_the_cases_cover_the_language():
    """Guards the suite: every node kind and every built-in appears in CASES."""
    kinds, fns = set(), set()

    def walk(node):
        kinds.add(node["t"])
        fns.update([node["fn"]] if node["t"] == "call" else [])
        for key in ("a", "b", "c"):
            if key in node:
                walk(node[key])
        for child in [*node.get("args", ()), *node.get("items", ())]:
            walk(child)

    for source in CASES:
        walk(compile_expression(source, SCOPE, FUNCTIONS).tree)
    assert kinds == {"lit", "field", "var", "neg", "not", "arith", "cmp", "and", "or", "if", "in", "call"}
    assert fns == set(FUNCTIONS)


def test_pinned_values(db):
    """A few values pinned by hand, so the two back ends cannot be wrong together."""
    def one(source: str, rec_id: int) -> Any:
        return db.values(source, [rec_id])[rec_id]

    assert one("round(2.5) + round(-2.5)", 1) == 0 and one("round(f, 2)", 6) == 2.68
    assert one("i / 0", 2) is None and one("d / 0", 2) is None and one("7 / 2", 1) == 3.5
    assert one("d2 * 3 == 0.3", 2) is True and one("d2 + 0.2", 2) == Decimal("0.3")
    assert one('"B" < "a"', 1) is True and one('"é" > "f"', 1) is True
    assert one("upper(t)", 3) == "STRASSE Ǆ ΟΔΟΣ İI FI" and one("lower(t)", 3) == "straße ǆ οδος i̇ı ﬁ"
    assert one("add_months(day, 1)", 6) == dt.date(2025, 2, 28) and one("add_months(day, -11)", 2) == dt.date(2023, 3, 29)
    assert one("add_months(ts, 1)", 6) == dt.datetime(2025, 2, 28, 10, 15, 0, 500000, tzinfo=UTC)
    assert one("weekday(day)", 2) == 4 and one("weekday(ts)", 3) == 1  # 2024-02-29 Thu; 2024-01-01 01:00Z Mon
    assert one("date_diff(ts, ts2)", 8) == 0 and one("date_diff(day2, day)", 3) == 30
    assert one("min(i, None)", 2) is None and one("max(3, i)", 2) == 42 and one("concat(None, t2)", 2) == "World"
    assert one("substr(t, 0, 2)", 6) == "ab" and one("substr(t, -5)", 6) == "abc" and one("substr(t, 2, -1)", 6) == ""
    assert one('"ab" * 3', 1) == "ababab" and one("2 ** 10", 1) == 1024.0 and one("trim(t)", 4) == "padded"
    assert one("contains(tags, t2)", 1) is None and one("is_blank(tags)", 4) is True
    assert one("today()", 1) == NOW.date() and one("now()", 1) == NOW


# -- values the SQL back end must produce with the right Python types -------------------------
def test_result_types(db):
    assert type(db.values("i + 1", [2])[2]) is int
    assert type(db.values("len(t)", [2])[2]) is int
    assert type(db.values("f + 1", [2])[2]) is float
    assert type(db.values("round(f)", [2])[2]) is int
    assert type(db.values("floor(d)", [2])[2]) is int
    assert db.values("d + 1", [2])[2] == Decimal("1235.5678")
    assert db.values("b", [2])[2] is True and db.values("i > 1", [2])[2] is True
    assert db.values("add_days(day, 1)", [2])[2] == dt.date(2024, 3, 1)
    assert db.values("add_days(ts, 1)", [2])[2] == dt.datetime(2024, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)
    assert db.values("tags if b else tags2", [2])[2] == ["a", "b"]


# -- filtering and sorting ----------------------------------------------------------------
def test_filter_and_sort_by_a_formula(db):
    cond = compile_expression('b and (d > 0 or contains(tags2, "b"))', SCOPE, FUNCTIONS, expect="boolean")
    key = compile_expression("coalesce(d, 0) * 2 - coalesce(i, 0)", SCOPE, FUNCTIONS)
    stmt = sa.select(db.rec.c.id).where(db.sql(cond)).order_by(db.sql(key), db.rec.c.id)
    with db.tenant.read() as conn:
        got = conn.execute(stmt).scalars().all()
    matching = [r for r in RECORDS if cond(env_for(r)) is True]
    assert got == [r["id"] for r in sorted(matching, key=lambda r: (key(env_for(r)), r["id"]))]
    assert got  # the filter keeps some rows


def test_text_sort_by_code_point_can_be_asked_for(db):
    key = db.sql("coalesce(t, \"\") + coalesce(t2, \"\")")
    if db.dialect == "postgresql":
        key = key.collate("C")
    with db.tenant.read() as conn:
        got = conn.execute(sa.select(db.rec.c.id).order_by(key, db.rec.c.id)).scalars().all()
    expect = sorted(RECORDS, key=lambda r: ((r.get("t") or "") + (r.get("t2") or ""), r["id"]))
    assert got == [r["id"] for r in expect]


# -- what cannot run in SQL ---------------------------------------------------------------
@pytest.mark.parametrize(("source", "message", "where"), [
    ("old.i > i", "old values exist only while saving", (1, 1)),
    ('b and changed("i")', r"changed\(\) exists only while saving", (1, 7)),
])
def test_saving_only_expressions_are_errors(db, source, message, where):
    with pytest.raises(ExpressionError, match=message) as info:
        db.sql(source)
    assert (info.value.line, info.value.column) == where


def test_plugin_functions_need_sql(db):
    plain = Function("twice", ("numeric",), "arg0", lambda x: x * 2)
    with_sql = Function("twice", ("numeric",), "arg0", lambda x: x * 2,
                        sql=lambda args, types, dialect: args[0] * 2)
    shadow = Function("len", ("text_or_list",), "number", lambda x: 0)  # not the built-in any more
    for fns, ok in (({**FUNCTIONS, "twice": plain}, False), ({**FUNCTIONS, "twice": with_sql}, True),
                    ({**FUNCTIONS, "len": shadow}, False)):
        source = "1 + twice(i)" if "twice" in fns else "1 + len(t)"
        expr = compile_expression(source, SCOPE, fns)
        if not ok:
            with pytest.raises(ExpressionError, match="has no SQL form") as info:
                to_sql(expr.tree, db.column(db.rec), db.dialect, fns, SqlEnv(now=NOW))
            assert (info.value.line, info.value.column) == (1, 5)
            continue
        sql = to_sql(expr.tree, db.column(db.rec), db.dialect, fns, SqlEnv(now=NOW))
        with db.tenant.read() as conn:
            assert conn.execute(sa.select(sql).where(db.rec.c.id == 2)).scalar() == 85


def test_nesting_that_would_repeat_sql_is_capped(db):
    nested = "i"
    for _ in range(15):
        nested = f"max(min({nested}, 1000), f)"
    if db.dialect == "postgresql":  # GREATEST/LEAST need a NULL test: each level doubles the SQL
        with pytest.raises(ExpressionError, match="too complex"):
            db.sql(nested)
    else:
        check(db, nested)
    assert MAX_SQL_WEIGHT >= 1000
    check(db, "max(min(max(min(i, 1000), f), 1000), f)")


@pytest.mark.parametrize("source", ["f ** 2000", "add_months(day, 120000)", "floor(f * 1e300)"])
def test_caps_fail_in_both(db, source):
    """Where both back ends fail: an exponent beyond 1000 (PostgreSQL: overflow), a date
    beyond the year 9999, an integer beyond 2**63."""
    expr = compile_expression(source, SCOPE, FUNCTIONS)
    with pytest.raises(EvaluationError):
        expr(env_for(RECORDS[1]))
    with pytest.raises(sa.exc.SQLAlchemyError):
        db.values(expr, [2])


def test_literal_out_of_range_fails_before_any_row_is_read(db):
    for source, message in (("round(f, 19)", "-18 to 18"), ("add_days(day, 0.5)", "whole number"),
                            ("add_months(day, 4000000)", "whole number")):
        with pytest.raises(ExpressionError, match=message):
            db.sql(source)


def test_sql_env():
    with pytest.raises(ValueError):
        SqlEnv(now=dt.datetime(2026, 1, 1))
    env = SqlEnv(now=dt.datetime(2026, 1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))))
    assert env.today == dt.date(2025, 12, 31) and env.now.tzinfo is UTC
    assert SqlEnv().now.tzinfo is UTC


# -- regular expressions --------------------------------------------------------------------
SUBJECTS = ["", "a", "A", "abc", "ABC", "aBc", "k", "K", "\u212a", "s", "\u017f", "S", "a\nb", "a\n", "\n",
            "foo bar", "foobar", "x_y", "é", "É", "aé", "12-34", "1.5", "tab\there", "a.b", "a+b", "[x]", "{,3}",
            "😀", "a😀b", "ΟΔΟΣ", "ab\ncd", "line1\nline2\n", "-", "^$", "\\", "aaa", "ba", "ß", "aσ9", "a9"]

PATTERNS = [
    "", "a", "^a", "a$", "^a$", "^$", "abc", "(?i)abc", "(?i)k", "(?i)s", "(?i)[a-k]", "(?i)[^k]", "(?i)\\w",
    "(?i)\\W", "(?i:a)b", "(?i)a(?-i:b)c", ".", "^.$", "(?s)^.$", "a.b", "(?s)a.b", "\\d", "\\d+-\\d+",
    "^\\d+\\.\\d*$", "\\D", "\\w+", "\\W", "\\s", "\\S", "[\\s]", "\\bfoo\\b", "\\Bbar", "foo\\b", "\\bé",
    "[^a-c]", "[a\\-c]", "[]x]", "[^]x]", "[\\d.]", "[\\w.-]+", "[^\\n]+", "a|b|", "(a|bc)+$", "a{2,3}",
    "a{2}", "a{0}b", "a*?", "(?:ab)+", "(?m)^b", "(?m)1$", "(?m)^line2$", "\\A\\n", "\\.", "\\+", "\\[x\\]",
    "\\{,3\\}", "\\^\\$", "\\\\", "\\t", "😀", "a😀?b", "[😀é]", "ΟΔ.Σ", "é+", "ß", "[à-ÿ]", "x*", "^(a|)$",
    "\\x41", "\\101", "\\n$", "(?i)ſ", "(?i)[ſ]", "(?i)\u212a",
    # RE2 lets an empty match start between the bytes of a character, where \B holds
    "\\B", "^\\B", "(?:\\S*){2}\\B", "a\\B", "\\B\\S", "(?:\\B|x)+",
]


def test_regex_translation_agrees_with_re2(db):
    """Every pattern on every subject: RE2 (the Python back end, SQLite) against the SQL."""
    failures = []
    for pattern in PATTERNS:
        expr = compile_expression(f"regex_match(t, {pattern!r})", SCOPE, FUNCTIONS)
        assert expr.tree["args"][1]["v"] == pattern
        stmt = sa.select(db.subjects.c.id, db.sql(expr, db.subjects)).order_by(db.subjects.c.id)
        with db.tenant.read() as conn:
            got = dict(conn.execute(stmt).all())
        for n, subject in enumerate(SUBJECTS, start=1):
            want = compile_regex(pattern).search(subject) is not None
            if got[n] is not want:
                failures.append((pattern, subject, want, pg_regex(pattern) if db.dialect == "postgresql" else ""))
    assert not failures


@pytest.mark.parametrize("pattern", ["\\pL", "[[:alpha:]]", "a{,3}", "(?i)é", "a{300}", "(?i)[à-ÿ]", "[\\D\\s]",
                                     "(?i)Straße"])
def test_regexes_postgresql_cannot_run(db, pattern):
    compile_regex(pattern)  # valid RE2
    source = f"regex_match(t, {pattern!r})"
    if db.dialect == "postgresql":
        with pytest.raises(ExpressionError, match="cannot run in SQL on PostgreSQL") as info:
            db.sql(source)
        assert info.value.line == 1
    else:
        check(db, source)


# -- random records ---------------------------------------------------------------------
PROPERTY_CASES = [
    "t + t2", "t < t2", "t2 >= c", "min(t, t2)", "max(t, c)", "upper(t)", "lower(t2)", "trim(t)", "len(t)",
    "concat(t, c, t2)", "contains(t, t2)", "starts_with(t, t2)", "substr(t, i, f)", "substr(t, 2)",
    'regex_match(t, "(?i)[a-f]+\\\\d")', 'regex_match(t, "^\\\\w.\\\\s")', "t * 2", "case(t, t2, 1, c, 2, 3)",
    "i + f", "i - f * 2", "i / f", "f / 3", "i ** 2", "round(f, 2)", "round(f)", "floor(f)", "ceil(f)",
    "d + d2", "d - d2 * i", "d * d2", "d / d2", "round(d, 1)", "d == d2", "d > f", "d2 + 0.1 == d",
    "max(d, i, f)", "min(d, d2)", "abs(d - f)", "floor(d)", "coalesce(d, i, f)", 'd in [0, 1.5, -2.25]',
    "b and i > f", "b or d2 > 0", "not b", "i if b else d", "is_blank(t)", "is_blank(tags)",
    "date_diff(day, day2)", "date_diff(ts, ts2)", "date_diff(day, ts)", "add_days(day, i)", "add_days(ts, i)",
    "add_months(day, i)", "add_months(ts, i)", "day < day2", "ts <= ts2", "max(ts, ts2)", "min(day, day2)",
    "year(ts)", "month(day)", "weekday(ts)", "weekday(day)", "contains(tags, c)", "len(tags)", "tags == tags2",
    "coalesce(tags, tags2)",
]
PROPERTY_EXPRS = [compile_expression(s, SCOPE, FUNCTIONS) for s in PROPERTY_CASES]

_TEXT = st.text(st.sampled_from("aAbBcdfKkſ S1_9.é ß😀\n\tΣσς"), max_size=6) | st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=5)


def _maybe(strategy):
    return st.none() | strategy


RECORD = st.fixed_dictionaries({
    "t": _maybe(_TEXT), "t2": _maybe(_TEXT), "c": _maybe(st.sampled_from(OPTIONS)),
    "i": _maybe(st.integers(-40, 40)), "f": _maybe(st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: x == 0 or abs(x) > 1e-9) | st.sampled_from(
        [0.0, -0.0, 0.5, 2.5, -2.5, 1.005, 2.675, 0.1])),
    "d": _maybe(st.decimals(-10**9, 10**9, places=4)), "d2": _maybe(st.decimals(-10**6, 10**6, places=2)),
    "b": _maybe(st.booleans()),
    "day": _maybe(st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31))),
    "day2": _maybe(st.dates(dt.date(1900, 1, 1), dt.date(2100, 12, 31))),
    "ts": _maybe(st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(UTC))),
    "ts2": _maybe(st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(UTC))),
    "tags": _maybe(st.lists(st.sampled_from(TAGS), unique=True)),
    "tags2": _maybe(st.lists(st.sampled_from(TAGS), unique=True)),
})


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rec=RECORD)
def test_random_records_agree(db, rec):
    rec = {**rec, "id": 1}
    expected = python_values_by_expr(rec)
    stmt = sa.select(*(db.sql(e, db.rnd) for e in PROPERTY_EXPRS))
    with db.tenant.engine.connect() as conn, conn.begin() as tx:  # rolled back: the table stays empty
        conn.execute(db.rnd.insert(), [{c.name: rec.get(c.name) for c in db.rnd.columns}])
        row = conn.execute(stmt.where(db.rnd.c.id == 1)).one()
        tx.rollback()
    bad = {src: (want, row[n]) for n, (src, want) in enumerate(zip(PROPERTY_CASES, expected, strict=True))
           if want is not _ERROR and not same(PROPERTY_EXPRS[n].type, want, row[n])}
    assert not bad, (db.dialect, rec, bad)


_ERROR = object()


def python_values_by_expr(rec: dict[str, Any]) -> list[Any]:
    env = env_for(rec)
    out = []
    for expr in PROPERTY_EXPRS:
        try:
            out.append(expr(env))
        except EvaluationError:
            out.append(_ERROR)
    return out
