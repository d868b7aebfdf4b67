"""The record write pipeline: its stages and order, the hook that registers
participants (built-ins and plugins alike), origins instead of ambient flags, derived
writes, per-batch lookups and autonumbers, and the nesting guard."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from loomwork.metadata.errors import ConflictError, LoomworkError, ValidationError
from loomwork.runtime import hookimpl
from loomwork.runtime.pipeline import OPERATIONS, STAGES, Origin, Pipeline, participant

ACCOUNT = {"fields": {"name": {"type": "text", "required": True},
                      "deals": {"type": "rollup", "object": "deal", "via": "account", "function": "count"},
                      "total": {"type": "rollup", "object": "deal", "via": "account", "function": "sum",
                                "field": "amount"},
                      "biggest": {"type": "rollup", "object": "deal", "via": "account", "function": "max",
                                  "field": "amount"}}}
DEAL = {"fields": {"name": {"type": "text", "required": True},
                   "account": {"type": "lookup", "target": "account", "on_delete": "cascade"},
                   "amount": {"type": "decimal", "precision": 12, "scale": 2},
                   "number": {"type": "autonumber", "pattern": "D-{0000}"}}}


@pytest.fixture
def crm(lw_publish):
    lw_publish(account=ACCOUNT, deal=DEAL)


def test_every_operation_runs_its_participants_in_stage_order(lw_services):
    pipeline = lw_services.records.pipeline
    for op in OPERATIONS:
        stages = [STAGES.index(p.stage) for p in pipeline.participants(op)]
        assert stages == sorted(stages) and stages, op
    names = [p.name for p in pipeline.participants("update")]
    assert names.index("parse") < names.index("rules") < names.index("approval_lock") < names.index("update") \
        < names.index("history") < names.index("rollups") < names.index("after_scripts")
    assert [p.name for p in pipeline.participants("create") if p.stage == "statement"] == ["insert"]
    # Every step says what it does (the CLI and docs list them).
    assert all(summary for _, _, summary, _ in pipeline.describe("delete"))


def test_the_built_ins_come_from_the_same_hook_a_plugin_uses(lw_plugin_manager):
    results = lw_plugin_manager.hook.loomwork_write_participants.get_hookimpls()
    assert "loomwork.plugins.core_writes" in {impl.plugin_name for impl in results}


def test_a_plugin_participant_slots_in_at_its_stage(lw_runtime, lw_ctx):
    from loomwork.plugin_manager import make_plugin_manager, make_services

    seen = []

    @participant("rules", "create", "update", name="no_mondays")
    def refuse(batch):
        """Refuse deals called Monday."""
        for w in batch.active:
            if w.values.get("name") == "Monday":
                batch.fail(w, "name", "not on a Monday")

    @participant("outbox", name="audit")
    def audit(batch):
        """Note every write with its origin."""
        seen.extend((batch.operation, batch.origin.kind, w.new["id"]) for w in batch.active)

    class Plugin:
        @hookimpl
        def loomwork_write_participants(self, services):
            return [refuse, audit]

    services = make_services(make_plugin_manager([Plugin()], entry_points=False), lw_runtime)
    services.metadata.publish(lw_ctx, {"objects": {"account": ACCOUNT, "deal": DEAL}}, comment="t")
    names = [p.name for p in services.records.pipeline.participants("create")]
    assert names.index("rules") < names.index("no_mondays") < names.index("approval_triggers") < names.index("audit")
    rec = services.records
    with pytest.raises(ValidationError) as info:
        rec.bulk_create(lw_ctx, "deal", [{"name": "Tuesday"}, {"name": "Monday"}])
    assert info.value.errors == {"1.name": ["not on a Monday"]}
    d = rec.create(lw_ctx, "deal", {"name": "Friday"}, origin=Origin.IMPORT)
    rec.update(lw_ctx, "deal", d["id"], {"amount": "5"}, origin=Origin.API)
    rec.delete(lw_ctx, "deal", d["id"])
    assert seen == [("create", "import", d["id"]), ("update", "api", d["id"]), ("delete", "user", d["id"])]


def test_a_participant_must_name_a_known_stage_and_operations():
    with pytest.raises(LoomworkError, match="unknown stage"):
        Pipeline([participant("validation")(lambda batch: None)])
    with pytest.raises(LoomworkError, match="operations"):
        Pipeline([participant("rules", "upsert")(lambda batch: None)])
    p = participant("rules", name="twice")(lambda batch: None)
    with pytest.raises(LoomworkError, match="registered twice"):
        Pipeline([p, p])
    with pytest.raises(ValueError, match="origin"):
        Origin("cron")


def test_rollups_are_derived_writes_with_history(crm, rec, lw_ctx):
    from loomwork.runtime.context import Actor, Context

    acme = rec.create(lw_ctx, "account", {"name": "Acme"})
    amy = Context(lw_ctx.tenant, Actor(7, "amy", frozenset({"admin"})), clock=lw_ctx.clock)
    d1, d2 = rec.bulk_create(amy, "deal", [{"name": "a", "account": acme["id"], "amount": "10"},
                                           {"name": "b", "account": acme["id"], "amount": "30"}])
    got = rec.get(lw_ctx, "account", acme["id"])
    assert (got["deals"], got["total"], got["biggest"]) == (2, "40.00", "30.00")
    # One derived write for the batch: the version moved once, by amy.
    assert got["row_version"] == acme["row_version"] + 1 and got["updated_by"] == 7
    rec.update(amy, "deal", d2["id"], {"amount": "5"})
    got = rec.get(lw_ctx, "account", acme["id"])
    assert (got["total"], got["biggest"], got["row_version"]) == ("15.00", "10.00", acme["row_version"] + 2)
    rec.delete(amy, "deal", d1["id"])
    got = rec.get(lw_ctx, "account", acme["id"])
    assert (got["deals"], got["total"], got["biggest"]) == (1, "5.00", "5.00")
    entries = [e for e in rec.history(lw_ctx, "account", acme["id"]) if e["field"] == "total"]
    assert [(e["old"], e["new"], e["origin"], e["changed_by"]) for e in entries] == [
        ("15.00", "5.00", "derived", 7), ("40.00", "15.00", "derived", 7), ("0.00", "40.00", "derived", 7)]
    # The deals' own history is theirs, with the origin of the write.
    assert {e["origin"] for e in rec.history(lw_ctx, "deal", d2["id"])} == {"user"}


def test_a_cascade_is_a_derived_write(crm, rec, lw_ctx):
    acme = rec.create(lw_ctx, "account", {"name": "Acme"})
    deal = rec.create(lw_ctx, "deal", {"name": "a", "account": acme["id"], "amount": "10"})
    rec.delete(lw_ctx, "account", acme["id"], origin=Origin.API)
    entries = rec.history(lw_ctx, "deal", deal["id"])
    assert [(e["action"], e["origin"]) for e in entries] == [("delete", "derived"), ("create", "user")]
    mine = next(e for e in rec.history(lw_ctx, "account", acme["id"]) if e["action"] == "delete")
    assert mine["origin"] == "api"


def test_lookups_and_autonumbers_cost_one_statement_per_batch(crm, rec, lw_ctx):
    accounts = rec.bulk_create(lw_ctx, "account", [{"name": f"A{i}"} for i in range(5)])
    rows = [{"name": f"d{i}", "account": accounts[i % 5]["id"]} for i in range(200)]
    statements = []
    engine = lw_ctx.tenant.engine

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        created = rec.bulk_create(lw_ctx, "deal", rows)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert [d["number"] for d in created[:3]] == ["D-0001", "D-0002", "D-0003"]
    assert created[-1]["number"] == "D-0200"
    lookups = [s for s in statements if s.lstrip().startswith("SELECT") and ".id IN" in s
               and "deleted_at IS NULL" in s and "account" in s]
    counters = [s for s in statements if "lw_autonumber" in s]
    assert len(lookups) == 1, lookups
    assert len(counters) <= 2, counters  # the counter's UPDATE (and its first INSERT)
    assert len(statements) < 20  # not one per row
    with pytest.raises(ValidationError) as info:
        rec.bulk_create(lw_ctx, "deal", [{"name": "x", "account": 999}, {"name": "y", "account": accounts[0]["id"]}])
    assert info.value.errors == {"0.account": ["no account record 999"]}
    # A refused batch returns its numbers: the next ones follow on.
    assert rec.create(lw_ctx, "deal", {"name": "z"})["number"] == "D-0201"


def test_writes_that_trigger_themselves_stop_at_the_nesting_limit(lw_runtime, lw_ctx):
    from loomwork.plugin_manager import make_plugin_manager, make_services

    holder = {}

    @participant("after_scripts", "create", name="echo")
    def echo(batch):
        """Create another record for every record created (a loop)."""
        with batch.ctx.tenant.joined(batch.conn):  # as a script's ctx.create joins its write
            holder["services"].records.create(batch.ctx, "account", {"name": "again"})

    class Plugin:
        @hookimpl
        def loomwork_write_participants(self, services):
            return [echo]

    services = holder["services"] = make_services(make_plugin_manager([Plugin()], entry_points=False), lw_runtime)
    services.metadata.publish(lw_ctx, {"objects": {"account": {"fields": {"name": {"type": "text"}}}}},
                              comment="t")
    with pytest.raises(ConflictError, match="nested"):
        services.records.create(lw_ctx, "account", {"name": "first"})
    from loomwork.runtime.query import ListRequest

    assert services.query.list(lw_ctx, "account", ListRequest()).data == []  # all rolled back
