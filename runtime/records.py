"""The record service: the only write path for object data.

The API, forms, imports, jobs, the CLI and (later) script hooks all call it, so every
rule is enforced once, on the server. A write is: permission check, deserialise and
type-check (the object's marshmallow schema), defaults, required and value checks,
lookup integrity, autonumbers, then the row and its field history in one transaction
with an optimistic ``row_version`` check.
"""
from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import marshmallow as ma
import orjson
import sqlalchemy as sa

from loomwork.metadata import store
from loomwork.metadata.errors import ConflictError, NotFound, ValidationError
from loomwork.metadata.model import SYSTEM_COLUMNS

from . import rollups, systables
from .approvals import has_processes
from .compiled import READ_MAX_AGE, CompiledApp, CompiledObject, Runtime
from .context import Context
from .evaluation import apply_rules, coerce, make_env, virtual_values
from .expr import EvaluationError
from .fieldtypes import AutonumberType
from .forms import FieldStates, field_states
from .permissions import Permissions
from .tenancy import json_dumps

_SYSTEM = frozenset(SYSTEM_COLUMNS)

#: Bulk requests larger than this are refused rather than held in one transaction.
MAX_BULK = 1000


def _ma_errors(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if isinstance(messages, Mapping):
        for key, val in messages.items():
            path = f"{prefix}{key}" if key != "_schema" else prefix.rstrip(".") or "_schema"
            if isinstance(val, Mapping):
                out.update(_ma_errors(val, f"{path}."))
            else:
                msgs = val if isinstance(val, list) else [val]
                out.setdefault(path, []).extend(
                    "unknown field" if m == "Unknown field." else str(m).rstrip(".") for m in msgs)
    return out


F = TypeVar("F", bound=Callable[..., Any])


def _reserve_ids(conn: sa.Connection, table: sa.Table, n: int) -> list[int]:
    """``n`` new ids of ``table`` from its PostgreSQL sequence, ascending."""
    schema = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    qualified = f'"{schema}"."{table.name}"' if schema else f'"{table.name}"'
    seq = conn.execute(sa.select(sa.func.pg_get_serial_sequence(qualified, "id"))).scalar_one()
    return sorted(conn.execute(sa.select(sa.func.nextval(seq)).select_from(sa.func.generate_series(1, n))).scalars())


def _savepoint(conn: sa.Connection, obj: CompiledObject) -> Any:
    """A savepoint around a write that may hit a unique index; nothing otherwise."""
    return conn.begin_nested() if obj.has_unique else contextlib.nullcontext()


def _metadata_race(method: F) -> F:
    """Explain a database error caused by a publish that landed mid-write.

    A write compiles against the version it read at its start; on PostgreSQL a publish
    that renames or drops a column can commit before the write's statement runs. The
    statement then fails; if the head version moved meanwhile, that is a conflict the
    caller can retry, not a server error.
    """

    @functools.wraps(method)
    def wrapper(self: RecordService, ctx: Context, *args: Any, **kwargs: Any) -> Any:
        seen = self.runtime.cached_version(ctx.tenant)
        try:
            return method(self, ctx, *args, **kwargs)
        except sa.exc.DBAPIError as exc:
            if isinstance(exc, sa.exc.IntegrityError) or seen is None:
                raise
            with ctx.tenant.read() as conn:
                moved = store.head(conn) != seen
            if moved:
                raise ConflictError("the object's definition changed while saving; try again") from exc
            raise

    return wrapper  # type: ignore[return-value]


class RecordService:
    def __init__(self, runtime: Runtime, permissions: Permissions | None = None) -> None:
        self.runtime = runtime
        self.permissions = permissions or Permissions()
        #: The script hooks (:class:`~loomwork.runtime.scripts.ScriptService`), when wired.
        self.scripts: Any = None
        #: The approval engine (record locks, automatic submission), when wired.
        self.approvals: Any = None
        #: Status workflows (:class:`~loomwork.runtime.workflows.WorkflowService`), when wired.
        self.workflows: Any = None

    def _script_logs(self, ctx: Context) -> Any:
        """Around a write transaction: scripts run inside it are logged when it ends."""
        return self.scripts.logs_after(ctx) if self.scripts is not None else contextlib.nullcontext()

    def _hooked(self, ctx: Context, object_name: str, event: str, op: str) -> bool:
        """Whether a write of ``object_name`` runs ``event`` scripts (checked before the
        write's transaction opens: scripts run outside it). The caller must be allowed
        ``op`` before any script sees the record."""
        if self.scripts is None:
            return False
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        if object_name not in app.objects or not self.scripts.triggered(ctx, app, object_name, event):
            return False
        self.permissions.check(ctx, app, object_name, op)
        return True

    # -- reads ------------------------------------------------------------
    def get(self, ctx: Context, object_name: str, record_id: Any) -> dict[str, Any]:
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            self.permissions.check(ctx, app, object_name, "read")
            obj = app.object(object_name)
            row = self._row(conn, obj, record_id)
            return obj.dump(virtual_values(app, obj, dict(row), ctx, conn))

    def history(self, ctx: Context, object_name: str, record_id: Any, limit: int = 200) -> list[dict[str, Any]]:
        h = systables.history
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            self.permissions.check(ctx, app, object_name, "read")
            obj = app.object(object_name)
            self._row(conn, obj, record_id, include_deleted=True)
            rows = conn.execute(sa.select(h).where(h.c.object == object_name, h.c.record_id == int(record_id))
                                .order_by(h.c.id.desc()).limit(limit))
            return [{"action": r.action, "field": r.field,
                     "old": orjson.loads(r.old) if r.old is not None else None,
                     "new": orjson.loads(r.new) if r.new is not None else None,
                     "changed_by": r.changed_by, "changed_at": r.changed_at.isoformat()} for r in rows]

    def recent(self, ctx: Context, limit: int = 8) -> list[tuple[str, int, Any]]:
        """``(object, id, when)`` of the records the actor changed last, newest first,
        among objects they may still read (a start page's "recently changed")."""
        h = systables.history
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        readable = [n for n in app.objects if self.permissions.allowed(ctx, app, n, "read")]
        if ctx.actor.id is None or not readable:
            return []
        last = sa.func.max(h.c.id).label("last")
        with ctx.tenant.read() as conn:
            # A few more than asked for: some may have been deleted since (by anyone).
            rows = conn.execute(
                sa.select(h.c.object, h.c.record_id, sa.func.max(h.c.changed_at), last)
                .where(h.c.changed_by == ctx.actor.id, h.c.object.in_(readable), h.c.action != "delete")
                .group_by(h.c.object, h.c.record_id).order_by(last.desc()).limit(limit * 3)).all()
            live: set[tuple[str, int]] = set()
            for name in {r[0] for r in rows}:
                t = app.object(name).table
                ids = [r[1] for r in rows if r[0] == name]
                live.update((name, i) for i in conn.execute(
                    sa.select(t.c.id).where(t.c.id.in_(ids), t.c.deleted_at.is_(None))).scalars())
            return [(r[0], r[1], r[2]) for r in rows if (r[0], r[1]) in live][:limit]

    def for_form(self, ctx: Context, object_name: str, record_id: Any | None) -> tuple[dict[str, Any], FieldStates]:
        """A record (or, for ``None``, the literal defaults of a new one) with how its
        conditions come out, for a record page or an edit form."""
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            self.permissions.check(ctx, app, object_name, "read" if record_id is not None else "create")
            obj = app.object(object_name)
            if record_id is None:
                row = dict(obj.literal_defaults)
            else:
                row = virtual_values(app, obj, dict(self._row(conn, obj, record_id)), ctx, conn)
            return obj.dump(row), field_states(ctx, conn, app, obj, row)

    @staticmethod
    def _id(record_id: Any) -> int:
        try:
            value = int(record_id)
        except (TypeError, ValueError):
            raise NotFound(f"no record {record_id!r}") from None
        if value < 1 or value > 2**63 - 1:
            raise NotFound(f"no record {record_id!r}")
        return value

    def _row(self, conn: sa.Connection, obj: CompiledObject, record_id: Any, *, include_deleted: bool = False,
             lock: bool = False) -> Mapping[str, Any]:
        t = obj.table
        stmt = sa.select(t).where(t.c.id == self._id(record_id))
        if not include_deleted:
            stmt = stmt.where(t.c.deleted_at.is_(None))
        if lock and conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).mappings().first()
        if row is None:
            raise NotFound(f"no {obj.name} record {record_id}")
        return row

    # -- validation -------------------------------------------------------
    def _load(self, ctx: Context, obj: CompiledObject, data: Any, *, old: Mapping[str, Any] | None,
              prefix: str = "") -> dict[str, Any]:
        """Validate input for a create (``old is None``) or an update; return column values."""
        if not isinstance(data, Mapping):
            raise ValidationError({prefix.rstrip(".") or "_schema": ["must be a JSON object of field values"]})
        errors: dict[str, list[str]] = {}
        read_only: list[str] = []
        values = {}
        admin = ctx.actor.is_admin
        inputs = obj.inputs
        # Field by field rather than Schema.load: the same checks, without the schema's
        # per-call machinery (bulk writes pay it per record).
        for key, value in data.items():
            entry = inputs.get(key)
            if entry is None:
                if key != "row_version":
                    message = "is set by the system" if key in _SYSTEM else "unknown field"
                    errors.setdefault(f"{prefix}{key}", []).append(message)
                continue
            refusal, parser, locked = entry
            if refusal is None and locked and not admin:
                if old is None:
                    refusal = "is read-only"
                else:
                    read_only.append(key)  # allowed only unchanged, compared once typed ("1.0" == 1.00)
            if refusal is not None:
                errors.setdefault(f"{prefix}{key}", []).append(refusal)
                continue
            try:
                values[key] = parser.deserialize(value)
            except ma.ValidationError as exc:
                errors.update(_ma_errors({key: exc.messages}, prefix))
        for key in read_only:
            if key in values and values[key] != (old or {}).get(key):
                errors.setdefault(f"{prefix}{key}", []).append("is read-only")
                del values[key]
        if old is None:
            for name, default in obj.literal_defaults.items():
                if name not in values:
                    values[name] = copy.copy(default)
        for name in obj.plainly_required:
            # A value refused above is not also "missing": one message says what is wrong.
            if (name in values or old is None) and values.get(name) in (None, "", [], {}) \
                    and f"{prefix}{name}" not in errors:
                errors.setdefault(f"{prefix}{name}", []).append("is required")
        for name, f in obj.value_checks.items():
            value = values.get(name)
            if value is None:
                continue
            msg = f.ftype.check_value(f.defn, value, (old or {}).get(name))
            if msg:
                errors.setdefault(f"{prefix}{name}", []).append(msg)
        if errors:
            raise ValidationError(errors)
        return values

    def _check_lookups(self, ctx: Context, conn: sa.Connection, app: CompiledApp, obj: CompiledObject,
                       values: Mapping[str, Any], prefix: str = "") -> None:
        errors = {}
        for name, value in values.items():
            f = obj.fields[name]
            if f.defn.type != "lookup" or value is None:
                continue
            target = app.object(f.defn.prop("target"))
            t = target.table
            found = conn.execute(sa.select(t.c.id).where(t.c.id == value, t.c.deleted_at.is_(None))).first()
            if found is None or not self.permissions.allowed(ctx, app, target.name, "read"):
                errors[f"{prefix}{name}"] = [f"no {target.name} record {value}"]
        if errors:
            raise ValidationError(errors)

    def _autonumber(self, ctx: Context, conn: sa.Connection, obj: CompiledObject, values: dict[str, Any]) -> None:
        a = systables.autonumbers
        now = ctx.now()
        for name, f in obj.fields.items():
            if not isinstance(f.ftype, AutonumberType):
                continue

            def next_value(prefix: str, _field: str = name) -> int:
                key = (a.c.object == obj.name, a.c.field == _field, a.c.prefix == prefix)
                # The UPDATE takes the row lock (PostgreSQL) or runs under SQLite's write
                # lock, so concurrent creates queue here; a rollback returns the number.
                res = conn.execute(a.update().where(*key).values(value=a.c.value + 1).returning(a.c.value))
                got = res.scalar_one_or_none()
                if got is not None:
                    return got
                try:
                    with conn.begin_nested():
                        conn.execute(a.insert().values(object=obj.name, field=_field, prefix=prefix, value=1))
                    return 1
                except sa.exc.IntegrityError:
                    return conn.execute(a.update().where(*key).values(value=a.c.value + 1)
                                        .returning(a.c.value)).scalar_one()

            values[name] = AutonumberType.render(f.defn.prop("pattern"), now, next_value)

    def _unique_errors(self, conn: sa.Connection, obj: CompiledObject, values: Mapping[str, Any],
                       exclude_id: int | None, prefix: str = "") -> dict[str, list[str]]:
        """Which unique fields collide with a live record (to explain an IntegrityError)."""
        t = obj.table
        errors = {}
        for name, f in obj.fields.items():
            if f.defn.unique and values.get(name) is not None:
                stmt = sa.select(t.c.id).where(t.c[name] == values[name], t.c.deleted_at.is_(None))
                if exclude_id is not None:
                    stmt = stmt.where(t.c.id != exclude_id)
                if conn.execute(stmt.limit(1)).first() is not None:
                    errors[f"{prefix}{name}"] = ["must be unique: another record has this value"]
        for idx in obj.defn.indexes.values():
            if idx.unique and all(values.get(c) is not None for c in idx.fields if c in obj.fields):
                stmt = sa.select(t.c.id).where(*(t.c[c] == values.get(c) for c in idx.fields),
                                               t.c.deleted_at.is_(None))
                if exclude_id is not None:
                    stmt = stmt.where(t.c.id != exclude_id)
                if conn.execute(stmt.limit(1)).first() is not None:
                    errors[f"{prefix}{idx.fields[0]}"] = [
                        f"must be unique together with {', '.join(idx.fields[1:])}" if len(idx.fields) > 1
                        else "must be unique: another record has this value"]
        return errors

    def _history(self, conn: sa.Connection, ctx: Context, obj: CompiledObject, record_id: int, action: str,
                 changes: Sequence[tuple[str | None, Any, Any]]) -> None:
        now = ctx.now()
        conn.execute(systables.history.insert(), [
            {"object": obj.name, "record_id": record_id, "action": action, "field": field,
             "old": None if old is None else json_dumps(old), "new": None if new is None else json_dumps(new),
             "changed_by": ctx.actor.id, "changed_at": now}
            for field, old, new in changes
        ])

    # -- writes -----------------------------------------------------------
    def create(self, ctx: Context, object_name: str, data: Mapping[str, Any]) -> dict[str, Any]:
        return self.bulk_create(ctx, object_name, [data], _single=True)[0]

    @_metadata_race
    def bulk_create(self, ctx: Context, object_name: str, rows: Sequence[Mapping[str, Any]],
                    *, _single: bool = False) -> list[dict[str, Any]]:
        """Create records all-or-nothing. Errors of row ``i`` are keyed ``i.field``."""
        if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
            raise ValidationError({"_schema": ["must be a list of records"]})
        if len(rows) > MAX_BULK:
            raise ValidationError({"_schema": [f"at most {MAX_BULK} records per request"]})
        if all(isinstance(r, Mapping) for r in rows) and self._hooked(ctx, object_name, "before_save", "create"):
            rows = self.scripts.before_save(ctx, object_name, rows, [None] * len(rows), bulk=not _single)
        with self._script_logs(ctx), ctx.tenant.write() as conn:
            app = self.runtime.compiled(ctx.tenant, conn)
            self.permissions.check(ctx, app, object_name, "create")
            obj = app.object(object_name)
            loaded, errors = [], {}
            for i, data in enumerate(rows):
                prefix = "" if _single else f"{i}."
                try:
                    values = self._load(ctx, obj, data, old=None, prefix=prefix)
                    self._check_lookups(ctx, conn, app, obj, values, prefix)
                except ValidationError as exc:
                    errors.update(exc.errors)
                    continue
                errors.update(apply_rules(ctx, conn, app, obj, values, None, set(data), prefix))
                if self.workflows is not None:
                    errors.update(self.workflows.check_create(ctx, app, obj, values, prefix))
                for name in obj.rollup_zeroes:
                    values[name] = coerce(obj, name, 0)
                loaded.append(values)
            if errors:
                raise ValidationError(errors)
            now = ctx.now()
            system = {"created_at": now, "updated_at": now, "created_by": ctx.actor.id,
                      "updated_by": ctx.actor.id, "owner_id": ctx.actor.id, "row_version": 1}
            blank = dict.fromkeys(obj.stored_fields)
            out = []
            for values in loaded:
                self._autonumber(ctx, conn, obj, values)
                out.append({**blank, **values, **system})
            self._insert(conn, obj, out, loaded, _single)
            h = systables.history
            conn.execute(h.insert(), [
                {"object": obj.name, "record_id": record["id"], "action": "create", "field": None, "old": None,
                 "new": json_dumps({k: obj.fields[k].dump(v) for k, v in values.items() if v is not None}),
                 "changed_by": ctx.actor.id, "changed_at": now}
                for record, values in zip(out, loaded, strict=True)])
            if obj.rules.feeds:
                rollups.maintain(conn, app, obj, [(None, r) for r in out])
            created = [obj.dump(virtual_values(app, obj, r, ctx, conn)) for r in out]
            if self.scripts is not None:
                self.scripts.after_write(ctx, conn, app, object_name, "after_save", [(r, None) for r in created])
            if self.approvals is not None and has_processes(app, object_name):
                for record in created:
                    self.approvals.after_write(ctx, conn, app, object_name, record, None)
            return created

    def _insert(self, conn: sa.Connection, obj: CompiledObject, records: list[dict[str, Any]],
                loaded: list[dict[str, Any]], single: bool) -> None:
        """Insert ``records`` in one multi-row statement and set their ids. A unique
        violation is retried row by row to say which record (and field) collided."""
        t = obj.table
        try:
            with _savepoint(conn, obj):
                if len(records) == 1:
                    ids = [conn.execute(t.insert(), records[0]).inserted_primary_key[0]]
                elif conn.dialect.name == "postgresql":
                    # Take the ids from the sequence first, then a plain executemany: the
                    # driver pipelines it, where a RETURNING form would send one huge
                    # statement the driver has to parse per request.
                    ids = _reserve_ids(conn, t, len(records))
                    for record, new_id in zip(records, ids, strict=True):
                        record["id"] = new_id
                    conn.execute(t.insert(), records)
                else:
                    # SQLite under the write lock gives each new row the largest rowid + 1
                    # (no AUTOINCREMENT), so an executemany numbers the rows consecutively
                    # and the last id gives them all; no RETURNING round trip needed.
                    conn.execute(t.insert(), records)
                    last = conn.exec_driver_sql("SELECT last_insert_rowid()").scalar_one()
                    ids = list(range(last - len(records) + 1, last + 1))
        except sa.exc.IntegrityError as exc:
            if len(records) == 1:
                found = self._unique_errors(conn, obj, loaded[0], None, "")
                raise ValidationError(found or {"_schema": ["conflicts with an existing record"]}) from exc
            ids = []
            for i, (record, values) in enumerate(zip(records, loaded, strict=True)):
                try:
                    with conn.begin_nested():
                        ids.append(conn.execute(t.insert(), record).inserted_primary_key[0])
                except sa.exc.IntegrityError as row_exc:
                    prefix = "" if single else f"{i}."
                    found = self._unique_errors(conn, obj, values, None, prefix)
                    raise ValidationError(found or {f"{prefix}_schema".rstrip("."): [
                        "conflicts with an existing record or another record of this request"]}) from row_exc
        for record, new_id in zip(records, ids, strict=True):
            record["id"] = new_id

    @_metadata_race
    def update(self, ctx: Context, object_name: str, record_id: Any, data: Mapping[str, Any],
               *, expected_version: int | None = None) -> dict[str, Any]:
        """Change some fields of a record.

        :param expected_version: the ``row_version`` the caller read (from ``If-Match`` or
            the body); if the record moved on since, nothing is written.
        :raises ConflictError: on a stale ``row_version``.
        """
        if isinstance(data, Mapping) and "row_version" in data and expected_version is None:
            expected_version = data["row_version"]
            if not isinstance(expected_version, int) or isinstance(expected_version, bool):
                raise ValidationError({"row_version": ["must be an integer"]})
        if isinstance(data, Mapping) and self._hooked(ctx, object_name, "before_save", "update"):
            current = self.get(ctx, object_name, record_id)
            (data,) = self.scripts.before_save(ctx, object_name, [data], [current])
            if expected_version is None:  # the script saw this version: nobody may slip in between
                expected_version = current["row_version"]
        with self._script_logs(ctx), ctx.tenant.write() as conn:
            app = self.runtime.compiled(ctx.tenant, conn)
            self.permissions.check(ctx, app, object_name, "update")
            obj = app.object(object_name)
            old = self._row(conn, obj, record_id, lock=True)
            if expected_version is not None and expected_version != old["row_version"]:
                raise ConflictError(
                    f"{obj.name} {old['id']} was changed by someone else (version {old['row_version']}, "
                    f"you had {expected_version}); reload it and apply your change again")
            values = self._load(ctx, obj, data, old=old)
            # Lookups first: rules may follow them, and must not through an id the
            # caller may not use.
            self._check_lookups(ctx, conn, app, obj, {k: v for k, v in values.items() if old.get(k) != v})
            errors = apply_rules(ctx, conn, app, obj, values, old, set(data))
            if errors:
                raise ValidationError(errors)
            changed = {k: v for k, v in values.items() if old.get(k) != v}
            if not changed:
                return obj.dump(virtual_values(app, obj, dict(old), ctx, conn))
            if self.workflows is not None:
                self.workflows.check_update(ctx, conn, app, obj, old, changed)
            if self.approvals is not None:
                self.approvals.check_write(ctx, conn, app, object_name, old["id"], changed)
            t = obj.table
            now = ctx.now()
            stmt = (t.update().where(t.c.id == old["id"], t.c.row_version == old["row_version"])
                    .values(**changed, updated_at=now, updated_by=ctx.actor.id, row_version=old["row_version"] + 1))
            try:
                with _savepoint(conn, obj):
                    result = conn.execute(stmt)
            except sa.exc.IntegrityError as exc:
                found = self._unique_errors(conn, obj, {**old, **changed}, old["id"])
                raise ValidationError(found or {"_schema": ["conflicts with an existing record"]}) from exc
            if result.rowcount != 1:
                raise ConflictError(f"{obj.name} {old['id']} was changed by someone else; reload it")
            self._history(conn, ctx, obj, old["id"], "update", [
                (k, obj.fields[k].dump(old.get(k)), obj.fields[k].dump(v)) for k, v in changed.items()])
            new = {**old, **changed, "updated_at": now, "updated_by": ctx.actor.id,
                   "row_version": old["row_version"] + 1}
            if obj.rules.feeds:
                rollups.maintain(conn, app, obj, [(old, new)])
            updated = obj.dump(virtual_values(app, obj, new, ctx, conn))
            if self.scripts is not None and self.scripts.triggered(ctx, app, object_name, "after_save"):
                self.scripts.after_write(ctx, conn, app, object_name, "after_save",
                                         [(updated, obj.dump(virtual_values(app, obj, dict(old), ctx, conn)))])
            if self.approvals is not None and has_processes(app, object_name):
                self.approvals.after_write(ctx, conn, app, object_name, updated, dict(old))
            return updated

    @_metadata_race
    def delete(self, ctx: Context, object_name: str, record_id: Any, *, expected_version: int | None = None) -> None:
        """Soft-delete a record, applying each referring lookup's ``on_delete``."""
        if self._hooked(ctx, object_name, "before_delete", "delete"):
            current = self.get(ctx, object_name, record_id)
            self.scripts.before_delete(ctx, object_name, current)
            if expected_version is None:
                expected_version = current["row_version"]
        with self._script_logs(ctx), ctx.tenant.write() as conn:
            app = self.runtime.compiled(ctx.tenant, conn)
            self.permissions.check(ctx, app, object_name, "delete")
            obj = app.object(object_name)
            row = self._row(conn, obj, record_id, lock=True)
            if expected_version is not None and expected_version != row["row_version"]:
                raise ConflictError(f"{obj.name} {row['id']} was changed by someone else; reload it")
            if self.approvals is not None:
                self.approvals.check_write(ctx, conn, app, object_name, row["id"], (), delete=True)
            self._soft_delete(ctx, conn, app, obj, [row["id"]], depth=0)
            if self.scripts is not None and self.scripts.triggered(ctx, app, object_name, "after_delete"):
                gone = obj.dump(virtual_values(app, obj, dict(row), ctx, conn))
                self.scripts.after_write(ctx, conn, app, object_name, "after_delete", [(gone, gone)])

    def _soft_delete(self, ctx: Context, conn: sa.Connection, app: CompiledApp, obj: CompiledObject,
                     ids: list[int], depth: int) -> None:
        if depth > 20:
            raise ConflictError("cascading delete is nested too deeply")
        now = ctx.now()
        for ref in obj.referenced_by:
            child = app.object(ref.object)
            ct = child.table
            live = (ct.c[ref.field].in_(ids), ct.c.deleted_at.is_(None))
            if ref.object == obj.name:  # a record pointing at itself does not hold itself back
                live = (*live, ct.c.id.not_in(ids))
            children = conn.execute(sa.select(ct.c.id, ct.c[ref.field]).where(*live)).all()
            child_ids = [r[0] for r in children]
            if not child_ids:
                continue
            if self.approvals is not None and has_processes(app, child.name):
                for cid in child_ids:  # a cascade changes them too: their locks apply
                    self.approvals.check_write(ctx, conn, app, child.name, cid, (ref.field,),
                                               delete=ref.on_delete == "cascade")
            if ref.on_delete == "restrict":
                raise ConflictError(
                    f"{len(child_ids)} {child.name} record(s) refer to it through {ref.field}; "
                    f"delete or re-link them first")
            if ref.on_delete == "set_null":
                before = list(conn.execute(sa.select(ct).where(ct.c.id.in_(child_ids))).mappings()) \
                    if child.rules.feeds or child.rules.stored_formulas else []
                conn.execute(ct.update().where(ct.c.id.in_(child_ids)).values(
                    **{ref.field: None}, updated_at=now, updated_by=ctx.actor.id, row_version=ct.c.row_version + 1))
                for cid, parent in children:
                    self._history(conn, ctx, child, cid, "update", [(ref.field, parent, None)])
                after = [self._restored_formulas(ctx, conn, child, {**r, ref.field: None}) for r in before]
                if before and child.rules.feeds:
                    rollups.maintain(conn, app, child, list(zip(before, after, strict=True)))
            else:
                self._soft_delete(ctx, conn, app, child, child_ids, depth + 1)
        t = obj.table
        gone = list(conn.execute(sa.select(t).where(t.c.id.in_(ids), t.c.deleted_at.is_(None))).mappings()) \
            if obj.rules.feeds else []
        conn.execute(t.update().where(t.c.id.in_(ids), t.c.deleted_at.is_(None)).values(
            deleted_at=now, updated_at=now, updated_by=ctx.actor.id, row_version=t.c.row_version + 1))
        if gone:
            rollups.maintain(conn, app, obj, [(r, None) for r in gone])
        for rid in ids:
            self._history(conn, ctx, obj, rid, "delete", [(None, None, None)])

    @staticmethod
    def _restored_formulas(ctx: Context, conn: sa.Connection, obj: CompiledObject,
                           row: dict[str, Any]) -> dict[str, Any]:
        """``row`` (changed by a cascade, not by its own write) with its stored formulas
        computed again and saved."""
        changed = {}
        env = make_env(ctx, row, None)
        for name, e in obj.rules.stored_formulas:
            try:
                value = coerce(obj, name, e.evaluate(env))
            except EvaluationError:
                value = None
            if value != row.get(name):
                row[name] = changed[name] = value
        if changed:
            t = obj.table
            conn.execute(t.update().where(t.c.id == row["id"]).values(**changed))
        return row

    @_metadata_race
    def restore(self, ctx: Context, object_name: str, record_id: Any) -> dict[str, Any]:
        """Bring back a soft-deleted record (its unique values must still be free)."""
        with ctx.tenant.write() as conn:
            app = self.runtime.compiled(ctx.tenant, conn)
            self.permissions.check(ctx, app, object_name, "delete")
            obj = app.object(object_name)
            row = self._row(conn, obj, record_id, include_deleted=True, lock=True)
            if row["deleted_at"] is None:
                return obj.dump(row)
            if self.approvals is not None:
                self.approvals.check_write(ctx, conn, app, object_name, row["id"], (), delete=True)
            # A restored record must not point at a deleted one (say, a contact whose
            # account was deleted, cascading to it): restore the target first.
            for name, f in obj.fields.items():
                if f.defn.type == "lookup" and row.get(name) is not None and \
                        not (f.defn.prop("target") == obj.name and row[name] == row["id"]):
                    target = app.object(f.defn.prop("target"))
                    tt = target.table
                    live = conn.execute(sa.select(tt.c.id).where(tt.c.id == row[name], tt.c.deleted_at.is_(None)))
                    if live.first() is None:
                        raise ConflictError(f"its {name} ({target.name} {row[name]}) is deleted; restore that first")
            t = obj.table
            now = ctx.now()
            try:
                with conn.begin_nested():
                    conn.execute(t.update().where(t.c.id == row["id"]).values(
                        deleted_at=None, updated_at=now, updated_by=ctx.actor.id, row_version=row["row_version"] + 1))
            except sa.exc.IntegrityError as exc:
                found = self._unique_errors(conn, obj, row, row["id"])
                raise ValidationError(found or {"_schema": ["conflicts with an existing record"]}) from exc
            self._history(conn, ctx, obj, row["id"], "restore", [(None, None, None)])
            restored = {**row, "deleted_at": None, "updated_at": now, "updated_by": ctx.actor.id,
                        "row_version": row["row_version"] + 1}
            if obj.rules.feeds:
                rollups.maintain(conn, app, obj, [(None, restored)])
            return obj.dump(virtual_values(app, obj, restored, ctx, conn))
