"""Applying an object's rules to one record as it is written.

The write pipeline's ``defaults``, ``formulas`` and ``rules`` participants run a
:class:`RuleRun` for every record created or updated, whatever the caller (API,
form, bulk write, import, script hook): expression defaults, stored formulas, field
and section conditions, dependent choices and validation rules. Every failing check
is collected, so one 422 lists them all.

Conditions are evaluated on the record as it will be saved, except ``read_only_if``
on an update, which is evaluated on the record as stored: a user cannot unlock a
field by changing the field that locks it in the same save.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import marshmallow as ma
import sqlalchemy as sa

from loomwork.metadata.model import label_text

from .compiled import CompiledApp, CompiledObject
from .context import Context
from .expr import Env, EvaluationError, Expression
from .fieldtypes import allowed_by_controller
from .permissions import Permissions
from .rules import ObjectRules

_BLANK = (None, "", [], {})


_PERMISSIONS = Permissions()


class RuleMessage(str):
    """A validation message that knows where it came from: the validation rule that
    raised it (``None`` for a field's own condition, default or formula) and the fields
    whose values decided it (:func:`reads`), so a form can drop or re-check the message
    when the user changes one of them. Everywhere else (JSON, logs, comparisons) it is
    the plain text, like any ``str``.
    """

    rule: str | None
    reads: frozenset[str]

    def __new__(cls, text: str, reads: frozenset[str] = frozenset(), rule: str | None = None) -> RuleMessage:
        msg = super().__new__(cls, text)
        msg.rule, msg.reads = rule, frozenset(reads)
        return msg


def reads(rules: ObjectRules, *exprs: Expression) -> frozenset[str]:
    """The fields of the object whose values ``exprs`` depend on: the first hop of every
    path (``account`` for ``account.industry``) and, through the formulas they read,
    those formulas' inputs too (the formula itself included)."""
    out: set[str] = set()
    todo = [p.split(".", 1)[0] for e in exprs for p in e.deps.paths]
    formulas = rules.formulas
    while todo:
        name = todo.pop()
        if name not in out:
            out.add(name)
            if name in formulas:
                todo.extend(p.split(".", 1)[0] for p in formulas[name].deps.paths)
    return frozenset(out)


def fetch_paths(conn: sa.Connection, app: CompiledApp, obj: CompiledObject, rec: Mapping[str, Any],
                paths: set[str], ctx: Context | None = None) -> dict[str, Any]:
    """Values behind lookups (``account.industry``) for ``rec``; a missing or deleted
    record on the way makes the value NULL, as in SQL's outer joins, and so does an
    object ``ctx``'s actor may not read (a formula must not show what a filter may not)."""
    out: dict[str, Any] = {}
    rows: dict[tuple[str, int], Mapping[str, Any] | None] = {}

    def row_of(target: CompiledObject, rid: Any) -> Mapping[str, Any] | None:
        key = (target.name, rid)
        if key not in rows:
            if ctx is not None and not _PERMISSIONS.allowed(ctx, app, target.name, "read"):
                rows[key] = None
                return None
            t = target.table
            found = conn.execute(sa.select(t).where(t.c.id == rid, t.c.deleted_at.is_(None))).mappings().first()
            if found is not None and target.rules.virtual_formulas:
                found = virtual_values(app, target, dict(found), ctx, conn)
            rows[key] = found
        return rows[key]

    for path in paths:
        parts = path.split(".")
        cur_obj, cur = obj, rec
        for hop in parts[:-1]:
            rid = cur.get(hop) if cur is not None else None
            if rid is None:
                cur = None
                break
            cur_obj = app.object(cur_obj.fields[hop].defn.prop("target"))
            cur = row_of(cur_obj, rid)
        out[path] = cur.get(parts[-1]) if cur is not None else None
    return out


def make_env(ctx: Context | None, rec: Mapping[str, Any], old: Mapping[str, Any] | None,
             paths: Mapping[str, Any] | None = None) -> Env:
    if ctx is None:
        return Env(rec, old, paths=paths)
    return Env(rec, old, paths=paths, user_id=ctx.actor.id, user_role=primary_role(ctx.actor.roles),
               now=ctx.now())


def primary_role(roles: frozenset[str]) -> str | None:
    """``$user.role``: the user's own role, not the built-in ``user`` everyone has."""
    own = sorted(r for r in roles if r != "user")
    return own[0] if own else ("user" if "user" in roles else None)


def coerce(obj: CompiledObject, name: str, value: Any) -> Any:
    """A computed value in the column's Python type (decimals at the field's scale)."""
    if value is None:
        return None
    f = obj.fields[name]
    kind = f.ftype.expression_type(f.defn)
    if kind == "decimal":
        scale = f.defn.prop("scale", 2)
        try:
            q = Decimal(value if not isinstance(value, float) else repr(value)).quantize(
                Decimal(1).scaleb(-scale), rounding=ROUND_HALF_UP)
        except InvalidOperation:
            raise EvaluationError("number out of range") from None
        if abs(q) >= Decimal(10) ** (18 - scale):
            raise EvaluationError("number out of range")
        return q
    if kind == "number" and not isinstance(value, bool):
        return value if f.column is not None and isinstance(f.column.type, sa.BigInteger) else float(value)
    if kind == "date" and isinstance(value, dt.datetime):
        return value.date()
    return value


def virtual_values(app: CompiledApp, obj: CompiledObject, row: dict[str, Any], ctx: Context | None,
                   conn: sa.Connection | None = None) -> dict[str, Any]:
    """``row`` with its virtual formulas computed (for single-record reads and rules)."""
    rules = obj.rules
    if not rules.virtual_formulas:
        return row
    paths = {}
    if conn is not None:
        wanted = {p for _, e in rules.virtual_formulas for p in e.deps.paths if "." in p}
        if wanted:
            paths = fetch_paths(conn, app, obj, row, wanted, ctx)
    env = make_env(ctx, row, None, paths)
    for name, e in rules.virtual_formulas:
        try:
            row[name] = coerce(obj, name, e(env))
        except EvaluationError:
            row[name] = None  # as SQL would give no value rather than fail a read
    return row


class RuleRun:
    """One record's rules as its write passes the ``defaults``, ``formulas`` and
    ``rules`` stages: one evaluation environment (lookups fetched once), errors
    collected so one 422 lists them all.

    :param values: typed values being written (completed in place).
    :param old: the stored row for an update, ``None`` for a create.
    :param given: the fields the caller sent (a default never overrides them).
    """

    def __init__(self, ctx: Context, conn: sa.Connection, app: CompiledApp, obj: CompiledObject,
                 values: dict[str, Any], old: Mapping[str, Any] | None, given: set[str], prefix: str = "") -> None:
        self.ctx, self.obj, self.values, self.old, self.given, self.prefix = ctx, obj, values, old, given, prefix
        self.errors: dict[str, list[str]] = {}
        self.rec = {**(old or {}), **values}
        rules = obj.rules
        self.paths = fetch_paths(conn, app, obj, self.rec, rules.paths, ctx) if rules.paths else {}
        self.env = make_env(ctx, self.rec, old, self.paths)

    def fail(self, name: str | None, message: str, reads: frozenset[str] = frozenset(),
             rule: str | None = None) -> None:
        """Record an error at ``name`` (the record itself for None); ``reads`` and ``rule``
        say what decided it (see :class:`~.rules.RuleMessage`); the field itself counts."""
        key = f"{self.prefix}{name}" if name else (self.prefix.rstrip(".") or "_schema")
        self.errors.setdefault(key, []).append(RuleMessage(message, reads | {name} if name else reads, rule))

    def set(self, name: str, value: Any) -> None:
        """Write ``value`` to the record (and what later expressions see)."""
        self.values[name] = self.rec[name] = value

    def defaults(self) -> None:
        """Expression defaults of a new record, for fields the caller did not send."""
        if self.old is not None:
            return
        for name, e in self.obj.rules.defaults:
            if name not in self.given and self.values.get(name) is None:
                try:
                    value = _typed_default(self.obj, name, e(self.env))
                except (EvaluationError, ValueError, TypeError) as exc:
                    self.fail(name, f"default could not be computed: {exc}", reads(self.obj.rules, e))
                    continue
                self.set(name, value)

    def formulas(self) -> None:
        """Stored formulas (and, for the rules to read, virtual ones) on the record as it
        will be saved."""
        obj, rec, env = self.obj, self.rec, self.env
        for name, e in obj.rules.virtual_formulas:
            try:
                rec[name] = coerce(obj, name, e.evaluate(env))
            except EvaluationError:
                rec[name] = None
        for name, e in obj.rules.stored_formulas:
            try:
                self.set(name, coerce(obj, name, e.evaluate(env)))
            except EvaluationError as exc:
                self.fail(name, f"cannot be computed: {exc.detail}", reads(obj.rules, e))
                self.set(name, None)

    def checks(self) -> None:
        """Field conditions (visible, required, read-only), dependent choices and the
        object's validation rules."""
        ctx, obj, rules, rec, env, old, values, given = (self.ctx, self.obj, self.obj.rules, self.rec, self.env,
                                                          self.old, self.values, self.given)
        creating = old is None
        old_env = make_env(ctx, old, None, self.paths) if old is not None and rules.read_only else env
        for name in rules.condition_fields:
            f = obj.fields[name]
            conditions = rules.visible.get(name)
            try:
                visible = conditions is None or all(c.evaluate(env) is True for c in conditions)
                conditional = any(c.evaluate(env) is True for c in rules.required.get(name, ()))
                locked = name in given and name in rules.read_only and not ctx.actor.is_admin and any(
                    c.evaluate(old_env) is True for c in rules.read_only[name])
            except EvaluationError as exc:
                self.fail(name, f"its conditions could not be checked: {exc.detail}", self._condition_reads(name))
                continue
            # A plain ``required`` without a visibility condition was checked with the input.
            static = f.defn.required and conditions is not None and (creating or name in values)
            if visible and (conditional or static) and rec.get(name) in _BLANK and not f.ftype.system_set:
                self.fail(name, "is required", self._condition_reads(name))
            if locked and values.get(name) != (old or {}).get(name):
                self.fail(name, "is read-only here")
        for name, controller in rules.dependent.items():
            if name not in values and controller not in values:
                continue
            value = rec.get(name)
            if value in _BLANK:
                continue
            allowed = allowed_by_controller(obj.fields[name].defn, rec.get(controller))
            chosen = value if isinstance(value, list) else [value]
            bad = [v for v in chosen if v not in (allowed or ())]
            if bad:
                shown = rec.get(controller)
                self.fail(name, f"{bad[0]!r} is not allowed when {controller} is "
                                f"{'empty' if shown in _BLANK else repr(shown)}", frozenset({controller}))
        for rule, e in rules.on_create if creating else rules.on_update:
            try:
                hit = e.evaluate(env) is True
            except EvaluationError as exc:
                self.fail(rule.field, f"rule {rule.name} could not be checked: {exc.detail}", reads(rules, e),
                          rule.name)
                continue
            if hit:
                self.fail(rule.field, label_text(rule.message, ctx.locale, rule.name), reads(rules, e), rule.name)

    def _condition_reads(self, name: str) -> frozenset[str]:
        """What decides whether ``name`` shows and is required: its conditions' fields."""
        rules = self.obj.rules
        return reads(rules, *rules.visible.get(name, ()), *rules.required.get(name, ()))


def _typed_default(obj: CompiledObject, name: str, value: Any) -> Any:
    """An expression default as the field's value (through its input schema, so a
    default obeys the same ranges and options as typed input)."""
    if value is None:
        return None
    f = obj.fields[name]
    if isinstance(value, Decimal):
        value = str(value)
    elif isinstance(value, (dt.date, dt.datetime)):
        value = value.isoformat()
    elif isinstance(value, float) and f.ftype.value_kind(f.defn) == "integer" and value.is_integer():
        value = int(value)
    try:
        return obj.schema.fields[name].deserialize(value)
    except ma.ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, list) else [exc.messages]
        raise ValueError("; ".join(map(str, messages))) from None
