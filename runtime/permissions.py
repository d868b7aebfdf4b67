"""The one place that decides what an actor may do.

Object-level create/read/update/delete by role today. Callers ask through
:class:`Permissions` only, so field-level and row-level rules (a filter AST with
``$user``) slot in here later without touching the record service, the query
engine or the API.
"""
from __future__ import annotations

from typing import Any

from loomwork.metadata.errors import NotFound, PermissionDenied

from .compiled import CompiledApp
from .context import Context

OPS = ("create", "read", "update", "delete")


class Permissions:
    def allowed(self, ctx: Context, app: CompiledApp, object_name: str, op: str) -> bool:
        actor = ctx.actor
        if actor.is_admin:
            return True
        roles = app.meta.roles
        return any(roles[r].allows(object_name, op) for r in actor.roles if r in roles)

    def check(self, ctx: Context, app: CompiledApp, object_name: str, op: str) -> None:
        """:raises NotFound: for an object that does not exist.
        :raises PermissionDenied: when the actor may not do ``op`` on it (the API relies on
            a 403 naming the operation, also for objects the actor may not read)."""
        app.object(object_name)
        if self.allowed(ctx, app, object_name, op):
            return
        if op != "read" and self.allowed(ctx, app, object_name, "read"):
            raise PermissionDenied(f"you may not {op} {object_name} records")
        if op == "read":
            raise PermissionDenied(f"you may not read {object_name} records")
        raise PermissionDenied(f"you may not {op} {object_name} records")

    def row_filter(self, ctx: Context, app: CompiledApp, object_name: str) -> Any | None:
        """A filter AST limiting which rows the actor sees (row-level security); none yet."""
        return None

    def readable_objects(self, ctx: Context, app: CompiledApp) -> list[str]:
        return [name for name in app.objects if self.allowed(ctx, app, name, "read")]


__all__ = ["Permissions", "NotFound", "OPS"]
