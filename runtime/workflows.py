"""Status workflows: the record service asks here before a write of an object that has
one, so the rules hold on every path (API, pages, imports, scripts, approvals).

A new record starts in the workflow's initial state. Changing the state field must
follow a transition from the old state to the new one that the actor's roles allow and
whose condition holds on the record as it would be saved. The state a record is in
decides who may change its other fields.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from loomwork.metadata.errors import NotFound, PermissionDenied, ValidationError
from loomwork.metadata.model import WorkflowDef, label_text

from .compiled import READ_MAX_AGE, CompiledApp, CompiledObject, Runtime
from .context import Context
from .evaluation import fetch_paths, make_env
from .expr import EvaluationError
from .participants import stored_row
from .permissions import Permissions
from .pipeline import Origin
from .reasons import Ability, Reason
from .rules import compile_one


class WorkflowService:
    def __init__(self, runtime: Runtime, permissions: Permissions, records: Any) -> None:
        self.runtime, self.permissions, self.records = runtime, permissions, records

    # -- checks the record service makes ------------------------------------------------------
    @staticmethod
    def _may(ctx: Context, roles: Any) -> bool:
        return ctx.actor.is_admin or not roles or not ctx.actor.roles.isdisjoint(roles)

    def check_create(self, ctx: Context, app: CompiledApp, obj: CompiledObject, values: dict[str, Any],
                     prefix: str = "") -> dict[str, list[str]]:
        """A new record's state: the initial one (set when not given)."""
        wf = app.meta.workflow_for(obj.name)
        if wf is None:
            return {}
        state = values.get(wf.field)
        if state is None:
            values[wf.field] = wf.initial
            return {}
        if state != wf.initial and not ctx.actor.is_admin:
            return {f"{prefix}{wf.field}": [f"a new record starts as {self._state_label(wf, wf.initial, ctx)}"]}
        return {}

    def edit_rule(self, ctx: Context, wf: WorkflowDef, state: Any) -> tuple[Reason | None, frozenset[str] | None]:
        """Whether the record's state lets ``ctx``'s actor change its other fields:
        ``(refusal, only these fields)``; ``(None, None)`` when the state sets no rule."""
        edit = (wf.states.get(state) or {}).get("edit")
        if edit is None or ctx.actor.is_admin:
            return None, None
        label = self._state_label(wf, state, ctx)
        if not self._may(ctx, edit.get("roles")) or edit.get("roles") == ():
            return Reason("state_locked", f"a record in state {label} cannot be changed by you", {"state": label}), \
                None
        fields = edit.get("fields")
        return None, frozenset(fields) if fields is not None else None

    def check_update(self, ctx: Context, conn: sa.Connection, app: CompiledApp, obj: CompiledObject,
                     old: Mapping[str, Any], changed: Mapping[str, Any]) -> None:
        """Refuse a change the workflow does not allow. :raises ValidationError, PermissionDenied:"""
        wf = app.meta.workflow_for(obj.name)
        if wf is None:
            return
        before = old.get(wf.field)
        others = sorted(k for k in changed if k != wf.field and k in obj.fields
                        and not obj.fields[k].ftype.system_set)
        if others:
            refusal, fields = self.edit_rule(ctx, wf, before)
            if refusal is not None:
                raise refusal.error()
            if fields is not None and set(others) - fields:
                bad = ", ".join(sorted(set(others) - fields))
                raise PermissionDenied(f"in state {self._state_label(wf, before, ctx)} these fields are "
                                       f"fixed: {bad}")
        if wf.field not in changed or changed[wf.field] == before:
            return
        after = changed[wf.field]
        if before is None:  # a record from before the workflow: it enters at the start (admins: anywhere)
            if after == wf.initial or ctx.actor.is_admin:
                return
            raise ValidationError({wf.field: [f"a record enters the workflow as "
                                              f"{self._state_label(wf, wf.initial, ctx)}"]})
        ways = wf.leading(before, after)
        if not ways:
            raise ValidationError({wf.field: [f"cannot go from {self._state_label(wf, before, ctx)} to "
                                              f"{self._state_label(wf, after, ctx)}"]})
        mine = [t for t in ways if self._may(ctx, t.get("roles"))]
        if not mine:
            raise PermissionDenied(f"you may not take {self._label(ways[0], ctx)}")
        record = {**old, **changed}
        for t in mine:
            if not t.get("condition") or self._holds(ctx, conn, app, obj, t["condition"], record, old):
                return
        raise ValidationError({wf.field: [self._not_yet(mine[0], ctx).message]})

    def _not_yet(self, t: Mapping[str, Any], ctx: Context) -> Reason:
        """Why a transition whose condition does not hold cannot be taken: its own
        ``message`` when it has one, never the raw condition."""
        label = self._label(t, ctx)
        message = label_text(t.get("message"), ctx.locale, "") if t.get("message") else ""
        return Reason("transition_not_yet", message or f"{label} is not possible yet",
                      {"transition": label, "message": message})

    # -- transitions as actions ------------------------------------------------------------------
    def options(self, ctx: Context, conn: sa.Connection, app: CompiledApp, obj: CompiledObject,
                record: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The transitions ``ctx``'s actor's roles allow from the record's state, each
        with whether its condition holds now (and why not: the transition's message)."""
        wf = app.meta.workflow_for(obj.name)
        if wf is None:
            return []
        out = []
        for t in wf.from_state(record.get(wf.field)):
            if not self._may(ctx, t.get("roles")):
                continue  # never theirs to take: not shown
            after = {**record, wf.field: t["to"]}
            holds = not t.get("condition") or self._holds(ctx, conn, app, obj, t["condition"], after, record)
            out.append({"name": t["name"], "label": self._label(t, ctx), "to": t["to"],
                        "to_label": self._state_label(wf, t["to"], ctx),
                        "ability": Ability.yes() if holds else Ability.no(self._not_yet(t, ctx))})
        return out

    def available(self, ctx: Context, object_name: str, record_id: Any) -> list[dict[str, Any]]:
        """The transitions the caller may take from the record's state now, and those
        their roles allow but whose condition does not hold yet (``allowed: false``
        with the reason)."""
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        self.permissions.check(ctx, app, object_name, "read")
        wf = app.meta.workflow_for(object_name)
        if wf is None or not self.permissions.allowed(ctx, app, object_name, "update"):
            return []  # most objects: no query at all
        with ctx.tenant.read() as conn:
            obj = app.object(object_name)
            record = dict(stored_row(conn, obj, record_id))
            return [{"name": o["name"], "label": o["label"], "to": o["to"], **o["ability"].as_dict()}
                    for o in self.options(ctx, conn, app, obj, record)]

    def transition(self, ctx: Context, object_name: str, record_id: Any, name: str, *,
                   origin: Origin = Origin.USER) -> dict[str, Any]:
        """Take transition ``name`` (the record service checks it like any write)."""
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        wf = app.meta.workflow_for(object_name)
        t = next((t for t in wf.transitions if t["name"] == name), None) if wf else None
        if t is None:
            raise NotFound(f"{object_name} has no transition {name!r}")
        record = self.records.get(ctx, object_name, record_id)
        if record.get(wf.field) not in t["from"]:
            raise ValidationError({wf.field: [f"{self._label(t, ctx)} does not start from "
                                              f"{self._state_label(wf, record.get(wf.field), ctx)}"]})
        return self.records.update(ctx, object_name, record["id"], {wf.field: t["to"]},
                                   expected_version=record["row_version"], origin=origin)

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _holds(ctx: Context, conn: sa.Connection, app: CompiledApp, obj: CompiledObject, source: str,
               record: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
        e = compile_one(app, obj.name, source, allow_old=True)
        wanted = {p for p in e.deps.paths if "." in p}
        paths = fetch_paths(conn, app, obj, record, wanted, ctx) if wanted else None
        try:
            return e.evaluate(make_env(ctx, record, old, paths)) is True
        except EvaluationError:
            return False

    @staticmethod
    def _label(t: Mapping[str, Any], ctx: Context) -> str:
        return label_text(t.get("label"), ctx.locale, t["name"].replace("_", " "))

    @staticmethod
    def _state_label(wf: WorkflowDef, state: Any, ctx: Context) -> str:
        spec = wf.states.get(state)
        return label_text(spec.get("label") if spec else None, ctx.locale, str(state))
