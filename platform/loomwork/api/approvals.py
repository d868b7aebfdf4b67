"""Approval endpoints: submit and follow a record's approvals, decide tasks, the inbox;
the people side (managers and delegations); and status workflow transitions."""
from __future__ import annotations

import datetime as dt

from flask import request

from loomwork.metadata.errors import PermissionDenied, ValidationError
from loomwork.runtime.pipeline import Origin

from ..auth import current_context
from ..state import state
from . import bp
from .jsonio import body, respond


def _fields(allowed: set[str]) -> dict:
    data = body() if request.content_length else {}
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["send a JSON object"]})
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValidationError({k: ["unknown field"] for k in unknown})
    return data


def _approvals():
    return state().services.approvals


@bp.get("/approvals/processes/<object_name>")
def approval_processes(object_name: str):
    return respond({"data": _approvals().processes(current_context(), object_name)})


@bp.post("/data/<object_name>/<record_id>/approvals")
def submit_approval(object_name: str, record_id: str):
    data = _fields({"process", "chosen", "comment"})
    return respond(_approvals().submit(current_context(), object_name, record_id, data.get("process"),
                                       chosen=data.get("chosen"), comment=data.get("comment")), 201)


@bp.get("/data/<object_name>/<record_id>/approvals")
def record_approvals(object_name: str, record_id: str):
    return respond({"data": _approvals().for_record(current_context(), object_name, record_id)})


@bp.get("/approvals/inbox")
def approval_inbox():
    box = request.args.get("box", "waiting")
    return respond({"data": _approvals().inbox(current_context(), box)})


@bp.get("/approvals/<instance_id>")
def approval_instance(instance_id: str):
    return respond(_approvals().instance(current_context(), instance_id))


@bp.post("/approvals/<instance_id>/recall")
def recall_approval(instance_id: str):
    data = _fields({"comment"})
    return respond(_approvals().recall(current_context(), instance_id, data.get("comment")))


@bp.post("/approvals/<instance_id>/comments")
def comment_approval(instance_id: str):
    data = _fields({"comment"})
    return respond(_approvals().comment(current_context(), instance_id, data.get("comment")), 201)


@bp.post("/approvals/tasks/<task_id>/approve")
def approve_task(task_id: str):
    data = _fields({"comment", "values"})
    return respond(_approvals().approve(current_context(), task_id, data.get("comment"), data.get("values")))


@bp.post("/approvals/tasks/<task_id>/reject")
def reject_task(task_id: str):
    data = _fields({"comment", "to"})
    to = data.get("to", "end")
    if not isinstance(to, str):
        raise ValidationError({"to": ["end, submitter, or the name of an earlier step"]})
    return respond(_approvals().reject(current_context(), task_id, data.get("comment"), to))


@bp.post("/approvals/tasks/<task_id>/transfer")
def transfer_task(task_id: str):
    data = _fields({"to", "comment"})
    return respond(_approvals().transfer(current_context(), task_id, data.get("to"), data.get("comment")))


@bp.post("/approvals/tasks/<task_id>/add-signer")
def add_signer(task_id: str):
    data = _fields({"user", "position", "comment"})
    return respond(_approvals().add_signer(current_context(), task_id, data.get("user"),
                                           data.get("position", "after"), data.get("comment")))


@bp.post("/approvals/tasks/batch-approve")
def batch_approve():
    data = _fields({"tasks", "comment"})
    return respond({"data": _approvals().batch_approve(current_context(), data.get("tasks"), data.get("comment"))})


# -- people ------------------------------------------------------------------------------

@bp.put("/users/<id:user_id>/manager")
def set_manager(user_id: int):
    data = _fields({"manager_id"})
    manager = data.get("manager_id")
    if manager is not None and (not isinstance(manager, int) or isinstance(manager, bool)):
        raise ValidationError({"manager_id": ["a user id, or null"]})
    ctx = current_context()
    state().services.users.set_manager(ctx, user_id, manager)
    return respond(state().services.users.get(ctx, user_id).as_dict())


def _when(value: object, name: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(str(value))
    except ValueError:
        raise ValidationError({name: ["an ISO date and time with its offset, e.g. 2026-12-24T00:00:00Z"]}) from None
    if when.tzinfo is None:
        raise ValidationError({name: ["give the time's offset (Z for UTC)"]})
    return when


@bp.get("/users/<id:user_id>/delegations")
def list_delegations(user_id: int):
    ctx = current_context()
    if ctx.actor.id != user_id and not ctx.actor.is_admin:
        raise PermissionDenied("you may list only your own delegations")
    return respond({"data": state().services.users.delegations(ctx, user_id)})


@bp.post("/users/<id:user_id>/delegations")
def create_delegation(user_id: int):
    data = _fields({"delegate_id", "starts_at", "ends_at"})
    ctx = current_context()
    new_id = state().services.users.delegate(ctx, user_id, data.get("delegate_id"),
                                             _when(data.get("starts_at"), "starts_at"),
                                             _when(data.get("ends_at"), "ends_at"))
    return respond({"id": new_id}, 201)


@bp.delete("/users/<id:user_id>/delegations/<id:delegation_id>")
def delete_delegation(user_id: int, delegation_id: int):
    state().services.users.remove_delegation(current_context(), delegation_id)
    return "", 204


# -- what may be done with a record ----------------------------------------------------------

@bp.get("/data/<object_name>/<record_id>/abilities")
def record_abilities(object_name: str, record_id: str):
    """Whether the caller may edit (which fields), delete, take each transition of and
    submit the record now, each refusal with its reason (code, message, params)."""
    return respond(state().services.abilities.for_record(current_context(), object_name, record_id).as_dict())


# -- status workflows ----------------------------------------------------------------------

@bp.get("/data/<object_name>/<record_id>/transitions")
def record_transitions(object_name: str, record_id: str):
    return respond({"data": state().services.workflows.available(current_context(), object_name, record_id)})


@bp.post("/data/<object_name>/<record_id>/transitions/<name>")
def take_transition(object_name: str, record_id: str, name: str):
    _fields(set())
    return respond(state().services.workflows.transition(current_context(), object_name, record_id, name,
                                                         origin=Origin.API))
