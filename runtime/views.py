"""Saved list views: the ones packages ship (metadata) and the ones users save.

A view is a ``view`` document (metadata/schemas/view.json): columns, a filter AST,
sort, page size and search. Package views are metadata and change with a publish;
views saved from a list page are rows of ``lw_view`` — personal, or shared with
everyone who may read the object when an admin saves them — so saving one never
publishes a metadata version (decision D31). Both kinds are checked the same way:
against the schema, then by compiling the filter, sort and columns for the object.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from loomwork.metadata.errors import NotFound, PermissionDenied, ValidationError
from loomwork.metadata.validation import schema_errors

from . import systables
from .compiled import READ_MAX_AGE, CompiledApp
from .context import Context
from .participants import written_id
from .query import ListRequest, QueryService

#: A user keeps at most this many personal views per object.
MAX_PERSONAL = 100


@dataclass(frozen=True)
class SavedView:
    #: The metadata name of a package view, or the row id (digits) of a saved one.
    key: str
    label: Any
    definition: dict[str, Any]
    #: ``package``, ``shared`` or ``personal``.
    source: str
    owner_id: int | None = None

    @property
    def columns(self) -> list[str]:
        return list(self.definition.get("columns", ()))

    def request(self, **overrides: Any) -> ListRequest:
        """The list query this view asks for; ``overrides`` (cursor, limit, ...) win."""
        d = self.definition
        req = ListRequest(filter=d.get("filter"), sort=list(d.get("sort", ())), search=d.get("search") or None,
                          limit=d.get("page_size", 50))
        for k, v in overrides.items():
            setattr(req, k, v)
        return req


class ViewService:
    def __init__(self, runtime, permissions, query: QueryService) -> None:
        self.runtime = runtime
        self.permissions = permissions
        self.query = query

    def list(self, ctx: Context, object_name: str) -> list[SavedView]:
        """The views ``ctx.actor`` may use on ``object_name``: package, shared, then own."""
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        self.permissions.check(ctx, app, object_name, "read")
        roles = ctx.actor.roles
        out = [SavedView(name, doc.get("label"), doc, "package")
               for name, doc in sorted(app.meta.doc.get("views", {}).items())
               if doc["object"] == object_name and (ctx.actor.is_admin or not doc.get("roles")
                                                    or roles.intersection(doc["roles"]))]
        v = systables.saved_views
        with ctx.tenant.read() as conn:
            rows = conn.execute(sa.select(v).where(
                v.c.object == object_name, sa.or_(v.c.shared.is_(True), v.c.owner_id == ctx.actor.id))
                .order_by(v.c.shared.desc(), v.c.id))
            out += [_saved(r) for r in rows]
        return out

    def get(self, ctx: Context, object_name: str, key: str) -> SavedView:
        for view in self.list(ctx, object_name):
            if view.key == key:
                return view
        raise NotFound(f"no view {key!r} of {object_name}")

    def default(self, ctx: Context, object_name: str) -> SavedView | None:
        """The package view marked ``default``, if the actor may use one."""
        return next((v for v in self.list(ctx, object_name)
                     if v.source == "package" and v.definition.get("default")), None)

    def save(self, ctx: Context, object_name: str, definition: dict[str, Any], *, shared: bool = False,
             key: str | None = None) -> SavedView:
        """Save a new view (or replace the caller's view ``key``).

        :raises ValidationError: for a definition that does not fit the schema or the object.
        :raises PermissionDenied: when a non-admin shares a view or changes someone else's.
        """
        if ctx.actor.id is None:
            raise PermissionDenied("only a signed-in user can save views")
        if shared and not ctx.actor.is_admin:
            raise PermissionDenied("only administrators can share views")
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        self.permissions.check(ctx, app, object_name, "read")
        if not isinstance(definition, dict):
            raise ValidationError({"view": ["must be an object"]})
        definition = {k: v for k, v in definition.items() if k not in ("default", "roles")}
        definition["object"] = object_name
        errors = schema_errors("view", definition)
        if errors:
            raise ValidationError({path or "view": [msg] for path, msg in errors})
        self._check(ctx, app, object_name, definition)
        v = systables.saved_views
        now = ctx.now()
        body = orjson.dumps(definition).decode()
        with ctx.tenant.write() as conn:
            if key is not None:
                row = self._own_row(ctx, conn, object_name, key)
                conn.execute(v.update().where(v.c.id == row.id).values(definition=body, shared=shared, updated_at=now))
                view_id = row.id
            else:
                mine = conn.execute(sa.select(sa.func.count()).select_from(v).where(
                    v.c.object == object_name, v.c.owner_id == ctx.actor.id)).scalar_one()
                if mine >= MAX_PERSONAL:
                    raise ValidationError({"view": [f"you have {MAX_PERSONAL} views of {object_name}; "
                                                    f"delete one first"]})
                view_id = conn.execute(v.insert().values(
                    object=object_name, owner_id=ctx.actor.id, shared=shared, definition=body,
                    created_at=now, updated_at=now)).inserted_primary_key[0]
        return SavedView(str(view_id), definition.get("label"), definition, "shared" if shared else "personal",
                         ctx.actor.id)

    def delete(self, ctx: Context, object_name: str, key: str) -> None:
        v = systables.saved_views
        with ctx.tenant.write() as conn:
            row = self._own_row(ctx, conn, object_name, key)
            conn.execute(v.delete().where(v.c.id == row.id))

    def _own_row(self, ctx: Context, conn: sa.Connection, object_name: str, key: str) -> Any:
        """The saved view ``key`` if the actor may change it (theirs, or shared and an admin)."""
        if not (key.isascii() and key.isdigit()):
            raise PermissionDenied("views that come with a package are changed in the designer")
        view_id = written_id(key, systables.MAX_ID)  # digits, yet maybe beyond any row id
        if view_id is None:
            raise NotFound(f"no view {key[:40]!r} of {object_name}")
        v = systables.saved_views
        row = conn.execute(sa.select(v).where(v.c.id == view_id, v.c.object == object_name)).first()
        if row is None or (row.owner_id != ctx.actor.id and not row.shared):
            raise NotFound(f"no view {key!r} of {object_name}")
        if row.owner_id != ctx.actor.id and not ctx.actor.is_admin:
            raise PermissionDenied("only administrators can change views shared by others")
        return row

    def _check(self, ctx: Context, app: CompiledApp, object_name: str, definition: dict[str, Any]) -> None:
        """Compile the view for the object: unknown fields or bad filters fail here, not
        when someone opens the view. Runs the query for a single row.

        :raises PermissionDenied: for a column of a looked-up object the actor may not
            read (D16: the object is named, the view is not saved)."""
        obj = app.object(object_name)
        for i, column in enumerate(definition.get("columns", ())):
            head, _sep, rest = column.partition(".")
            if not rest:
                continue
            target = obj.lookups.get(head)
            if target is not None and not self.permissions.allowed(ctx, app, target, "read"):
                raise PermissionDenied(f"column {column!r} shows {target} records, which you may not read")
            if target is None or "." in rest or rest not in app.object(target).fields:
                raise ValidationError({f"columns.{i}": [f"{column!r} is not a field of a record {head!r} looks up "
                                                        f"(one step through a lookup)"]})
        plain = [c for c in definition.get("columns", ()) if "." not in c]
        req = SavedView("", None, definition, "personal").request(fields=plain, limit=1)
        self.query.list(ctx, object_name, req)


def _saved(row: Any) -> SavedView:
    definition = orjson.loads(row.definition)
    return SavedView(str(row.id), definition.get("label"), definition, "shared" if row.shared else "personal",
                     row.owner_id)
