"""Apply a metadata plan to a tenant's tables with Alembic operations.

Runs inside the caller's transaction (the publish), so the DDL and the version bump
commit or roll back together; SQLite and PostgreSQL both have transactional DDL.
Drops never delete data: a dropped field or object is recorded in ``lw_dropped`` and
hidden from the compiled model, and adding it back restores it. Heavy changes (those
that would rewrite stored values) are refused here with a message naming the way
forward; they never run as an unbounded rewrite inside a request.
"""
from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext

from loomwork.metadata.diff import HEAVY, Operation, Plan
from loomwork.metadata.errors import HeavyChangeRefused, MetadataError

from . import systables
from .compiled import CompiledApp
from .systables import system_columns

#: PostgreSQL: give up on a DDL lock after this long rather than queue behind a long
#: transaction and block every reader of the table; the publish is retried.
PG_LOCK_TIMEOUT = "2s"

def _fresh(col: sa.Column) -> sa.Column:
    """An unattached copy of a compiled column (custom columns are always nullable:
    required is enforced by the record service, so adding one never rewrites rows)."""
    return sa.Column(col.name, col.type, nullable=True)


def _stored_as_text(app: CompiledApp, obj: str, field: str | None) -> bool:
    """Whether the field's column holds text, where ``''`` is as empty as NULL (whatever
    its type is called: a plugin's type built on text too)."""
    f = app.objects[obj].fields.get(field or "") if obj in app.objects else None
    return f is not None and f.column is not None and isinstance(f.column.type, sa.String)


class SchemaSync:
    """Applies one plan on one connection."""

    def __init__(self, conn: sa.Connection, schema: str | None) -> None:
        self.conn = conn
        self.schema = schema
        self.ops = Operations(MigrationContext.configure(connection=conn))

    # -- inspection -------------------------------------------------------
    def _columns(self, table: str) -> set[str]:
        return {c["name"] for c in sa.inspect(self.conn).get_columns(table, schema=self.schema)}

    def _has_table(self, table: str) -> bool:
        return sa.inspect(self.conn).has_table(table, schema=self.schema)

    def _hidden(self, obj: str, field: str | None) -> sa.Row | None:
        d = systables.dropped
        cond = d.c.field.is_(None) if field is None else d.c.field == field
        return self.conn.execute(sa.select(d).where(d.c.object == obj, cond)).first()

    def _unhide(self, obj: str, field: str | None) -> None:
        d = systables.dropped
        cond = d.c.field.is_(None) if field is None else d.c.field == field
        self.conn.execute(d.delete().where(d.c.object == obj, cond))

    # -- checks -----------------------------------------------------------
    def check(self, plan: Plan, new: CompiledApp) -> None:
        """Refuse heavy operations and those whose data precondition fails."""
        for op in plan.operations:
            if op.change == HEAVY:
                raise HeavyChangeRefused(
                    f"{op.description}. Heavy changes run as a background migration (shadow column and "
                    f"batched backfill), which this version does not offer yet: add a new field, copy the "
                    f"values with a bulk update, then drop the old one."
                )
            if op.kind == "require_field":
                # Checked before any DDL of the plan, so under the names the table has now.
                empty = self._empty(op.detail.get("table", op.object), op.detail.get("column", op.field),
                                    blank_text=_stored_as_text(new, op.object, op.field))
                if empty:
                    raise HeavyChangeRefused(
                        f"{op.object}.{op.field} cannot become required: {empty} record(s) have no value. "
                        f"Fill them first (for example with a bulk update), then publish again."
                    )
            elif op.kind == "add_field" and op.detail.get("required"):
                table = op.detail.get("table", op.object)
                hidden = self._hidden(table, op.field) is not None and op.field in self._columns(table)
                empty = self._empty(table, op.field if hidden else None)
                if empty:
                    raise HeavyChangeRefused(
                        f"{op.object}.{op.field} cannot be added as required: {empty} existing record(s) would "
                        f"have no value. Add it as optional, fill it, then make it required."
                    )

    def _empty(self, table: str, column: str | None, *, blank_text: bool = False) -> int:
        """Live rows of ``table`` whose ``column`` is empty (every live row if ``column`` is None).

        Empty is what the record service calls empty for a required field: NULL, and for
        text columns also ``''``.
        """
        cols = [sa.Column("deleted_at", sa.DateTime)] + ([sa.Column(column, sa.Text)] if column else [])
        t = sa.Table(table, sa.MetaData(), *cols)
        stmt = sa.select(sa.func.count()).select_from(t).where(t.c.deleted_at.is_(None))
        if column:
            col = t.c[column]
            stmt = stmt.where(sa.or_(col.is_(None), col == "") if blank_text else col.is_(None))
        return self.conn.execute(stmt).scalar_one()

    # -- apply ------------------------------------------------------------
    def apply(self, plan: Plan, new: CompiledApp, version: int, now: dt.datetime) -> None:
        if self.conn.dialect.name == "postgresql":
            self.conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{PG_LOCK_TIMEOUT}'")
        self.check(plan, new)
        for op in plan.operations:
            getattr(self, f"_op_{op.kind}", self._op_instant)(op, new, version, now)

    def _op_instant(self, op: Operation, new: CompiledApp, version: int, now: dt.datetime) -> None:
        """Labels, rules, roles and settings live in metadata only."""

    def _op_create_object(self, op, new, version, now):
        table = new.object(op.object).table
        if self._has_table(op.object):
            if self._hidden(op.object, None) is None:
                raise MetadataError({f"objects.{op.object}": ["a table of that name already exists"]})
            # Bringing back a hidden object: its data returns; add columns it lacks.
            self._unhide(op.object, None)
            existing = self._columns(op.object)
            for col in table.columns:
                if col.name not in existing:
                    self.ops.add_column(op.object, _fresh(col), schema=self.schema)
            return
        self.ops.create_table(op.object, *system_columns(),
                              *[_fresh(c) for c in table.columns if c.name not in {s.name for s in system_columns()}],
                              schema=self.schema)

    def _op_drop_object(self, op, new, version, now):
        self.conn.execute(systables.dropped.insert().values(
            object=op.object, field=None, type=None, version=version, dropped_at=now))

    def _op_rename_object(self, op, new, version, now):
        old = op.detail["old"]
        if self._has_table(op.object):
            raise MetadataError({f"objects.{op.object}": ["a table of that name already exists (perhaps a hidden object)"]})
        self.ops.rename_table(old, op.object, schema=self.schema)
        d = systables.dropped
        self.conn.execute(d.update().where(d.c.object == old).values(object=op.object))
        for t in (systables.history, systables.autonumbers):
            self.conn.execute(t.update().where(t.c.object == old).values(object=op.object))

    def _op_add_field(self, op, new, version, now):
        col = new.object(op.object).table.c.get(op.field)
        if col is None:  # a virtual formula: computed when read, no column
            return
        if op.field in self._columns(op.object):
            hidden = self._hidden(op.object, op.field)
            if hidden is None:
                raise MetadataError({f"objects.{op.object}.fields.{op.field}": ["a column of that name already exists"]})
            if hidden.type != op.detail["type"]:
                raise MetadataError({f"objects.{op.object}.fields.{op.field}": [
                    f"a dropped {hidden.type} field of that name still holds data; "
                    f"restore it as {hidden.type} or pick another name"]})
            self._unhide(op.object, op.field)
            return
        self.ops.add_column(op.object, _fresh(col), schema=self.schema)

    def _op_change_field(self, op, new, version, now):
        """Settings only, except a formula that becomes stored: it gains its column (the
        values are computed after the publish, see :mod:`.recompute`)."""
        col = new.object(op.object).table.c.get(op.field)
        if col is not None and op.field not in self._columns(op.object):
            self.ops.add_column(op.object, _fresh(col), schema=self.schema)

    def _op_drop_field(self, op, new, version, now):
        self.conn.execute(systables.dropped.insert().values(
            object=op.object, field=op.field, type=op.detail["type"], version=version, dropped_at=now))

    def _op_rename_field(self, op, new, version, now):
        columns = self._columns(op.object)
        if op.field in columns:
            raise MetadataError({f"objects.{op.object}.fields.{op.field}": [
                "a hidden column of that name still holds data; pick another name"]})
        if op.detail["old"] not in columns:  # a virtual formula had no column
            self._op_change_field(op, new, version, now)
            return
        self.ops.alter_column(op.object, op.detail["old"], new_column_name=op.field, schema=self.schema)
        h = systables.history
        self.conn.execute(h.update().where(h.c.object == op.object, h.c.field == op.detail["old"])
                          .values(field=op.field))

    def _op_add_index(self, op, new, version, now):
        d = op.detail
        where = sa.text("deleted_at IS NULL") if d["live_only"] else None
        try:
            with self.conn.begin_nested():
                self.ops.create_index(d["name"], d["table"], d["columns"], unique=d["unique"], schema=self.schema,
                                      sqlite_where=where, postgresql_where=where, if_not_exists=True)
        except sa.exc.IntegrityError as exc:
            raise MetadataError({f"objects.{op.object}.fields.{d['columns'][0]}": [
                "existing records repeat values, so it cannot be unique; remove the duplicates first"]}) from exc

    def _op_drop_index(self, op, new, version, now):
        self.ops.drop_index(op.detail["name"], table_name=op.detail["table"], schema=self.schema, if_exists=True)
