"""The built-in participants of the write pipeline (:mod:`loomwork.runtime.pipeline`).

They are what a record write means in Loomwork, one class per step, registered
through the ``loomwork_write_participants`` hook by ``loomwork.plugins.core_writes``
exactly as a plugin's participant would be. ``loomwork debug pipeline OBJECT`` lists
them in the order they run.
"""
from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import marshmallow as ma
import sqlalchemy as sa

from loomwork.metadata.errors import ConflictError, NotFound, ValidationError
from loomwork.metadata.model import SYSTEM_COLUMNS

from . import history, rollups, systables
from .compiled import READ_MAX_AGE, CompiledApp, CompiledObject
from .context import Context
from .evaluation import RuleRun, coerce, make_env, virtual_values
from .expr import EvaluationError
from .fieldtypes import AutonumberType
from .pipeline import Origin, Participant, RecordWrite, WriteBatch

if TYPE_CHECKING:
    from .services import Services

_SYSTEM = frozenset(SYSTEM_COLUMNS)
#: The largest record id (a PostgreSQL BIGINT); anything else names no record.
MAX_RECORD_ID = 2**63 - 1
#: Cascading deletes deeper than this are refused (a chain of cascades, or a loop).
MAX_CASCADE_DEPTH = 20


#: An id as written in a URL or a form: digits without a leading zero, so that one row
#: has one address (``01`` and ``+1`` name none). At most 19 digits; the bound is
#: checked by :func:`written_id`.
ID_PATTERN = r"[1-9][0-9]{0,18}"
_WRITTEN_ID = re.compile(ID_PATTERN)


def written_id(text: Any, bound: int = MAX_RECORD_ID) -> int | None:
    """``text`` as an id if it is one written plainly (:data:`ID_PATTERN`) up to ``bound``,
    else None. The one reader of ids typed into URLs, query strings and forms (it never
    raises: text that names no row is not an error here).

    :param bound: the largest id the column holds: :data:`MAX_RECORD_ID` for records,
        :data:`loomwork.runtime.systables.MAX_ID` for the rows of system tables.
    """
    if not isinstance(text, str) or not _WRITTEN_ID.fullmatch(text):
        return None
    rid = int(text)
    return rid if rid <= bound else None


def record_id(value: Any) -> int:
    """``value`` as a record id. :raises NotFound: when it cannot name a record."""
    try:
        rid = int(value)
    except (TypeError, ValueError):
        raise NotFound(f"no record {value!r}") from None
    if rid < 1 or rid > MAX_RECORD_ID or (isinstance(value, float) and rid != value) or isinstance(value, bool):
        raise NotFound(f"no record {value!r}")
    return rid


def stored_row(conn: sa.Connection, obj: CompiledObject, rid: Any, *, include_deleted: bool = False,
               lock: bool = False) -> Mapping[str, Any]:
    """The stored row of record ``rid`` (locked for the transaction on PostgreSQL).
    :raises NotFound: if there is none (or it is deleted)."""
    t = obj.table
    stmt = sa.select(t).where(t.c.id == record_id(rid))
    if not include_deleted:
        stmt = stmt.where(t.c.deleted_at.is_(None))
    if lock and conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).mappings().first()
    if row is None:
        raise NotFound(f"no {obj.name} record {rid}")
    return row


def _op(batch: WriteBatch) -> str:
    """The permission an operation needs (restoring is undoing a delete)."""
    return "delete" if batch.operation == "restore" else batch.operation


def _savepoint(conn: sa.Connection, obj: CompiledObject) -> Any:
    """A savepoint around a write that may hit a unique index; nothing otherwise."""
    return conn.begin_nested() if obj.has_unique else contextlib.nullcontext()


# -- prepare -------------------------------------------------------------------------------
class BeforeScripts:
    """``before_save`` / ``before_delete`` scripts, before the transaction opens."""

    name, stage, operations = "before_scripts", "prepare", frozenset({"create", "update", "delete"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return bool(app.meta.scripts_for(object_name, event="before_save")
                    or app.meta.scripts_for(object_name, event="before_delete"))

    def __init__(self, services: Services) -> None:
        self.services = services

    def __call__(self, batch: WriteBatch) -> None:
        scripts, ctx, app = self.services.scripts, batch.ctx, batch.app
        event = "before_delete" if batch.operation == "delete" else "before_save"
        if not batch.origin.runs_scripts or not scripts.triggered(ctx, app, batch.object_name, event):
            return
        if not all(isinstance(w.input, Mapping) for w in batch.writes if batch.operation != "delete"):
            return  # the parse stage explains what is wrong with the input
        # Nobody sees the record through a script before they may write it.
        self.services.permissions.check(ctx, app, batch.object_name, _op(batch))
        if batch.operation == "create":
            shaped = scripts.before_save(ctx, batch.object_name, [w.input for w in batch.writes],
                                         [None] * len(batch.writes), bulk=batch.bulk)
            for w, data in zip(batch.writes, shaped, strict=True):
                w.input = data
            return
        (w,) = batch.writes
        current = self.services.records.get(ctx, batch.object_name, w.record_id)
        if batch.operation == "update":
            (w.input,) = scripts.before_save(ctx, batch.object_name, [w.input], [current])
        else:
            scripts.before_delete(ctx, batch.object_name, current)
        if batch.expected_version is None:  # the script saw this version: nobody may slip in between
            batch.expected_version = current["row_version"]


# -- access --------------------------------------------------------------------------------
class Access:
    """The actor may do this operation on the object (object permissions by role)."""

    name, stage, operations = "object_access", "access", frozenset({"create", "update", "delete", "restore"})

    def __init__(self, services: Services) -> None:
        self.permissions = services.permissions

    def __call__(self, batch: WriteBatch) -> None:
        self.permissions.check(batch.ctx, batch.app, batch.object_name, _op(batch))


class StoredRows:
    """Read and lock the stored rows; a ``row_version`` other than the caller's is a conflict."""

    name, stage, operations = "stored_rows", "access", frozenset({"update", "delete", "restore"})

    def __call__(self, batch: WriteBatch) -> None:
        obj, restoring = batch.obj, batch.operation == "restore"
        for w in batch.writes:
            w.old = stored_row(batch.conn, obj, w.record_id, include_deleted=restoring, lock=True)
            if restoring and w.old["deleted_at"] is None:
                w.unchanged = True  # not deleted: nothing to restore
                continue
            expected = batch.expected_version
            if expected is not None and expected != w.old["row_version"]:
                raise ConflictError(
                    f"{obj.name} {w.old['id']} was changed by someone else (version {w.old['row_version']}, "
                    f"you had {expected}); reload it and apply your change again")


# -- parse ---------------------------------------------------------------------------------
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


def parse_input(ctx: Context, obj: CompiledObject, data: Any, *, old: Mapping[str, Any] | None,
                prefix: str = "") -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Typed column values of ``data`` for a create (``old is None``) or an update, and
    the errors found (keyed ``prefix + field``)."""
    if not isinstance(data, Mapping):
        return {}, {prefix.rstrip(".") or "_schema": ["must be a JSON object of field values"]}
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
    return values, errors


class Parse:
    """Deserialise and type-check the input; literal defaults; required fields; value checks."""

    name, stage, operations = "parse", "parse", frozenset({"create", "update"})

    def __call__(self, batch: WriteBatch) -> None:
        for w in batch.active:
            w.values, errors = parse_input(batch.ctx, batch.obj, w.input, old=w.old, prefix=batch.prefix(w))
            batch.merge(w, errors)


class Lookups:
    """Every lookup names a live record the actor may read (one query per field and batch)."""

    name, stage, operations = "lookups", "lookups", frozenset({"create", "update"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return bool(app.object(object_name).lookups)

    def __init__(self, services: Services) -> None:
        self.permissions = services.permissions

    def __call__(self, batch: WriteBatch) -> None:
        obj, app, conn = batch.obj, batch.app, batch.conn
        for name, target_name in obj.lookups.items():
            wanted: dict[Any, list[RecordWrite]] = {}
            for w in batch.active:
                value = w.values.get(name)
                if value is not None and (w.old is None or w.old.get(name) != value):
                    wanted.setdefault(value, []).append(w)
            if not wanted:
                continue
            target = app.object(target_name)
            found: set[Any] = set()
            if self.permissions.allowed(batch.ctx, app, target_name, "read"):
                t = target.table
                found = set(conn.execute(sa.select(t.c.id).where(t.c.id.in_(sorted(wanted)),
                                                                 t.c.deleted_at.is_(None))).scalars())
            for value, writes in wanted.items():
                if value not in found:
                    for w in writes:
                        batch.fail(w, name, f"no {target_name} record {value}")


class RestoreTargets:
    """A restored record must not point at a deleted one (say, a contact whose account
    was deleted, cascading to it): that one is restored first."""

    name, stage, operations = "restore_targets", "lookups", frozenset({"restore"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return bool(app.object(object_name).lookups)

    def __call__(self, batch: WriteBatch) -> None:
        obj, app, conn = batch.obj, batch.app, batch.conn
        for w in batch.active:
            row = w.old
            for name, target_name in obj.lookups.items():
                value = row.get(name)
                if value is None or (target_name == obj.name and value == row["id"]):
                    continue
                tt = app.object(target_name).table
                live = conn.execute(sa.select(tt.c.id).where(tt.c.id == value, tt.c.deleted_at.is_(None)))
                if live.first() is None:
                    raise ConflictError(f"its {name} ({target_name} {value}) is deleted; restore that first")


# -- defaults, formulas, rules ---------------------------------------------------------------
def rule_run(batch: WriteBatch, w: RecordWrite) -> RuleRun:
    """The record's rule evaluation, shared by the defaults, formulas and rules stages."""
    run = w.notes.get("rules")
    if run is None:
        run = w.notes["rules"] = RuleRun(batch.ctx, batch.conn, batch.app, batch.obj, w.values, w.old, w.given,
                                         batch.prefix(w))
    return run


class WorkflowEntry:
    """A new record starts in its workflow's initial state."""

    name, stage, operations = "workflow_entry", "defaults", frozenset({"create"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return app.meta.workflow_for(object_name) is not None

    def __init__(self, services: Services) -> None:
        self.workflows = services.workflows

    def __call__(self, batch: WriteBatch) -> None:
        if not self.applies(batch.app, batch.object_name):
            return
        for w in batch.active:
            batch.merge(w, self.workflows.check_create(batch.ctx, batch.app, batch.obj, w.values, batch.prefix(w)))


class Defaults:
    """Expression defaults for the fields the caller left out; roll-ups start at 0."""

    name, stage, operations = "defaults", "defaults", frozenset({"create"})

    def __call__(self, batch: WriteBatch) -> None:
        obj = batch.obj
        for w in batch.active:
            for name in obj.rollup_zeroes:  # before the rules' view of the record is taken
                w.values[name] = coerce(obj, name, 0)
            if obj.rules.defaults:
                rule_run(batch, w).defaults()


class Formulas:
    """Stored formulas on the record as it will be saved."""

    name, stage, operations = "formulas", "formulas", frozenset({"create", "update"})

    def __call__(self, batch: WriteBatch) -> None:
        for w in batch.active:
            rule_run(batch, w).formulas()


class Rules:
    """Field conditions, dependent choices and validation rules; every error at once."""

    name, stage, operations = "rules", "rules", frozenset({"create", "update"})

    def __call__(self, batch: WriteBatch) -> None:
        for w in batch.active:
            run = rule_run(batch, w)
            run.checks()
            batch.merge(w, run.errors)


# -- locks ---------------------------------------------------------------------------------------
class WorkflowLock:
    """A state change follows an allowed transition; the state decides who edits what."""

    name, stage, operations = "workflow_lock", "lock", frozenset({"update"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return app.meta.workflow_for(object_name) is not None

    def __init__(self, services: Services) -> None:
        self.workflows = services.workflows

    def __call__(self, batch: WriteBatch) -> None:
        if not self.applies(batch.app, batch.object_name):
            return
        for w in batch.active:
            self.workflows.check_update(batch.ctx, batch.conn, batch.app, batch.obj, w.old, w.changed)


class ApprovalLock:
    """A record waiting for approval (or locked by one) is changed only as its process allows."""

    name, stage, operations = "approval_lock", "lock", frozenset({"update", "delete", "restore"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return bool(app.meta.approvals_for(object_name))

    def __init__(self, services: Services) -> None:
        self.approvals = services.approvals

    def __call__(self, batch: WriteBatch) -> None:
        deleting = batch.operation != "update"
        for w in batch.active:
            self.approvals.check_write(batch.ctx, batch.conn, batch.app, batch.object_name, w.old["id"],
                                       () if deleting else tuple(w.changed), delete=deleting, origin=batch.origin)


# -- autonumbers -------------------------------------------------------------------------------
class Autonumbers:
    """Numbers for autonumber fields, reserved for the whole batch in one statement per field."""

    name, stage, operations = "autonumbers", "autonumber", frozenset({"create"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return any(isinstance(f.ftype, AutonumberType) for f in app.object(object_name).fields.values())

    def __call__(self, batch: WriteBatch) -> None:
        obj, conn = batch.obj, batch.conn
        writes = batch.active
        if not writes:
            return
        now = batch.ctx.now()
        for name, f in obj.fields.items():
            if not isinstance(f.ftype, AutonumberType):
                continue
            pattern = f.defn.prop("pattern")
            first = _reserve(conn, obj.name, name, AutonumberType.prefix(pattern, now), len(writes))
            for i, w in enumerate(writes):
                w.values[name] = AutonumberType.render(pattern, now, first + i)


def _reserve(conn: sa.Connection, object_name: str, field: str, prefix: str, n: int) -> int:
    """Reserve ``n`` consecutive numbers of a counter; return the first.

    The UPDATE takes the row lock (PostgreSQL) or runs under SQLite's write lock, so
    concurrent creates queue here; a rollback returns the numbers (gap-free)."""
    a = systables.autonumbers
    key = (a.c.object == object_name, a.c.field == field, a.c.prefix == prefix)
    bump = a.update().where(*key).values(value=a.c.value + n).returning(a.c.value)
    last = conn.execute(bump).scalar_one_or_none()
    if last is None:
        try:
            with conn.begin_nested():
                conn.execute(a.insert().values(object=object_name, field=field, prefix=prefix, value=n))
            last = n
        except sa.exc.IntegrityError:  # another writer created the counter meanwhile
            last = conn.execute(bump).scalar_one()
    return last - n + 1


# -- statements -----------------------------------------------------------------------------------
def unique_errors(conn: sa.Connection, obj: CompiledObject, values: Mapping[str, Any], exclude_id: int | None,
                  prefix: str = "") -> dict[str, list[str]]:
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


def _reserve_ids(conn: sa.Connection, table: sa.Table, n: int) -> list[int]:
    """``n`` new ids of ``table`` from its PostgreSQL sequence, ascending."""
    schema = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    qualified = f'"{schema}"."{table.name}"' if schema else f'"{table.name}"'
    seq = conn.execute(sa.select(sa.func.pg_get_serial_sequence(qualified, "id"))).scalar_one()
    return sorted(conn.execute(sa.select(sa.func.nextval(seq)).select_from(sa.func.generate_series(1, n))).scalars())


class Insert:
    """INSERT the new records in one multi-row statement (ids from the sequence)."""

    name, stage, operations = "insert", "statement", frozenset({"create"})

    def __call__(self, batch: WriteBatch) -> None:
        obj, conn, ctx = batch.obj, batch.conn, batch.ctx
        writes = batch.active
        now, by = ctx.now(), history.author(ctx, batch.origin)
        system = {"created_at": now, "updated_at": now, "created_by": by, "updated_by": by, "owner_id": by,
                  "row_version": 1}
        blank = dict.fromkeys(obj.stored_fields)
        for w in writes:
            w.new = {**blank, **w.values, **system}
        records = [w.new for w in writes]
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
            ids = self._one_by_one(batch, writes, exc)
        for record, new_id in zip(records, ids, strict=True):
            record["id"] = new_id

    @staticmethod
    def _one_by_one(batch: WriteBatch, writes: Sequence[RecordWrite], exc: Exception) -> list[int]:
        """A unique violation, retried row by row to say which record (and field) collided."""
        obj, conn, t = batch.obj, batch.conn, batch.obj.table
        if len(writes) == 1:
            found = unique_errors(conn, obj, writes[0].values, None, batch.prefix(writes[0]))
            raise ValidationError(found or {"_schema": ["conflicts with an existing record"]}) from exc
        ids = []
        for w in writes:
            try:
                with conn.begin_nested():
                    ids.append(conn.execute(t.insert(), w.new).inserted_primary_key[0])
            except sa.exc.IntegrityError as row_exc:
                prefix = batch.prefix(w)
                found = unique_errors(conn, obj, w.values, None, prefix)
                raise ValidationError(found or {f"{prefix}_schema".rstrip("."): [
                    "conflicts with an existing record or another record of this request"]}) from row_exc
        return ids


def _update_or_explain(conn: sa.Connection, obj: CompiledObject, stmt: Any, values: Mapping[str, Any],
                       rid: int) -> Any:
    """Run an UPDATE of record ``rid`` that may hit a unique index; a violation becomes a
    field error naming the unique field(s) ``values`` collide on."""
    try:
        with _savepoint(conn, obj):
            return conn.execute(stmt)
    except sa.exc.IntegrityError as exc:
        found = unique_errors(conn, obj, values, rid)
        raise ValidationError(found or {"_schema": ["conflicts with an existing record"]}) from exc


class Update:
    """UPDATE the changed fields where ``row_version`` is still the one read."""

    name, stage, operations = "update", "statement", frozenset({"update"})

    def __call__(self, batch: WriteBatch) -> None:
        obj, conn, ctx, t = batch.obj, batch.conn, batch.ctx, batch.obj.table
        now, by = ctx.now(), history.author(ctx, batch.origin)
        for w in batch.active:
            old, changed = w.old, w.changed
            system = {"updated_at": now, "updated_by": by, "row_version": old["row_version"] + 1}
            stmt = (t.update().where(t.c.id == old["id"], t.c.row_version == old["row_version"])
                    .values(**changed, **system))
            result = _update_or_explain(conn, obj, stmt, {**old, **changed}, old["id"])
            if result.rowcount != 1:
                raise ConflictError(f"{obj.name} {old['id']} was changed by someone else; reload it")
            w.new = {**old, **changed, **system}


class SoftDelete:
    """Mark the records deleted (``deleted_at``); they stay restorable."""

    name, stage, operations = "soft_delete", "statement", frozenset({"delete"})

    def __call__(self, batch: WriteBatch) -> None:
        writes = batch.active
        gone = mark_deleted(batch.conn, batch.ctx, batch.obj, {w.old["id"]: w.old for w in writes},
                            history.author(batch.ctx, batch.origin))
        for w in writes:
            w.new = gone.get(w.old["id"])


def mark_deleted(conn: sa.Connection, ctx: Context, obj: CompiledObject,
                 records: list[int] | Mapping[int, Mapping[str, Any]], by: int | None) -> dict[int, dict[str, Any]]:
    """Soft-delete the live records among ``records`` (ids, or the rows already read and
    locked by id); return their rows as deleted."""
    t, now = obj.table, ctx.now()
    live = (t.c.id.in_(list(records)), t.c.deleted_at.is_(None))
    before = records if isinstance(records, Mapping) else \
        {r["id"]: r for r in conn.execute(sa.select(t).where(*live)).mappings()}
    conn.execute(t.update().where(*live).values(deleted_at=now, updated_at=now, updated_by=by,
                                                row_version=t.c.row_version + 1))
    return {rid: {**row, "deleted_at": now, "updated_at": now, "updated_by": by,
                  "row_version": row["row_version"] + 1} for rid, row in before.items()}


class Restore:
    """Bring back soft-deleted records (their unique values must still be free)."""

    name, stage, operations = "restore", "statement", frozenset({"restore"})

    def __call__(self, batch: WriteBatch) -> None:
        obj, conn, ctx, t = batch.obj, batch.conn, batch.ctx, batch.obj.table
        now, by = ctx.now(), history.author(ctx, batch.origin)
        for w in batch.active:
            row = w.old
            system = {"deleted_at": None, "updated_at": now, "updated_by": by, "row_version": row["row_version"] + 1}
            _update_or_explain(conn, obj, t.update().where(t.c.id == row["id"]).values(**system), row, row["id"])
            w.new = {**row, **system}


# -- history ---------------------------------------------------------------------------------------
class History:
    """Field history of every write, with who, when and the origin."""

    name, stage, operations = "history", "history", frozenset({"create", "update", "delete", "restore"})

    def __call__(self, batch: WriteBatch) -> None:
        obj, op = batch.obj, batch.operation
        entries: list[history.Entry] = []
        for w in batch.active:
            if op == "create":
                entries.append((w.new["id"], "create", None, None,
                                {k: obj.fields[k].dump(v) for k, v in w.values.items() if v is not None}))
            elif op == "update":
                entries.extend((w.old["id"], "update", k, obj.fields[k].dump(w.old.get(k)), obj.fields[k].dump(v))
                               for k, v in w.changed.items())
            else:
                entries.append((w.old["id"], op, None, None, None))
        history.record(batch.conn, batch.ctx, batch.object_name, batch.origin, entries)


# -- derived writes ----------------------------------------------------------------------------------
class Cascades:
    """Apply each referring lookup's ``on_delete`` to the records pointing at the deleted
    ones: refuse (restrict), clear the lookup (set_null) or delete them too (cascade), as
    derived writes with their own history, roll-ups and approval locks."""

    name, stage, operations = "cascades", "derived", frozenset({"delete"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return bool(app.object(object_name).referenced_by)

    def __init__(self, services: Services) -> None:
        self.approvals = services.approvals

    def __call__(self, batch: WriteBatch) -> None:
        ids = [w.old["id"] for w in batch.active]
        if ids and batch.obj.referenced_by:
            self._cascade(batch.conn, batch.ctx, batch.app, batch.obj, ids, batch.origin, 0)

    # The children's locks are checked with the deleting write's origin (a process
    # deleting its own record does not unlock its children); their writes are derived.

    def _cascade(self, conn: sa.Connection, ctx: Context, app: CompiledApp, obj: CompiledObject, ids: list[int],
                 origin: Origin, depth: int) -> None:
        if depth >= MAX_CASCADE_DEPTH:
            raise ConflictError("cascading delete is nested too deeply")
        for ref in obj.referenced_by:
            child = app.object(ref.object)
            ct = child.table
            children = conn.execute(sa.select(ct.c.id, ct.c[ref.field]).where(
                ct.c[ref.field].in_(ids), ct.c.deleted_at.is_(None))).all()
            if not children:
                continue
            child_ids = [r[0] for r in children]
            for cid in child_ids:  # a cascade changes them too: their locks apply
                self.approvals.check_write(ctx, conn, app, child.name, cid, (ref.field,),
                                           delete=ref.on_delete == "cascade", origin=origin)
            if ref.on_delete == "restrict":
                raise ConflictError(f"{len(child_ids)} {child.name} record(s) refer to it through {ref.field}; "
                                    f"delete or re-link them first")
            derived = origin.derived()
            if ref.on_delete == "set_null":
                _clear_lookup(conn, ctx, app, child, ref.field, child_ids, derived)
                continue
            gone = mark_deleted(conn, ctx, child, child_ids, history.author(ctx, derived))
            history.record(conn, ctx, child.name, derived, ((cid, "delete", None, None, None) for cid in child_ids))
            self._cascade(conn, ctx, app, child, child_ids, origin, depth + 1)
            if child.rules.feeds:
                rollups.maintain(conn, ctx, app, child, [(_live(r), None) for r in gone.values()], derived)


def _live(row: Mapping[str, Any]) -> dict[str, Any]:
    """A deleted row as it was before (what roll-ups counted)."""
    return {**row, "deleted_at": None}


def _clear_lookup(conn: sa.Connection, ctx: Context, app: CompiledApp, child: CompiledObject, field: str,
                  ids: list[int], origin: Origin) -> None:
    """Set ``field`` to NULL on records ``ids`` (their parent went), recomputing the stored
    formulas that may follow it, as a derived write."""
    ct, now, by = child.table, ctx.now(), history.author(ctx, origin)
    before = {r["id"]: r for r in conn.execute(sa.select(ct).where(ct.c.id.in_(ids))).mappings()}
    entries: list[history.Entry] = []
    pairs = []
    params = []
    for rid in ids:
        old = before[rid]
        row = {**old, field: None}
        change = {field: None, **_formulas(ctx, child, row)}
        row.update(change, row_version=old["row_version"] + 1, updated_at=now, updated_by=by)
        pairs.append((old, row))
        entries.extend((rid, "update", k, child.fields[k].dump(old.get(k)), child.fields[k].dump(v))
                       for k, v in change.items() if old.get(k) != v)
        params.append({"lw_id": rid, **{f"lw_{k}": v for k, v in change.items()}})
    cols = sorted({k[3:] for p in params for k in p if k != "lw_id"})
    conn.execute(ct.update().where(ct.c.id == sa.bindparam("lw_id")).values(
        {**{c: sa.bindparam(f"lw_{c}", type_=ct.c[c].type) for c in cols},
         "row_version": ct.c.row_version + 1, "updated_at": now, "updated_by": by}), params)
    history.record(conn, ctx, child.name, origin, entries)
    if child.rules.feeds:
        rollups.maintain(conn, ctx, app, child, pairs, origin)


def _formulas(ctx: Context, obj: CompiledObject, row: dict[str, Any]) -> dict[str, Any]:
    """The stored formulas of ``row`` computed again (a field they may read changed)."""
    changed = {}
    env = make_env(ctx, row, None)
    for name, e in obj.rules.stored_formulas:
        try:
            value = coerce(obj, name, e.evaluate(env))
        except EvaluationError:
            value = None
        if value != row.get(name):
            row[name] = changed[name] = value
    return changed


class Rollups:
    """Move the roll-ups the written records feed (derived writes of their parents)."""

    name, stage, operations = "rollups", "derived", frozenset({"create", "update", "delete", "restore"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return bool(app.object(object_name).rules.feeds)

    def __call__(self, batch: WriteBatch) -> None:
        obj = batch.obj
        if not self.applies(batch.app, obj.name):
            return
        op = batch.operation
        pairs = [(None if op in ("create", "restore") else (_live(w.old) if op == "delete" else w.old),
                  None if op == "delete" else w.new) for w in batch.active]
        rollups.maintain(batch.conn, batch.ctx, batch.app, obj, pairs, batch.origin.derived())


# -- after the write -------------------------------------------------------------------------------------
class AfterScripts:
    """``after_save`` / ``after_delete`` scripts inside the write's transaction: their reads
    see it, their writes join it, their failure rolls it all back."""

    name, stage, operations = "after_scripts", "after_scripts", frozenset({"create", "update", "delete"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return bool(app.meta.scripts_for(object_name, event="after_save")
                    or app.meta.scripts_for(object_name, event="after_delete"))

    def __init__(self, services: Services) -> None:
        self.scripts = services.scripts

    def scope(self, batch: WriteBatch) -> Any:
        """Scripts run inside the transaction are logged when it ends, committed or not."""
        return self.scripts.logs_after(batch.ctx)

    def __call__(self, batch: WriteBatch) -> None:
        ctx, app, obj = batch.ctx, batch.app, batch.obj
        event = "after_delete" if batch.operation == "delete" else "after_save"
        writes = batch.active
        if not writes or not batch.origin.runs_scripts or not self.scripts.triggered(ctx, app, obj.name, event):
            return
        if batch.operation == "delete":
            items = [(g, g) for g in (obj.dump(virtual_values(app, obj, dict(w.old), ctx, batch.conn))
                                      for w in writes)]
        elif batch.operation == "update":
            items = [(batch.result_of(w), obj.dump(virtual_values(app, obj, dict(w.old), ctx, batch.conn)))
                     for w in writes]
        else:
            items = [(batch.result_of(w), None) for w in writes]
        self.scripts.after_write(ctx, batch.conn, app, obj.name, event, items)


class ApprovalTriggers:
    """Submit records to the processes that start on create, or on an update that makes
    their condition true."""

    name, stage, operations = "approval_triggers", "approval_triggers", frozenset({"create", "update"})

    @staticmethod
    def applies(app: CompiledApp, object_name: str) -> bool:
        return bool(app.meta.approvals_for(object_name))

    def __init__(self, services: Services) -> None:
        self.approvals = services.approvals

    def __call__(self, batch: WriteBatch) -> None:
        if not batch.app.meta.approvals_for(batch.object_name, batch.operation):  # of this trigger
            return
        for w in batch.active:
            self.approvals.after_write(batch.ctx, batch.conn, batch.app, batch.object_name, batch.result_of(w),
                                       None if w.old is None else dict(w.old), origin=batch.origin)


def builtin_participants(services: Services) -> list[Participant]:
    """What a write means in Loomwork, in registration order (stages order them)."""
    return [
        BeforeScripts(services), Access(services), StoredRows(), Parse(), Lookups(services), RestoreTargets(),
        WorkflowEntry(services), Defaults(), Formulas(), Rules(), WorkflowLock(services), ApprovalLock(services),
        Autonumbers(), Insert(), Update(), SoftDelete(), Restore(), History(), Cascades(services), Rollups(),
        AfterScripts(services), ApprovalTriggers(services),
    ]


__all__ = ["builtin_participants", "record_id", "stored_row", "parse_input", "unique_errors", "READ_MAX_AGE"]
