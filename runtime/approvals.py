"""The approval engine: instances of approval processes over records, their tasks, and
every operation on them, each one transaction.

An instance keeps a snapshot of its process as it was at submission (a later publish
does not move instances in flight). It walks the process's nodes: an approval node
creates tasks (one per approver, the delegate standing in where a delegation covers
the time) and waits; a branch chooses the next node by its conditions; a CC node and
an action node do their work and move on. Decisions are race-free: a task changes
from ``pending`` only by a conditional update, under the instance's row lock, so of
two people deciding at the same moment exactly one wins and the other is told.

While an instance is pending, its record is locked by the process's ``lock`` policy,
checked by the write pipeline on every write path. The engine's own writes to the
record (an action's field updates, an approver's step-editable values) have the
origin ``approval`` holding that record, which the lock lets through.

Action nodes and the ``on_approved`` / ``on_rejected`` / ``on_recalled`` lists run
action kinds found by name in the runtime's registry (the built-ins and plugins',
:mod:`.approval_actions`), each given an :class:`~.approval_actions.ActionRun`.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from loomwork.metadata.errors import ConflictError, NotFound, PermissionDenied, ValidationError
from loomwork.metadata.model import ApprovalDef, label_text

from . import systables
from .approval_actions import ActionRun
from .compiled import READ_MAX_AGE, CompiledApp, Runtime
from .context import Actor, Context
from .evaluation import fetch_paths, make_env, virtual_values
from .expr import EvaluationError
from .jobs import JobService, Notification
from .participants import MAX_RECORD_ID, stored_row
from .permissions import Permissions
from .pipeline import Origin
from .reasons import Ability, Reason
from .rules import compile_one

OPEN = systables.APPROVAL_OPEN
#: Task states that still count (the others were replaced or withdrawn).
LIVE = ("waiting", "pending", "approved", "rejected")



def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class Definition:
    """An instance's process snapshot, with its nodes by name and their order."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.nodes: list[Mapping[str, Any]] = list(doc["nodes"])
        self.index = {n["name"]: i for i, n in enumerate(self.nodes)}

    def node(self, name: str) -> Mapping[str, Any]:
        return self.nodes[self.index[name]]

    def next_of(self, name: str) -> str:
        i = self.index[name]
        n = self.nodes[i]
        return n.get("next") or (self.nodes[i + 1]["name"] if i + 1 < len(self.nodes) else "end")


class ApprovalService:
    def __init__(self, runtime: Runtime, permissions: Permissions, records: Any, users: Any,
                 scripts: Any = None, jobs: JobService | None = None) -> None:
        self.runtime, self.permissions, self.records, self.users, self.scripts = \
            runtime, permissions, records, users, scripts
        self.jobs = jobs or JobService()
        self.jobs.handlers["approval_deadline"] = self._deadline
        self.jobs.handlers["approval_reminder"] = self._reminder

    # -- reading ---------------------------------------------------------------------
    def processes(self, ctx: Context, object_name: str) -> list[dict[str, Any]]:
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        self.permissions.check(ctx, app, object_name, "read")
        return [{"name": p.name, "label": p.title(ctx.locale), "trigger": p.trigger}
                for p in app.meta.approvals_for(object_name)]

    def instance(self, ctx: Context, instance_id: Any) -> dict[str, Any]:
        """An instance with its process drawn as nodes and states, its tasks and history."""
        with ctx.tenant.read() as conn:
            inst = self._instance(conn, instance_id)
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            self.permissions.check(ctx, app, inst.object, "read")
            return self._describe(conn, inst)

    def for_record(self, ctx: Context, object_name: str, record_id: Any,
                   limit: int | None = None) -> list[dict[str, Any]]:
        """The record's approvals, newest first (the latest ``limit`` of them)."""
        i = systables.approval_instances
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            self.permissions.check(ctx, app, object_name, "read")
            rows = conn.execute(sa.select(i).where(i.c.object == object_name, i.c.record_id == _int(record_id))
                                .order_by(i.c.id.desc()).limit(limit))
            return [self._describe(conn, r) for r in rows]

    def inbox(self, ctx: Context, box: str = "waiting", limit: int = 100) -> list[dict[str, Any]]:
        """``waiting``: tasks waiting for me; ``submitted``: instances I submitted;
        ``cc``: what I am told about."""
        t, i = systables.approval_tasks, systables.approval_instances
        limit = max(1, min(int(limit), 500))
        with ctx.tenant.read() as conn:
            if box == "submitted":
                rows = conn.execute(sa.select(i).where(i.c.submitter == ctx.actor.id)
                                    .order_by(i.c.id.desc()).limit(limit))
                return [self._summary(r) for r in rows]
            if box not in ("waiting", "cc"):
                raise ValidationError({"box": ["must be waiting, submitted or cc"]})
            kind, status = ("approve", "pending") if box == "waiting" else ("cc", "cc")
            rows = conn.execute(sa.select(t, i.c.process, i.c.object, i.c.record_id, i.c.status.label("instance_status"),
                                          i.c.submitter, i.c.submitted_at)
                                .join(i, i.c.id == t.c.instance_id)
                                .where(t.c.assignee == ctx.actor.id, t.c.kind == kind, t.c.status == status)
                                .order_by(t.c.id.desc()).limit(limit)).mappings()
            return [{"task": _task_doc(r), "instance_id": r["instance_id"], "process": r["process"],
                     "object": r["object"], "record_id": r["record_id"], "instance_status": r["instance_status"],
                     "submitter": r["submitter"], "submitted_at": r["submitted_at"].isoformat()} for r in rows]

    # -- submitting ------------------------------------------------------------------
    def submit(self, ctx: Context, object_name: str, record_id: Any, process: str | None = None, *,
               chosen: Mapping[str, Sequence[Any]] | None = None, comment: str | None = None) -> dict[str, Any]:
        """Start an approval of a record (or resubmit one sent back to its submitter)."""
        with ctx.tenant.write() as conn, ctx.tenant.joined(conn):
            app = self.runtime.compiled(ctx.tenant, conn)
            inst_id = self._submit(ctx, conn, app, object_name, _int(record_id), process, chosen, comment,
                                   automatic=False)
            assert inst_id is not None  # a manual submission raises instead
            return self._describe(conn, self._instance(conn, inst_id))

    def _submit(self, ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str, record_id: int,
                process: str | None, chosen: Mapping[str, Sequence[Any]] | None, comment: str | None, *,
                automatic: bool) -> int | None:
        app.object(object_name)  # NotFound for an unknown object
        procs = app.meta.approvals_for(object_name)
        if process is not None:
            procs = [p for p in procs if p.name == process]
        if not procs:
            raise NotFound(f"{object_name} has no active approval process" + (f" {process!r}" if process else ""))
        if len(procs) > 1:
            raise ValidationError({"process": [f"say which process: {', '.join(p.name for p in procs)}"]})
        proc: ApprovalDef = procs[0]
        row = self._record(conn, app, object_name, record_id, ctx)
        i = systables.approval_instances
        open_one = conn.execute(sa.select(i).where(i.c.object == object_name, i.c.record_id == record_id,
                                                   i.c.status.in_(OPEN)).with_for_update()).first()
        reason = self._submit_reason(ctx, conn, app, proc, row, open_one, automatic=automatic)
        if reason is not None:
            if automatic and reason.code in ("not_applicable", "final_state"):
                return None  # a record the process does not apply to: nothing to start
            kind = {"already_pending": ConflictError, "not_applicable": ValidationError}.get(reason.code)
            if kind is ValidationError:
                raise ValidationError({"_schema": [reason.message]})
            raise (kind or PermissionDenied)(reason.message)
        doc = proc.snapshot()
        now = ctx.now()
        picked = _clean_chosen(chosen)
        if open_one is not None:  # returned to the submitter: the same instance goes on
            definition = Definition(json.loads(open_one.definition))
            start = open_one.resume_node if definition.doc.get("resubmit") == "resume" and open_one.resume_node \
                else definition.nodes[0]["name"]
            conn.execute(i.update().where(i.c.id == open_one.id).values(
                status="pending", resume_node=None, submitted_at=now, chosen=_dumps(picked) if picked else
                open_one.chosen, row_version=i.c.row_version + 1))
            inst_id = open_one.id
            self._event(conn, inst_id, "resubmit", ctx.actor.id, now, comment, node=start)
        else:
            definition = Definition(doc)
            start = definition.nodes[0]["name"]
            try:
                # The open-instance index refuses a second open approval of the record: a
                # submission that committed meanwhile (PostgreSQL; SQLite's are serial).
                with conn.begin_nested():
                    inst_id = conn.execute(i.insert().values(
                        process=proc.name, version=app.version, definition=_dumps(doc), object=object_name,
                        record_id=record_id, status="pending", node=None, round=0,
                        chosen=_dumps(picked) if picked else None, locked=False, submitter=ctx.actor.id,
                        submitted_at=now, row_version=1)).inserted_primary_key[0]
            except sa.exc.IntegrityError:
                if automatic:
                    return None  # someone else's submission started it
                raise ConflictError(_already_pending(proc, ctx.locale).message) from None
            self._event(conn, inst_id, "submit", ctx.actor.id, now, comment,
                        detail={"automatic": automatic, "version": app.version})
        self._enter(ctx, conn, app, self._instance(conn, inst_id), start)
        return inst_id

    def _submit_reason(self, ctx: Context, conn: sa.Connection, app: CompiledApp, proc: ApprovalDef,
                       row: Mapping[str, Any], open_one: Any, *, automatic: bool) -> Reason | None:
        """Why ``ctx``'s actor cannot submit ``row`` to ``proc`` now (None: they can).
        The one home of these rules: :meth:`submit` raises the reason, the record
        page shows it on a disabled button."""
        title = proc.title(ctx.locale)
        params = {"process": title}
        if open_one is not None and open_one.status == "pending":
            return _already_pending(proc, ctx.locale)
        if open_one is not None and open_one.submitter != ctx.actor.id and not ctx.actor.is_admin \
                and not automatic:
            return Reason("returned_to_submitter", "it was sent back to its submitter, who resubmits it", params)
        wf = app.meta.workflow_for(proc.object)
        if wf is not None and (wf.states.get(row.get(wf.field)) or {}).get("final"):
            state = label_text((wf.states.get(row.get(wf.field)) or {}).get("label"), ctx.locale,
                               str(row.get(wf.field)))
            return Reason("final_state", f"a record in its final state ({state}) is not submitted for approval",
                          {**params, "state": state})
        if not automatic:
            if not self.permissions.allowed(ctx, app, proc.object, "update"):
                return Reason("no_update", f"you may not change {proc.object} records", params)
            who = proc.doc.get("submitters")
            if who and not ctx.actor.is_admin and not (who.get("owner") and row.get("owner_id") == ctx.actor.id) \
                    and ctx.actor.roles.isdisjoint(who.get("roles", ())):
                return Reason("not_submitter", f"you may not submit this record for {title}", params)
        condition = proc.doc.get("entry_condition")
        if condition and not self._holds(ctx, conn, app, proc.object, condition, row):
            return Reason("not_applicable", f"{title} does not apply to this record (its entry condition is "
                                            f"not met)", params)
        return None

    def submit_options(self, ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str,
                       row: Mapping[str, Any]) -> list[tuple[ApprovalDef, Ability]]:
        """The active processes of the record, each with whether ``ctx``'s actor can
        submit it now (a record sent back offers only its own process)."""
        i = systables.approval_instances
        open_one = conn.execute(sa.select(i).where(i.c.object == object_name, i.c.record_id == row["id"],
                                                   i.c.status.in_(OPEN)).order_by(i.c.id.desc()).limit(1)).first()
        out = []
        for proc in app.meta.approvals_for(object_name):
            if open_one is not None and open_one.status == "returned" and proc.name != open_one.process:
                continue
            reason = self._submit_reason(ctx, conn, app, proc, row, open_one, automatic=False)
            out.append((proc, Ability.yes() if reason is None else Ability.no(reason)))
        return out

    def reject_targets(self, conn: sa.Connection, inst_id: int, node: str) -> list[str]:
        """Where a rejection at ``node`` may send the instance: ``end``, the submitter,
        or a step it passed before (see :meth:`reject`)."""
        visited = self._visited(conn, inst_id)
        return ["end", "submitter", *(visited[:visited.index(node)] if node in visited else [])]

    # -- walking the process -----------------------------------------------------------
    def _enter(self, ctx: Context, conn: sa.Connection, app: CompiledApp, inst: Any, name: str) -> None:
        """Move ``inst`` to node ``name`` and on through every node that does not wait."""
        definition = Definition(json.loads(inst.definition))
        i = systables.approval_instances
        for _ in range(len(definition.nodes) * 4 + 4):  # links were checked for loops at publish
            if name == "end":
                self._finish(ctx, conn, app, inst, "approved")
                return
            node = definition.node(name)
            round_ = conn.execute(i.update().where(i.c.id == inst.id).values(
                node=name, round=i.c.round + 1, row_version=i.c.row_version + 1).returning(i.c.round)).scalar_one()
            inst = self._instance(conn, inst.id)
            row = self._record(conn, app, inst.object, inst.record_id, None)
            kind = node["type"]
            if kind == "branch":
                # A condition that cannot be evaluated (a missing value) does not hold.
                name = next((b["next"] for b in node["branches"]
                             if self._holds(ctx, conn, app, inst.object, b["condition"], row, quiet=True)),
                            definition.next_of(name))
                self._event(conn, inst.id, "branch", None, ctx.now(), None, node=node["name"], detail={"to": name})
                continue
            if kind == "cc":
                people = self._resolve(ctx, conn, app, inst, node.get("recipients") or (), row)
                self._create_tasks(ctx, conn, inst, node["name"], round_, people, kind="cc")
                name = definition.next_of(name)
                continue
            if kind == "action":
                self._run_actions(ctx, conn, app, inst, node.get("actions") or ())
                name = definition.next_of(name)
                continue
            if self._start_approval(ctx, conn, app, inst, node, round_, row):
                return  # waiting for decisions
            name = definition.next_of(name)
        raise ConflictError("the approval process does not come to an end")  # pragma: no cover (checked at publish)

    def _start_approval(self, ctx: Context, conn: sa.Connection, app: CompiledApp, inst: Any,
                        node: Mapping[str, Any], round_: int, row: Mapping[str, Any]) -> bool:
        """Create a node's tasks; False when it needs nobody (it is passed)."""
        people = self._resolve(ctx, conn, app, inst, node["approvers"], row, node=node["name"])
        policy = node.get("self_approval", "allow")
        submitter = inst.submitter
        skipped = False
        if submitter in people and policy in ("skip", "forbid"):
            people = [p for p in people if p != submitter]
            skipped = policy == "skip"
            self._event(conn, inst.id, "self_" + policy, submitter, ctx.now(), None, node=node["name"])
        if skipped and (not people or node.get("mode", "any") == "any"):
            return False  # the submitter's own approval counts, and it is all the node needs
        if not people:
            fallback = node.get("if_no_approver", "error")
            if fallback == "approve":
                self._event(conn, inst.id, "no_approver", None, ctx.now(), None, node=node["name"],
                            detail={"then": "approved"})
                return False
            if fallback == "admin":
                people = self._admins(conn)
            if not people:
                raise ValidationError({"_schema": [f"nobody can approve step {node['name']!r} "
                                                   f"(no approver found)"]})
        sequential = node.get("mode", "any") == "sequential"
        self._create_tasks(ctx, conn, inst, node["name"], round_, people, kind="approve", sequential=sequential)
        return True

    def _create_tasks(self, ctx: Context, conn: sa.Connection, inst: Any, node: str, round_: int,
                      people: Sequence[int], *, kind: str, sequential: bool = False,
                      added_by: int | None = None, after_task: int | None = None, seq_from: int = 0) -> list[int]:
        t = systables.approval_tasks
        now = ctx.now()
        spec = Definition(json.loads(inst.definition)).node(node) if kind == "approve" else {}
        forbid = inst.submitter if spec.get("self_approval") == "forbid" else None
        ids = []
        for n, person in enumerate(people):
            assignee = self.users.delegate_at(conn, person, now) or person
            if assignee == forbid:  # a delegation must not hand the submitter their own approval
                assignee = person
            status = "cc" if kind == "cc" else ("waiting" if (sequential and n > 0) or after_task else "pending")
            task_id = conn.execute(t.insert().values(
                instance_id=inst.id, node=node, round=round_, kind=kind, status=status, seq=seq_from + n,
                approver=person, assignee=assignee, delegated=assignee != person, added_by=added_by,
                after_task=after_task, created_at=now)).inserted_primary_key[0]
            ids.append(task_id)
            if assignee != person:
                self._event(conn, inst.id, "delegated", person, now, None, node=node, task_id=task_id,
                            detail={"to": assignee})
            if status == "pending":
                self._became_pending(ctx, conn, inst, task_id, assignee, spec)
            elif status == "cc":
                self._tell(conn, inst, assignee, "cc", now)
        return ids

    def _became_pending(self, ctx: Context, conn: sa.Connection, inst: Any, task_id: int, assignee: int,
                        spec: Mapping[str, Any]) -> None:
        """A task's turn has come: tell its holder, and start its deadline (if the step has one)."""
        now = ctx.now()
        deadline = spec.get("deadline")
        if deadline:
            due = now + dt.timedelta(hours=deadline["hours"])
            t = systables.approval_tasks
            conn.execute(t.update().where(t.c.id == task_id).values(due_at=due))
            self.jobs.enqueue(conn, "approval_deadline", due, {"task_id": task_id})
            if deadline.get("remind_before_hours"):
                self.jobs.enqueue(conn, "approval_reminder", due - dt.timedelta(hours=deadline["remind_before_hours"]),
                                  {"task_id": task_id})
        self._tell(conn, inst, assignee, "waiting", now)

    def _activate(self, ctx: Context, conn: sa.Connection, inst: Any, where: Any) -> None:
        """Make the waiting tasks selected by ``where`` pending (their turn came)."""
        t = systables.approval_tasks
        rows = conn.execute(sa.select(t.c.id, t.c.assignee, t.c.node).where(where, t.c.status == "waiting")).all()
        definition = Definition(json.loads(inst.definition))
        for row in rows:
            conn.execute(t.update().where(t.c.id == row.id, t.c.status == "waiting").values(status="pending"))
            self._became_pending(ctx, conn, inst, row.id, row.assignee, definition.node(row.node))

    def _tell(self, conn: sa.Connection, inst: Any, user_id: int, what: str, at: dt.datetime) -> None:
        """Queue a notification about ``inst`` for ``user_id`` (sent after commit)."""
        subject = {"waiting": "Waiting for your approval", "cc": "For your information",
                   "reminder": "Reminder: waiting for your approval", "overdue": "Overdue: waiting for your approval",
                   "approved": "Approved", "rejected": "Rejected", "recalled": "Recalled",
                   "returned": "Sent back to you"}[what]
        self.jobs.notify(conn, Notification(
            user_id, f"{subject}: {inst.process} ({inst.object} {inst.record_id})",
            f"{subject}. Process {inst.process}, {inst.object} record {inst.record_id}.",
            f"/app/{inst.object}/{inst.record_id}"), at)

    def _resolve(self, ctx: Context, conn: sa.Connection, app: CompiledApp, inst: Any,
                 specs: Iterable[Mapping[str, Any]], row: Mapping[str, Any], node: str | None = None) -> list[int]:
        """User ids named by approver specs, in order, each once, active users only."""
        u = systables.users
        users = {r.id: r for r in conn.execute(sa.select(u.c.id, u.c.username, u.c.roles, u.c.active))}
        out: list[int] = []

        def add(uid: Any) -> None:
            if isinstance(uid, int) and uid in users and users[uid].active and uid not in out:
                out.append(uid)

        for spec in specs:
            if "user" in spec:
                add(next((r.id for r in users.values() if r.username == spec["user"]), None))
            elif "role" in spec:
                for r in sorted(users.values(), key=lambda r: r.id):
                    if spec["role"] in r.roles.split(","):
                        add(r.id)
            elif "field" in spec:
                add(row.get(spec["field"]))
            elif "manager" in spec:
                m = spec["manager"]
                whose = row.get("owner_id") if m.get("of") == "owner" else inst.submitter
                chain = self.users.manager_chain(conn, whose) if whose is not None else []
                if m.get("up_to_role"):
                    for boss in chain:
                        add(boss.id)
                        if m["up_to_role"] in boss.roles:
                            break
                else:
                    for boss in chain[:m.get("levels", 1)]:
                        add(boss.id)
            elif spec.get("chosen_by_submitter"):
                picked = json.loads(inst.chosen or "{}").get(node or "", [])
                for value in picked:
                    add(value if isinstance(value, int) else
                        next((r.id for r in users.values() if r.username == value), None))
        return out

    @staticmethod
    def _admins(conn: sa.Connection) -> list[int]:
        u = systables.users
        return [r.id for r in conn.execute(sa.select(u.c.id, u.c.roles).where(u.c.active).order_by(u.c.id))
                if "admin" in r.roles.split(",")]

    # -- deciding ------------------------------------------------------------------------
    def approve(self, ctx: Context, task_id: Any, comment: str | None = None,
                values: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Approve a task of mine; ``values`` change the fields this node lets me edit."""
        with ctx.tenant.write() as conn, ctx.tenant.joined(conn):
            app = self.runtime.compiled(ctx.tenant, conn)
            inst, task = self._claim(ctx, conn, task_id, "approved", comment)
            definition = Definition(json.loads(inst.definition))
            node = definition.node(task.node)
            if values:
                self._edit(ctx, app, inst, node, values)
            self._event(conn, inst.id, "approve", ctx.actor.id, ctx.now(), comment, node=task.node, task_id=task.id,
                        detail={"values": dict(values)} if values else None)
            self._after_decision(ctx, conn, app, inst, node, task)
            return self._describe(conn, self._instance(conn, inst.id))

    def reject(self, ctx: Context, task_id: Any, comment: str | None = None, to: str = "end") -> dict[str, Any]:
        """Reject: to the end (the instance is rejected), back to the submitter (who may
        resubmit), or back to an earlier node of this instance."""
        with ctx.tenant.write() as conn, ctx.tenant.joined(conn):
            app = self.runtime.compiled(ctx.tenant, conn)
            inst, task = self._claim(ctx, conn, task_id, "rejected", comment)
            definition = Definition(json.loads(inst.definition))
            node = definition.node(task.node)
            now = ctx.now()
            if node.get("mode") == "ratio" and to == "end":
                # A ratio node is rejected only once the ratio can no longer be reached.
                self._event(conn, inst.id, "reject", ctx.actor.id, now, comment, node=task.node, task_id=task.id)
                self._after_decision(ctx, conn, app, inst, node, task)
                return self._describe(conn, self._instance(conn, inst.id))
            # Back means back: a step this instance passed before the current one.
            targets = self.reject_targets(conn, inst.id, task.node)
            if to not in targets:
                raise ValidationError({"to": [f"send it back to end, submitter, or a step it passed: "
                                              f"{', '.join(targets[2:]) or '(none)'}"]})
            self._event(conn, inst.id, "reject", ctx.actor.id, now, comment, node=task.node, task_id=task.id,
                        detail={"to": to})
            self._close_open_tasks(conn, inst.id)
            if to == "end":
                self._finish(ctx, conn, app, inst, "rejected")
            elif to == "submitter":
                i = systables.approval_instances
                conn.execute(i.update().where(i.c.id == inst.id).values(
                    status="returned", resume_node=task.node, node=None, row_version=i.c.row_version + 1))
            else:
                self._enter(ctx, conn, app, self._instance(conn, inst.id), to)
            return self._describe(conn, self._instance(conn, inst.id))

    def batch_approve(self, ctx: Context, task_ids: Sequence[Any], comment: str | None = None) -> list[dict[str, Any]]:
        """Approve several tasks, each in its own transaction; one failing does not stop the rest."""
        if not isinstance(task_ids, Sequence) or isinstance(task_ids, (str, bytes)) or len(task_ids) > 200:
            raise ValidationError({"tasks": ["give a list of at most 200 task ids"]})
        results = []
        for tid in task_ids:
            try:
                inst = self.approve(ctx, tid, comment)
                results.append({"task": tid, "ok": True, "instance_status": inst["status"]})
            except (ConflictError, NotFound, PermissionDenied, ValidationError) as exc:
                results.append({"task": tid, "ok": False, "error": exc.message})
        return results

    def _claim(self, ctx: Context, conn: sa.Connection, task_id: Any, outcome: str,
               comment: str | None) -> tuple[Any, Any]:
        """Take a pending task of the actor to ``outcome``: the conditional update is
        what makes two simultaneous decisions safe (one wins, the other is refused)."""
        t, i = systables.approval_tasks, systables.approval_instances
        task = conn.execute(sa.select(t).where(t.c.id == _int(task_id, systables.MAX_ID))).first()
        if task is None or task.kind != "approve":
            raise NotFound(f"no approval task {task_id}")
        # The instance row lock serialises every decision of one instance (PostgreSQL;
        # SQLite's write transactions are serial already).
        inst = conn.execute(sa.select(i).where(i.c.id == task.instance_id).with_for_update()).first()
        if task.assignee != ctx.actor.id:
            raise PermissionDenied("this task is someone else's")
        done = conn.execute(t.update().where(t.c.id == task.id, t.c.status == "pending").values(
            status=outcome, decided_at=ctx.now(), comment=_text(comment)))
        if done.rowcount != 1 or inst.status != "pending":
            raise ConflictError("this task has been decided already (or its approval has moved on); reload it")
        return inst, task

    def _after_decision(self, ctx: Context, conn: sa.Connection, app: CompiledApp, inst: Any,
                        node: Mapping[str, Any], task: Any) -> None:
        """See whether the node is decided now, and move on if so."""
        t = systables.approval_tasks
        if conn.execute(sa.select(t.c.status).where(t.c.id == task.id)).scalar_one() == "approved":
            # Someone waiting for this one (whoever an added signer came before) may go now.
            self._activate(ctx, conn, inst, t.c.after_task == task.id)
        tasks = conn.execute(sa.select(t).where(t.c.instance_id == inst.id, t.c.node == task.node,
                                                t.c.round == task.round, t.c.kind == "approve",
                                                t.c.status.in_(LIVE)).order_by(t.c.seq, t.c.id)).all()
        added = [x for x in tasks if x.added_by is not None]
        base = [x for x in tasks if x.added_by is None]
        approved = sum(1 for x in base if x.status == "approved")
        rejected = sum(1 for x in tasks if x.status == "rejected")
        open_added = any(x.status in ("pending", "waiting") for x in added)
        mode = node.get("mode", "any")
        if mode == "ratio":
            needed = max(1, math.ceil(node["ratio"] * len(base) - 1e-9))
            if any(x.status == "rejected" for x in added):  # an added signer's no is a no
                self._close_open_tasks(conn, inst.id)
                return self._finish(ctx, conn, app, inst, "rejected")
            if approved >= needed and not open_added:
                return self._node_done(ctx, conn, app, inst, node)
            if approved + sum(1 for x in base if x.status in ("pending", "waiting")) < needed:
                self._close_open_tasks(conn, inst.id)
                return self._finish(ctx, conn, app, inst, "rejected")
            return None
        if rejected:  # only a ratio node tolerates a rejection; reject() handled the others
            return None
        if mode == "sequential":
            if open_added or any(x.status == "pending" for x in base):
                return None  # an added signer (or the current one) is still deciding: the order holds
            nxt = next((x for x in base if x.status == "waiting" and x.after_task is None), None)
            if nxt is not None:
                self._activate(ctx, conn, inst, t.c.id == nxt.id)
                return None
        if mode == "any":
            if approved >= 1 and not open_added:
                return self._node_done(ctx, conn, app, inst, node)
            return None
        if all(x.status == "approved" for x in tasks):
            return self._node_done(ctx, conn, app, inst, node)
        return None

    def _node_done(self, ctx: Context, conn: sa.Connection, app: CompiledApp, inst: Any,
                   node: Mapping[str, Any]) -> None:
        self._close_open_tasks(conn, inst.id)
        self._event(conn, inst.id, "node_approved", None, ctx.now(), None, node=node["name"])
        definition = Definition(json.loads(inst.definition))
        self._enter(ctx, conn, app, self._instance(conn, inst.id), definition.next_of(node["name"]))

    @staticmethod
    def _close_open_tasks(conn: sa.Connection, instance_id: int) -> None:
        t = systables.approval_tasks
        conn.execute(t.update().where(t.c.instance_id == instance_id, t.c.status.in_(("pending", "waiting")))
                     .values(status="cancelled"))

    def _finish(self, ctx: Context, conn: sa.Connection, app: CompiledApp, inst: Any, status: str) -> None:
        i = systables.approval_instances
        conn.execute(i.update().where(i.c.id == inst.id).values(
            status=status, node=None, finished_at=ctx.now(), row_version=i.c.row_version + 1))
        self._event(conn, inst.id, status, None, ctx.now(), None)
        if inst.submitter is not None:
            self._tell(conn, inst, inst.submitter, status, ctx.now())
        definition = Definition(json.loads(inst.definition))
        self._run_actions(ctx, conn, app, self._instance(conn, inst.id),
                          definition.doc.get({"approved": "on_approved", "rejected": "on_rejected",
                                              "recalled": "on_recalled"}[status]) or ())

    # -- other operations ------------------------------------------------------------------
    def recall(self, ctx: Context, instance_id: Any, comment: str | None = None) -> dict[str, Any]:
        """The submitter takes a pending (or returned) instance back."""
        i = systables.approval_instances
        with ctx.tenant.write() as conn, ctx.tenant.joined(conn):
            app = self.runtime.compiled(ctx.tenant, conn)
            inst = conn.execute(sa.select(i).where(i.c.id == _int(instance_id, systables.MAX_ID))
                                .with_for_update()).first()
            if inst is None:
                raise NotFound(f"no approval {instance_id}")
            if inst.submitter != ctx.actor.id and not ctx.actor.is_admin:
                raise PermissionDenied("only the submitter may recall it")
            if inst.status not in OPEN:
                raise ConflictError(f"it is {inst.status} already")
            self._close_open_tasks(conn, inst.id)
            self._event(conn, inst.id, "recall", ctx.actor.id, ctx.now(), comment)
            self._finish(ctx, conn, app, inst, "recalled")
            return self._describe(conn, self._instance(conn, inst.id))

    def transfer(self, ctx: Context, task_id: Any, to: Any, comment: str | None = None) -> dict[str, Any]:
        """Hand my task to someone else (转交): they decide instead of me."""
        with ctx.tenant.write() as conn, ctx.tenant.joined(conn):
            inst, task = self._claim(ctx, conn, task_id, "transferred", comment)
            person = self._user_id(conn, to)
            if person == ctx.actor.id:
                raise ValidationError({"to": ["give it to someone else"]})
            self._check_not_self(inst, task.node, person, "to")
            self._hand_on(ctx, conn, inst, task, person)
            self._event(conn, inst.id, "transfer", ctx.actor.id, ctx.now(), comment, node=task.node,
                        task_id=task.id, detail={"to": person})
            return self._describe(conn, self._instance(conn, inst.id))

    def _check_not_self(self, inst: Any, node: str, person: int, field: str) -> None:
        spec = Definition(json.loads(inst.definition)).node(node)
        if spec.get("self_approval") == "forbid" and person == inst.submitter:
            raise ValidationError({field: ["the submitter may not approve this step"]})

    def _hand_on(self, ctx: Context, conn: sa.Connection, inst: Any, task: Any, person: int) -> int:
        """A new pending task for ``person`` in place of ``task`` (transfer, reassignment);
        whoever waited for ``task`` now waits for the new one."""
        t = systables.approval_tasks
        new_id = conn.execute(t.insert().values(
            instance_id=inst.id, node=task.node, round=task.round, kind="approve", status="pending",
            seq=task.seq, approver=task.approver, assignee=person, delegated=False, added_by=task.added_by,
            after_task=None, created_at=ctx.now())).inserted_primary_key[0]
        conn.execute(t.update().where(t.c.after_task == task.id).values(after_task=new_id))
        self._became_pending(ctx, conn, inst, new_id, person, Definition(json.loads(inst.definition)).node(task.node))
        return new_id

    def add_signer(self, ctx: Context, task_id: Any, user: Any, position: str = "after",
                   comment: str | None = None) -> dict[str, Any]:
        """Add a signer to my step (加签): ``before`` me (I decide after them) or ``after``
        me (my approval is given, and the step also needs theirs)."""
        if position not in ("before", "after"):
            raise ValidationError({"position": ["must be before or after"]})
        with ctx.tenant.write() as conn, ctx.tenant.joined(conn):
            app = self.runtime.compiled(ctx.tenant, conn)
            t = systables.approval_tasks
            if position == "after":
                inst, task = self._claim(ctx, conn, task_id, "approved", comment)
            else:
                inst, task = self._claim(ctx, conn, task_id, "waiting", comment)
            person = self._user_id(conn, user)
            if person == ctx.actor.id:
                raise ValidationError({"user": ["add someone else"]})
            self._check_not_self(inst, task.node, person, "user")
            new_ids = self._create_tasks(ctx, conn, inst, task.node, task.round, [person], kind="approve",
                                         added_by=ctx.actor.id, seq_from=task.seq)
            if position == "before":
                # My task waits for theirs: it returns to pending when they approve.
                conn.execute(t.update().where(t.c.id == task.id).values(after_task=new_ids[0], decided_at=None))
            self._event(conn, inst.id, "add_signer", ctx.actor.id, ctx.now(), comment, node=task.node,
                        task_id=task.id, detail={"user": person, "position": position})
            if position == "after":
                definition = Definition(json.loads(inst.definition))
                self._after_decision(ctx, conn, app, inst, definition.node(task.node), task)
            return self._describe(conn, self._instance(conn, inst.id))

    def comment(self, ctx: Context, instance_id: Any, text: str) -> dict[str, Any]:
        if not isinstance(text, str) or not text.strip():
            raise ValidationError({"comment": ["write something"]})
        with ctx.tenant.write() as conn:
            inst = self._instance(conn, instance_id)
            app = self.runtime.compiled(ctx.tenant, conn)
            self.permissions.check(ctx, app, inst.object, "read")
            self._event(conn, inst.id, "comment", ctx.actor.id, ctx.now(), text)
            return self._describe(conn, inst)

    # -- the record lock and automatic submission (called by the record service) ------------
    def _lock(self, ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str, record_id: int,
              delete: bool) -> tuple[Reason | None, frozenset[str]]:
        """Why the record's approval keeps ``ctx``'s actor from changing it (None: it
        does not), and the fields they may still change (an approver at their step).
        Decided on the instance's snapshot, as it runs, not on the current definition."""
        if not has_processes(app, object_name):
            return None, frozenset()
        i = systables.approval_instances
        inst = conn.execute(sa.select(i).where(i.c.object == object_name, i.c.record_id == record_id,
                                               sa.or_(i.c.status == "pending", i.c.locked))
                            .order_by(i.c.id.desc()).limit(1)).first()
        if inst is None:
            return None, frozenset()
        definition = Definition(json.loads(inst.definition))
        title = label_text(definition.doc.get("label"), ctx.locale, inst.process.replace("_", " ").capitalize())
        if inst.status != "pending":  # locked by an action after it ended
            if ctx.actor.is_admin:
                return None, frozenset()
            return Reason("approval_locked", f"it is locked by its approval ({title})", {"process": title}), \
                frozenset()
        policy = definition.doc.get("lock", "admins")
        if policy == "admins" and ctx.actor.is_admin:
            return None, frozenset()
        editable: frozenset[str] = frozenset()
        if policy == "approvers" and not delete and inst.node:
            t = systables.approval_tasks
            mine = conn.execute(sa.select(t.c.id).where(t.c.instance_id == inst.id, t.c.node == inst.node,
                                                        t.c.round == inst.round, t.c.assignee == ctx.actor.id,
                                                        t.c.status == "pending").limit(1)).first()
            if mine is not None:
                editable = frozenset(definition.node(inst.node).get("editable_fields", ()))
        return Reason("approval_pending", f"it is waiting for approval ({title}) and locked",
                      {"process": title}), editable

    def check_write(self, ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str, record_id: int,
                    fields: Iterable[str], *, delete: bool = False, origin: Origin = Origin.USER) -> None:
        """Refuse a write the lock of the record's pending approval (or a lock action)
        forbids. The engine writing the record its process holds passes (only that
        record: anything else written meanwhile meets every lock as usual)."""
        if origin.holds(object_name, record_id):
            return
        reason, editable = self._lock(ctx, conn, app, object_name, record_id, delete)
        if reason is not None and not (editable and set(fields) <= editable):
            raise PermissionDenied(f"{object_name} {record_id}: {reason.message}")

    def lock_state(self, ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str,
                   record_id: int) -> tuple[Ability, frozenset[str] | None, Ability]:
        """``(edit, fields, delete)``: whether the approval lock lets ``ctx``'s actor edit
        the record (only ``fields`` when not None) and delete it — what
        :meth:`check_write` would say. (The step-editable fields never allow a delete.)"""
        reason, editable = self._lock(ctx, conn, app, object_name, record_id, False)
        if reason is None:
            return Ability.yes(), None, Ability.yes()
        edit = Ability.yes() if editable else Ability.no(reason)
        return edit, editable or None, Ability.no(reason)

    def after_write(self, ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str,
                    new: Mapping[str, Any], old: Mapping[str, Any] | None, *, origin: Origin = Origin.USER) -> None:
        """Submit the record to processes that start on create, or on an update that makes
        their condition true."""
        if origin.holds(object_name, new["id"]):
            return  # the process's own field updates start nothing
        trigger = "create" if old is None else "update"
        for proc in app.meta.approvals_for(object_name, trigger):
            condition = (proc.doc.get("trigger") or {}).get("condition")
            row = self._record(conn, app, object_name, new["id"], None)
            if condition:
                # "becomes true": it holds now, and did not before this change
                if not self._holds(ctx, conn, app, object_name, condition, row, old=old):
                    continue
                if old is not None and self._holds(ctx, conn, app, object_name, condition, dict(old), old=old):
                    continue
            i = systables.approval_instances
            pending = conn.execute(sa.select(i.c.id).where(i.c.object == object_name, i.c.record_id == new["id"],
                                                           i.c.status == "pending")).first()
            if pending is None:
                self._submit(ctx, conn, app, object_name, new["id"], proc.name, None, None, automatic=True)

    # -- actions ---------------------------------------------------------------------
    def _run_actions(self, ctx: Context, conn: sa.Connection, app: CompiledApp, inst: Any,
                     actions: Iterable[Mapping[str, Any]]) -> None:
        system = ctx.as_actor(Actor.system())
        # The system writes, on behalf of whoever's decision ran the actions.
        origin = Origin.approval(inst.object, inst.record_id, process=inst.process, on_behalf_of=ctx.actor.id)
        for action in actions:
            (name, body), = action.items()  # one kind per action (checked at publish)
            kind = self.runtime.approval_actions.get(name)
            if kind is None:  # published with a plugin this process no longer has
                raise ConflictError(f"approval action {name!r} of {inst.process} is not installed here")
            row = self._record(conn, app, inst.object, inst.record_id, None)
            detail = kind.run(ActionRun(body, ctx, system, conn, app, inst, row, origin, self.records, self.scripts,
                                        self.jobs, self.users, self))
            self._event(conn, inst.id, "action", None, ctx.now(), None, node=inst.node,
                        detail={**(detail or {}), "action": name})

    def _edit(self, ctx: Context, app: CompiledApp, inst: Any, node: Mapping[str, Any],
              values: Mapping[str, Any]) -> None:
        allowed = set(node.get("editable_fields", ()))
        if not isinstance(values, Mapping):
            raise ValidationError({"values": ["must be a JSON object of field values"]})
        refused = sorted(set(values) - allowed)
        if refused:
            raise ValidationError({f: ["cannot be changed at this step"] for f in refused})
        # As the approver, with their field rules; the lock lets the process's writes through.
        self.records.update(ctx, inst.object, inst.record_id, dict(values),
                            origin=Origin.approval(inst.object, inst.record_id, process=inst.process))

    # -- deadlines (jobs run by ``loomwork worker``) --------------------------------------------
    def _open_task(self, conn: sa.Connection, payload: Mapping[str, Any]) -> tuple[Any, Any] | None:
        """The task of a deadline job and its instance, if the task is still open: read
        after taking the instance's lock, so a decision made meanwhile is seen."""
        t, i = systables.approval_tasks, systables.approval_instances
        first = conn.execute(sa.select(t.c.instance_id).where(t.c.id == payload["task_id"])).first()
        if first is None:
            return None
        inst = conn.execute(sa.select(i).where(i.c.id == first.instance_id).with_for_update()).first()
        task = conn.execute(sa.select(t).where(t.c.id == payload["task_id"])).first()
        if inst is None or inst.status != "pending" or task.status != "pending":
            return None  # decided meanwhile: nothing to do (jobs may run late, or twice)
        return inst, task

    def _reminder(self, ctx: Context, conn: sa.Connection, payload: Mapping[str, Any]) -> None:
        found = self._open_task(conn, payload)
        if found is None:
            return
        inst, task = found
        t = systables.approval_tasks
        conn.execute(t.update().where(t.c.id == task.id).values(reminded_at=ctx.now()))
        self._event(conn, inst.id, "remind", None, ctx.now(), None, node=task.node, task_id=task.id)
        self._tell(conn, inst, task.assignee, "reminder", ctx.now())

    def _deadline(self, ctx: Context, conn: sa.Connection, payload: Mapping[str, Any]) -> None:
        """A task past its deadline: approve or reject it for its holder, hand it on, or
        just say it is overdue, as the node says."""
        found = self._open_task(conn, payload)
        if found is None:
            return
        inst, task = found
        app = self.runtime.compiled(ctx.tenant, conn)
        definition = Definition(json.loads(inst.definition))
        node = definition.node(task.node)
        rule = (node.get("deadline") or {}).get("escalate", "none")
        t = systables.approval_tasks
        now = ctx.now()
        if rule in ("approve", "reject"):
            outcome = "approved" if rule == "approve" else "rejected"
            done = conn.execute(t.update().where(t.c.id == task.id, t.c.status == "pending").values(
                status=outcome, decided_at=now, comment="decided at the deadline"))
            if done.rowcount != 1:
                return
            self._event(conn, inst.id, "escalate", None, now, None, node=task.node, task_id=task.id,
                        detail={"decision": outcome})
            if rule == "approve":
                self._after_decision(ctx, conn, app, inst, node, task)
            else:
                self._close_open_tasks(conn, inst.id)
                self._finish(ctx, conn, app, inst, "rejected")
            return
        if rule == "reassign":
            row = self._record(conn, app, inst.object, inst.record_id, None)
            people = [p for p in self._resolve(ctx, conn, app, inst, node["deadline"].get("reassign_to") or (), row)
                      if p != task.assignee]
            if people:
                done = conn.execute(t.update().where(t.c.id == task.id, t.c.status == "pending")
                                    .values(status="transferred", decided_at=now))
                if done.rowcount != 1:
                    return
                self._hand_on(ctx, conn, inst, task, people[0])
                self._event(conn, inst.id, "escalate", None, now, None, node=task.node, task_id=task.id,
                            detail={"to": people[0]})
                return
        self._event(conn, inst.id, "overdue", None, now, None, node=task.node, task_id=task.id)
        self._tell(conn, inst, task.assignee, "overdue", now)

    # -- helpers -------------------------------------------------------------------------
    def _record(self, conn: sa.Connection, app: CompiledApp, object_name: str, record_id: int,
                ctx: Context | None) -> dict[str, Any]:
        obj = app.object(object_name)
        if ctx is not None:
            self.permissions.check(ctx, app, object_name, "read")
        return virtual_values(app, obj, dict(stored_row(conn, obj, record_id)), ctx, conn)

    def _value(self, ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str, source: str,
               row: Mapping[str, Any], old: Mapping[str, Any] | None = None) -> Any:
        e = compile_one(app, object_name, source, allow_old=old is not None)
        obj = app.object(object_name)
        wanted = {p for p in e.deps.paths if "." in p}
        paths = fetch_paths(conn, app, obj, row, wanted, ctx) if wanted else None
        try:
            return e.evaluate(make_env(ctx, row, old, paths))
        except EvaluationError as exc:
            raise ValidationError({"_schema": [f"{source}: {exc.message}"]}) from None

    def _holds(self, ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str, source: str,
               row: Mapping[str, Any], old: Mapping[str, Any] | None = None, *, quiet: bool = False) -> bool:
        try:
            return self._value(ctx, conn, app, object_name, source, row, old) is True
        except ValidationError:
            if quiet:
                return False
            raise

    @staticmethod
    def _instance(conn: sa.Connection, instance_id: Any) -> Any:
        i = systables.approval_instances
        inst = conn.execute(sa.select(i).where(i.c.id == _int(instance_id, systables.MAX_ID))).first()
        if inst is None:
            raise NotFound(f"no approval {instance_id}")
        return inst

    @staticmethod
    def _user_id(conn: sa.Connection, who: Any) -> int:
        u = systables.users
        if isinstance(who, int) and not isinstance(who, bool):
            cond = u.c.id == who if systables.is_row_id(who) else None  # beyond the column: nobody
        else:
            cond = u.c.username == str(who)
        found = None if cond is None else conn.execute(sa.select(u.c.id).where(cond, u.c.active)).scalar_one_or_none()
        if found is None:
            raise ValidationError({"user": [f"no active user {who!r}"]})
        return found

    @staticmethod
    def _visited(conn: sa.Connection, instance_id: int) -> list[str]:
        t = systables.approval_tasks
        return list(dict.fromkeys(conn.execute(sa.select(t.c.node).where(
            t.c.instance_id == instance_id, t.c.kind == "approve").order_by(t.c.id)).scalars()))

    @staticmethod
    def _event(conn: sa.Connection, instance_id: int, action: str, actor: int | None, at: dt.datetime,
               comment: str | None, *, node: str | None = None, task_id: int | None = None,
               detail: Mapping[str, Any] | None = None) -> None:
        e = systables.approval_events
        conn.execute(e.insert().values(instance_id=instance_id, task_id=task_id, node=node, action=action,
                                       actor=actor, at=at, comment=_text(comment),
                                       detail=_dumps(detail) if detail else None))

    def _summary(self, inst: Any) -> dict[str, Any]:
        return {"id": inst.id, "process": inst.process, "version": inst.version, "object": inst.object,
                "record_id": inst.record_id, "status": inst.status, "node": inst.node,
                "submitter": inst.submitter, "submitted_at": inst.submitted_at.isoformat(),
                "finished_at": inst.finished_at.isoformat() if inst.finished_at else None, "locked": inst.locked}

    def _describe(self, conn: sa.Connection, inst: Any) -> dict[str, Any]:
        t, e = systables.approval_tasks, systables.approval_events
        tasks = [_task_doc(r) for r in conn.execute(sa.select(t).where(t.c.instance_id == inst.id)
                                                    .order_by(t.c.id)).mappings()]
        events = [{"id": r.id, "action": r.action, "node": r.node, "task_id": r.task_id, "actor": r.actor,
                   "at": r.at.isoformat(), "comment": r.comment, "detail": json.loads(r.detail) if r.detail else None}
                  for r in conn.execute(sa.select(e).where(e.c.instance_id == inst.id).order_by(e.c.id))]
        definition = Definition(json.loads(inst.definition))
        reached = {x["node"] for x in tasks} | {x["node"] for x in events if x["node"]}
        skipped = _not_taken(definition, events, reached)
        nodes = []
        for n in definition.nodes:
            mine = [x for x in tasks if x["node"] == n["name"] and x["kind"] == "approve"]
            if inst.node == n["name"] and inst.status == "pending":
                state = "current"
            elif any(x["action"] == "node_approved" and x["node"] == n["name"] for x in events):
                state = "approved"
            elif any(x["status"] == "rejected" for x in mine):
                state = "rejected"
            elif n["name"] in reached:
                state = "passed"
            elif n["name"] in skipped:
                state = "skipped"  # on a branch this instance did not take
            else:
                state = "not_reached"
            nodes.append({"name": n["name"], "type": n["type"], "label": n.get("label"), "state": state})
        for x in events:
            x["system"] = x["action"] in SYSTEM_EVENTS
        reject_to = self.reject_targets(conn, inst.id, inst.node) if inst.status == "pending" and inst.node else []
        return {**self._summary(inst), "nodes": nodes, "tasks": tasks, "history": events, "reject_to": reject_to}


#: Events the engine records for itself (routing, a step's completion, an action run):
#: kept in the history, marked ``system`` so a page can leave them out of the story.
SYSTEM_EVENTS = frozenset({"branch", "node_approved", "action"})


def _not_taken(definition: Definition, events: Sequence[Mapping[str, Any]], reached: set[str]) -> set[str]:
    """Nodes only on the branches a routing decision did not take (and not reached)."""

    def chain(start: str) -> list[str]:
        out: list[str] = []
        name = start
        while name != "end" and name in definition.index and name not in out:
            out.append(name)
            name = definition.next_of(name)
        return out

    skipped: set[str] = set()
    for e in events:
        if e["action"] != "branch" or not e["node"] or e["node"] not in definition.index:
            continue
        taken = (e.get("detail") or {}).get("to")
        node = definition.node(e["node"])
        ahead = set(chain(taken)) if taken else set()
        for alt in [b["next"] for b in node.get("branches", ())] + [definition.next_of(e["node"])]:
            if alt == taken:
                continue
            for name in chain(alt):
                if name in ahead:
                    break  # the branches meet again here
                if name not in reached:
                    skipped.add(name)
    return skipped


def has_processes(app: CompiledApp, object_name: str) -> bool:
    """Whether any approval process (active or not: its instances may hold records) is
    defined on ``object_name``; writes of other objects skip every approval check."""
    return object_name in app.artefact("approval-objects", lambda: frozenset(
        a.object for a in app.meta.approvals.values()))


def _already_pending(proc: ApprovalDef, locale: str) -> Reason:
    title = proc.title(locale)
    return Reason("already_pending", f"it is already waiting for approval ({title})", {"process": title})


def _task_doc(r: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": r["id"], "node": r["node"], "round": r["round"], "kind": r["kind"], "status": r["status"],
            "seq": r["seq"], "approver": r["approver"], "assignee": r["assignee"], "delegated": r["delegated"],
            "added_by": r["added_by"], "due_at": r["due_at"].isoformat() if r["due_at"] else None,
            "decided_at": r["decided_at"].isoformat() if r["decided_at"] else None, "comment": r["comment"]}


def _int(value: Any, bound: int = MAX_RECORD_ID) -> int:
    """``value`` as an id up to ``bound`` (a record's by default; an instance's or a task's
    is a system row's, :data:`systables.MAX_ID`). :raises NotFound: for anything else."""
    try:
        out = int(value)
    except (TypeError, ValueError):
        raise NotFound(f"no such id {value!r}") from None
    if not 1 <= out <= bound:
        raise NotFound(f"no such id {value!r}")
    return out


def _text(comment: Any) -> str | None:
    if comment is None:
        return None
    if not isinstance(comment, str) or len(comment) > 4000:
        raise ValidationError({"comment": ["must be text of at most 4000 characters"]})
    return comment.strip() or None


def _clean_chosen(chosen: Any) -> dict[str, list[Any]] | None:
    if chosen is None:
        return None
    if not isinstance(chosen, Mapping) or not all(
            isinstance(v, list) and all(isinstance(x, (int, str)) and not isinstance(x, bool) for x in v)
            for v in chosen.values()):
        raise ValidationError({"chosen": ["map each node to a list of user ids or usernames"]})
    return {str(k): list(v) for k, v in chosen.items()}
