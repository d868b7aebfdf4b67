"""The query engine: one JSON filter AST, keyset pagination, counts and search.

The filter AST (ARCHITECTURE §5) is used by the API, and later by saved views, row
permissions and rules::

    {"and": [{"field": "stage", "op": "eq", "value": "won"},
             {"or": [{"field": "amount", "op": "gte", "value": "1000"},
                     {"not": {"field": "account.industry", "op": "in", "value": ["retail"]}}]}]}

Identifiers come only from metadata and every value is a bound parameter. NULL
semantics are written down in ``docs/api-guide.md`` (decision D10) and are the same on
every dialect:

* the *empty* value is SQL NULL; for JSON columns also JSON ``null``, and for a
  multi-choice field also ``[]``;
* ``eq null`` means ``is_null`` and ``ne null`` means ``is_null false``; ``in``/``nin``
  lists may hold ``null`` for "empty" the same way;
* ``ne``, ``nin`` and ``not`` keep rows whose value is empty ("stage is not won"
  includes deals with no stage), so a filter is two-valued: an unknown comparison is
  simply false, also under ``not``;
* every other comparison (``lt`` ... ``between``, ``contains`` ...) never matches an
  empty value, and takes no ``null`` operand;
* a path through a lookup whose record is missing or soft-deleted is empty;
* in sorting (and so in keyset cursors) an empty value counts as the largest: last
  ascending, first descending.

``contains`` and ``starts_with`` are case-sensitive, ``icontains`` and ``search`` are
not (SQLite folds ASCII letters only); ``%`` and ``_`` in values match literally.
Values are parsed by the field's type, not checked against what it may store (ranges,
lengths, patterns). Variables: ``$user.id`` (empty for the system actor), ``$now`` and
``$today`` (UTC); ``$$x`` is the literal text ``$x``.

Pages are keyset pages: a cursor carries the sort spec, a key of the filter and the sort
values of the last row; the next page is the rows after those values in sort order
(``id`` ends every sort, so the order is total). The list path is hot, so every page is
written to start at its place in an index: a row-value comparison when all sort keys
are NOT NULL and share a direction, empty values of a nullable first key read as a
block of their own, and on SQLite (which plans without statistics) an index-order probe
before trusting its choice of index (see :meth:`QueryService._arms`, ``_probe``).
"""
from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import marshmallow as ma
import orjson
import sqlalchemy as sa
from marshmallow import fields as mf
from marshmallow import validate as mv
from sqlalchemy.dialects import postgresql

from loomwork.metadata import filters
from loomwork.metadata.diff import desired_indexes
from loomwork.metadata.errors import BadQuery
from loomwork.metadata.filters import MAX_PATH_HOPS, OPERATORS, VARIABLES

from .compiled import READ_MAX_AGE, CompiledApp, CompiledObject
from .context import Context
from .evaluation import primary_role, virtual_values
from .expr.sql import SqlEnv
from .fieldtypes import COMPARE_OPS, AwareDateTimeField, MultiChoiceType
from .formula_sql import formula_source, query_source, sql_problems
from .keyset import MALFORMED_CURSOR, SortKey, after, decode_cursor, encode_cursor, order_by, wire
from .sqltypes import JSONDoc
from .titles import expand, expand_fields

#: ``source(obj, alias=None)``: what a query reads an object from.
Source = Callable[..., sa.FromClause]


def _nullable(col: sa.ColumnElement) -> bool:
    """Whether a column may be NULL (a computed column of a formula always may)."""
    return getattr(col, "nullable", True)


def _computable(app: CompiledApp, obj: CompiledObject, name: str, dialect: str, purpose: str) -> None:
    """Refuse a filter or sort on a formula the database cannot compute."""
    f = obj.fields.get(name)
    if f is None or f.column is not None or not obj.rules.virtual_formulas:
        return
    reason = sql_problems(app, obj, dialect).get(name)
    if reason:
        raise BadQuery(f"{purpose}: formula {obj.name}.{name} cannot be computed by the database "
                       f"({reason}), so it cannot be used to {'sort' if purpose == 'sort' else 'filter'}")

MAX_SORT = 4
DEFAULT_LIMIT, MAX_LIMIT = 50, 500

#: System columns a filter or sort may name, with the parser of their values.
_SYSTEM: dict[str, mf.Field] = {
    "id": mf.Integer(strict=True, allow_none=True),
    "created_at": AwareDateTimeField(format="iso", allow_none=True),
    "updated_at": AwareDateTimeField(format="iso", allow_none=True),
    "created_by": mf.Integer(strict=True, allow_none=True),
    "updated_by": mf.Integer(strict=True, allow_none=True),
    "owner_id": mf.Integer(strict=True, allow_none=True),
    "row_version": mf.Integer(strict=True, allow_none=True),
}
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,20}")


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


_show = filters.show
#: The moment ``$now`` stands for while a filter is only checked (a publish), not run.
_CHECK_MOMENT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def _int_bits(column: sa.ColumnElement) -> int:
    """Signed bits of an integer column, so an out-of-range value is a 400, not a driver error."""
    t = column.type
    if isinstance(t, sa.BigInteger):
        return 63
    if isinstance(t, sa.SmallInteger):
        return 15
    if isinstance(t, sa.Integer):
        return 31
    return 63


def _value_field(app: CompiledApp, obj: CompiledObject, name: str, *, choices: bool) -> mf.Field:
    """The marshmallow field that parses filter values (or cursor values) of ``obj.name``.

    The object's input schema also checks ranges, lengths, patterns and e-mail syntax.
    Those say what may be *stored*, not what a stored value may be *compared with*
    (``employees lt -1`` is a fine question), so they are dropped; type parsing stays.
    Filters keep choice lists (``stage eq "wno"`` is a typo worth a 400); cursors carry
    stored values and keep nothing. Built once per metadata version.
    """
    if name in _SYSTEM:
        return _SYSTEM[name]

    def build() -> mf.Field:
        f = obj.schema.fields[name]
        if isinstance(f, mf.List):  # multi-choice: a filter value is one option
            f = f.inner
        f = copy.copy(f)
        f.validators = [v for v in f.validators if choices and isinstance(v, mv.OneOf)]
        return f

    return app.artefact(f"query.value:{obj.name}.{name}:{'filter' if choices else 'cursor'}", build)


def _parse(parser: mf.Field, column: sa.ColumnElement, raw: Any, path: str) -> Any:
    """Turn a JSON or query-string value into the column's Python value (``None``: empty)."""
    if isinstance(raw, str):  # the compact query-string form has text only
        if isinstance(parser, mf.Integer) and _INTEGER_TEXT.fullmatch(raw):
            raw = int(raw)
        elif isinstance(parser, mf.Boolean) and raw in ("true", "false"):
            raw = raw == "true"
    try:
        value = parser.deserialize(raw)
    except ma.ValidationError as exc:
        msgs = exc.messages if isinstance(exc.messages, list) else [str(exc.messages)]
        raise BadQuery(f"{path}: {_show(raw)} is not valid here ({str(msgs[0]).rstrip('.')})") from None
    except (TypeError, ValueError, ArithmeticError):
        raise BadQuery(f"{path}: {_show(raw)} is not valid here") from None
    if isinstance(value, str) and "\x00" in value:  # PostgreSQL cannot even bind it
        raise BadQuery(f"{path}: text must not contain NUL (\\x00) characters")
    if isinstance(value, int) and not isinstance(value, bool):
        bits = _int_bits(column)
        if not -(2**bits) <= value < 2**bits:
            raise BadQuery(f"{path}: {value} is out of range")
    return value


def field_ops(obj: CompiledObject, name: str) -> frozenset[str]:
    """The filter operators a field or system column of ``obj`` takes."""
    f = obj.fields.get(name)
    if f is not None:
        return f.ftype.field_ops(f.defn)
    return COMPARE_OPS if name in _SYSTEM else frozenset()


@dataclass(frozen=True)
class Resolved:
    """A field path resolved to a column (possibly of a joined lookup target)."""

    path: str
    column: sa.ColumnElement
    object: CompiledObject
    name: str
    parser: mf.Field

    @property
    def type_name(self) -> str:
        f = self.object.fields.get(self.name)
        return f.defn.type if f else "system"

    @property
    def kind(self) -> str:
        """``a text field``, ``an integer field``, ``the system field id`` (for messages)."""
        if self.name not in self.object.fields:
            return f"the system field {self.name}"
        article = "an" if self.type_name[0] in "aeiou" else "a"
        return f"{article} {self.type_name} field"

    @property
    def ops(self) -> frozenset[str]:
        return field_ops(self.object, self.name)

    @property
    def multi(self) -> bool:
        f = self.object.fields.get(self.name)
        return f is not None and isinstance(f.ftype, MultiChoiceType)


class FilterCompiler:
    """Compiles filter ASTs against one object, collecting the joins their paths need.

    The AST's own rules (shape, operators and operands, caps) are
    :mod:`loomwork.metadata.filters`'; this adds what needs compiled metadata: paths
    resolved through readable lookups, operators the field's type supports, values
    parsed by the field's type, variables.
    """

    def __init__(self, app: CompiledApp, obj: CompiledObject, ctx: Context | None, can_read,
                 dialect: str = "sqlite", source: Source | None = None) -> None:
        """:param ctx: who asks (``$user.id``, ``$now``); None to check a filter without
            running it (variables are then type-checked only)."""
        self.app, self.obj, self.ctx, self.can_read = app, obj, ctx, can_read
        self.dialect = dialect
        #: What an object is read from (its table, or a subquery adding virtual formulas).
        self.source: Source = source or (lambda o, alias=None: o.table if alias is None else o.table.alias(alias))
        self.joins: dict[str, tuple[sa.FromClause, sa.ColumnElement]] = {}
        #: Where in the AST the node being compiled is (``filter.and.1``), for messages.
        self.at = ""

    def compile(self, node: Any, path: str = "filter") -> sa.ColumnElement:
        """One filter AST as a boolean SQL expression.

        :param path: what to call the root in messages.
        :raises BadQuery: naming the node for a filter that breaks the AST's rules, or
            the field path for one that does not fit the object.
        """
        errors, _found = filters.check(node, path)
        if errors:
            where, message = errors[0]
            raise BadQuery(f"{where}: {message}")
        return self._node(node, path)

    def select_from(self) -> sa.FromClause:
        src: sa.FromClause = self.source(self.obj)
        for alias, on in self.joins.values():
            src = src.outerjoin(alias, on)
        return src

    # -- paths ------------------------------------------------------------
    def resolve(self, path: Any, *, purpose: str = "filter") -> Resolved:
        if not isinstance(path, str) or not path or len(path) > filters.MAX_PATH_LENGTH:
            raise BadQuery(f"{purpose}: field must be a field name or a dotted path")
        parts = path.split(".")
        if len(parts) - 1 > MAX_PATH_HOPS:
            raise BadQuery(f"{purpose}: path {path!r} has more than {MAX_PATH_HOPS} hops")
        obj, table, prefix = self.obj, self.source(self.obj), ""
        for hop in parts[:-1]:
            if hop not in obj.lookups:
                raise BadQuery(f"{purpose}: {hop!r} in {path!r} is not a lookup field of {obj.name}")
            target = self.app.object(obj.lookups[hop])
            if not self.can_read(target.name):
                raise BadQuery(f"{purpose}: unknown field {path!r}")
            prefix = f"{prefix}.{hop}" if prefix else hop
            if prefix not in self.joins:
                # A missing or soft-deleted parent makes every value behind it empty. The
                # alias is in the reserved lw_ namespace, so no object table is named alike.
                alias = self.source(target, f"lw_j{len(self.joins) + 1}")
                on = sa.and_(alias.c.id == table.c[hop], alias.c.deleted_at.is_(None))
                self.joins[prefix] = (alias, on)
            table, obj = self.joins[prefix][0], target
        name = parts[-1]
        if name not in obj.fields and name not in _SYSTEM:
            hint = " (compact filters are written path__op=value)" if "__" in name else ""
            raise BadQuery(f"{purpose}: unknown field {path!r} of {obj.name}{hint}")
        _computable(self.app, obj, name, self.dialect, purpose)
        return Resolved(path, table.c[name], obj, name, _value_field(self.app, obj, name, choices=True))

    # -- values -----------------------------------------------------------
    def value(self, r: Resolved, raw: Any) -> Any:
        """A filter operand as a Python value of the field's type (``None``: empty)."""
        if isinstance(raw, str) and raw.startswith("$"):
            if not raw.startswith("$$"):
                return self._variable(r, raw)
            raw = raw[1:]  # "$$x" is the literal text "$x"
        return _parse(r.parser, r.column, raw, r.path)

    def _variable(self, r: Resolved, name: str) -> Any:
        """``$user.id`` (empty for the system actor), ``$now`` and ``$today`` (UTC)."""
        p = r.parser
        if name == "$user.id":
            if isinstance(p, mf.Integer):
                return self.ctx.actor.id if self.ctx is not None else None
        elif name == "$now":
            if isinstance(p, mf.DateTime):
                return self.ctx.now() if self.ctx is not None else _CHECK_MOMENT
            if isinstance(p, mf.Date):
                raise BadQuery(f"{r.path}: $now is a moment; compare a date field with $today")
        elif name == "$today":
            today = (self.ctx.now() if self.ctx is not None else _CHECK_MOMENT).astimezone(dt.UTC).date()
            if isinstance(p, mf.DateTime):
                return dt.datetime.combine(today, dt.time(), dt.UTC)
            if isinstance(p, mf.Date):
                return today
        else:
            raise BadQuery(f"{r.path}: unknown variable {name!r} (known: {', '.join(VARIABLES)}; "
                           f"write $$ for a literal $)")
        raise BadQuery(f"{r.path}: {name} cannot be compared with {r.kind}")

    # -- conditions -------------------------------------------------------
    def _node(self, node: Mapping[str, Any], path: str) -> sa.ColumnElement:
        """A node of a filter that :func:`filters.check` passed."""
        if "field" in node:
            self.at = path
            return self.condition(node["field"], node["op"], node["value"])
        (kind, items), = node.items()
        if kind == "not":
            # Unknown (NULL) counts as false, so "not (stage eq won)" keeps empty
            # stages, exactly like "stage ne won".
            return sa.not_(sa.func.coalesce(self._node(items, f"{path}.not"), sa.false()))
        parts = [self._node(item, f"{path}.{kind}.{i}") for i, item in enumerate(items)]
        return sa.and_(*parts) if kind == "and" else sa.or_(*parts)

    def condition(self, path: Any, op: Any, raw: Any) -> sa.ColumnElement:
        """One ``{field, op, value}`` condition."""
        operator = OPERATORS.get(op) if isinstance(op, str) else None
        if operator is None:
            raise BadQuery(f"unknown operator {_show(op)}; known: {', '.join(OPERATORS)}")
        problem = filters.operand_problem(operator, raw)
        if problem:
            raise BadQuery(f"{_show(path)}: {problem}")
        r = self.resolve(path)
        if op not in r.ops:
            raise BadQuery(f"{r.path}: operator {op!r} does not apply to {r.kind}")
        col = r.column
        if op == "is_null":
            return self._empty(r) if raw else sa.not_(self._empty(r))
        if op in ("in", "nin"):
            values = [self.value(r, v) for v in raw]
            present = [v for v in values if v is not None]
            with_empty = len(present) < len(values)
            if op == "in":
                match = col.in_(present) if present else sa.false()
                return sa.or_(match, col.is_(None)) if with_empty else match
            if with_empty:  # "not one of these, and not empty"
                return col.not_in(present) if present else col.is_not(None)
            return sa.or_(col.not_in(present), col.is_(None))
        if op == "between":
            lo, hi = (self.value(r, v) for v in raw)
            if lo is None or hi is None:
                raise BadQuery(f"{r.path}: between needs two values, not null")
            return col.between(lo, hi)
        value = self.value(r, raw)
        if op in ("eq", "ne"):
            if value is None:
                return self._empty(r) if op == "eq" else sa.not_(self._empty(r))
            return col == value if op == "eq" else sa.or_(col != value, col.is_(None))
        if value is None:  # a variable that is empty ($user.id of the system)
            raise BadQuery(f"{r.path}: {op} needs a value; use is_null to find empty values")
        if op == "lt":
            return col < value
        if op == "lte":
            return col <= value
        if op == "gt":
            return col > value
        if op == "gte":
            return col >= value
        if r.multi:  # contains on a multi-choice field: the list holds this option
            return self._json_contains(col, value)
        if not isinstance(value, str) or not value:
            raise BadQuery(f"{r.path}: {op} needs a non-empty text")
        return self._text_match(col, op, value)

    def _text_match(self, col: sa.ColumnElement, op: str, text: str) -> sa.ColumnElement:
        if op == "icontains":
            return sa.func.lower(col).like(f"%{_like_escape(text.lower())}%", escape="\\")
        if self.dialect == "sqlite":
            # SQLite's LIKE ignores ASCII case; instr/substr are exact, like PostgreSQL's LIKE.
            if op == "contains":
                return sa.func.instr(col, text) > 0
            return sa.func.substr(col, 1, len(text)) == text
        pattern = _like_escape(text) + "%"
        return col.like("%" + pattern if op == "contains" else pattern, escape="\\")

    def _empty(self, r: Resolved) -> sa.ColumnElement:
        """True when the value is empty; never NULL itself, so it negates cleanly."""
        col = r.column
        pg = self.dialect == "postgresql"
        if r.multi:  # NULL, JSON null or []
            if pg:
                size = sa.case((sa.func.jsonb_typeof(col) == "array", sa.func.jsonb_array_length(col)), else_=0)
                return size == 0
            return sa.func.coalesce(sa.func.json_array_length(col), 0) == 0
        if isinstance(col.type, (JSONDoc, sa.JSON)):  # NULL or JSON null
            kind = sa.func.jsonb_typeof(col) if pg else sa.func.json_type(col)
            return sa.or_(col.is_(None), kind == "null")
        return col.is_(None)

    def _json_contains(self, col: sa.ColumnElement, value: str) -> sa.ColumnElement:
        if self.dialect == "postgresql":  # can use a GIN index
            return col.op("@>", is_comparison=True)(sa.cast(sa.literal(orjson.dumps([value]).decode()), postgresql.JSONB))
        each = sa.func.json_each(col).table_valued("value")
        return sa.exists(sa.select(1).select_from(each).where(each.c.value == value))


# -- sort keys ------------------------------------------------------------
def parse_sort(sort: Any) -> list[tuple[str, bool]]:
    """``["-amount", "account.name"]`` as ``[(path, descending)]``, ending with ``id``.

    ``id`` breaks ties in the direction of the last key (so the default
    ``-created_at`` walks the ``(created_at, id)`` index backwards); keys after ``id``
    could never matter and are dropped. What the paths name is checked by
    :func:`sort_keys`.
    """
    if isinstance(sort, (str, bytes)) or not isinstance(sort, Sequence):
        raise BadQuery("sort must be a list of field names, '-' first for descending")
    if len(sort) > MAX_SORT:
        raise BadQuery(f"sort takes at most {MAX_SORT} fields")
    out: list[tuple[str, bool]] = []
    for item in sort:
        if not isinstance(item, str) or not item:
            raise BadQuery("sort entries are field names, '-' first for descending")
        desc = item.startswith("-")
        name = item[1:] if item[0] in "-+" else item
        problem = filters.path_problem(name)
        if problem:
            raise BadQuery(f"sort: {problem}")
        if name in {n for n, _ in out}:
            raise BadQuery(f"sort names {name!r} twice")
        out.append((name, desc))
        if name == "id":
            return out
    out.append(("id", out[-1][1] if out else False))
    return out


def _sortable(app: CompiledApp, obj: CompiledObject, name: str, dialect: str) -> None:
    """Refuse a sort on a field whose type has no order (``FieldType.sortable``: long
    text, JSON, multi-choice) or a formula the database cannot compute."""
    f = obj.fields.get(name)
    if f is not None and not f.ftype.sortable:
        raise BadQuery(f"sort: a {f.defn.type} field cannot be sorted")
    _computable(app, obj, name, dialect, "sort")


def _title_key(app: CompiledApp, target: CompiledObject, dialect: str) -> str | None:
    """The field a lookup to ``target`` sorts by: its title field, when it has an order
    the database can compute (else the lookup sorts by id)."""
    name = target.defn.title_field
    f = target.fields.get(name) if name else None
    if f is None or not f.ftype.sortable or target.lookups.get(name):
        return None
    if f.column is None and sql_problems(app, target, dialect).get(name):
        return None
    return name


def sort_keys(app: CompiledApp, obj: CompiledObject, fc: FilterCompiler, sort: list[tuple[str, bool]],
              dialect: str) -> list[SortKey]:
    """The keys of ``sort`` (from :func:`parse_sort`), their joins added to ``fc``.

    A field or system column of ``obj`` is its column. A lookup sorts by the title of
    the record it names (ARCHITECTURE §5: users see titles, so "Account A→Z" is by name)
    through an outer join, when the actor may read the target; else by its id, as the
    titles it cannot read show ``#id``. A path (``account.industry``) sorts by the field
    it ends at, through readable lookups like a filter's path.
    """
    keys: list[SortKey] = []
    t = fc.source(obj)
    for i, (name, desc) in enumerate(sort):
        path = name
        if "." not in name:
            if name not in obj.fields and name not in _SYSTEM:
                raise BadQuery(f"sort: unknown field {name!r} of {obj.name}")
            _sortable(app, obj, name, dialect)
            target = obj.lookups.get(name)
            title = (_title_key(app, app.object(target), dialect) if target is not None and fc.can_read(target)
                     else None)
            if title is None:
                col = t.c[name]
                keys.append(SortKey(name, desc, col, _nullable(col), name, _value_field(app, obj, name, choices=False)))
                continue
            path = f"{name}.{title}"
        r = fc.resolve(path, purpose="sort")
        _sortable(app, r.object, r.name, dialect)
        keys.append(SortKey(name, desc, r.column, True, f"lw_sort{i}",
                            _value_field(app, r.object, r.name, choices=False), joined=True))
    return keys


def _cursor_values(keys: list[SortKey], raw_values: list) -> list[Any]:
    """A cursor's sort values parsed by their keys' types. :raises BadQuery:"""
    if len(raw_values) != len(keys):
        raise BadQuery(MALFORMED_CURSOR)
    out = []
    for k, raw in zip(keys, raw_values, strict=True):
        if raw is None:
            if not k.nullable:
                raise BadQuery(MALFORMED_CURSOR)
            out.append(None)
            continue
        try:
            out.append(_parse(k.parser, k.column, raw, k.name))
        except BadQuery:
            raise BadQuery(MALFORMED_CURSOR) from None
    return out


def _sources(app: CompiledApp, dialect: str, env: SqlEnv, readable: frozenset[str]) -> Source:
    """How one request reads each object: its table, or its table plus virtual formulas."""
    built: dict[tuple[str, str | None], sa.FromClause] = {}

    def source(obj: CompiledObject, alias: str | None = None) -> sa.FromClause:
        # One object per (object, alias) for the whole request: columns taken from one
        # must be read from that same one.
        key = (obj.name, alias)
        if key not in built:
            if not obj.rules.virtual_formulas:
                built[key] = obj.table if alias is None else obj.table.alias(alias)
            elif alias is None:
                built[key] = query_source(app, obj, dialect, env, readable)
            else:
                built[key] = formula_source(app, obj, dialect, env, alias, readable)
        return built[key]

    return source


#: Views open on every database Loomwork runs on, so a publish checks them for each.
DIALECTS = ("sqlite", "postgresql")


def view_errors(app: CompiledApp) -> list[tuple[str, str]]:
    """Problems of the package views of ``app`` that only compiled metadata can see:
    each view's filter and sort compiled for its object as its list would run them
    (operators the fields support, values their types accept, formulas the database
    can compute), for every dialect. Checked before a publish, so a view that
    publishes opens. :returns: ``(path, message)`` pairs naming the filter node.
    """
    errors: dict[tuple[str, str], None] = {}
    readable = frozenset(app.objects)
    for name, view in app.meta.doc.get("views", {}).items():
        if view.get("object") not in app.objects:
            continue
        obj = app.object(view["object"])
        for dialect in DIALECTS:
            source = _sources(app, dialect, SqlEnv(now=_CHECK_MOMENT), readable)
            fc = FilterCompiler(app, obj, None, lambda _name: True, dialect, source)
            if view.get("filter") is not None:
                base = f"views.{name}.filter"
                try:
                    fc.compile(view["filter"], base)
                except BadQuery as exc:
                    where, sep, message = exc.message.partition(": ")
                    at_node = sep and where.startswith(base)
                    errors[(where if at_node else (fc.at or base), message if at_node else exc.message)] = None
            if view.get("sort"):
                try:
                    sort_keys(app, obj, fc, parse_sort(view["sort"]), dialect)
                except BadQuery as exc:
                    errors[(f"views.{name}.sort", exc.message)] = None
    return list(errors)


# -- query-string form ----------------------------------------------------
RESERVED_PARAMS = frozenset({"filter", "sort", "fields", "limit", "cursor", "count", "search", "expand"})


def parse_query_string(args: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    """The compact form: ``amount__gte=1000&stage__in=new,won&account.name__icontains=acme``.

    Each ``path__op=value`` is one condition (``path=value`` means ``eq``; a field whose
    name holds ``__`` stays whole unless the last part is an operator); all are ANDed.
    Lists (``in``, ``nin``, ``between``) are comma-separated; ``is_null`` takes ``true``
    or ``false``; ``null`` is the empty value. Values stay text: the field's type parses
    them, so ``name=007`` compares text and ``employees=007`` the number 7.
    """
    conds = []
    for key, raw in args:
        if key in RESERVED_PARAMS:
            continue
        path, sep, op = key.rpartition("__")
        if not (sep and path and op in OPERATORS):
            path, op = key, "eq"
        value: Any
        if op in ("in", "nin", "between"):
            value = [None if v == "null" else v for v in raw.split(",")] if raw != "" else []
        elif op == "is_null":
            if raw not in ("true", "false"):
                raise BadQuery(f"{key}: is_null takes true or false")
            value = raw == "true"
        else:
            value = None if raw == "null" else raw
        conds.append({"field": path, "op": op, "value": value})
    if not conds:
        return None
    return conds[0] if len(conds) == 1 else {"and": conds}


# -- list queries ---------------------------------------------------------
@dataclass
class ListRequest:
    filter: Any = None
    sort: Sequence[str] = ()
    fields: Sequence[str] | None = None
    limit: int = DEFAULT_LIMIT
    cursor: str | None = None
    count: str = "none"
    search: str | None = None
    include_deleted: bool = False
    #: Only soft-deleted records (the recycle bin); permissions and row filters apply as ever.
    only_deleted: bool = False
    #: Lookup fields to give their target's title alongside (``account$title``).
    expand: Sequence[str] = ()


@dataclass
class ListResult:
    data: list[dict[str, Any]]
    next_cursor: str | None
    count: int | None = None
    #: How ``count`` was obtained: ``exact`` or ``estimate`` (SQLite always counts exactly).
    count_kind: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Plan:
    """A list request compiled to SQL, before the page is read."""

    source: sa.FromClause  # the object's source with the joins of filters and sort keys
    live: list[sa.ColumnElement]  # the soft-delete condition, unless deleted rows are wanted
    filters: list[sa.ColumnElement]  # filter, row filter, search
    keys: list[SortKey]
    columns: list[sa.Column]
    query_key: str
    cursor: list[Any] | None = None  # the sort values of the last row already read
    table: Any = None  # the object's table, or the subquery adding its virtual formulas
    count_source: Any = None  # the source with the filters' joins only

    @property
    def where(self) -> list[sa.ColumnElement]:
        """What ``count`` counts."""
        return [*self.live, *self.filters]

    @property
    def spec(self) -> list[str]:
        return [f"{'-' if k.desc else ''}{k.name}" for k in self.keys]


@dataclass
class _Arm:
    """One block of the page in sort order: its conditions (the first key's emptiness,
    the cursor) and its ``ORDER BY``."""

    conds: list[sa.ColumnElement]
    order: list[sa.ColumnElement]


#: SQLite probe: candidate rows read in index order per row wanted (see ``_probe``).
PROBE_FACTOR = 20


class QueryService:
    """Lists records of an object with filter, sort, search, keyset paging and counts."""

    def __init__(self, runtime, permissions) -> None:
        self.runtime = runtime
        self.permissions = permissions

    def list(self, ctx: Context, object_name: str, req: ListRequest) -> ListResult:
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            self.permissions.check(ctx, app, object_name, "read")
            obj = app.object(object_name)
            expanded = list(expand_fields(obj, req.expand))
            if expanded and req.fields is not None and isinstance(req.fields, Sequence):
                # The titles need the ids: expanded lookups are returned too.
                req = dataclasses.replace(req, fields=[*req.fields, *(n for n in expanded if n not in req.fields)])
            result = self._guarded(obj, lambda: self._list(ctx, conn, app, obj, req))
        if expanded:
            expand(self, ctx, app, obj, result.data, expanded)
        return result

    def expand(self, ctx: Context, object_name: str, records: list[dict[str, Any]], names: Sequence[str]) -> None:
        """Add ``<lookup>$title`` to ``records`` of ``object_name`` (as ``expand=`` does for
        a list): one query per target object. :raises BadQuery: for a name that is not a
        lookup field."""
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        expand(self, ctx, app, app.object(object_name), records, names)

    def rows_by_id(self, ctx: Context, object_name: str, ids: Sequence[int], fields: Sequence[str]) -> list[dict]:
        """The records ``ids`` (at most ``MAX_LIST``) of ``object_name`` the actor may read,
        with ``fields``, in no order: one query, whatever the object's default sort."""
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            self.permissions.check(ctx, app, object_name, "read")
            obj = app.object(object_name)
            req = ListRequest(filter={"field": "id", "op": "in", "value": list(ids)}, fields=list(fields),
                              sort=["id"], limit=max(1, len(ids)))

            def read() -> list[dict]:
                plan = self._plan(ctx, conn, app, obj, req)
                result = conn.execute(sa.select(*plan.columns).select_from(plan.source).where(*plan.where))
                keys = tuple(result.keys())
                return self._dump(ctx, conn, app, obj, plan, [dict(zip(keys, r, strict=True)) for r in result])

            return self._guarded(obj, read)

    @staticmethod
    def _guarded(obj: CompiledObject, read: Callable[[], Any]) -> Any:
        if not obj.rules.virtual_formulas:
            return read()
        try:
            return read()
        except (sa.exc.DataError, sa.exc.OperationalError) as exc:
            # A virtual formula the database cannot compute for some stored values
            # (an overflow, say): the database refuses the whole statement.
            if isinstance(exc, sa.exc.OperationalError) and "user-defined function" not in str(exc.orig):
                raise
            raise BadQuery(f"a formula of {obj.name} could not be computed for some record "
                           f"({str(exc.orig).splitlines()[0][:160]}); list without it (fields=...) "
                           f"or fix the record") from None

    def page_selects(self, ctx: Context, conn: sa.Connection, object_name: str, req: ListRequest) -> list[sa.Select]:
        """The SELECTs :meth:`list` may run for ``req``, in the order it tries them (for
        ``EXPLAIN`` and diagnostics)."""
        app = self.runtime.compiled(ctx.tenant, conn)
        self.permissions.check(ctx, app, object_name, "read")
        obj = app.object(object_name)
        plan = self._plan(ctx, conn, app, obj, req)
        return [stmt.limit(req.limit + 1) for tries in self._selects(app, obj, plan, conn.dialect.name, req.limit)
                for stmt in tries]

    def _list(self, ctx, conn, app, obj, req: ListRequest) -> ListResult:
        plan = self._plan(ctx, conn, app, obj, req)
        rows = self._read(conn, self._selects(app, obj, plan, conn.dialect.name, req.limit), req.limit + 1)
        more = len(rows) > req.limit
        rows = rows[: req.limit]
        data = self._dump(ctx, conn, app, obj, plan, rows)
        next_cursor = None
        if more:
            last = rows[-1]
            next_cursor = encode_cursor(plan.spec, plan.query_key, [wire(last[k.label]) for k in plan.keys])
        count, kind = None, "none"
        if req.count != "none":
            count, kind = self._count(conn, obj, plan, req.count)
        return ListResult(data, next_cursor, count, kind)

    def _dump(self, ctx, conn, app, obj: CompiledObject, plan: _Plan, rows: list[dict[str, Any]]) -> list[dict]:
        """Rows as the API sends them: the columns asked for, formulas Python computes."""
        wanted = {c.name for c in plan.columns}
        if any(k not in wanted for k in (rows[0] if rows else ())):  # sort columns read only for the cursor
            rows = [{k: v for k, v in r.items() if k in wanted} for r in rows]
        python_only = sql_problems(app, obj, conn.dialect.name) if obj.rules.virtual_formulas else {}
        if python_only and wanted & set(python_only):
            rows = [self._python_formulas(ctx, conn, app, obj, r, wanted) for r in rows]
        return [obj.dump(r) for r in rows]

    @staticmethod
    def _read(conn: sa.Connection, blocks: Iterable[list[sa.Select]], want: int) -> list[dict[str, Any]]:
        """Up to ``want`` rows from the blocks in order, the next block only while the
        page is short; each block from the first of its SELECTs that gives all the rows
        still wanted (a short probe proves nothing), else from its last."""
        rows: list[dict[str, Any]] = []
        for tries in blocks:
            need = want - len(rows)
            for i, stmt in enumerate(tries):
                result = conn.execute(stmt.limit(need))
                keys = tuple(result.keys())
                got = [dict(zip(keys, r, strict=True)) for r in result]  # Row._asdict is several times slower
                if len(got) == need or i == len(tries) - 1:
                    break
            if rows:  # a row whose sort value was emptied in between must not come twice
                ids = {r["id"] for r in rows}
                got = [r for r in got if r["id"] not in ids]
            rows.extend(got)
            if len(rows) >= want:
                break
        return rows

    # -- planning ---------------------------------------------------------
    def _plan(self, ctx, conn, app: CompiledApp, obj: CompiledObject, req: ListRequest) -> _Plan:
        if not isinstance(req.limit, int) or isinstance(req.limit, bool) or not 1 <= req.limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
        if req.count not in ("none", "exact", "estimate"):
            raise BadQuery("count must be exact, estimate or none")
        dialect = conn.dialect.name
        source = self._sources(app, ctx, dialect)
        fc = FilterCompiler(app, obj, ctx, lambda name: self.permissions.allowed(ctx, app, name, "read"), dialect,
                            source)
        t = source(obj)
        filters = []
        if req.filter is not None:
            filters.append(fc.compile(req.filter))
        row_filter = self.permissions.row_filter(ctx, app, obj.name)
        if row_filter is not None:
            filters.append(fc.compile(row_filter))
        if req.search is not None and req.search != "":
            filters.append(self._search(obj, t, req.search))
        count_source = fc.select_from()
        keys = sort_keys(app, obj, fc, parse_sort(req.sort or obj.defn.default_sort), dialect)
        try:
            key = orjson.dumps([obj.name, req.filter, req.search or "", bool(req.include_deleted)]
                               + (["only_deleted"] if req.only_deleted else []),
                               option=orjson.OPT_SORT_KEYS, default=str)
        except TypeError:
            raise BadQuery("filter must be plain JSON") from None
        live = [] if req.include_deleted else [t.c.deleted_at.is_(None)]
        if req.only_deleted:
            live = [t.c.deleted_at.is_not(None)]
        plan = _Plan(fc.select_from(), live, filters, keys, self._columns(obj, t, req.fields),
                     hashlib.sha1(key).hexdigest()[:12], table=t, count_source=count_source)
        if req.cursor:
            data = decode_cursor(req.cursor)
            if data["s"] != plan.spec:
                raise BadQuery("cursor belongs to another sort order; start again without a cursor")
            if data["q"] != plan.query_key:
                raise BadQuery("cursor belongs to another filter or search; start again without a cursor")
            plan.cursor = _cursor_values(keys, data["v"])
        return plan

    def _selects(self, app: CompiledApp, obj: CompiledObject, plan: _Plan, dialect: str,
                 limit: int) -> Iterator[list[sa.Select]]:
        """For each block of the page (see :meth:`_arms`), the SELECTs that read it, to
        try in turn; the caller adds ``LIMIT``."""
        t = plan.table
        names = {c.name for c in plan.columns}
        cols = plan.columns + [k.selected for k in plan.keys if k.label not in names]
        if len(cols) == len(t.columns):
            # Every column: select the table itself, whose cache key SQLAlchemy computes
            # far faster than that of a list of columns (it is part of every request).
            cols = [t]
        probe = (dialect == "sqlite" and bool(plan.filters)
                 and self._index_ordered(app, obj, plan.keys, live=bool(plan.live)))
        # A generator: the block after the first is only built when the page needs it.
        for arm in self._arms(obj, plan, dialect):
            full = (sa.select(*cols).select_from(plan.source).where(*plan.live, *plan.filters, *arm.conds)
                    .order_by(*arm.order))
            yield [self._probe(t, cols, plan, arm, limit), full] if probe else [full]

    def _arms(self, obj: CompiledObject, plan: _Plan, dialect: str) -> list[_Arm]:
        """The page as one or two blocks in sort order, rows after the cursor only.

        When the first sort key may be empty, its empty values form one block (last
        ascending, first descending), read on its own. Each block then has a plain
        ``ORDER BY`` that an index can serve on both dialects (SQLite indexes cannot give
        "NULL last"), a cursor inside the values becomes a range to start an index scan
        from (PostgreSQL cannot start one at "``> v`` or empty"), and the block after the
        cursor is only read when the first leaves the page short.
        """
        keys, cur = plan.keys, plan.cursor
        first, rest = keys[0], keys[1:]
        c0, desc = first.column, first.desc
        if not first.nullable:
            conds = [] if cur is None else [after(keys, cur)]
            return [_Arm(conds, order_by(keys, dialect))]
        values: list | None = [c0.is_not(None)]
        empties: list | None = [c0.is_(None)]
        if cur is not None and cur[0] is None:  # the cursor is inside the empties
            empties.append(after(rest, cur[1:]))
            values = values if desc else None
        elif cur is not None:
            values.append(after(keys, cur, not_null={first.label}))
            empties = None if desc else empties
        # The empties block keeps the (constant) first key in its ORDER BY, so an index
        # on (filter columns, first key, id) serves "... AND key IS NULL ORDER BY key, id".
        arms = [values, empties]
        if desc:
            arms.reverse()
        return [_Arm(conds, order_by(keys, dialect, not_null={first.label})) for conds in arms if conds is not None]

    @staticmethod
    def _probe(t: sa.Table, cols, plan: _Plan, arm: _Arm, limit: int) -> sa.Select:
        """SQLite: the block read from its first rows in index order only.

        SQLite plans without statistics and takes any indexed equality for a selective
        one, so ``stage = 'won'`` sorted by ``-created_at`` would read a sixth of the table
        through the stage index and sort it, instead of walking the sort index and
        stopping after a page. This reads ``PROBE_FACTOR`` candidates per wanted row in
        index order and filters those (the filters sit in a function, so no index is used
        for them). If it fills the page, the page is exactly the first matching rows (every
        row before the last one is a candidate); otherwise the block is read in full.
        """
        candidates = (sa.select(t.c.id).where(*plan.live, *arm.conds).order_by(*arm.order)
                      .limit(PROBE_FACTOR * (limit + 1)))
        return (sa.select(*cols).select_from(plan.source)
                .where(t.c.id.in_(candidates), sa.func.coalesce(sa.and_(*plan.filters), sa.false()))
                .order_by(*arm.order))

    @staticmethod
    def _index_ordered(app: CompiledApp, obj: CompiledObject, keys: list[SortKey], *, live: bool) -> bool:
        """Whether an index of ``obj`` lists rows in the order of ``keys`` on SQLite: keys
        of the object itself, same direction throughout, no NULL ordering to honour after
        the first key (its empty block is read apart), and an index on the keys before
        ``id`` (SQLite ends every index with the rowid, which is ``id``)."""
        names = tuple(k.name for k in keys)
        if any(k.joined for k in keys) or len({k.desc for k in keys}) != 1 or any(k.nullable for k in keys[1:]) \
                or any(n in obj.fields and obj.fields[n].column is None for n in names):
            return False
        keys = names[:-1]  # the sort always ends with id
        indexes = app.artefact(f"query.indexes:{obj.name}", lambda: [
            (spec.columns, spec.live_only) for spec in desired_indexes(obj.defn).values()])
        return not keys or any(
            cols[:len(keys)] == keys and (len(cols) == len(keys) or cols[len(keys)] == "id")
            and (live or not live_only) for cols, live_only in indexes)

    @staticmethod
    def _search(obj: CompiledObject, t: sa.FromClause, search: Any) -> sa.ColumnElement:
        if not isinstance(search, str) or len(search) > 200 or "\x00" in search:
            raise BadQuery("search must be a text of at most 200 characters, without NUL")
        cols = [t.c[n] for n in obj.defn.search_fields if n in obj.fields]
        if not cols:
            raise BadQuery(f"{obj.name} has no search fields")
        needle = f"%{_like_escape(search.lower())}%"
        return sa.or_(*(sa.func.lower(c).like(needle, escape="\\") for c in cols))

    @staticmethod
    def _columns(obj: CompiledObject, t: sa.FromClause, fields: Sequence[str] | None) -> list[sa.Column]:
        if fields is None:
            return [c for c in t.columns if c.name != "deleted_at"] + [t.c.deleted_at]
        if isinstance(fields, (str, bytes)) or not isinstance(fields, Sequence):
            raise BadQuery("fields must be a list of field names")
        names = ["id", "row_version"]
        for name in fields:
            if not isinstance(name, str) or (name not in obj.fields and name not in _SYSTEM):
                raise BadQuery(f"fields: unknown field {_show(name)} of {obj.name}")
            if name not in names:
                names.append(name)
        cols = [t.c[n] for n in names]
        # A formula computed in Python after the read needs its inputs read too.
        formulas = obj.rules.formulas
        extra = [dep for n in names if n in formulas and obj.fields[n].column is None
                 for o, dep in formulas[n].deps.fields if o == obj.name and dep not in names]
        return cols + [t.c[n] for n in dict.fromkeys(extra)]

    @staticmethod
    def _python_formulas(ctx, conn, app, obj, row: dict[str, Any], wanted: set[str]) -> dict[str, Any]:
        """A row with the formulas the database could not compute filled in by Python
        (their inputs were selected with the page; see :meth:`_columns`)."""
        full = virtual_values(app, obj, dict(row), ctx, conn)
        return {k: v for k, v in full.items() if k in wanted}

    # -- sources ----------------------------------------------------------
    def _sources(self, app: CompiledApp, ctx: Context, dialect: str) -> Source:
        """How this request reads each object: its table, or its table plus virtual formulas."""
        env = SqlEnv(user_id=ctx.actor.id, user_role=primary_role(ctx.actor.roles), now=ctx.now())
        return _sources(app, dialect, env, frozenset(self.permissions.readable_objects(ctx, app)))

    # -- counts -----------------------------------------------------------
    def _count(self, conn: sa.Connection, obj: CompiledObject, plan: _Plan, kind: str) -> tuple[int, str]:
        """All rows the filter matches (whatever page the cursor is on)."""
        t = obj.table
        if kind == "estimate" and conn.dialect.name == "postgresql":
            if not plan.filters:
                est = conn.execute(sa.text("SELECT reltuples::bigint FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                                   {"t": self._qualified(conn, t.name)}).scalar()
                if est is not None and est >= 0:
                    return int(est), "estimate"
            stmt = sa.select(t.c.id).select_from(plan.count_source).where(*plan.where)
            compiled = stmt.compile(
                dialect=conn.dialect, render_schema_translate=True,
                schema_translate_map=conn.get_execution_options().get("schema_translate_map"),
                compile_kwargs={"render_postcompile": True})
            doc = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar()
            doc = doc if isinstance(doc, list) else orjson.loads(doc)
            return max(0, int(doc[0]["Plan"]["Plan Rows"])), "estimate"
        stmt = sa.select(sa.func.count()).select_from(plan.count_source).where(*plan.where)
        return conn.execute(stmt).scalar_one(), "exact"

    @staticmethod
    def _qualified(conn, name: str) -> str:
        schema_map = conn.get_execution_options().get("schema_translate_map") or {}
        schema = schema_map.get(None)
        return f'"{schema}"."{name}"' if schema else f'"{name}"'


__all__ = ["ListRequest", "ListResult", "QueryService", "FilterCompiler", "parse_query_string", "field_ops",
           "parse_sort", "sort_keys", "view_errors", "DEFAULT_LIMIT", "MAX_LIMIT"]
