"""What an actor may do with one record right now, and why not.

Pages and API clients ask here instead of working it out: the record page shows Edit,
Delete, status buttons and "Submit for approval" exactly when the write path would
accept them, and disabled with the write path's own reason otherwise. Every answer
comes from the service that enforces the rule (permissions, the approval lock on the
instance's snapshot, the workflow's state rules and transitions, the submit rules),
so a page and the server cannot disagree.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .approvals import ApprovalService
from .compiled import READ_MAX_AGE, Runtime
from .context import Context
from .participants import stored_row
from .permissions import Permissions
from .reasons import Ability, Reason
from .workflows import WorkflowService


@dataclass(frozen=True)
class RecordAbilities:
    """The answers for one record (see :meth:`AbilityService.for_record`)."""

    edit: Ability
    #: When editing is allowed for some fields only (an approver's step, a state rule).
    editable_fields: frozenset[str] | None
    delete: Ability
    #: ``{name, label, to, to_label, ability}`` per transition the actor's roles allow.
    transitions: list[dict[str, Any]] = field(default_factory=list)
    #: The states the edit form's state field may offer (the current one first).
    states: list[Any] = field(default_factory=list)
    #: ``{name, label, ability}`` per approval process of the object.
    submit: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"edit": {**self.edit.as_dict(), "fields": sorted(self.editable_fields)
                         if self.editable_fields is not None else None},
                "delete": self.delete.as_dict(),
                "transitions": [{**{k: v for k, v in t.items() if k != "ability"}, **t["ability"].as_dict()}
                                for t in self.transitions],
                "states": list(self.states),
                "submit": [{"name": p["name"], "label": p["label"], **p["ability"].as_dict()} for p in self.submit]}


def _narrow(a: frozenset[str] | None, b: frozenset[str] | None) -> frozenset[str] | None:
    if a is None:
        return b
    return a if b is None else a & b


class AbilityService:
    def __init__(self, runtime: Runtime, permissions: Permissions, approvals: ApprovalService,
                 workflows: WorkflowService) -> None:
        self.runtime, self.permissions, self.approvals, self.workflows = runtime, permissions, approvals, workflows

    def for_record(self, ctx: Context, object_name: str, record_id: Any) -> RecordAbilities:
        """Whether ``ctx``'s actor may edit, delete, take each transition of and submit
        record ``record_id`` now. :raises NotFound, PermissionDenied: as reading it would."""
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        self.permissions.check(ctx, app, object_name, "read")
        obj = app.object(object_name)
        with ctx.tenant.read() as conn:
            row = dict(stored_row(conn, obj, record_id))
            rid = row["id"]
            may_update = self.permissions.allowed(ctx, app, object_name, "update")
            if may_update:
                edit, fields, lock_delete = self.approvals.lock_state(ctx, conn, app, object_name, rid)
            else:
                no = Reason("no_update", f"you may not change {object_name} records", {"object": object_name})
                edit, fields, lock_delete = Ability.no(no), None, Ability.yes()
            locked_by_approval = not edit.allowed
            wf = app.meta.workflow_for(object_name)
            transitions: list[dict[str, Any]] = []
            states: list[Any] = []
            if wf is not None:
                refusal, state_fields = self.workflows.edit_rule(ctx, wf, row.get(wf.field))
                if edit.allowed and refusal is not None:
                    edit = Ability.no(refusal)
                fields = _narrow(fields, state_fields)
                if may_update:
                    for t in self.workflows.options(ctx, conn, app, obj, row):
                        if locked_by_approval:  # a transition is a change: the lock refuses it too
                            t = {**t, "ability": edit}
                        transitions.append(t)
                states = [row.get(wf.field), *dict.fromkeys(t["to"] for t in transitions if t["ability"].allowed)]
            if edit.allowed and fields is not None and not fields:
                edit = Ability.no(Reason("no_fields", "no field of it may be changed now"))
            if not self.permissions.allowed(ctx, app, object_name, "delete"):
                delete = Ability.no(Reason("no_delete", f"you may not delete {object_name} records",
                                           {"object": object_name}))
            else:
                delete = lock_delete
            submit = [{"name": proc.name, "label": proc.title(ctx.locale), "ability": ability}
                      for proc, ability in self.approvals.submit_options(ctx, conn, app, object_name, row)]
        return RecordAbilities(edit, fields if edit.allowed else None, delete, transitions, states, submit)
