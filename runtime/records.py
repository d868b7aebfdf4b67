"""The record service: the only write path for object data.

The API, forms, imports, jobs, the CLI, script hooks and the approval engine all call
it, so every rule is enforced once, on the server. Each of the four operations
(create, update, delete, restore; bulk create is create) builds a
:class:`~loomwork.runtime.pipeline.WriteBatch` and runs it through the write
pipeline, whose participants (:mod:`loomwork.runtime.participants` and plugins')
decide what the write means. Reads (get, history, the form's view) live here too.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
import sqlalchemy as sa

from loomwork.metadata import store
from loomwork.metadata.errors import ConflictError, ValidationError

from . import systables
from .compiled import READ_MAX_AGE, Runtime
from .context import Context
from .evaluation import virtual_values
from .forms import FieldStates, field_states
from .participants import stored_row
from .permissions import Permissions
from .pipeline import Origin, Participant, Pipeline, RecordWrite, WriteBatch

#: Bulk requests larger than this are refused rather than held in one transaction.
MAX_BULK = 1000

F = TypeVar("F", bound=Callable[..., Any])


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
    """Reads of single records and the four write operations, through one pipeline.

    :param participants: the write pipeline's participants (the app passes what the
        ``loomwork_write_participants`` hook returns; :class:`~.services.Services`
        builds them, since the built-ins call back into other services).
    """

    def __init__(self, runtime: Runtime, permissions: Permissions | None = None,
                 participants: Iterable[Participant] = ()) -> None:
        self.runtime = runtime
        self.permissions = permissions or Permissions()
        self.pipeline = Pipeline(participants)

    # -- reads ------------------------------------------------------------
    def get(self, ctx: Context, object_name: str, record_id: Any) -> dict[str, Any]:
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            self.permissions.check(ctx, app, object_name, "read")
            obj = app.object(object_name)
            row = stored_row(conn, obj, record_id)
            return obj.dump(virtual_values(app, obj, dict(row), ctx, conn))

    def history(self, ctx: Context, object_name: str, record_id: Any, limit: int = 200) -> list[dict[str, Any]]:
        h = systables.history
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            self.permissions.check(ctx, app, object_name, "read")
            obj = app.object(object_name)
            stored_row(conn, obj, record_id, include_deleted=True)
            rows = conn.execute(sa.select(h).where(h.c.object == object_name, h.c.record_id == int(record_id))
                                .order_by(h.c.id.desc()).limit(limit))
            return [{"action": r.action, "field": r.field,
                     "old": orjson.loads(r.old) if r.old is not None else None,
                     "new": orjson.loads(r.new) if r.new is not None else None,
                     "changed_by": r.changed_by, "changed_at": r.changed_at.isoformat(),
                     "origin": r.origin or "user", "via": r.via} for r in rows]

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
                .where(h.c.changed_by == ctx.actor.id, h.c.object.in_(readable), h.c.action != "delete",
                       # A total that moved because of their change is not a change of theirs.
                       sa.or_(h.c.origin.is_(None), h.c.origin != "derived"))
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
                row = virtual_values(app, obj, dict(stored_row(conn, obj, record_id)), ctx, conn)
            return obj.dump(row), field_states(ctx, conn, app, obj, row)

    # -- writes -----------------------------------------------------------
    def _run(self, batch: WriteBatch) -> WriteBatch:
        """Run ``batch`` through the pipeline: ``prepare`` outside the transaction, then
        every other stage inside one write transaction."""
        ctx, pipeline = batch.ctx, self.pipeline
        with Pipeline.nested():
            if pipeline.has("prepare", batch.operation):
                batch.app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
                if batch.object_name in batch.app.objects:
                    pipeline.run_stages(batch, "prepare", "prepare")
            with contextlib.ExitStack() as scopes:
                for scope in pipeline.scopes(batch):
                    scopes.enter_context(scope)
                with ctx.tenant.write() as conn:
                    batch.conn = conn
                    batch.app = self.runtime.compiled(ctx.tenant, conn)
                    batch.app.object(batch.object_name)  # NotFound before anything else
                    pipeline.run_stages(batch, "access", "outbox")
                    if batch.operation != "delete":
                        for w in batch.writes:
                            batch.result_of(w)  # while the transaction can still read
        return batch

    def create(self, ctx: Context, object_name: str, data: Mapping[str, Any], *,
               origin: Origin = Origin.USER) -> dict[str, Any]:
        return self.bulk_create(ctx, object_name, [data], origin=origin, _single=True)[0]

    @_metadata_race
    def bulk_create(self, ctx: Context, object_name: str, rows: Sequence[Mapping[str, Any]], *,
                    origin: Origin = Origin.USER, _single: bool = False) -> list[dict[str, Any]]:
        """Create records all-or-nothing. Errors of row ``i`` are keyed ``i.field``."""
        if not isinstance(rows, Sequence) or isinstance(rows, (str, bytes)):
            raise ValidationError({"_schema": ["must be a list of records"]})
        if not rows:  # nothing to create is a mistake of the caller's, not a no-op to hide
            raise ValidationError({"_schema": ["send at least one record"]})
        if len(rows) > MAX_BULK:
            raise ValidationError({"_schema": [f"at most {MAX_BULK} records per request"]})
        batch = self._run(WriteBatch(ctx, object_name, "create", origin,
                                     [RecordWrite(i, input=r) for i, r in enumerate(rows)], bulk=not _single))
        return [batch.result_of(w) for w in batch.writes]

    @_metadata_race
    def update(self, ctx: Context, object_name: str, record_id: Any, data: Mapping[str, Any],
               *, expected_version: int | None = None, origin: Origin = Origin.USER) -> dict[str, Any]:
        """Change some fields of a record.

        :param expected_version: the ``row_version`` the caller read (from ``If-Match`` or
            the body); if the record moved on since, nothing is written.
        :raises ConflictError: on a stale ``row_version``.
        """
        if isinstance(data, Mapping) and "row_version" in data and expected_version is None:
            expected_version = data["row_version"]
            if not isinstance(expected_version, int) or isinstance(expected_version, bool):
                raise ValidationError({"row_version": ["must be an integer"]})
        batch = self._run(WriteBatch(ctx, object_name, "update", origin,
                                     [RecordWrite(0, input=data, record_id=record_id)],
                                     expected_version=expected_version))
        return batch.result_of(batch.writes[0])

    @_metadata_race
    def delete(self, ctx: Context, object_name: str, record_id: Any, *, expected_version: int | None = None,
               origin: Origin = Origin.USER) -> None:
        """Soft-delete a record, applying each referring lookup's ``on_delete``."""
        self._run(WriteBatch(ctx, object_name, "delete", origin, [RecordWrite(0, record_id=record_id)],
                             expected_version=expected_version))

    @_metadata_race
    def restore(self, ctx: Context, object_name: str, record_id: Any, *,
                origin: Origin = Origin.USER) -> dict[str, Any]:
        """Bring back a soft-deleted record (its unique values must still be free)."""
        batch = self._run(WriteBatch(ctx, object_name, "restore", origin, [RecordWrite(0, record_id=record_id)]))
        return batch.result_of(batch.writes[0])
