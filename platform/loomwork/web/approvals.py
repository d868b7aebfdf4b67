"""Approvals in the pages: the panel on a record page (submit, the process drawn as its
steps, decide, recall, history) and the inbox (waiting for me, submitted by me, CC to
me, with batch approve). Every button posts to a route here that calls the approval
service; the service enforces everything."""
from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, url_for

from loomwork.metadata.errors import (
    ConflictError,
    LoomworkError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from loomwork.metadata.model import label_text
from loomwork.runtime.approvals import has_processes
from loomwork.runtime.compiled import CompiledApp
from loomwork.runtime.context import Actor, Context
from loomwork.runtime.systables import MAX_ID

from .. import auth
from ..state import state
from . import bp
from .common import _, compiled, locale, navigation, object_label, parse_id, signed_in
from .messages import reason_text, translate_all
from .present import format_plain
from .titles import Titles, user_names


def _N(message: str) -> str:
    """Marks a text for translation where it is defined (extracted with ``-k _N``);
    ``_()`` translates it where it is shown."""
    return message


STATUS_LABELS = {"pending": _N("Waiting for approval"), "returned": _N("Sent back to the submitter"),
                 "approved": _N("Approved"), "rejected": _N("Rejected"), "recalled": _N("Recalled")}
ACTION_LABELS = {
    "submit": _N("Submitted"), "resubmit": _N("Submitted again"), "approve": _N("Approved"),
    "reject": _N("Rejected"), "recall": _N("Recalled"), "transfer": _N("Handed over"),
    "add_signer": _N("Added a signer"), "comment": _N("Commented"), "delegated": _N("Delegated"),
    "node_approved": _N("Step approved"), "approved": _N("Approval complete"), "rejected": _N("Approval rejected"),
    "recalled": _N("Approval recalled"), "branch": _N("Routed"), "self_skip": _N("Own approval skipped"),
    "self_forbid": _N("Submitter left out"), "no_approver": _N("No approver: passed"), "notify": _N("Notified"),
    "action": _N("Action done"), "remind": _N("Reminded"), "escalate": _N("Escalated at the deadline"),
    "overdue": _N("Overdue"),
}


def _msgs(exc: LoomworkError) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(m for ms in translate_all(exc.errors).values() for m in ms)
    return exc.message


def panel(ctx: Context, app: CompiledApp, object_name: str, record: dict[str, Any],
          abilities: Any) -> dict[str, Any] | None:
    """What the record page shows about approvals (None when the object has no process).
    What may be done comes from the services (``abilities``, the instance); this only
    lays it out."""
    if not has_processes(app, object_name):
        return None  # most record pages: no approval query at all
    service = state().services.approvals
    instances = service.for_record(ctx, object_name, record["id"], limit=1)
    if not abilities.submit and not instances:
        return None
    out: dict[str, Any] = {"processes": [], "instance": None}
    for option in abilities.submit:
        ability = option["ability"]
        if not ability.allowed and ability.reason and ability.reason.code == "already_pending":
            continue  # the panel shows the instance instead
        proc = app.meta.approvals[option["name"]]
        choose = [{"name": n["name"], "title": label_text(n.get("label"), locale(), n["name"])}
                  for n in proc.doc["nodes"] if n["type"] == "approval"
                  and any(spec.get("chosen_by_submitter") for spec in n.get("approvers", ()))] \
            if ability.allowed else []
        out["processes"].append({"name": proc.name, "label": option["label"], "choose": choose,
                                 "people": _active_people(ctx) if choose else [], "allowed": ability.allowed,
                                 "reason": reason_text(ability.reason)})
    latest = instances[0] if instances else None
    if latest is None:
        return out
    people = user_names(ctx, {t["assignee"] for t in latest["tasks"]} | {h["actor"] for h in latest["history"]}
                        | {latest["submitter"]})
    mine = next((t for t in latest["tasks"] if t["status"] == "pending" and t["assignee"] == ctx.actor.id
                 and t["kind"] == "approve"), None)
    steps = []
    for n in latest["nodes"]:
        if n["state"] == "skipped" or n["type"] not in ("approval", "cc"):
            continue  # the branch not taken; routing and actions are the engine's business
        who = [people.get(t["assignee"], "#" + str(t["assignee"])) for t in latest["tasks"]
               if t["node"] == n["name"] and t["status"] not in ("cancelled", "transferred")]
        steps.append({**n, "title": label_text(n.get("label"), locale(), n["name"].replace("_", " ").capitalize()),
                      "who": who})
    seen: dict[str, int] = {}
    for step in steps:  # two steps of the same name are told apart by their number
        seen[step["title"]] = seen.get(step["title"], 0) + 1
    counts = dict.fromkeys(seen, 0)
    for step in steps:
        if seen[step["title"]] > 1:
            counts[step["title"]] += 1
            step["title"] = f"{step['title']} ({counts[step['title']]})"
    titles = {s["name"]: s["title"] for s in steps}
    history = [{"action": _(ACTION_LABELS.get(h["action"], h["action"])), "by": people.get(h["actor"], _("system")),
                "at": format_plain("datetime", h["at"], locale()), "comment": h["comment"]}
               for h in reversed(latest["history"]) if not h["system"]]
    proc = app.meta.approvals.get(latest["process"])
    reject_to = [{"value": to, "label": _("to the end (rejected)") if to == "end" else
                  _("back to the submitter") if to == "submitter" else
                  _("back to %(step)s", step=titles.get(to, to))} for to in latest["reject_to"]]
    # People to hand my task to, or to add as signers.
    others = [p for p in _active_people(ctx) if p[0] != ctx.actor.id] if mine is not None else []
    out["instance"] = {**latest, "steps": steps, "history": history, "mine": mine, "reject_to": reject_to,
                       "others": others,
                       "title": proc.title(locale()) if proc else latest["process"],
                       "status_label": _(STATUS_LABELS.get(latest["status"], latest["status"])),
                       "may_recall": latest["status"] in ("pending", "returned")
                       and (latest["submitter"] == ctx.actor.id or ctx.actor.is_admin),
                       "submitter_name": people.get(latest["submitter"], "")}
    return out


def _active_people(ctx: Context) -> list[tuple[int, str]]:
    """(id, name) of the tenant's active users, read once per request."""
    found = g.get("lw_active_people")
    if found is None:
        everyone = state().services.users.list(Context(ctx.tenant, Actor.system()))
        found = g.lw_active_people = [(u.id, u.full_name or u.username) for u in everyone if u.active]
    return found


def _back(object_name: str, record_id: int):
    return redirect(url_for("web.record_page", object_name=object_name, raw_id=record_id))


@bp.post("/app/<object_name>/<raw_id>/approvals")
def submit_approval(object_name: str, raw_id: str):
    ctx = signed_in()
    rid = parse_id(raw_id)
    if rid is None:
        raise NotFound(f"no {object_name} record {raw_id[:40]}")
    try:
        chosen = {key.removeprefix("chosen."): [uid for v in request.form.getlist(key)
                                                if (uid := parse_id(v, MAX_ID))]
                  for key in request.form if key.startswith("chosen.")}
        state().services.approvals.submit(ctx, object_name, rid, request.form.get("process") or None,
                                          chosen=chosen or None, comment=request.form.get("comment") or None)
        flash(_("Submitted for approval."), "ok")
    except (ValidationError, ConflictError, PermissionDenied) as exc:
        flash(_("Could not submit: %(reason)s", reason=_msgs(exc)), "error")
    return _back(object_name, int(raw_id))


@bp.post("/app/approvals/<raw_id>/recall")
def recall_approval(raw_id: str):
    ctx = signed_in()
    service = state().services.approvals
    inst = service.instance(ctx, raw_id)
    try:
        service.recall(ctx, raw_id, request.form.get("comment") or None)
        flash(_("Approval recalled."), "ok")
    except (ConflictError, PermissionDenied) as exc:
        flash(_("Could not recall: %(reason)s", reason=_msgs(exc)), "error")
    return _back(inst["object"], inst["record_id"])


@bp.post("/app/approvals/tasks/<raw_id>")
def decide(raw_id: str):
    """Approve or reject one of my tasks, with a comment (the record page's dialog)."""
    ctx = signed_in()
    service = state().services.approvals
    decision = request.form.get("decision")
    comment = request.form.get("comment") or None
    back = request.form.get("back") or ""
    try:
        if decision == "approve":
            inst = service.approve(ctx, raw_id, comment)
            flash(_("Approved."), "ok")
        elif decision == "reject":
            inst = service.reject(ctx, raw_id, comment, request.form.get("to") or "end")
            flash(_("Rejected."), "ok")
        else:
            raise ValidationError({"decision": ["approve or reject"]})
    except (ValidationError, ConflictError, PermissionDenied, NotFound) as exc:
        flash(_("Not done: %(reason)s", reason=_msgs(exc)), "error")
        return redirect(url_for("web.inbox") if back == "inbox" else request.referrer or url_for("web.inbox"))
    if back == "inbox":
        return redirect(url_for("web.inbox"))
    return _back(inst["object"], inst["record_id"])


@bp.post("/app/approvals/tasks/<raw_id>/share")
def share_task(raw_id: str):
    """Hand my task to someone (转交) or add a signer before or after me (加签)."""
    ctx = signed_in()
    service = state().services.approvals
    how, user = request.form.get("how"), request.form.get("user", "")
    comment = request.form.get("comment") or None
    try:
        uid = parse_id(user, MAX_ID)
        if uid is None:
            raise ValidationError({"user": ["choose someone"]})
        if how == "transfer":
            inst = service.transfer(ctx, raw_id, uid, comment)
            flash(_("Handed over."), "ok")
        elif how in ("before", "after"):
            inst = service.add_signer(ctx, raw_id, uid, how, comment)
            flash(_("Signer added."), "ok")
        else:
            raise ValidationError({"how": ["hand over, or add a signer before or after you"]})
    except (ValidationError, ConflictError, PermissionDenied, NotFound) as exc:
        flash(_("Not done: %(reason)s", reason=_msgs(exc)), "error")
        return redirect(request.referrer or url_for("web.inbox"))
    return _back(inst["object"], inst["record_id"])


@bp.get("/app/approvals")
def inbox():
    ctx = signed_in()
    app = compiled(ctx)
    box = request.args.get("box", "waiting")
    if box not in ("waiting", "submitted", "cc"):
        box = "waiting"
    service = state().services.approvals
    items = service.inbox(ctx, box)
    titles = Titles(ctx, app)
    for item in items:
        titles.want(item["object"], [item["record_id"]])
    titles.fetch()
    people = user_names(ctx, {i.get("submitter") for i in items})
    rows = []
    for item in items:
        proc = app.meta.approvals.get(item["process"])
        node = item.get("task", {}).get("node")
        spec = next((n for n in proc.doc["nodes"] if n["name"] == node), None) if proc and node else None
        rows.append({**item,
                     "step_label": label_text(spec.get("label"), locale(), node.replace("_", " ").capitalize())
                     if spec else (node or ""),
                     "submitted": format_plain("datetime", item["submitted_at"], locale()),
                     "record_title": titles.title(item["object"], item["record_id"]) or f"#{item['record_id']}",
                     "object_label": object_label(app, item["object"]) if item["object"] in app.objects
                     else item["object"],
                     "process_label": proc.title(locale()) if proc else item["process"],
                     "submitter_name": people.get(item.get("submitter"), ""),
                     "status_label": _(STATUS_LABELS.get(item.get("instance_status") or item.get("status"), ""))})
    return render_template("inbox.html", ctx=ctx, nav=navigation(ctx, app), csrf=auth.csrf_token(), box=box,
                           rows=rows, inbox=True)


@bp.post("/app/approvals/batch")
def batch_approve():
    ctx = signed_in()
    ids = [tid for i in request.form.getlist("tasks") if (tid := parse_id(i, MAX_ID)) is not None]
    if not ids:
        flash(_("Select at least one task first."), "error")
        return redirect(url_for("web.inbox"))
    results = state().services.approvals.batch_approve(ctx, ids, request.form.get("comment") or None)
    done = sum(1 for r in results if r["ok"])
    flash(_("%(n)s approved.", n=done), "ok")
    for r in results:
        if not r["ok"]:
            flash(_("Task %(id)s: %(reason)s", id=r["task"], reason=r["error"]), "error")
    return redirect(url_for("web.inbox"))
