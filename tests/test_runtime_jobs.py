"""Jobs and deadlines on both databases, with a clock the test moves: reminders and
escalations of approval tasks, a worker killed mid-job, retries, two workers sharing
the queue, and email notifications sent to a local SMTP server."""
from __future__ import annotations

import datetime as dt
import json
import threading
import time

import pytest
import sqlalchemy as sa

from loomwork.runtime.context import Actor, Clock, Context
from loomwork.runtime.query import ListRequest

T0 = dt.datetime(2026, 12, 7, 9, 0, tzinfo=dt.UTC)
QUOTE = {"fields": {"name": {"type": "text", "required": True}}}


@pytest.fixture
def timed(lw_services, lw_tenant, lw_cheap_passwords):
    clock = Clock(T0)
    admin = Context(lw_tenant, Actor.system(), clock=clock)
    lw_services.metadata.publish(admin, {"objects": {"quote": QUOTE}}, comment="setup")
    ids = {n: lw_services.users.create(admin, n, None, roles=("admin",) if n == "boss" else ("user",),
                                       email=f"{n}@example.com").id for n in ("amy", "ben", "cal", "boss")}

    def as_(name: str) -> Context:
        return Context(lw_tenant, lw_services.users.get(admin, ids[name]).actor(), clock=clock)

    return lw_services, admin, clock, ids, as_


def publish(services, ctx, deadline: dict) -> None:
    doc = dict(services.metadata.current(ctx).doc)
    doc["approvals"] = {"p": {"object": "quote", "nodes": [
        {"name": "check", "type": "approval", "approvers": [{"user": "ben"}], "deadline": deadline},
        {"name": "last", "type": "approval", "approvers": [{"user": "boss"}]}]}}
    services.metadata.publish(ctx, doc, comment="deadline")


def submit(services, as_) -> dict:
    q = services.records.create(as_("amy"), "quote", {"name": "Q"})
    return services.approvals.submit(as_("amy"), "quote", q["id"])


def test_reminder_then_escalation_by_approval(timed):
    s, admin, clock, ids, as_ = timed
    publish(s, admin, {"hours": 24, "remind_before_hours": 4, "escalate": "approve"})
    inst = submit(s, as_)
    clock.now = T0 + dt.timedelta(hours=19)
    assert s.jobs.run_due(admin) == []
    clock.now = T0 + dt.timedelta(hours=21)
    assert [j["kind"] for j in s.jobs.run_due(admin)] == ["approval_reminder"]
    inst = s.approvals.instance(admin, inst["id"])
    assert inst["history"][-1]["action"] == "remind" and inst["status"] == "pending"
    clock.now = T0 + dt.timedelta(hours=25)
    assert [j["status"] for j in s.jobs.run_due(admin)] == ["done"]
    inst = s.approvals.instance(admin, inst["id"])
    assert any(h["action"] == "escalate" for h in inst["history"])
    assert {t["node"]: t["status"] for t in inst["tasks"]} == {"check": "approved", "last": "pending"}
    clock.now = T0 + dt.timedelta(hours=50)
    assert s.jobs.run_due(admin) == []  # nothing left


@pytest.mark.parametrize("rule", ["reject", "reassign", "none"])
def test_escalation_rules(timed, rule):
    s, admin, clock, ids, as_ = timed
    publish(s, admin, {"hours": 2, "escalate": rule, "reassign_to": [{"user": "cal"}]})
    inst = submit(s, as_)
    clock.now = T0 + dt.timedelta(hours=3)
    s.jobs.run_due(admin)
    inst = s.approvals.instance(admin, inst["id"])
    if rule == "reject":
        assert inst["status"] == "rejected"
    elif rule == "reassign":
        assert [t["assignee"] for t in inst["tasks"] if t["status"] == "pending"] == [ids["cal"]]
    else:
        assert inst["status"] == "pending" and inst["history"][-1]["action"] == "overdue"


def test_a_task_decided_before_its_deadline_is_left_alone(timed):
    s, admin, clock, ids, as_ = timed
    publish(s, admin, {"hours": 2, "escalate": "reject"})
    inst = submit(s, as_)
    s.approvals.approve(as_("ben"), inst["tasks"][0]["id"])
    clock.now = T0 + dt.timedelta(hours=3)
    assert [j["status"] for j in s.jobs.run_due(admin)] == ["done"]
    assert s.approvals.instance(admin, inst["id"])["status"] == "pending"  # waiting for boss, not rejected


def test_a_worker_killed_mid_job_and_a_failing_job(timed):
    s, admin, clock, ids, as_ = timed
    runs = []
    s.jobs.handlers["count"] = lambda ctx, conn, payload: runs.append(payload["n"])
    with admin.tenant.write() as conn:
        s.jobs.enqueue(conn, "count", T0, {"n": 1})
    claimed = s.jobs._claim(admin, T0, 10)  # a worker claims it, then dies before running it
    assert len(claimed) == 1 and s.jobs.run_due(admin) == []  # leased: nobody else takes it yet
    clock.now = T0 + dt.timedelta(minutes=6)  # the lease ran out
    assert [j["status"] for j in s.jobs.run_due(admin)] == ["done"] and runs == [1]
    assert s.jobs.run_due(admin) == []

    def broken(ctx, conn, payload):
        raise RuntimeError("the mail server is down")

    s.jobs.handlers["broken"] = broken
    with admin.tenant.write() as conn:
        s.jobs.enqueue(conn, "broken", clock.now, {})
    outcomes = []
    for _ in range(8):
        outcomes += [j["status"] for j in s.jobs.run_due(admin)]
        clock.now += dt.timedelta(hours=2)  # past every backoff
    assert outcomes == ["retry", "retry", "retry", "retry", "failed"]


def test_two_workers_share_the_queue_and_run_each_job_once(timed):
    s, admin, clock, ids, as_ = timed
    seen: list[int] = []
    lock = threading.Lock()

    def slow(ctx, conn, payload):
        time.sleep(0.01)
        with lock:
            seen.append(payload["n"])

    s.jobs.handlers["slow"] = slow
    with admin.tenant.write() as conn:
        for n in range(30):
            s.jobs.enqueue(conn, "slow", T0, {"n": n})

    def work() -> None:
        while s.jobs.run_due(admin, limit=3):
            pass

    threads = [threading.Thread(target=work) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(seen) == list(range(30))


def test_email_notifications_through_smtp(lw_database_url, tmp_path):
    from aiosmtpd.controller import Controller

    from loomwork import create_app

    received = []

    class Inbox:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802  (aiosmtpd's name)
            received.append((envelope.rcpt_tos, envelope.content.decode()))
            return "250 OK"

    import socket

    with socket.socket() as probe:  # a free port for the test's SMTP server
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(Inbox(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        app = create_app({"database_url": lw_database_url, "namespace": "lwtmail", "secret_key": "x",
                          "instance_dir": str(tmp_path), "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_from": "approvals@example.com",
                          "base_url": "https://crm.example.com"})
        st = app.extensions["loomwork"]
        tenant = st.platform.create_tenant("main")
        ctx = Context(tenant, Actor.system())
        st.services.metadata.publish(ctx, {"objects": {"quote": QUOTE}, "approvals": {"p": {
            "object": "quote", "nodes": [{"name": "n", "type": "approval", "approvers": [{"user": "ben"}]}]}}})
        amy = st.services.users.create(ctx, "amy", None, email="amy@example.com")
        st.services.users.create(ctx, "ben", None, email="ben@example.com")
        q = st.services.records.create(Context(tenant, amy.actor()), "quote", {"name": "Q"})
        inst = st.services.approvals.submit(Context(tenant, amy.actor()), "quote", q["id"])
        assert received == []  # queued with the submission, sent by the worker
        assert [j["status"] for j in st.services.jobs.run_due(ctx)] == ["done"]
        (to, content), = received
        assert to == ["ben@example.com"] and "Subject: Waiting for your approval: p (quote" in content
        assert f"https://crm.example.com/app/quote/{q['id']}" in content
        ben = next(u for u in st.services.users.list(ctx) if u.username == "ben")
        st.services.approvals.approve(Context(tenant, ben.actor()), inst["tasks"][0]["id"])
        st.services.jobs.run_due(ctx)
        assert received[-1][0] == ["amy@example.com"] and "Subject: Approved: p" in received[-1][1]
        st.platform.drop_all()
        st.platform.dispose()
    finally:
        smtp.stop()


def test_a_step_in_turn_gets_its_deadline_when_its_turn_comes(timed):
    s, admin, clock, ids, as_ = timed
    doc = dict(s.metadata.current(admin).doc)
    doc["approvals"] = {"p": {"object": "quote", "nodes": [
        {"name": "n", "type": "approval", "approvers": [{"user": "ben"}, {"user": "cal"}], "mode": "sequential",
         "deadline": {"hours": 2, "escalate": "none"}}]}}
    s.metadata.publish(admin, doc, comment="turns")
    inst = submit(s, as_)
    clock.now = T0 + dt.timedelta(hours=1)
    inst = s.approvals.approve(as_("ben"), inst["tasks"][0]["id"])
    clock.now = T0 + dt.timedelta(hours=2, minutes=30)  # ben's deadline passed, cal's (from 1h) not yet
    s.jobs.run_due(admin)
    assert not any(h["action"] == "overdue" for h in s.approvals.instance(admin, inst["id"])["history"])
    clock.now = T0 + dt.timedelta(hours=3, minutes=30)
    s.jobs.run_due(admin)
    overdue = [h for h in s.approvals.instance(admin, inst["id"])["history"] if h["action"] == "overdue"]
    assert len(overdue) == 1


def test_a_job_whose_lease_passed_to_another_worker_is_not_run_twice(timed):
    s, admin, clock, ids, as_ = timed
    sent: list[str] = []

    def note(ctx, conn, payload):
        if payload["n"] == "n0":
            clock.now = clock.now + dt.timedelta(minutes=6)  # the rest of the batch's lease runs out
        sent.append(payload["n"])

    s.jobs.handlers["note"] = note
    with admin.tenant.write() as conn:
        for n in ("n0", "n1", "n2"):
            s.jobs.enqueue(conn, "note", T0, {"n": n})
    claimed = s.jobs._claim(admin, T0, 10)  # worker A takes all three
    s.jobs._run(admin, claimed[0], T0)  # A runs n0 slowly
    s.jobs.run_due(admin)  # worker B takes n1 and n2 after A's lease ran out
    for job in claimed[1:]:
        assert s.jobs._run(admin, job, T0)["status"] == "taken"  # A finds them taken
    assert sorted(sent) == ["n0", "n1", "n2"]


def test_the_email_notifier_is_a_default_plugin_offered_only_with_smtp(tmp_path):
    """Email comes from loomwork.plugins.email_notifier through loomwork_notifiers, like a
    plugin's notifier: the app collects the hook, and without smtp_host there is none."""
    from loomwork import hookimpl
    from loomwork.app import create_app
    from loomwork.plugin_manager import make_plugin_manager
    from loomwork.plugins import DEFAULT_PLUGINS
    from loomwork.plugins.email_notifier import EmailNotifier

    assert "loomwork.plugins.email_notifier" in DEFAULT_PLUGINS

    chat: list[tuple[str, str, str | None]] = []

    class Chat:
        def send(self, ctx, user, note):
            chat.append((user["username"], note.subject, note.link))

    class ChatPlugin:
        @hookimpl
        def loomwork_notifiers(self, settings):
            return [Chat()]

    base = {"database_url": f"sqlite:///{tmp_path / 'i'}", "secret_key": "x", "instance_dir": str(tmp_path)}
    plain = create_app(base, plugin_manager=make_plugin_manager([ChatPlugin()], entry_points=False))
    st = plain.extensions["loomwork"]
    assert [type(n) for n in st.services.jobs.notifiers] == [Chat]
    # End to end: a submission queues a notification; the worker hands it to the chat.
    ctx = Context(st.platform.create_tenant("main"), Actor.system())
    st.services.metadata.publish(ctx, {"objects": {"quote": QUOTE}, "approvals": {"p": {
        "object": "quote", "nodes": [{"name": "n", "type": "approval", "approvers": [{"user": "ben"}]}]}}})
    amy = st.services.users.create(ctx, "amy", None)
    st.services.users.create(ctx, "ben", None)
    q = st.services.records.create(Context(ctx.tenant, amy.actor()), "quote", {"name": "Q"})
    st.services.approvals.submit(Context(ctx.tenant, amy.actor()), "quote", q["id"])
    assert chat == [] and [j["status"] for j in st.services.jobs.run_due(ctx)] == ["done"]
    assert chat == [("ben", "Waiting for your approval: p (quote 1)", f"/app/quote/{q['id']}")]
    st.platform.dispose()
    mail = create_app({**base, "smtp_host": "mail.example.com"},
                      plugin_manager=make_plugin_manager([ChatPlugin()], entry_points=False))
    notifiers = mail.extensions["loomwork"].services.jobs.notifiers
    assert [type(n) for n in notifiers] == [EmailNotifier, Chat]  # built-ins first
    assert notifiers[0].host == "mail.example.com"


class Crash(BaseException):
    """The process dying mid-batch: nothing catches it, nothing is recorded."""


BASKETS = {"basket": {"fields": {"name": {"type": "text"}}},
          "line": {"fields": {"basket": {"type": "lookup", "target": "basket"}, "qty": {"type": "integer"},
                              "price": {"type": "decimal", "scale": 2}}}}


@pytest.mark.parametrize("how", ["the process dies", "a batch fails"])
def test_a_recompute_interrupted_mid_way_goes_on_after_a_restart(lw_plugin_manager, lw_tenant, lw_cheap_passwords,
                                                                   monkeypatch, how):
    """A publish adds a stored formula over 23 rows (batches of 5) and a roll-up of it;
    the third batch dies. The two batches before it stay committed and the job says so;
    after a restart (new services, new compiled cache) a worker takes the job once its
    lease or back-off has passed and goes on from row 11: every row right, each one
    written once, the roll-up right."""
    import copy

    from loomwork.plugin_manager import make_runtime, make_services
    from loomwork.runtime import recompute, systables
    from loomwork.runtime.jobs import LEASE

    clock = Clock(T0)
    admin = Context(lw_tenant, Actor.system(), clock=clock)
    first = make_services(lw_plugin_manager, make_runtime(lw_plugin_manager))
    first.metadata.publish(admin, {"objects": BASKETS}, comment="setup")
    baskets = [first.records.create(admin, "basket", {"name": f"b{n}"})["id"] for n in range(3)]
    first.records.bulk_create(admin, "line", [{"basket": baskets[n % 3], "qty": n, "price": "1.50"}
                                              for n in range(1, 24)])
    doc = copy.deepcopy(first.metadata.current(admin).doc)
    doc["objects"]["line"]["fields"]["total"] = {"type": "formula", "result_type": "decimal", "stored": True,
                                                 "expression": "qty * price"}
    doc["objects"]["basket"]["fields"]["sum"] = {"type": "rollup", "object": "line", "via": "basket",
                                                "function": "sum", "field": "total"}
    monkeypatch.setattr(recompute, "BATCH", 5)
    real, batches = recompute._formulas_batch, []

    def dies_at_the_third(*args, **kw):
        if len(batches) == 2:
            raise Crash if how == "the process dies" else RuntimeError("the disk is full")
        batches.append(args[4])  # the id it went on after
        return real(*args, **kw)

    monkeypatch.setattr(recompute, "_formulas_batch", dies_at_the_third)
    if how == "the process dies":
        with pytest.raises(Crash):
            first.metadata.publish(admin, doc, comment="totals")
    else:
        first.metadata.publish(admin, doc, comment="totals")  # the version stands; the job waits
    j = systables.jobs
    with lw_tenant.read() as conn:
        job = conn.execute(sa.select(j).where(j.c.kind == recompute.JOB)).one()

    def lines():
        return [(r["id"], r["total"], r["row_version"]) for r in first.query.list(
            admin, "line", ListRequest(fields=["total", "row_version"], sort=["id"], limit=100)).data]

    assert json.loads(job.payload)["after"] == 10 and job.status == ("running" if how == "the process dies"
                                                                     else "queued")
    assert [total for _id, total, _v in lines()] == [f"{1.5 * n:.2f}" for n in range(1, 11)] + [None] * 13

    assert batches == [0, 5]
    batches.clear()
    monkeypatch.setattr(recompute, "_formulas_batch", lambda *args, **kw: batches.append(args[4]) or real(*args, **kw))
    after = make_services(lw_plugin_manager, make_runtime(lw_plugin_manager))  # the restart
    wait = LEASE if how == "the process dies" else dt.timedelta(minutes=2)  # the lease, or the first back-off
    clock.now = T0 + wait - dt.timedelta(seconds=1)
    assert after.jobs.run_due(admin) == []  # a live lease is nobody else's; a back-off is waited out
    clock.now = T0 + wait + dt.timedelta(seconds=1)
    outcome = after.jobs.run_due(admin)
    assert [(o["job"], o["status"]) for o in outcome] == [(job.id, "done")]
    assert batches == [10, 15, 20, 23]  # on from row 11 (the last call finds no rows left)
    assert outcome[0]["result"]["rows"] == {"line.total": 23, "basket.sum": 3}  # 10 before the crash, 13 after
    assert [(total, v) for _id, total, v in lines()] == [(f"{1.5 * n:.2f}", 2) for n in range(1, 24)]
    sums = {r["id"]: r["sum"] for r in after.query.list(admin, "basket", ListRequest(fields=["sum"])).data}
    assert sums == {b: f"{sum(1.5 * n for n in range(1, 24) if n % 3 == i):.2f}" for i, b in enumerate(baskets)}
    assert after.jobs.run_due(admin) == []


def test_an_embedded_server_goes_on_with_a_recompute_its_predecessor_left(app):
    """The job thread of a one-process server (``loomwork serve``/``demo``) takes a
    recompute job whose process died right after the publish (its lease long run out)
    and finishes it: stale rows are computed without a separate worker."""
    import time as wall

    from loomwork.background import start
    from loomwork.runtime import recompute, systables
    from loomwork.runtime.context import utcnow
    from loomwork.runtime.jobs import LEASE

    st = app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    fields = {"qty": {"type": "integer"},
              "twice": {"type": "formula", "result_type": "number", "stored": True, "expression": "qty * 2"}}
    st.services.metadata.publish(ctx, {"objects": {"line": {"fields": fields}}})
    st.services.records.bulk_create(ctx, "line", [{"qty": n} for n in range(1, 8)])
    compiled = st.services.runtime.compiled(ctx.tenant)
    t = compiled.object("line").table
    with ctx.tenant.write() as conn:  # stale values, and the job their publish started
        conn.execute(t.update().values(twice=None))
        job = st.services.jobs.start(conn, recompute.JOB, utcnow() - 2 * LEASE,
                                     recompute.plan(compiled, [recompute.Target("line", "twice", "formula")]))
    stop = start(st, interval=0.05)
    try:
        j = systables.jobs
        for _ in range(200):
            with ctx.tenant.read() as conn:
                if conn.execute(sa.select(j.c.status).where(j.c.id == job)).scalar_one() == "done":
                    break
            wall.sleep(0.05)
    finally:
        stop.set()
    rows = st.services.query.list(ctx, "line", ListRequest(fields=["qty", "twice"], limit=10)).data
    assert sorted((r["qty"], r["twice"]) for r in rows) == [(n, 2.0 * n) for n in range(1, 8)]
