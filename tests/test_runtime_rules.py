"""Formulas, roll-ups, defaults, validation rules, conditions and dependencies, enforced
by the record service on SQLite and PostgreSQL."""
from __future__ import annotations

import copy
import datetime as dt

import pytest

from loomwork.metadata.errors import MetadataError, ValidationError
from loomwork.runtime.context import Actor, Context

STAGES = [{"value": "new"}, {"value": "won"}, {"value": "lost"}]


def crm() -> dict:
    return {"objects": {
        "account": {"fields": {
            "name": {"type": "text"},
            "industry": {"type": "choice", "options": [{"value": "tech"}, {"value": "retail"}]},
            "deals": {"type": "rollup", "object": "deal", "via": "account", "function": "count"},
            "total": {"type": "rollup", "object": "deal", "via": "account", "function": "sum", "field": "amount"},
            "won": {"type": "rollup", "object": "deal", "via": "account", "function": "sum", "field": "amount",
                    "filter": 'stage == "won"'},
            "smallest": {"type": "rollup", "object": "deal", "via": "account", "function": "min", "field": "amount"},
            "largest": {"type": "rollup", "object": "deal", "via": "account", "function": "max", "field": "amount"},
            "average": {"type": "rollup", "object": "deal", "via": "account", "function": "avg", "field": "amount"},
            "last_close": {"type": "rollup", "object": "deal", "via": "account", "function": "max", "field": "close"},
        }},
        "deal": {"fields": {
            "name": {"type": "text", "required": True},
            "account": {"type": "lookup", "target": "account", "on_delete": "cascade"},
            "amount": {"type": "currency"},
            "discount": {"type": "percent", "read_only_if": 'stage == "won"'},
            "stage": {"type": "choice", "options": STAGES},
            "lost_reason": {"type": "text", "visible_if": 'stage == "lost"', "required_if": 'stage == "lost"'},
            "net": {"type": "formula", "result_type": "decimal", "stored": True,
                    "expression": "amount * (1 - coalesce(discount, 0) / 100)"},
            "big": {"type": "formula", "result_type": "boolean", "expression": "net > 1000"},
            "sector": {"type": "formula", "result_type": "text", "expression": "upper(account.industry)"},
            "close": {"type": "date", "default_expr": "add_days(today(), 30)"},
        }, "validations": {
            "discount_cap": {"condition": "discount > 50", "field": "discount",
                             "message": {"en": "Discount above 50%", "zh-CN": "折扣不能超过 50%"}},
            "lost_amount": {"condition": 'stage == "lost" and is_blank(amount)',
                            "message": "A lost deal needs its amount"},
            "no_reopen": {"condition": 'old.stage == "won" and stage != "won"', "applies_on": "update",
                          "message": "A won deal stays won", "field": "stage"},
            "off": {"condition": "True", "active": False, "message": "never"},
        }},
    }}


NOW = dt.datetime(2026, 3, 15, 9, 30, tzinfo=dt.UTC)


@pytest.fixture
def ctx(lw_ctx):
    return Context(lw_ctx.tenant, lw_ctx.actor, clock=lambda: NOW)


@pytest.fixture
def user_ctx(lw_ctx):
    return Context(lw_ctx.tenant, Actor(7, "sam", frozenset({"user", "sales"})), clock=lambda: NOW)


def errors_of(call, *args, **kwargs) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as info:
        call(*args, **kwargs)
    return info.value.errors


def test_formulas_defaults_and_lookup_paths(lw_publish, rec, ctx):
    lw_publish(crm())
    acc = rec.create(ctx, "account", {"name": "Acme", "industry": "tech"})
    d = rec.create(ctx, "deal", {"name": "x", "account": acc["id"], "amount": "2000", "discount": "12.5"})
    assert d["net"] == "1750.00" and d["big"] is True and d["sector"] == "TECH"
    assert d["close"] == "2026-04-14"  # today() + 30 with the context's clock
    assert rec.get(ctx, "deal", d["id"])["net"] == "1750.00"
    d = rec.update(ctx, "deal", d["id"], {"discount": None})
    assert d["net"] == "2000.00"
    rec.update(ctx, "account", acc["id"], {"industry": "retail"})
    assert rec.get(ctx, "deal", d["id"])["sector"] == "RETAIL"  # virtual: always current
    # A given value is never replaced by the default; computed fields are not input.
    assert rec.create(ctx, "deal", {"name": "y", "close": "2026-01-01"})["close"] == "2026-01-01"
    errs = errors_of(rec.create, ctx, "deal", {"name": "z", "net": "1", "big": True})
    assert errs == {"net": ["is computed by the system"], "big": ["is computed by the system"]}


def test_every_failing_rule_is_reported_together(lw_publish, rec, ctx):
    lw_publish(crm())
    errs = errors_of(rec.create, ctx, "deal", {"name": "x", "discount": "60", "stage": "lost"})
    assert errs == {"discount": ["Discount above 50%"], "lost_reason": ["is required"],
                    "_schema": ["A lost deal needs its amount"]}
    zh = Context(ctx.tenant, ctx.actor, locale="zh-CN", clock=ctx.clock)
    assert errors_of(rec.create, zh, "deal", {"name": "x", "discount": "60"}) == {"discount": ["折扣不能超过 50%"]}
    # Bulk writes obey the same rules; errors are keyed by row.
    errs = errors_of(rec.bulk_create, ctx, "deal", [{"name": "ok"}, {"name": "bad", "discount": "99"},
                                                    {"discount": "1"}])
    assert errs == {"1.discount": ["Discount above 50%"], "2.name": ["is required"]}
    assert rec.create(ctx, "deal", {"name": "fine", "stage": "lost", "amount": "5", "lost_reason": "price"})
    # A bulk create answers with each record under the id the database gave it.
    made = rec.bulk_create(ctx, "deal", [{"name": f"n{i}", "amount": str(i)} for i in range(25)])
    assert all(rec.get(ctx, "deal", m["id"])["name"] == m["name"] == f"n{i}" for i, m in enumerate(made))
    assert [m["net"] for m in made[:2]] == ["0.00", "1.00"]


def test_update_only_rules_and_old_values(lw_publish, rec, ctx):
    lw_publish(crm())
    d = rec.create(ctx, "deal", {"name": "x", "stage": "won"})
    assert errors_of(rec.update, ctx, "deal", d["id"], {"stage": "new"}) == {"stage": ["A won deal stays won"]}
    rec.update(ctx, "deal", d["id"], {"name": "renamed"})  # untouched stage: rule holds no more


def test_conditions_visible_required_read_only(lw_publish, rec, ctx, user_ctx):
    doc = crm()
    doc["objects"]["deal"]["fields"]["lost_reason"]["required"] = True  # but hidden unless lost
    lw_publish(doc)
    d = rec.create(user_ctx, "deal", {"name": "x", "stage": "new", "discount": "5"})
    errs = errors_of(rec.update, user_ctx, "deal", d["id"], {"stage": "lost", "amount": "10"})
    assert errs == {"lost_reason": ["is required"]}
    # read_only_if is judged on the stored record: locking and editing in one save is fine...
    d = rec.update(user_ctx, "deal", d["id"], {"stage": "won", "discount": "7"})
    assert d["discount"] == "7.00"
    # ...but once won, the discount is locked for users (an admin may still correct it).
    assert errors_of(rec.update, user_ctx, "deal", d["id"], {"discount": "8"}) == {"discount": ["is read-only here"]}
    rec.update(user_ctx, "deal", d["id"], {"discount": "7.00"})  # unchanged is fine
    assert rec.update(ctx, "deal", d["id"], {"discount": "9"})["discount"] == "9.00"


def test_section_conditions_apply_to_their_fields(lw_publish, rec, ctx):
    doc = crm()
    deal = doc["objects"]["deal"]
    deal["fields"]["loss_notes"] = {"type": "long_text"}
    deal["sections"] = {"loss": {"label": "Loss", "fields": ["loss_notes"], "visible_if": 'stage == "lost"',
                                 "required_if": "True"}}
    lw_publish(doc)
    rec.create(ctx, "deal", {"name": "hidden so not required", "stage": "new"})
    errs = errors_of(rec.create, ctx, "deal", {"name": "x", "stage": "lost", "amount": "1", "lost_reason": "r"})
    assert errs == {"loss_notes": ["is required"]}


def test_dependent_choices_enforced(lw_publish, rec, ctx):
    doc = crm()
    doc["objects"]["deal"]["fields"]["reason"] = {
        "type": "choice", "options": [{"value": "price"}, {"value": "timing"}, {"value": "fit"}],
        "depends_on": {"field": "stage", "options": {"lost": ["price", "timing"], "won": ["fit"]}}}
    lw_publish(doc)
    rec.create(ctx, "deal", {"name": "a", "stage": "won", "reason": "fit"})
    assert errors_of(rec.create, ctx, "deal", {"name": "b", "stage": "won", "reason": "price"}) == {
        "reason": ["'price' is not allowed when stage is 'won'"]}
    assert errors_of(rec.create, ctx, "deal", {"name": "c", "reason": "fit"}) == {
        "reason": ["'fit' is not allowed when stage is empty"]}
    d = rec.create(ctx, "deal", {"name": "d", "stage": "lost", "reason": "timing", "amount": "1", "lost_reason": "-"})
    assert errors_of(rec.update, ctx, "deal", d["id"], {"stage": "won"}) == {
        "reason": ["'timing' is not allowed when stage is 'won'"]}


def test_rollups_follow_every_child_change(lw_publish, rec, ctx):
    lw_publish(crm())
    a = rec.create(ctx, "account", {"name": "A"})
    b = rec.create(ctx, "account", {"name": "B"})
    assert (a["deals"], a["total"], a["smallest"]) == (0, "0.00", None)

    def acc(x):
        r = rec.get(ctx, "account", x["id"])
        return r["deals"], r["total"], r["won"], r["smallest"], r["largest"], r["average"]

    d1 = rec.create(ctx, "deal", {"name": "1", "account": a["id"], "amount": "100", "stage": "won"})
    rec.bulk_create(ctx, "deal", [{"name": "2", "account": a["id"], "amount": "300"},
                                  {"name": "3", "account": a["id"]}])
    assert acc(a) == (3, "400.00", "100.00", "100.00", "300.00", "200.00")
    rec.update(ctx, "deal", d1["id"], {"amount": "50"})
    assert acc(a) == (3, "350.00", "50.00", "50.00", "300.00", "175.00")
    rec.update(ctx, "deal", d1["id"], {"account": b["id"]})  # re-parent
    assert acc(a) == (2, "300.00", "0.00", "300.00", "300.00", "300.00")
    assert acc(b) == (1, "50.00", "50.00", "50.00", "50.00", "50.00")
    rec.delete(ctx, "deal", d1["id"])
    assert acc(b) == (0, "0.00", "0.00", None, None, None)
    rec.restore(ctx, "deal", d1["id"])
    assert acc(b) == (1, "50.00", "50.00", "50.00", "50.00", "50.00")
    d4 = rec.create(ctx, "deal", {"name": "4", "account": b["id"], "close": "2027-01-31"})
    assert rec.get(ctx, "account", b["id"])["last_close"] == "2027-01-31"
    rec.delete(ctx, "deal", d4["id"])
    assert rec.get(ctx, "account", b["id"])["last_close"] == "2026-04-14"  # d1's default close


def test_rollups_follow_set_null_and_cascades(lw_publish, rec, ctx):
    doc = crm()
    doc["objects"]["deal"]["fields"]["account"]["on_delete"] = "set_null"
    doc["objects"]["region"] = {"fields": {
        "name": {"type": "text"},
        "accounts": {"type": "rollup", "object": "account", "via": "region", "function": "count"}}}
    doc["objects"]["account"]["fields"]["region"] = {"type": "lookup", "target": "region", "on_delete": "cascade"}
    lw_publish(doc)
    r = rec.create(ctx, "region", {"name": "EU"})
    a = rec.create(ctx, "account", {"name": "A", "region": r["id"]})
    rec.create(ctx, "deal", {"name": "1", "account": a["id"], "amount": "10"})
    assert rec.get(ctx, "region", r["id"])["accounts"] == 1
    rec.delete(ctx, "region", r["id"])  # cascades to the account; the deal is unlinked
    assert rec.restore(ctx, "region", r["id"])["accounts"] == 0


def test_publish_computes_new_stored_fields_for_existing_rows(lw_publish, rec, ctx, lw_services, lw_ctx):
    doc = crm()
    lw_publish(doc)
    a = rec.create(ctx, "account", {"name": "A"})
    for i in range(5):
        rec.create(ctx, "deal", {"name": f"d{i}", "account": a["id"], "amount": str(10 * (i + 1))})
    doc = copy.deepcopy(doc)
    doc["objects"]["deal"]["fields"]["net"]["expression"] = "amount * 2"
    doc["objects"]["deal"]["fields"]["double_net"] = {"type": "formula", "result_type": "number", "stored": True,
                                                      "expression": "net * 2"}
    doc["objects"]["account"]["fields"]["big_deals"] = {
        "type": "rollup", "object": "deal", "via": "account", "function": "count", "filter": "amount >= 30"}
    lw_publish(doc)
    rows = [(r["net"], r["double_net"]) for r in (rec.get(ctx, "deal", i) for i in range(1, 6))]
    assert rows == [("20.00", 40.0), ("40.00", 80.0), ("60.00", 120.0), ("80.00", 160.0), ("100.00", 200.0)]
    assert rec.get(ctx, "account", a["id"])["big_deals"] == 3
    assert lw_services.metadata.recompute(lw_ctx, "account", "big_deals") == {"account.big_deals": 1}


def test_expressions_are_checked_at_publish_with_positions(lw_publish):
    doc = crm()
    deal = doc["objects"]["deal"]
    deal["fields"]["big"]["expression"] = "net >\n  amout"
    deal["validations"]["discount_cap"]["condition"] = 'stage == "wonn"'
    deal["fields"]["lost_reason"]["visible_if"] = "stage"
    deal["fields"]["cyc_a"] = {"type": "formula", "result_type": "number", "expression": "cyc_b + 1"}
    deal["fields"]["cyc_b"] = {"type": "formula", "result_type": "number", "expression": "cyc_a + 1"}
    deal["fields"]["via_lookup"] = {"type": "formula", "result_type": "text", "stored": True,
                                    "expression": "account.name"}
    with pytest.raises(MetadataError) as info:
        lw_publish(doc)
    errs = info.value.errors
    assert errs["objects.deal.fields.big.expression"] == ["line 2, column 3: unknown field 'amout'"]
    assert errs["objects.deal.validations.discount_cap.condition"] == [
        "line 1, column 10: 'wonn' is not an option of stage (options: new, won, lost)"]
    assert "must give a true/false condition, but gives choice" in errs["objects.deal.fields.lost_reason.visible_if"][0]
    assert any("cycle" in m for k in ("objects.deal.fields.cyc_a.expression", "objects.deal.fields.cyc_b.expression")
               for m in errs.get(k, []))
    assert "only this record's fields" in errs["objects.deal.fields.via_lookup.stored"][0]


def test_renaming_or_deleting_a_used_field(lw_publish, lw_services, lw_ctx, rec, ctx):
    doc = crm()
    lw_publish(doc)
    used = lw_services.metadata.where_used(lw_ctx, "deal", "amount")
    assert {u["path"] for u in used} == {
        "objects.deal.fields.net.expression", "objects.deal.validations.lost_amount.condition",
        "objects.account.fields.total", "objects.account.fields.won", "objects.account.fields.smallest",
        "objects.account.fields.largest", "objects.account.fields.average"}
    assert {u["path"] for u in lw_services.metadata.where_used(lw_ctx, "account", "industry")} == {
        "objects.deal.fields.sector.expression"}

    renamed = copy.deepcopy(doc)
    fields = renamed["objects"]["deal"]["fields"]
    fields["value"] = {**fields.pop("amount"), "renamed_from": "amount"}
    with pytest.raises(MetadataError) as info:
        lw_publish(renamed)
    assert "objects.deal.fields.net.expression" in info.value.errors
    assert "renames to value" in info.value.errors["objects.deal.fields.net.expression"][0]
    assert "objects.account.fields.total.field" in info.value.errors

    lw_services.metadata.publish(lw_ctx, renamed, update_dependents=True)
    now = lw_services.metadata.current(lw_ctx).doc["objects"]
    assert now["deal"]["fields"]["net"]["expression"] == "value * (1 - coalesce(discount, 0) / 100)"
    assert now["deal"]["validations"]["lost_amount"]["condition"] == 'stage == "lost" and is_blank(value)'
    assert now["account"]["fields"]["total"]["field"] == "value"
    d = rec.create(ctx, "deal", {"name": "x", "value": "100"})
    assert d["net"] == "100.00"

    dropped = copy.deepcopy(now)
    del dropped["deal"]["fields"]["discount"]
    with pytest.raises(MetadataError) as info:
        lw_publish({"objects": dropped})
    assert "which this change deletes" in info.value.errors["objects.deal.fields.net.expression"][0]


def test_rename_rewrites_paths_old_and_changed(lw_publish, lw_services, lw_ctx):
    doc = crm()
    doc["objects"]["deal"]["validations"]["moved"] = {
        "condition": "changed('stage') and old.stage == \"won\" and account.industry == \"tech\"",
        "message": "m"}
    lw_publish(doc)
    renamed = copy.deepcopy(doc)
    deal_f = renamed["objects"]["deal"]["fields"]
    deal_f["phase"] = {**deal_f.pop("stage"), "renamed_from": "stage"}
    acc_f = renamed["objects"]["account"]["fields"]
    acc_f["sector_code"] = {**acc_f.pop("industry"), "renamed_from": "industry"}
    for v in renamed["objects"]["deal"]["validations"].values():
        v["condition"] = v["condition"]  # unchanged: they still use the old names
    lw_services.metadata.publish(lw_ctx, renamed, update_dependents=True)
    cur = lw_services.metadata.current(lw_ctx).doc["objects"]["deal"]
    assert cur["validations"]["moved"]["condition"] == \
        "changed('phase') and old.phase == \"won\" and account.sector_code == \"tech\""
    assert cur["fields"]["sector"]["expression"] == "upper(account.sector_code)"


def test_roll_ups_that_could_go_stale_are_refused(lw_publish):
    doc = crm()
    doc["objects"]["region"] = {"fields": {"total": {
        "type": "rollup", "object": "account", "via": "region", "function": "sum", "field": "total"}}}
    doc["objects"]["account"]["fields"]["region"] = {"type": "lookup", "target": "region"}
    doc["objects"]["account"]["fields"]["avg_stored"] = {
        "type": "formula", "result_type": "decimal", "stored": True, "expression": "total / deals"}
    doc["objects"]["account"]["fields"]["big_ones"] = {
        "type": "rollup", "object": "deal", "via": "account", "function": "count", "filter": "big"}
    with pytest.raises(MetadataError) as info:
        lw_publish(doc)
    assert info.value.errors["objects.region.fields.total.field"] == ["a roll-up cannot summarise another roll-up"]
    del doc["objects"]["region"]
    del doc["objects"]["account"]["fields"]["region"]
    with pytest.raises(MetadataError) as info:
        lw_publish(doc)
    errs = info.value.errors
    assert "a stored formula cannot use the roll-up" in errs["objects.account.fields.avg_stored.stored"][0]
    assert "no lookups, clock, user, virtual formulas" in errs["objects.account.fields.big_ones.filter"][0]


def test_set_null_cascade_recomputes_stored_formulas(lw_publish, rec, ctx):
    doc = crm()
    deal = doc["objects"]["deal"]["fields"]
    deal["account"]["on_delete"] = "set_null"
    deal["linked"] = {"type": "formula", "result_type": "boolean", "stored": True, "expression": "not is_blank(account)"}
    lw_publish(doc)
    a = rec.create(ctx, "account", {"name": "A"})
    d = rec.create(ctx, "deal", {"name": "x", "account": a["id"], "amount": "5"})
    assert d["linked"] is True
    rec.delete(ctx, "account", a["id"])
    assert rec.get(ctx, "deal", d["id"])["linked"] is False


def test_rule_errors_name_the_fields_that_decided_them(lw_publish, rec, ctx):
    """Issue 11, defect 2: a form drops a server message once a field it depends on
    changes; each message of the rules says which fields (and which rule) decided it."""
    from loomwork.runtime.evaluation import RuleMessage

    lw_publish(crm())
    errs = errors_of(rec.create, ctx, "deal", {"name": "x", "discount": "60", "stage": "lost"})
    (cap,), (required,), (lost,) = errs["discount"], errs["lost_reason"], errs["_schema"]
    assert all(isinstance(m, RuleMessage) for m in (cap, required, lost))
    assert (cap.rule, cap.reads) == ("discount_cap", {"discount"})
    assert (required.rule, required.reads) == (None, {"lost_reason", "stage"})  # its visible_if and required_if
    assert (lost.rule, lost.reads) == ("lost_amount", {"stage", "amount"})
    assert lost == "A lost deal needs its amount"  # still the plain text everywhere else
    d = rec.create(ctx, "deal", {"name": "y", "stage": "won"})
    (stays,) = errors_of(rec.update, ctx, "deal", d["id"], {"stage": "new"})["stage"]
    assert (stays.rule, stays.reads) == ("no_reopen", {"stage"})
    # A rule reading a formula depends on the formula's inputs too.
    doc = crm()
    doc["objects"]["deal"]["validations"]["net_cap"] = {"condition": "net > 100", "field": "amount",
                                                         "message": "Too much"}
    lw_publish(doc)
    (too_much,) = errors_of(rec.create, ctx, "deal", {"name": "z", "amount": "500"})["amount"]
    assert too_much.reads == {"amount", "net", "discount"}
