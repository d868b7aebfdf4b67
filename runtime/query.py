"""The query engine: one JSON filter AST, keyset pagination, counts and search.

The filter AST (ARCHITECTURE §5) is used by the API, and later by saved views, row
permissions and rules::

    {"and": [{"field": "stage", "op": "eq", "value": "won"},
             {"or": [{"field": "amount", "op": "gte", "value": "1000"},
                     {"not": {"field": "account.industry", "op": "in", "value": ["retail"]}}]}]}

Identifiers come only from metadata and every value is a bound parameter. NULL
semantics are written down in ``docs/api-guide.md``: ``ne``/``nin`` keep rows whose
value is empty (as people expect "stage is not won" to), ``eq null`` means
``is_null``, comparisons never match an empty value, and in sorting an empty value
counts as the largest (last ascending, first descending) on every dialect.
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import marshmallow as ma
import orjson
import sqlalchemy as sa

from loomwork.metadata.errors import BadQuery, LoomworkError
from .compiled import CompiledApp, CompiledObject
from .context import Context
from .fieldtypes import COMPARE_OPS, TEXT_OPS

OPERATORS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "contains", "icontains",
             "starts_with", "is_null", "between")
MAX_DEPTH = 6
MAX_CONDITIONS = 50
MAX_LIST = 500
MAX_PATH_HOPS = 3
DEFAULT_LIMIT, MAX_LIMIT = 50, 500

#: System columns: (filter ops, parser of a JSON/query-string value, nullable)
_SYSTEM = {
    "id": (COMPARE_OPS, "int", False),
    "created_at": (COMPARE_OPS, "datetime", False),
    "updated_at": (COMPARE_OPS, "datetime", False),
    "created_by": (COMPARE_OPS, "int", True),
    "updated_by": (COMPARE_OPS, "int", True),
    "owner_id": (COMPARE_OPS, "int", True),
    "row_version": (COMPARE_OPS, "int", False),
}
UNSORTABLE_TYPES = frozenset({"json", "multi_choice", "long_text"})


@dataclass(frozen=True)
class Resolved:
    """A field path resolved to a column (possibly through joined lookups)."""

    path: str
    column: sa.ColumnElement
    object: CompiledObject
    name: str

    @property
    def fdef(self):
        f = self.object.fields.get(self.name)
        return f.defn if f else None

    @property
    def type_name(self) -> str:
        f = self.object.fields.get(self.name)
        return f.defn.type if f else f"system:{self.name}"


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class FilterCompiler:
    """Compiles a filter AST against one object, collecting the joins it needs."""

    def __init__(self, app: CompiledApp, obj: CompiledObject, ctx: Context, can_read) -> None:
        self.app, self.obj, self.ctx, self.can_read = app, obj, ctx, can_read
        self.joins: dict[str, tuple[sa.Table, sa.ColumnElement]] = {}
        self.conditions = 0

    # -- paths ------------------------------------------------------------
    def resolve(self, path: Any, *, purpose: str = "filter") -> Resolved:
        if not isinstance(path, str) or not path or len(path) > 200:
            raise BadQuery(f"{purpose}: field must be a field name or a dotted path")
        parts = path.split(".")
        if len(parts) - 1 > MAX_PATH_HOPS:
            raise BadQuery(f"{purpose}: path {path!r} has more than {MAX_PATH_HOPS} hops")
        obj, table, prefix = self.obj, self.obj.table, ""
        for hop in parts[:-1]:
            f = obj.fields.get(hop)
            if f is None or f.defn.type != "lookup":
                raise BadQuery(f"{purpose}: {hop!r} in {path!r} is not a lookup field of {obj.name}")
            target = self.app.object(f.defn.prop("target"))
            if not self.can_read(target.name):
                raise BadQuery(f"{purpose}: unknown field {path!r}")
            prefix = f"{prefix}.{hop}" if prefix else hop
            if prefix not in self.joins:
                alias = target.table.alias(f"j{len(self.joins) + 1}")
                on = sa.and_(alias.c.id == table.c[hop], alias.c.deleted_at.is_(None))
                self.joins[prefix] = (alias, on)
            table, obj = self.joins[prefix][0], target
        name = parts[-1]
        if name not in obj.fields and name not in _SYSTEM:
            raise BadQuery(f"{purpose}: unknown field {path!r} of {obj.name}")
        return Resolved(path, table.c[name], obj, name)

    # -- values -----------------------------------------------------------
    def value(self, r: Resolved, raw: Any, op: str) -> Any:
        if isinstance(raw, str) and raw.startswith("$"):
            if raw.startswith("$$"):
                raw = raw[1:]
            elif raw == "$user.id":
                return self.ctx.actor.id
            elif raw == "$now":
                return self.ctx.now()
            elif raw == "$today":
                return self.ctx.now().date()
            else:
                raise BadQuery(f"unknown variable {raw!r} (known: $user.id, $now, $today)")
        if r.name in _SYSTEM:
            kind = _SYSTEM[r.name][1]
            try:
                if kind == "int":
                    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                        raise ValueError
                    return int(raw)
                value = dt.datetime.fromisoformat(raw) if isinstance(raw, str) else None
                if value is None or value.tzinfo is None:
                    raise ValueError
                return value
            except ValueError:
                raise BadQuery(f"{r.path}: {raw!r} is not a valid {'integer' if kind == 'int' else 'datetime with offset'}") from None
        f = r.object.fields[r.name]
        if op in ("contains", "icontains", "starts_with") and f.defn.type != "multi_choice":
            if not isinstance(raw, str) or not raw:
                raise BadQuery(f"{r.path}: {op} needs a non-empty text")
            return raw
        ma_field = r.object.schema.fields[r.name]
        if f.defn.type == "multi_choice":
            ma_field = ma_field.inner
        try:
            return ma_field.deserialize(raw)
        except ma.ValidationError as exc:
            msgs = exc.messages if isinstance(exc.messages, list) else [str(exc.messages)]
            raise BadQuery(f"{r.path}: {raw!r} is not valid here ({str(msgs[0]).rstrip('.')})") from None

    # -- conditions -------------------------------------------------------
    def compile(self, node: Any, depth: int = 0) -> sa.ColumnElement:
        if depth > MAX_DEPTH:
            raise BadQuery(f"filter is nested deeper than {MAX_DEPTH} levels")
        if not isinstance(node, Mapping) or not node:
            raise BadQuery("each filter node must be an object: {and|or: [...]}, {not: ...} or {field, op, value}")
        keys = set(node)
        if keys == {"and"} or keys == {"or"}:
            (kind, items), = node.items()
            if not isinstance(items, list) or not items:
                raise BadQuery(f"{kind!r} needs a non-empty list of conditions")
            parts = [self.compile(i, depth + 1) for i in items]
            return sa.and_(*parts) if kind == "and" else sa.or_(*parts)
        if keys == {"not"}:
            # An unknown (NULL) inner result counts as false, so "not (stage eq won)"
            # keeps empty stages, exactly like "stage ne won".
            return sa.not_(sa.func.coalesce(self.compile(node["not"], depth + 1), sa.false()))
        if "field" in keys and "op" in keys and keys <= {"field", "op", "value"}:
            return self.condition(node["field"], node["op"], node.get("value"))
        raise BadQuery(f"unrecognised filter node with keys {sorted(keys)}")

    def condition(self, path: Any, op: Any, raw: Any) -> sa.ColumnElement:
        self.conditions += 1
        if self.conditions > MAX_CONDITIONS:
            raise BadQuery(f"filter has more than {MAX_CONDITIONS} conditions")
        r = self.resolve(path)
        if op not in OPERATORS:
            raise BadQuery(f"unknown operator {op!r}; known: {', '.join(OPERATORS)}")
        allowed = _SYSTEM[r.name][0] if r.name in _SYSTEM else r.object.fields[r.name].ftype.filter_ops
        if op not in allowed:
            raise BadQuery(f"{r.path}: operator {op!r} does not apply to a {r.type_name} field")
        col = r.column
        if op == "is_null":
            if not isinstance(raw, bool):
                raise BadQuery(f"{r.path}: is_null needs true or false")
            if r.type_name == "multi_choice":
                empty = sa.or_(col.is_(None), sa.func.coalesce(self._json_len(col), 0) == 0)
                return empty if raw else sa.not_(empty)
            return col.is_(None) if raw else col.is_not(None)
        if op in ("eq", "ne") and raw is None:
            return col.is_(None) if op == "eq" else col.is_not(None)
        if op in ("in", "nin"):
            if not isinstance(raw, list) or not raw or len(raw) > MAX_LIST:
                raise BadQuery(f"{r.path}: {op} needs a list of 1 to {MAX_LIST} values")
            values = [self.value(r, v, op) for v in raw]
            return col.in_(values) if op == "in" else sa.or_(col.not_in(values), col.is_(None))
        if op == "between":
            if not isinstance(raw, list) or len(raw) != 2:
                raise BadQuery(f"{r.path}: between needs [low, high]")
            lo, hi = (self.value(r, v, op) for v in raw)
            return col.between(lo, hi)
        if r.type_name == "multi_choice":  # contains: the list holds this option
            return self._json_contains(col, self.value(r, raw, op))
        value = self.value(r, raw, op)
        if op == "eq":
            return col == value
        if op == "ne":
            return sa.or_(col != value, col.is_(None))
        if op == "lt":
            return col < value
        if op == "lte":
            return col <= value
        if op == "gt":
            return col > value
        if op == "gte":
            return col >= value
        if op == "contains":
            return col.like(f"%{_like_escape(value)}%", escape="\\")
        if op == "icontains":
            return sa.func.lower(col).like(f"%{_like_escape(value.lower())}%", escape="\\")
        if op == "starts_with":
            return col.like(f"{_like_escape(value)}%", escape="\\")
        raise BadQuery(f"operator {op!r} is not supported")  # pragma: no cover - guarded above

    def _json_contains(self, col: sa.ColumnElement, value: str) -> sa.ColumnElement:
        if self.app_dialect == "postgresql":
            from sqlalchemy.dialects import postgresql

            return col.op("@>")(sa.cast(sa.literal(orjson.dumps([value]).decode()), postgresql.JSONB))
        each = sa.func.json_each(col).table_valued("value")
        return sa.exists(sa.select(1).select_from(each).where(each.c.value == value))

    def _json_len(self, col: sa.ColumnElement) -> sa.ColumnElement:
        if self.app_dialect == "postgresql":
            return sa.func.jsonb_array_length(col)
        return sa.func.json_array_length(col)

    app_dialect = "sqlite"

    def select_from(self) -> sa.FromClause:
        src: sa.FromClause = self.obj.table
        for alias, on in self.joins.values():
            src = src.outerjoin(alias, on)
        return src


# -- query-string form ----------------------------------------------------
RESERVED_PARAMS = frozenset({"filter", "sort", "fields", "limit", "cursor", "count", "search"})


def parse_query_string(args: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    """The compact form: ``amount__gte=1000&stage__in=new,won&account.name__icontains=acme``.

    Each ``path__op=value`` is one condition (``path=value`` means ``eq``); all are
    ANDed. Lists (``in``, ``nin``, ``between``) are comma-separated; ``is_null`` takes
    ``true`` or ``false``; ``null`` is the empty value.
    """
    conds = []
    for key, raw in args:
        if key in RESERVED_PARAMS:
            continue
        path, _, op = key.partition("__")
        op = op or "eq"
        value: Any = raw
        if op in ("in", "nin", "between"):
            value = [_scalar(v) for v in raw.split(",")] if raw != "" else []
        elif op == "is_null":
            if raw not in ("true", "false"):
                raise BadQuery(f"{key}: is_null takes true or false")
            value = raw == "true"
        else:
            value = _scalar(raw)
        conds.append({"field": path, "op": op, "value": value})
    if not conds:
        return None
    return conds[0] if len(conds) == 1 else {"and": conds}


def _scalar(raw: str) -> Any:
    if raw == "null":
        return None
    if raw in ("true", "false"):
        return raw == "true"
    if raw.lstrip("-").isdigit() and len(raw) < 19:
        return int(raw)
    return raw


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


@dataclass
class ListResult:
    data: list[dict[str, Any]]
    next_cursor: str | None
    count: int | None = None
    count_kind: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)


def _encode_cursor(payload: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def _decode_cursor(text: str) -> dict[str, Any]:
    try:
        if len(text) > 4000:
            raise ValueError
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if not isinstance(data, dict) or not isinstance(data.get("v"), list):
            raise ValueError
        return data
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadQuery("cursor is malformed; use next_cursor from a previous page unchanged") from None


def _wire(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


class QueryService:
    """Lists records of an object with filter, sort, search, keyset paging and counts."""

    def __init__(self, runtime, permissions) -> None:
        self.runtime = runtime
        self.permissions = permissions

    def list(self, ctx: Context, object_name: str, req: ListRequest) -> ListResult:
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn)
            self.permissions.check(ctx, app, object_name, "read")
            obj = app.object(object_name)
            return self._list(ctx, conn, app, obj, req)

    def _list(self, ctx, conn, app, obj, req: ListRequest) -> ListResult:
        if not isinstance(req.limit, int) or isinstance(req.limit, bool) or not 1 <= req.limit <= MAX_LIMIT:
            raise BadQuery(f"limit must be between 1 and {MAX_LIMIT}")
        if req.count not in ("none", "exact", "estimate"):
            raise BadQuery("count must be exact, estimate or none")
        fc = FilterCompiler(app, obj, ctx, lambda name: self.permissions.allowed(ctx, app, name, "read"))
        fc.app_dialect = conn.dialect.name
        t = obj.table
        where = [] if req.include_deleted else [t.c.deleted_at.is_(None)]
        if req.filter is not None:
            where.append(fc.compile(req.filter))
        row_filter = self.permissions.row_filter(ctx, app, obj.name)
        if row_filter is not None:
            where.append(fc.compile(row_filter))
        if req.search:
            if not isinstance(req.search, str) or len(req.search) > 200:
                raise BadQuery("search must be a text of at most 200 characters")
            cols = [t.c[n] for n in obj.defn.search_fields if n in obj.fields]
            if not cols:
                raise BadQuery(f"{obj.name} has no search fields")
            needle = f"%{_like_escape(req.search.lower())}%"
            where.append(sa.or_(*(sa.func.lower(c).like(needle, escape="\\") for c in cols)))

        sort = self._sort(obj, req.sort or obj.defn.default_sort)
        columns = self._columns(obj, req.fields)
        source = fc.select_from()
        query_key = hashlib.sha1(orjson.dumps([req.filter, req.search or ""], default=str)).hexdigest()[:12]
        spec = [f"{'-' if desc else ''}{name}" for name, desc in sort]
        if req.cursor:
            data = _decode_cursor(req.cursor)
            if data.get("s") != spec:
                raise BadQuery("cursor belongs to another sort order; start again without a cursor")
            if data.get("q") != query_key:
                raise BadQuery("cursor belongs to another filter or search; start again without a cursor")
            values = self._cursor_values(obj, sort, data["v"])
            where.append(self._after(obj, sort, values))

        order = []
        for name, desc in sort:
            c = t.c[name]
            if name in ("id", "created_at", "updated_at", "row_version"):
                order.append(c.desc() if desc else c.asc())
            else:
                order.append(c.desc().nulls_first() if desc else c.asc().nulls_last())
        sort_names = [n for n, _ in sort]
        select_cols = columns + [t.c[n] for n in sort_names if n not in {c.name for c in columns}]
        stmt = sa.select(*select_cols).select_from(source).where(*where).order_by(*order).limit(req.limit + 1)
        rows = conn.execute(stmt).mappings().all()
        more = len(rows) > req.limit
        rows = rows[: req.limit]
        wanted = {c.name for c in columns}
        data_out = [obj.dump({k: v for k, v in r.items() if k in wanted}) for r in rows]
        next_cursor = None
        if more and rows:
            last = rows[-1]
            next_cursor = _encode_cursor({"s": spec, "q": query_key, "v": [_wire(last[n]) for n in sort_names]})
        count = None
        if req.count != "none":
            count = self._count(conn, t, source, where, req.count, bool(req.filter or req.search or fc.joins))
        return ListResult(data_out, next_cursor, count, req.count)

    def _sort(self, obj: CompiledObject, sort: Sequence[str]) -> list[tuple[str, bool]]:
        if isinstance(sort, str) or len(sort) > 4:
            raise BadQuery("sort takes at most 4 fields")
        out: list[tuple[str, bool]] = []
        for item in sort:
            if not isinstance(item, str):
                raise BadQuery("sort entries are field names, '-' first for descending")
            desc = item.startswith("-")
            name = item.lstrip("-+ ")
            if name in {n for n, _ in out}:
                continue
            f = obj.fields.get(name)
            if f is None and name not in _SYSTEM:
                raise BadQuery(f"sort: unknown field {name!r}")
            if f is not None and f.defn.type in UNSORTABLE_TYPES:
                raise BadQuery(f"sort: a {f.defn.type} field cannot be sorted")
            out.append((name, desc))
        if "id" not in {n for n, _ in out}:
            out.append(("id", out[-1][1] if out else False))
        return out

    def _columns(self, obj: CompiledObject, fields: Sequence[str] | None) -> list[sa.Column]:
        t = obj.table
        if fields is None:
            return [c for c in t.columns if c.name != "deleted_at"] + [t.c.deleted_at]
        names = ["id", "row_version"]
        for name in fields:
            if name not in obj.fields and name not in _SYSTEM:
                raise BadQuery(f"fields: unknown field {name!r}")
            if name not in names:
                names.append(name)
        return [t.c[n] for n in names]

    def _cursor_values(self, obj: CompiledObject, sort, raw_values: list) -> list[Any]:
        if len(raw_values) != len(sort):
            raise BadQuery("cursor is malformed; use next_cursor from a previous page unchanged")
        out = []
        for (name, _), raw in zip(sort, raw_values, strict=True):
            if raw is None:
                out.append(None)
                continue
            try:
                if name in _SYSTEM:
                    kind = _SYSTEM[name][1]
                    out.append(int(raw) if kind == "int" else dt.datetime.fromisoformat(raw))
                else:
                    f = obj.fields[name]
                    out.append(obj.schema.fields[name].deserialize(raw) if f.defn.type != "autonumber" else str(raw))
            except (ValueError, TypeError, ma.ValidationError, LoomworkError):
                raise BadQuery("cursor is malformed; use next_cursor from a previous page unchanged") from None
        return out

    def _after(self, obj: CompiledObject, sort, values) -> sa.ColumnElement:
        """Rows strictly after the cursor position in the sort order (NULL counts as largest)."""
        t = obj.table
        not_null = {"id", "created_at", "updated_at", "row_version"}
        directions = {desc for _, desc in sort}
        if all(n in not_null for n, _ in sort) and len(directions) == 1 and None not in values:
            # Row-value comparison: both dialects walk the sort index with it.
            left = sa.tuple_(*(t.c[n] for n, _ in sort))
            right = sa.tuple_(*values)
            return left < right if directions == {True} else left > right

        def after(i: int) -> sa.ColumnElement:
            name, desc = sort[i]
            c, v = t.c[name], values[i]
            if i == len(sort) - 1:
                return c < v if desc else c > v
            if v is None:
                beyond = c.is_not(None) if desc else sa.false()
                equal = c.is_(None)
            else:
                beyond = (c < v) if desc else sa.or_(c > v, c.is_(None))
                equal = c == v
            return sa.or_(beyond, sa.and_(equal, after(i + 1)))

        return after(0)

    def _count(self, conn, t, source, where, kind: str, filtered: bool) -> int:
        if kind == "estimate" and conn.dialect.name == "postgresql":
            if not filtered:
                est = conn.execute(sa.text("SELECT reltuples::bigint FROM pg_class WHERE oid = CAST(:t AS regclass)"),
                                   {"t": self._qualified(conn, t.name)}).scalar()
                if est is not None and est >= 0:
                    return int(est)
            stmt = sa.select(t.c.id).select_from(source).where(*where)
            compiled = stmt.compile(
                dialect=conn.dialect, render_schema_translate=True,
                schema_translate_map=conn.get_execution_options().get("schema_translate_map"))
            plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + str(compiled), compiled.params).scalar()
            plan = plan if isinstance(plan, list) else orjson.loads(plan)
            return int(plan[0]["Plan"]["Plan Rows"])
        return conn.execute(sa.select(sa.func.count()).select_from(source).where(*where)).scalar_one()

    @staticmethod
    def _qualified(conn, name: str) -> str:
        schema_map = conn.get_execution_options().get("schema_translate_map") or {}
        schema = schema_map.get(None)
        return f'"{schema}"."{name}"' if schema else f'"{name}"'


__all__ = ["ListRequest", "ListResult", "QueryService", "FilterCompiler", "parse_query_string", "TEXT_OPS"]
