"""The approval engine through the runtime services, on both databases: node types and
decision modes, branches, manager chains, delegation, reject/resubmit, recall, add signer,
transfer, versions in flight, the record lock, and two approvers racing."""
from __future__ import annotations

import datetime as dt
import threading

import pytest

from loomwork.metadata.errors import ConflictError, MetadataError, PermissionDenied, ValidationError
from loomwork.runtime.context import Context
from loomwork.runtime.query import ListRequest

QUOTE = {"fields": {
    "name": {"type": "text", "required": True},
    "amount": {"type": "decimal", "scale": 2},
    "discount": {"type": "percent"},
    "status": {"type": "text"},
    "reviewer": {"type": "integer"},
    "note": {"type": "text"},
}}
ROLES = {"sales": {"permissions": {"quote": ["create", "read", "update", "delete"]}},
         "finance": {"permissions": {"quote": ["read", "update"]}},
         "director": {"permissions": {"quote": ["read", "update"]}}}


class World:
    """A tenant with a quote object, people in a reporting chain, and helpers."""

    def __init__(self, services, ctx) -> None:
        self.s, self.ctx = services, ctx
        services.metadata.publish(ctx, {"objects": {"quote": QUOTE}, "roles": ROLES}, comment="setup")
        users = services.users
        self.ids = {}
        for name, roles in (("alice", ("sales",)), ("bob", ("sales",)), ("carol", ("director",)),
                            ("fin1", ("finance",)), ("fin2", ("finance",)), ("dave", ("sales",)),
                            ("boss", ("admin",))):
            self.ids[name] = users.create(ctx, name, None, roles=roles).id
        users.set_manager(ctx, self.ids["alice"], self.ids["bob"])
        users.set_manager(ctx, self.ids["bob"], self.ids["carol"])

    def as_(self, name: str) -> Context:
        user = self.s.users.get(self.ctx, self.ids[name])
        return Context(self.ctx.tenant, user.actor(), clock=self.ctx.clock)

    def publish(self, **processes) -> int:
        doc = dict(self.s.metadata.current(self.ctx).doc)
        doc["approvals"] = {name: {"object": "quote", **p} for name, p in processes.items()}
        return self.s.metadata.publish(self.ctx, doc, comment="processes")

    def quote(self, by: str = "alice", **values) -> dict:
        return self.s.records.create(self.as_(by), "quote", {"name": "Q", "amount": "1000", **values})

    def task_of(self, inst: dict, who: str) -> int:
        return next(t["id"] for t in inst["tasks"] if t["assignee"] == self.ids[who] and t["status"] == "pending")

    def approve(self, inst: dict, who: str, **kw) -> dict:
        return self.s.approvals.approve(self.as_(who), self.task_of(inst, who), **kw)

    def pending(self, inst: dict) -> set[str]:
        names = {v: k for k, v in self.ids.items()}
        return {names[t["assignee"]] for t in inst["tasks"] if t["status"] == "pending"}


@pytest.fixture
def world(lw_services, lw_ctx, lw_cheap_passwords):
    return World(lw_services, lw_ctx)


def approval(name: str, approvers: list, **kw) -> dict:
    return {"name": name, "type": "approval", "approvers": approvers, **kw}


def test_modes_any_all_ratio_sequential(world):
    a = world.approvals = world.s.approvals
    finance = [{"role": "finance"}, {"user": "dave"}]
    world.publish(
        any_of={"nodes": [approval("n", finance, mode="any")]},
        all_of={"nodes": [approval("n", finance, mode="all")]},
        ratio={"nodes": [approval("n", finance, mode="ratio", ratio=0.6)]},
        in_turn={"nodes": [approval("n", finance, mode="sequential")]},
    )
    alice = world.as_("alice")
    inst = a.submit(alice, "quote", world.quote()["id"], "any_of")
    assert world.pending(inst) == {"fin1", "fin2", "dave"}
    inst = world.approve(inst, "fin2")
    assert inst["status"] == "approved" and world.pending(inst) == set()
    assert {t["status"] for t in inst["tasks"]} == {"approved", "cancelled"}

    inst = a.submit(alice, "quote", world.quote()["id"], "all_of")
    inst = world.approve(inst, "fin1")
    inst = world.approve(inst, "dave")
    assert inst["status"] == "pending" and world.pending(inst) == {"fin2"}
    assert world.approve(inst, "fin2")["status"] == "approved"

    inst = a.submit(alice, "quote", world.quote()["id"], "ratio")  # 0.6 of 3: two approvals
    inst = world.approve(inst, "fin1")
    assert inst["status"] == "pending"
    inst = a.reject(world.as_("dave"), world.task_of(inst, "dave"), "no")
    assert inst["status"] == "pending"  # 1 approved + 1 open can still make 2
    assert world.approve(inst, "fin2")["status"] == "approved"
    inst = a.submit(alice, "quote", world.quote()["id"], "ratio")
    inst = a.reject(world.as_("fin1"), world.task_of(inst, "fin1"))
    inst = a.reject(world.as_("fin2"), world.task_of(inst, "fin2"))
    assert inst["status"] == "rejected"  # the ratio can no longer be reached

    inst = a.submit(alice, "quote", world.quote()["id"], "in_turn")
    assert world.pending(inst) == {"fin1"}
    inst = world.approve(inst, "fin1")
    assert world.pending(inst) == {"fin2"}
    inst = world.approve(inst, "fin2")
    inst = world.approve(inst, "dave")
    assert inst["status"] == "approved"
    assert [h["action"] for h in inst["history"]][-2:] == ["node_approved", "approved"]


def test_branches_cc_actions_and_the_quote_discount_rule(world):
    a = world.s.approvals
    world.publish(discount={
        "entry_condition": "discount > 20",
        "nodes": [
            {"name": "route", "type": "branch",
             "branches": [{"condition": "discount > 40", "next": "manager_then_finance"}], "next": "manager"},
            approval("manager", [{"manager": {"levels": 1}}], next="done"),
            approval("manager_then_finance", [{"manager": {"levels": 1}}]),
            approval("finance", [{"role": "finance"}], mode="all"),
            {"name": "tell", "type": "cc", "recipients": [{"user": "carol"}]},
            {"name": "done", "type": "action", "actions": [{"set": {"status": '"approved"'}}]},
        ],
        "on_rejected": [{"set": {"status": '"rejected"'}}],
    })
    alice = world.as_("alice")
    with pytest.raises(ValidationError, match="entry condition"):
        a.submit(alice, "quote", world.quote(discount="10")["id"])
    small = world.quote(discount="25")
    inst = a.submit(alice, "quote", small["id"])
    assert world.pending(inst) == {"bob"}  # alice's manager
    inst = world.approve(inst, "bob")
    assert inst["status"] == "approved"
    assert world.s.records.get(world.ctx, "quote", small["id"])["status"] == "approved"

    big = world.quote(discount="45")
    inst = a.submit(alice, "quote", big["id"])
    inst = world.approve(inst, "bob")
    assert world.pending(inst) == {"fin1", "fin2"}  # both finance approvers must approve
    inst = world.approve(inst, "fin1")
    inst = world.approve(inst, "fin2")
    assert inst["status"] == "approved"
    cc = [t for t in inst["tasks"] if t["kind"] == "cc"]
    assert [t["assignee"] for t in cc] == [world.ids["carol"]]
    assert world.s.approvals.inbox(world.as_("carol"), "cc")[0]["instance_id"] == inst["id"]
    states = {n["name"]: n["state"] for n in inst["nodes"]}
    assert states["manager"] == "skipped" and states["finance"] == "approved"  # the branch not taken

    again = world.quote(discount="45")
    inst = a.submit(alice, "quote", again["id"])
    inst = a.reject(world.as_("bob"), world.task_of(inst, "bob"), "too much")
    assert inst["status"] == "rejected"
    assert world.s.records.get(world.ctx, "quote", again["id"])["status"] == "rejected"


def test_manager_chains_and_missing_managers(world):
    a = world.s.approvals
    world.publish(
        two_up={"nodes": [approval("chain", [{"manager": {"levels": 2}}], mode="sequential")]},
        to_director={"nodes": [approval("chain", [{"manager": {"up_to_role": "director"}}], mode="sequential")]},
        orphan={"nodes": [approval("chain", [{"manager": {"levels": 1}}])]},
        orphan_ok={"nodes": [approval("chain", [{"manager": {"levels": 1}}], if_no_approver="approve")]},
        orphan_admin={"nodes": [approval("chain", [{"manager": {"levels": 1}}], if_no_approver="admin")]},
    )
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"], "two_up")
    assert world.pending(inst) == {"bob"}
    inst = world.approve(inst, "bob")
    assert world.pending(inst) == {"carol"}
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"], "to_director")
    assert world.pending(world.approve(inst, "bob")) == {"carol"}
    # dave has no manager
    with pytest.raises(ValidationError, match="nobody can approve"):
        a.submit(world.as_("dave"), "quote", world.quote("dave")["id"], "orphan")
    assert a.submit(world.as_("dave"), "quote", world.quote("dave")["id"], "orphan_ok")["status"] == "approved"
    inst = a.submit(world.as_("dave"), "quote", world.quote("dave")["id"], "orphan_admin")
    assert world.pending(inst) == {"boss"}


def test_self_approval_policies(world):
    a = world.s.approvals
    world.publish(allow={"nodes": [approval("n", [{"role": "sales"}], self_approval="allow")]},
                  skip={"nodes": [approval("n", [{"user": "alice"}], self_approval="skip")]},
                  forbid={"nodes": [approval("n", [{"user": "alice"}, {"user": "bob"}], self_approval="forbid")]})
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"], "allow")
    assert "alice" in world.pending(inst)
    assert a.submit(world.as_("alice"), "quote", world.quote()["id"], "skip")["status"] == "approved"
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"], "forbid")
    assert world.pending(inst) == {"bob"}


def test_delegation_windows(world, lw_ctx):
    a, users = world.s.approvals, world.s.users
    world.publish(p={"nodes": [approval("n", [{"user": "bob"}])]})
    now = lw_ctx.now()
    users.delegate(world.as_("bob"), world.ids["bob"], world.ids["dave"], now - dt.timedelta(hours=1),
                   now + dt.timedelta(hours=1))
    users.delegate(world.as_("bob"), world.ids["bob"], world.ids["carol"], now + dt.timedelta(days=1),
                   now + dt.timedelta(days=2))
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"])
    task = next(t for t in inst["tasks"] if t["status"] == "pending")
    assert task["assignee"] == world.ids["dave"] and task["approver"] == world.ids["bob"] and task["delegated"]
    assert any(h["action"] == "delegated" and h["detail"]["to"] == world.ids["dave"] for h in inst["history"])
    with pytest.raises(PermissionDenied):
        a.approve(world.as_("bob"), task["id"])
    assert world.approve(inst, "dave")["status"] == "approved"
    with pytest.raises(PermissionDenied):
        users.delegate(world.as_("alice"), world.ids["bob"], world.ids["alice"], now, now + dt.timedelta(hours=1))


def test_reject_to_a_node_to_the_submitter_and_resubmit(world):
    a = world.s.approvals
    nodes = [approval("first", [{"user": "bob"}]), approval("second", [{"user": "carol"}]),
             approval("third", [{"user": "fin1"}])]
    world.publish(restart={"nodes": nodes}, resume={"nodes": nodes, "resubmit": "resume"})
    alice = world.as_("alice")
    inst = a.submit(alice, "quote", world.quote()["id"], "restart")
    inst = world.approve(inst, "bob")
    inst = world.approve(inst, "carol")
    with pytest.raises(ValidationError, match="a step it passed"):
        a.reject(world.as_("fin1"), world.task_of(inst, "fin1"), to="nowhere")
    inst = a.reject(world.as_("fin1"), world.task_of(inst, "fin1"), "redo", to="second")
    assert inst["status"] == "pending" and world.pending(inst) == {"carol"}
    inst = world.approve(inst, "carol")
    inst = a.reject(world.as_("fin1"), world.task_of(inst, "fin1"), "fix it", to="submitter")
    assert inst["status"] == "returned"
    inst = a.submit(alice, "quote", inst["record_id"], "restart", comment="fixed")
    assert inst["status"] == "pending" and world.pending(inst) == {"bob"}  # restart: from the top

    inst = a.submit(alice, "quote", world.quote()["id"], "resume")
    inst = world.approve(world.approve(inst, "bob"), "carol")
    inst = a.reject(world.as_("fin1"), world.task_of(inst, "fin1"), to="submitter")
    inst = a.submit(alice, "quote", inst["record_id"], "resume")
    assert world.pending(inst) == {"fin1"}  # resume: where it was sent back
    assert world.approve(inst, "fin1")["status"] == "approved"


def test_recall_transfer_add_signer_comment_batch(world):
    a = world.s.approvals
    world.publish(p={"nodes": [approval("n", [{"user": "bob"}]), approval("m", [{"user": "carol"}])],
                     "on_recalled": [{"set": {"note": '"recalled"'}}]})
    alice = world.as_("alice")
    inst = a.submit(alice, "quote", world.quote()["id"])
    with pytest.raises(PermissionDenied):
        a.recall(world.as_("bob"), inst["id"])
    inst = a.recall(alice, inst["id"], "changed my mind")
    assert inst["status"] == "recalled" and world.pending(inst) == set()
    assert world.s.records.get(world.ctx, "quote", inst["record_id"])["note"] == "recalled"
    with pytest.raises(ConflictError):
        a.recall(alice, inst["id"])

    inst = a.submit(alice, "quote", world.quote()["id"])
    inst = a.transfer(world.as_("bob"), world.task_of(inst, "bob"), "dave", "you know this one")
    assert world.pending(inst) == {"dave"}
    inst = a.add_signer(world.as_("dave"), world.task_of(inst, "dave"), "fin1", "before")
    assert world.pending(inst) == {"fin1"}  # dave waits for fin1
    inst = world.approve(inst, "fin1")
    assert world.pending(inst) == {"dave"}
    inst = a.add_signer(world.as_("dave"), world.task_of(inst, "dave"), "fin2", "after")
    assert inst["status"] == "pending" and world.pending(inst) == {"fin2"}  # the step also needs fin2
    inst = world.approve(inst, "fin2")
    assert world.pending(inst) == {"carol"}
    inst = a.comment(world.as_("alice"), inst["id"], "thanks all")
    assert inst["history"][-1]["action"] == "comment"

    others = [a.submit(alice, "quote", world.quote()["id"]) for _ in range(3)]
    tasks = [world.task_of(i, "bob") for i in others]
    results = a.batch_approve(world.as_("bob"), [*tasks, tasks[0]], "all fine")
    assert [r["ok"] for r in results] == [True, True, True, False]
    assert "decided already" in results[-1]["error"]
    assert {i["instance_id"] for i in a.inbox(world.as_("carol"), "waiting")} >= {i["id"] for i in others}
    assert {i["id"] for i in a.inbox(alice, "submitted")} >= {i["id"] for i in others}


def test_a_new_version_leaves_instances_in_flight_alone(world):
    a = world.s.approvals
    world.publish(p={"nodes": [approval("one", [{"user": "bob"}]), approval("two", [{"user": "carol"}])]})
    old = a.submit(world.as_("alice"), "quote", world.quote()["id"])
    world.publish(p={"nodes": [approval("one", [{"user": "fin1"}])]})
    new = a.submit(world.as_("alice"), "quote", world.quote()["id"])
    assert world.pending(new) == {"fin1"} and new["version"] > old["version"]
    old = world.approve(old, "bob")
    assert world.pending(old) == {"carol"}  # the old definition still has step two
    assert world.approve(old, "carol")["status"] == "approved"


def test_the_record_is_locked_while_pending(world):
    a, rec = world.s.approvals, world.s.records
    world.publish(admins={"nodes": [approval("n", [{"user": "bob"}], editable_fields=["discount"])]},
                  approvers={"lock": "approvers",
                             "nodes": [approval("n", [{"user": "bob"}], editable_fields=["discount"])]},
                  locked_after={"nodes": [approval("n", [{"user": "bob"}])], "on_approved": [{"lock": True}]})
    q = world.quote()
    inst = a.submit(world.as_("alice"), "quote", q["id"], "admins")
    with pytest.raises(PermissionDenied, match="waiting for approval"):
        rec.update(world.as_("alice"), "quote", q["id"], {"name": "changed"})
    with pytest.raises(PermissionDenied):
        rec.delete(world.as_("alice"), "quote", q["id"])
    rec.update(world.as_("boss"), "quote", q["id"], {"note": "admins may"})
    with pytest.raises(ValidationError, match="cannot be changed at this step"):
        world.approve(inst, "bob", values={"name": "x"})
    inst = world.approve(inst, "bob", values={"discount": "5"})
    assert rec.get(world.ctx, "quote", q["id"])["discount"] == "5.00"
    rec.update(world.as_("alice"), "quote", q["id"], {"name": "free again"})

    q2 = world.quote()
    a.submit(world.as_("alice"), "quote", q2["id"], "approvers")
    rec.update(world.as_("bob"), "quote", q2["id"], {"discount": "7"})
    with pytest.raises(PermissionDenied):
        rec.update(world.as_("bob"), "quote", q2["id"], {"name": "not this one"})
    with pytest.raises(PermissionDenied):
        rec.update(world.as_("boss"), "quote", q2["id"], {"name": "nor admins"})

    q3 = world.quote()
    world.approve(a.submit(world.as_("alice"), "quote", q3["id"], "locked_after"), "bob")
    with pytest.raises(PermissionDenied, match="locked by its approval"):
        rec.update(world.as_("alice"), "quote", q3["id"], {"name": "after"})


def test_automatic_submission_on_create_and_update(world):
    world.publish(on_create={"trigger": {"on": "create"}, "entry_condition": "amount > 5000",
                             "nodes": [approval("n", [{"user": "bob"}])]},
                  on_update={"trigger": {"on": "update", "condition": "discount > 30 and old.discount <= 30"},
                             "nodes": [approval("n", [{"user": "carol"}])]})
    a = world.s.approvals
    small = world.quote(amount="100")
    assert a.for_record(world.ctx, "quote", small["id"]) == []
    big = world.quote(amount="9000")
    (inst,) = a.for_record(world.ctx, "quote", big["id"])
    assert inst["process"] == "on_create" and world.pending(inst) == {"bob"}
    q = world.quote(amount="100", discount="10")
    world.s.records.update(world.as_("alice"), "quote", q["id"], {"discount": "35"})
    (inst,) = a.for_record(world.ctx, "quote", q["id"])
    assert inst["process"] == "on_update" and world.pending(inst) == {"carol"}


def test_definitions_are_checked_when_published(world):
    with pytest.raises(MetadataError) as bad:
        world.publish(p={"nodes": [approval("a", [{"role": "nobody"}], next="b"),
                                   {"name": "b", "type": "branch", "branches": [{"condition": "amount > 1", "next": "a"}]}],
                         "on_approved": [{"set": {"ghost": "1"}}]})
    errors = bad.value.errors
    assert "unknown role 'nobody'" in errors["approvals.p.nodes.0.approvers.0.role"][0]
    assert "quote has no field 'ghost'" in errors["approvals.p.on_approved.0.set.ghost"][0]
    with pytest.raises(MetadataError) as loop:
        world.publish(p={"nodes": [approval("a", [{"user": "bob"}], next="b"),
                                   {"name": "b", "type": "branch", "branches": [{"condition": "amount > 1", "next": "a"}]}]})
    assert "reached again" in next(iter(loop.value.errors.values()))[0]
    with pytest.raises(MetadataError) as expr:
        world.publish(p={"nodes": [{"name": "b", "type": "branch", "branches": [{"condition": "amount >", "next": "end"}]}]})
    assert "approvals.p.nodes.0.branches.0.condition" in expr.value.errors


def test_two_approvers_deciding_at_once_exactly_one_wins(world):
    """Two people approve the same "any" step in two threads, many times over: each time
    one wins and the other is told it was decided already."""
    a = world.s.approvals
    world.publish(p={"nodes": [approval("n", [{"user": "fin1"}, {"user": "fin2"}], mode="any"),
                               approval("after", [{"user": "carol"}])]})
    for _ in range(8):
        inst = a.submit(world.as_("alice"), "quote", world.quote()["id"])
        tasks = {who: world.task_of(inst, who) for who in ("fin1", "fin2")}
        outcomes: dict[str, str] = {}
        gate = threading.Barrier(2)

        def decide(who: str, gate=gate, tasks=tasks, outcomes=outcomes) -> None:
            gate.wait()
            try:
                a.approve(world.as_(who), tasks[who])
                outcomes[who] = "won"
            except ConflictError:
                outcomes[who] = "lost"

        threads = [threading.Thread(target=decide, args=(w,)) for w in tasks]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(outcomes.values()) == ["lost", "won"], outcomes
        final = a.instance(world.ctx, inst["id"])
        assert world.pending(final) == {"carol"}  # moved on exactly once
        assert sum(1 for t in final["tasks"] if t["node"] == "after") == 1


def race(n: int, work) -> list[str]:
    """Run ``work()`` in ``n`` threads released at the same moment; each one's outcome:
    ``won``, ``lost`` (a ConflictError) or the repr of anything else it raised."""
    gate = threading.Barrier(n)
    outcomes: list[str] = []

    def run() -> None:
        gate.wait()
        try:
            work()
            outcomes.append("won")
        except ConflictError:
            outcomes.append("lost")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion, not swallowed
            outcomes.append(repr(exc))

    threads = [threading.Thread(target=run) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return outcomes


#: Rounds of the submission race and submitters in each (the numbers the report gives).
SUBMIT_ROUNDS, SUBMITTERS = 8, 5


def test_five_submitting_one_record_at_once_start_one_approval(world):
    """Five threads submit the same record at the same moment, round after round: each
    round one starts the approval and four are told it waits already (a conflict); the
    record has one open instance and its approver one task."""
    a = world.s.approvals
    world.publish(p={"nodes": [approval("n", [{"user": "fin1"}])]})
    alice, fin1 = world.as_("alice"), world.as_("fin1")
    tally: list[str] = []
    for _ in range(SUBMIT_ROUNDS):
        q = world.quote()
        outcomes = race(SUBMITTERS, lambda q=q: a.submit(alice, "quote", q["id"]))
        assert sorted(outcomes) == ["lost"] * (SUBMITTERS - 1) + ["won"], outcomes
        tally += outcomes
        assert [i["status"] for i in a.for_record(world.ctx, "quote", q["id"])] == ["pending"]
        assert sum(1 for w in a.inbox(fin1) if w["record_id"] == q["id"]) == 1
    assert (len(tally), tally.count("won"), tally.count("lost")) == (
        SUBMIT_ROUNDS * SUBMITTERS, SUBMIT_ROUNDS, SUBMIT_ROUNDS * (SUBMITTERS - 1))


def test_older_tenants_get_the_open_approval_index_and_lose_their_duplicates(world):
    """A tenant from before the open-instance index, with two open approvals of one record
    (what racing submissions left there): the upgrade closes the later one as recalled,
    cancels its task, says why in its history, and adds the index."""
    import sqlalchemy as sa

    from loomwork.runtime import systables
    from loomwork.runtime.context import utcnow

    a = world.s.approvals
    world.publish(p={"nodes": [approval("n", [{"user": "fin1"}])]})
    q = world.quote()
    first = a.submit(world.as_("alice"), "quote", q["id"])
    i, t = systables.approval_instances, systables.approval_tasks
    index = systables.approval_open_index
    with world.ctx.tenant.write() as conn:
        schema = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
        index.drop(conn)
        row = dict(conn.execute(sa.select(i).where(i.c.id == first["id"])).mappings().one())
        row.pop("id")
        second = conn.execute(i.insert().values(row)).inserted_primary_key[0]
        task = dict(conn.execute(sa.select(t).where(t.c.instance_id == first["id"])).mappings().one())
        task.pop("id")
        conn.execute(t.insert().values({**task, "instance_id": second}))
    assert [x["status"] for x in a.for_record(world.ctx, "quote", q["id"])] == ["pending", "pending"]
    with world.ctx.tenant.write() as conn:
        systables.upgrade(conn, utcnow())
        assert index.name in {x["name"] for x in sa.inspect(conn).get_indexes(i.name, schema=schema)}
    later, kept = a.for_record(world.ctx, "quote", q["id"])
    assert (kept["id"], kept["status"], [x["status"] for x in kept["tasks"]]) == (first["id"], "pending", ["pending"])
    assert (later["id"], later["status"], [x["status"] for x in later["tasks"]]) == (second, "recalled", ["cancelled"])
    assert later["history"][-1]["detail"] == {"duplicate_of": first["id"]}
    assert sum(1 for w in a.inbox(world.as_("fin1")) if w["record_id"] == q["id"]) == 1
    with pytest.raises(sa.exc.IntegrityError), world.ctx.tenant.write() as conn:
        conn.execute(i.insert().values(row))  # the index holds now


def test_chosen_and_field_approvers_and_every_action(world, lw_ctx):
    """Approvers the submitter chooses or a record field names; action nodes and final
    actions that set fields, notify, create records, run a script, lock and unlock."""
    s, a = world.s, world.s.approvals
    doc = dict(s.metadata.current(world.ctx).doc)
    doc["objects"] = {**doc["objects"], "audit": {"fields": {"what": {"type": "text"}}}}
    doc["scripts"] = {"stamp": {"object": "quote", "trigger": {"action": True},
                                "source": "record['note'] = 'stamped by script'\n"}}
    doc["roles"] = {**doc["roles"], "sales": {"permissions": {"quote": ["create", "read", "update", "delete"],
                                                              "audit": ["read"]}}}
    doc["approvals"] = {"p": {"object": "quote", "nodes": [
        approval("picked", [{"chosen_by_submitter": True}]),
        {"name": "log", "type": "action", "actions": [
            {"create": {"object": "audit", "values": {"what": '"reviewed " + name'}}},
            {"notify": {"to": [{"user": "dave"}], "message": "heads up"}}]},
        approval("by_field", [{"field": "reviewer"}]),
    ], "on_approved": [{"script": "stamp"}, {"lock": True}]}}
    s.metadata.publish(world.ctx, doc, comment="actions")
    q = world.quote(reviewer=world.ids["carol"])
    with pytest.raises(ValidationError, match="nobody can approve"):
        a.submit(world.as_("alice"), "quote", q["id"])  # nobody chosen
    inst = a.submit(world.as_("alice"), "quote", q["id"], chosen={"picked": ["fin2"]})
    assert world.pending(inst) == {"fin2"}
    inst = world.approve(inst, "fin2")
    assert world.pending(inst) == {"carol"}  # the record's reviewer field
    audits = s.query.list(lw_ctx, "audit", ListRequest()).data
    assert [x["what"] for x in audits] == ["reviewed Q"]
    assert [t["assignee"] for t in inst["tasks"] if t["kind"] == "cc"] == [world.ids["dave"]]
    s.scripts.enabled = lambda tenant: True
    inst = world.approve(inst, "carol")
    assert inst["status"] == "approved" and inst["locked"]
    assert s.records.get(world.ctx, "quote", q["id"])["note"] == "stamped by script"
    with pytest.raises(PermissionDenied, match="locked by its approval"):
        s.records.update(world.as_("alice"), "quote", q["id"], {"name": "after"})
    s.records.update(world.as_("boss"), "quote", q["id"], {"name": "admins may"})


# -- regressions from the review of the engine ------------------------------------------------

def test_back_means_back_and_forbid_holds_through_transfer_and_delegation(world, lw_ctx):
    a = world.s.approvals
    world.publish(p={"nodes": [approval("first", [{"user": "bob"}]), approval("second", [{"user": "carol"}]),
                               approval("third", [{"user": "fin1"}])]},
                  strict={"nodes": [approval("n", [{"user": "bob"}], self_approval="forbid")]})
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"], "p")
    inst = world.approve(world.approve(inst, "bob"), "carol")
    inst = a.reject(world.as_("fin1"), world.task_of(inst, "fin1"), to="first")
    with pytest.raises(ValidationError, match="a step it passed"):
        a.reject(world.as_("bob"), world.task_of(inst, "bob"), to="third")  # forward is not back
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"], "strict")
    with pytest.raises(ValidationError, match="submitter may not approve"):
        a.transfer(world.as_("bob"), world.task_of(inst, "bob"), "alice")
    now = lw_ctx.now()
    world.s.users.delegate(world.as_("bob"), world.ids["bob"], world.ids["alice"], now - dt.timedelta(hours=1),
                           now + dt.timedelta(hours=1))
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"], "strict")
    assert world.pending(inst) == {"bob"}  # not delegated to the submitter


def test_added_signers_keep_the_order_and_their_no_counts(world):
    a = world.s.approvals
    world.publish(turn={"nodes": [approval("n", [{"user": "fin1"}, {"user": "fin2"}], mode="sequential")]},
                  share={"nodes": [approval("n", [{"user": "fin1"}, {"user": "fin2"}, {"user": "dave"}],
                                            mode="ratio", ratio=0.3)]})
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"], "turn")
    inst = a.add_signer(world.as_("fin1"), world.task_of(inst, "fin1"), "carol", "after")
    assert world.pending(inst) == {"carol"}  # fin2 waits until the added signer decides
    inst = world.approve(inst, "carol")
    assert world.pending(inst) == {"fin2"}
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"], "share")
    inst = a.add_signer(world.as_("fin1"), world.task_of(inst, "fin1"), "carol", "after")
    inst = a.reject(world.as_("carol"), world.task_of(inst, "carol"))
    assert inst["status"] == "rejected"


def test_a_cascade_cannot_delete_a_locked_record(world):
    s, a = world.s, world.s.approvals
    doc = dict(s.metadata.current(world.ctx).doc)
    doc["objects"] = {**doc["objects"], "deal": {"fields": {"name": {"type": "text"}}},
                      "quote": {"fields": {**QUOTE["fields"],
                                           "deal": {"type": "lookup", "target": "deal", "on_delete": "cascade"}}}}
    doc["roles"] = {**doc["roles"], "sales": {"permissions": {"quote": ["create", "read", "update", "delete"],
                                                              "deal": ["create", "read", "update", "delete"]}}}
    doc["approvals"] = {"p": {"object": "quote", "lock": "nobody", "nodes": [approval("n", [{"user": "carol"}])]}}
    s.metadata.publish(world.ctx, doc, comment="deal")
    deal = s.records.create(world.as_("alice"), "deal", {"name": "D"})
    quote = world.quote(deal=deal["id"])
    a.submit(world.as_("alice"), "quote", quote["id"])
    with pytest.raises(PermissionDenied, match="waiting for approval"):
        s.records.delete(world.as_("alice"), "deal", deal["id"])
    assert s.records.get(world.ctx, "quote", quote["id"])["deal"] == deal["id"]


def test_an_update_trigger_fires_when_its_condition_becomes_true_only(world):
    a = world.s.approvals
    world.publish(p={"trigger": {"on": "update", "condition": "discount > 30"},
                     "nodes": [approval("n", [{"user": "carol"}])]})
    q = world.quote(discount="10")
    world.s.records.update(world.as_("alice"), "quote", q["id"], {"discount": "35"})
    (inst,) = a.for_record(world.ctx, "quote", q["id"])
    world.approve(inst, "carol")
    world.s.records.update(world.as_("alice"), "quote", q["id"], {"note": "typo fixed"})
    assert len(a.for_record(world.ctx, "quote", q["id"])) == 1  # still true, not newly true


def test_deactivated_delegates_are_passed_over(world, lw_ctx):
    a, users = world.s.approvals, world.s.users
    world.publish(p={"nodes": [approval("n", [{"user": "bob"}])]})
    now = lw_ctx.now()
    users.delegate(world.as_("bob"), world.ids["bob"], world.ids["dave"], now - dt.timedelta(hours=1),
                   now + dt.timedelta(hours=1))
    users.set_active(world.ctx, world.ids["dave"], False)
    inst = a.submit(world.as_("alice"), "quote", world.quote()["id"])
    assert world.pending(inst) == {"bob"}
