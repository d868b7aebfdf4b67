"""Formulas, roll-ups, validation rules and conditions through the HTTP API, end to end:
publishing them, records obeying them, the form rules and where-used endpoints, renames
and deletions of fields in use, expression checks, recomputation, and who may do it."""
from __future__ import annotations

import copy
import datetime as dt

import pytest
import sqlalchemy as sa

from loomwork.testing import assert_problem as problem

pytestmark = pytest.mark.usefixtures("fast_setup")

META = "/api/v1/meta"

#: A new object with every kind of rule (formulas on the sample's ``deal``:
#: test_formulas_added_to_an_existing_object).
OPP = {
    "fields": {
        "name": {"type": "text", "required": True},
        "account": {"type": "lookup", "target": "account", "on_delete": "cascade"},
        "amount": {"type": "currency"},
        "stage": {"type": "choice", "options": [{"value": "new"}, {"value": "won"}, {"value": "lost"}]},
        "discount": {"type": "percent", "read_only_if": 'stage == "won"'},
        "net": {"type": "formula", "result_type": "decimal", "stored": True,
                "expression": "amount * (1 - coalesce(discount, 0) / 100)"},
        "big": {"type": "formula", "result_type": "boolean", "expression": "net > 1000"},
        "sector": {"type": "formula", "result_type": "text", "expression": "upper(account.industry)"},
        "lost_reason": {"type": "text", "visible_if": 'stage == "lost"', "required_if": 'stage == "lost"'},
        "loss_notes": {"type": "long_text"},
        "reason": {"type": "choice", "options": [{"value": "price"}, {"value": "timing"}, {"value": "fit"}],
                   "depends_on": {"field": "stage", "options": {"lost": ["price", "timing"], "won": ["fit"]}}},
        "follow_up": {"type": "date", "default_expr": "add_days(today(), 30)"},
        "code": {"type": "text", "default_expr": 'concat("D/", upper(name))'},
    },
    "sections": {"loss": {"fields": ["loss_notes"], "visible_if": 'stage == "lost"', "required_if": "True"}},
    "validations": {
        "discount_cap": {"condition": "discount > 50", "field": "discount",
                         "message": {"en": "Discount above 50%", "zh-CN": "折扣不能超过 50%"}},
        "lost_amount": {"condition": 'stage == "lost" and is_blank(amount)',
                        "message": {"en": "A lost deal needs its amount", "zh-CN": "输单需要金额"}},
        "no_reopen": {"condition": 'old.stage == "won" and stage != "won"', "applies_on": "update",
                      "message": "A won deal stays won", "field": "stage"},
        "no_tests": {"condition": 'starts_with(lower(name), "test")', "message": "No test deals"},
    },
}
ROLLUPS = {
    "opp_count": {"type": "rollup", "object": "opp", "via": "account", "function": "count"},
    "pipeline": {"type": "rollup", "object": "opp", "via": "account", "function": "sum", "field": "amount"},
    "won_total": {"type": "rollup", "object": "opp", "via": "account", "function": "sum", "field": "amount",
                  "filter": 'stage == "won"'},
}


def object_doc(api, name: str) -> dict:
    resp = api.get(f"{META}/objects/{name}")
    assert resp.status_code == 200, resp.json
    return {k: v for k, v in resp.json.items() if k not in ("version", "name")}


def put_object(api, name: str, doc: dict, **options):
    return api.put(f"{META}/objects/{name}", json={"object": doc, **options})


def publish_rules(api, opp: dict | None = None) -> None:
    """PUT the ``opp`` object, then roll-ups over it on the sample's ``account``."""
    resp = put_object(api, "opp", copy.deepcopy(opp or OPP))
    assert resp.status_code == 200, resp.json
    assert resp.json["plan"]["operations"][0]["kind"] == "create_object"
    account = object_doc(api, "account")
    account["fields"].update(copy.deepcopy(ROLLUPS))
    resp = put_object(api, "account", account)
    assert resp.status_code == 200, resp.json
    ops = resp.json["plan"]["operations"]
    assert sorted(o["field"] for o in ops if o["kind"] == "add_field") == ["opp_count", "pipeline", "won_total"]
    # and each lands on the account form, which lists its fields (decision D52)
    assert sorted(o["field"] for o in ops if o["kind"] == "change_form") == ["opp_count", "pipeline", "won_total"]


def allow_sales(api) -> None:
    """Let the sample's ``sales`` role work on ``opp`` too."""
    role = api.get(META).json["doc"]["roles"]["sales"]
    role["permissions"]["opp"] = ["create", "read", "update", "delete"]
    assert api.put(f"{META}/roles/sales", json={"role": role}).status_code == 200


@pytest.fixture
def rapi(api):
    """The administrator's client, with ``opp`` and the account roll-ups published."""
    publish_rules(api)
    return api


@pytest.fixture
def acme(rapi):
    resp = rapi.post("/api/v1/data/account", json={"name": "Acme", "industry": "software"})
    assert resp.status_code == 201, resp.json
    return resp.json


def rollups_of(api, account: dict) -> tuple:
    r = api.get(f"/api/v1/data/account/{account['id']}").json
    return r["opp_count"], r["pipeline"], r["won_total"]


# -- publishing -------------------------------------------------------------------------
def test_bad_expressions_are_refused_at_their_metadata_path(api):
    bad = copy.deepcopy(OPP)
    bad["validations"]["x"] = {"condition": "amount > > 3", "message": "m"}
    bad["fields"]["net"]["expression"] = "amount * discont"
    bad["fields"]["lost_reason"]["visible_if"] = "amount + 1"
    doc = problem(put_object(api, "opp", bad), 422)
    assert doc["errors"] == {
        "objects.opp.validations.x.condition": ["line 1, column 10: syntax error"],
        "objects.opp.fields.net.expression": ["line 1, column 10: unknown field 'discont'"],
        "objects.opp.fields.lost_reason.visible_if": [
            "line 1, column 1: must give a true/false condition, but gives decimal"],
    }
    assert "line 1, column" in doc["detail"]
    # A stored formula must not follow lookups (it would go stale).
    bad = copy.deepcopy(OPP)
    bad["fields"]["sector"]["stored"] = True
    doc = problem(put_object(api, "opp", bad), 422)
    assert list(doc["errors"]) == ["objects.opp.fields.sector.stored"]
    # Nothing was published.
    problem(api.get(f"{META}/objects/opp"), 404)
    assert api.get(META).json["version"] == 1


def test_publish_and_the_values_records_get(rapi, acme):
    before = dt.datetime.now(dt.UTC).date()
    made = rapi.post("/api/v1/data/opp", json={"name": "Big one", "account": acme["id"], "amount": "2000",
                                               "discount": "12.5"})
    after = dt.datetime.now(dt.UTC).date()
    assert made.status_code == 201, made.json
    rec = made.json
    # Stored and virtual formulas (one through a lookup) in the create response and in GET.
    assert (rec["net"], rec["big"], rec["sector"]) == ("1750.00", True, "SOFTWARE")
    # Expression defaults.
    assert rec["code"] == "D/BIG ONE"
    assert rec["follow_up"] in {str(d + dt.timedelta(days=30)) for d in (before, after)}
    got = rapi.get(f"/api/v1/data/opp/{rec['id']}").json
    assert {k: got[k] for k in ("net", "big", "sector", "code", "follow_up")} == \
        {k: rec[k] for k in ("net", "big", "sector", "code", "follow_up")}
    # A given value is never replaced by its default.
    own = rapi.post("/api/v1/data/opp", json={"name": "x", "code": "MINE", "follow_up": "2030-01-01"}).json
    assert (own["code"], own["follow_up"]) == ("MINE", "2030-01-01")
    # Formulas follow updates; a virtual one follows the looked-up record.
    upd = rapi.patch(f"/api/v1/data/opp/{rec['id']}", json={"discount": "60"})
    assert problem(upd, 422)["errors"] == {"discount": ["Discount above 50%"]}
    upd = rapi.patch(f"/api/v1/data/opp/{rec['id']}", json={"discount": None})
    assert upd.status_code == 200, upd.json
    assert (upd.json["net"], upd.json["big"]) == ("2000.00", True)
    rapi.patch(f"/api/v1/data/account/{acme['id']}", json={"industry": "retail"})
    assert rapi.get(f"/api/v1/data/opp/{rec['id']}").json["sector"] == "RETAIL"
    # Computed fields are output only, on the child and on the parent.
    doc = problem(rapi.post("/api/v1/data/opp", json={"name": "y", "net": "1", "big": True}), 422)
    assert doc["errors"] == {"net": ["is computed by the system"], "big": ["is computed by the system"]}
    doc = problem(rapi.patch(f"/api/v1/data/account/{acme['id']}", json={"pipeline": "3", "opp_count": 1}), 422)
    assert doc["errors"] == {"pipeline": ["is computed by the system"], "opp_count": ["is computed by the system"]}
    # The stored formula is a real column: filter and sort on it.
    listed = rapi.get("/api/v1/data/opp?net=2000.00&sort=-net").json["data"]
    assert [r["id"] for r in listed] == [rec["id"]]


def test_every_failing_rule_is_reported_together(rapi, acme):
    resp = rapi.post("/api/v1/data/opp", json={"name": "Test run", "account": acme["id"], "discount": "60",
                                              "stage": "lost"})
    doc = problem(resp, 422)
    assert doc["errors"] == {
        "discount": ["Discount above 50%"],
        "lost_reason": ["is required"],           # required_if
        "loss_notes": ["is required"],            # its section's required_if, now visible
        "_schema": ["A lost deal needs its amount", "No test deals"],
    }
    assert rapi.get("/api/v1/data/opp").json["data"] == []
    assert rollups_of(rapi, acme) == (0, "0.00", "0.00")


def test_messages_in_the_users_locale(rapi, api_as, acme):
    # The locale comes from the user's profile (the API does not read Accept-Language).
    allow_sales(rapi)
    from loomwork.runtime.context import Actor, Context

    st = rapi.client.application.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    st.services.users.create(ctx, "lin", "lin-password-1", roles=("sales",), locale="zh-CN")
    lin = api_as("lin")
    doc = problem(lin.post("/api/v1/data/opp", json={"name": "x", "discount": "60", "stage": "lost",
                                                     "lost_reason": "r", "loss_notes": "n"}), 422)
    assert doc["errors"] == {"discount": ["折扣不能超过 50%"], "_schema": ["输单需要金额"]}
    # The same rules in English for an English-speaking user.
    doc = problem(rapi.post("/api/v1/data/opp", json={"name": "x", "discount": "60"}), 422)
    assert doc["errors"] == {"discount": ["Discount above 50%"]}


def test_visible_required_and_read_only_conditions(rapi, api_as, acme):
    allow_sales(rapi)
    sam = api_as("sam")
    # Hidden fields are never required: lost_reason and the loss section show only when lost.
    made = sam.post("/api/v1/data/opp", json={"name": "x", "account": acme["id"], "stage": "new",
                                              "amount": "100", "discount": "5"})
    assert made.status_code == 201, made.json
    rid = made.json["id"]
    doc = problem(sam.patch(f"/api/v1/data/opp/{rid}", json={"stage": "lost"}), 422)
    assert doc["errors"] == {"lost_reason": ["is required"], "loss_notes": ["is required"]}
    # read_only_if is judged on the stored record: locking and editing in one save is fine...
    won = sam.patch(f"/api/v1/data/opp/{rid}", json={"stage": "won", "discount": "7"})
    assert won.status_code == 200, won.json
    assert won.json["discount"] == "7.00" and won.json["net"] == "93.00"
    # ...then the discount is locked for users, unchanged values pass, an admin may correct it.
    doc = problem(sam.patch(f"/api/v1/data/opp/{rid}", json={"discount": "8"}), 422)
    assert doc["errors"] == {"discount": ["is read-only here"]}
    assert sam.patch(f"/api/v1/data/opp/{rid}", json={"discount": "7.00"}).status_code == 200
    fixed = rapi.patch(f"/api/v1/data/opp/{rid}", json={"discount": "9"})
    assert fixed.status_code == 200 and fixed.json["net"] == "91.00"
    # An update-only rule reading old values.
    doc = problem(sam.patch(f"/api/v1/data/opp/{rid}", json={"stage": "new"}), 422)
    assert doc["errors"] == {"stage": ["A won deal stays won"]}


def test_dependent_choices(rapi):
    ok = rapi.post("/api/v1/data/opp", json={"name": "a", "stage": "won", "reason": "fit"})
    assert ok.status_code == 201, ok.json
    doc = problem(rapi.post("/api/v1/data/opp", json={"name": "b", "stage": "won", "reason": "price"}), 422)
    assert doc["errors"] == {"reason": ["'price' is not allowed when stage is 'won'"]}
    doc = problem(rapi.post("/api/v1/data/opp", json={"name": "c", "reason": "fit"}), 422)
    assert doc["errors"] == {"reason": ["'fit' is not allowed when stage is empty"]}
    lost = rapi.post("/api/v1/data/opp", json={"name": "d", "stage": "lost", "reason": "timing", "amount": "1",
                                               "lost_reason": "-", "loss_notes": "-"})
    assert lost.status_code == 201, lost.json
    # Changing the controlling field re-checks the dependent one.
    doc = problem(rapi.patch(f"/api/v1/data/opp/{lost.json['id']}", json={"stage": "won"}), 422)
    assert doc["errors"] == {"reason": ["'timing' is not allowed when stage is 'won'"]}
    assert rapi.patch(f"/api/v1/data/opp/{lost.json['id']}", json={"stage": "won", "reason": "fit"}).status_code == 200


def test_bulk_create_reports_rule_failures_by_row(rapi, acme):
    resp = rapi.post("/api/v1/data/opp", json=[
        {"name": "ok", "account": acme["id"], "amount": "10"},
        {"name": "b", "discount": "99"},
        {"name": "c", "stage": "lost", "lost_reason": "r", "loss_notes": "n"},
        {"amount": "1"},
        {"name": "e", "stage": "won", "reason": "price"},
    ])
    doc = problem(resp, 422)
    assert doc["errors"] == {
        "1.discount": ["Discount above 50%"],
        "2": ["A lost deal needs its amount"],  # a record-level rule of row 2
        "3.name": ["is required"],
        "4.reason": ["'price' is not allowed when stage is 'won'"],
    }
    # All or nothing: no record, no roll-up movement.
    assert rapi.get("/api/v1/data/opp").json["data"] == []
    assert rollups_of(rapi, acme) == (0, "0.00", "0.00")
    made = rapi.post("/api/v1/data/opp", json=[
        {"name": "one", "account": acme["id"], "amount": "1200"},
        {"name": "two", "account": acme["id"], "amount": "300", "discount": "10", "stage": "won"},
    ])
    assert made.status_code == 201, made.json
    assert [(r["net"], r["big"], r["sector"], r["code"]) for r in made.json["data"]] == [
        ("1200.00", True, "SOFTWARE", "D/ONE"), ("270.00", False, "SOFTWARE", "D/TWO")]
    assert rollups_of(rapi, acme) == (2, "1500.00", "300.00")


def test_rollups_follow_child_create_update_delete_restore(rapi, acme):
    other = rapi.post("/api/v1/data/account", json={"name": "Other"}).json
    # A new parent starts at zero, shown the same in the create response as in GET.
    assert (other["opp_count"], other["pipeline"], other["won_total"]) == (0, "0.00", "0.00")
    assert rollups_of(rapi, acme) == (0, "0.00", "0.00")
    one = rapi.post("/api/v1/data/opp", json={"name": "1", "account": acme["id"], "amount": "100",
                                              "stage": "won"}).json
    rapi.post("/api/v1/data/opp", json={"name": "2", "account": acme["id"], "amount": "300"})
    assert rollups_of(rapi, acme) == (2, "400.00", "100.00")
    rapi.patch(f"/api/v1/data/opp/{one['id']}", json={"amount": "50"})
    assert rollups_of(rapi, acme) == (2, "350.00", "50.00")
    moved = rapi.patch(f"/api/v1/data/opp/{one['id']}", json={"account": other["id"]})
    assert moved.status_code == 200, moved.json
    assert rollups_of(rapi, acme) == (1, "300.00", "0.00")
    assert rollups_of(rapi, other) == (1, "50.00", "50.00")
    assert rapi.delete(f"/api/v1/data/opp/{one['id']}").status_code == 204
    assert rollups_of(rapi, other) == (0, "0.00", "0.00")
    restored = rapi.post(f"/api/v1/data/opp/{one['id']}/restore")
    assert restored.status_code == 200, restored.json
    assert rollups_of(rapi, other) == (1, "50.00", "50.00")



def test_a_rollup_change_moves_the_parents_etag(rapi, acme):
    """A roll-up is a derived write of the parent: a cached copy of the account must not
    be answered 304 after a child changed its totals (issue 11's stale ETag)."""
    first = rapi.get(f"/api/v1/data/account/{acme['id']}")
    tag = first.headers["ETag"]
    assert rapi.get(f"/api/v1/data/account/{acme['id']}", headers={"If-None-Match": tag}).status_code == 304
    opp = rapi.post("/api/v1/data/opp", json={"name": "1", "account": acme["id"], "amount": "100"}).json
    fresh = rapi.get(f"/api/v1/data/account/{acme['id']}", headers={"If-None-Match": tag})
    assert fresh.status_code == 200 and fresh.json["pipeline"] == "100.00"
    assert fresh.headers["ETag"] != tag and fresh.json["row_version"] == first.json["row_version"] + 1
    # The history says what moved and that it was derived, by whom it was caused.
    entries = rapi.get(f"/api/v1/data/account/{acme['id']}/history").json
    entries = entries.get("data", entries) if isinstance(entries, dict) else entries
    moved = {e["field"]: e for e in entries if e.get("field") in ("pipeline", "opp_count")}
    assert moved["pipeline"]["old"] == "0.00" and moved["pipeline"]["new"] == "100.00"
    assert moved["pipeline"]["origin"] == "derived"
    # A write that leaves the totals alone leaves the parent's version alone too.
    version = fresh.json["row_version"]
    rapi.patch(f"/api/v1/data/opp/{opp['id']}", json={"name": "renamed"})
    assert rapi.get(f"/api/v1/data/account/{acme['id']}").json["row_version"] == version

# -- form rules, where-used, renames ----------------------------------------------------
def test_rules_endpoint_gives_typed_trees(api, api_as):
    no_dependent = copy.deepcopy(OPP)
    del no_dependent["fields"]["reason"]  # see test_rules_endpoint_with_dependent_choices
    publish_rules(api, no_dependent)
    resp = api.get(f"{META}/objects/opp/rules")
    assert resp.status_code == 200, resp.json
    rules = resp.json
    assert rules["object"] == "opp" and rules["version"] == api.get(META).json["version"]
    fields = rules["fields"]
    stage_is_lost = {"t": "cmp", "pos": [1, 1], "op": "==", "ty": "boolean",
                     "a": {"t": "field", "pos": [1, 1], "path": ["stage"], "options": ["new", "won", "lost"],
                           "ty": "choice"},
                     "b": {"t": "lit", "pos": [1, 10], "v": "lost", "ty": "text"}}
    assert fields["lost_reason"] == {"visible_if": [stage_is_lost], "required_if": [stage_is_lost]}
    # A section's conditions come with each of its fields.
    assert fields["loss_notes"] == {"visible_if": [stage_is_lost],
                                    "required_if": [{"t": "lit", "pos": [1, 1], "v": True, "ty": "boolean"}]}
    assert fields["discount"]["read_only_if"][0]["b"]["v"] == "won"
    assert fields["follow_up"]["default_expr"]["fn"] == "add_days"
    assert fields["code"]["default_expr"]["ty"] == "text"
    assert fields["net"]["formula"]["ty"] == "decimal"
    assert fields["big"]["formula"] == {"t": "cmp", "pos": [1, 1], "op": ">", "ty": "boolean",
                                        "a": {"t": "field", "pos": [1, 1], "path": ["net"], "ty": "decimal"},
                                        "b": {"t": "lit", "pos": [1, 7], "v": 1000, "ty": "number"}}
    assert fields["sector"]["formula"]["args"][0]["path"] == ["account", "industry"]
    assert {v["name"]: (v["field"], v["applies_on"], v["message"], v["condition"]["ty"]) for v in rules["validations"]} == {
        "discount_cap": ("discount", "both", "Discount above 50%", "boolean"),
        "lost_amount": (None, "both", "A lost deal needs its amount", "boolean"),
        "no_reopen": ("stage", "update", "A won deal stays won", "boolean"),
        "no_tests": (None, "both", "No test deals", "boolean"),
    }
    # Anyone who may read the object may fetch its rules (forms need them).
    assert api_as("vera").get(f"{META}/objects/opp/rules").json["fields"] == fields
    # sales cannot read opp: a 403 naming it (D16)
    assert "read opp" in problem(api_as("sam").get(f"{META}/objects/opp/rules"), 403)["detail"]
    problem(api.get(f"{META}/objects/nope/rules"), 404)


def test_rules_endpoint_with_dependent_choices(rapi):
    resp = rapi.get(f"{META}/objects/opp/rules")
    assert resp.status_code == 200, resp.json
    assert resp.json["fields"]["reason"]["depends_on"] == {
        "field": "stage", "options": {"lost": ["price", "timing"], "won": ["fit"]}}


def test_where_used(rapi):
    resp = rapi.get(f"{META}/objects/opp/fields/amount/where-used")
    assert resp.status_code == 200, resp.json
    assert resp.json["object"] == "opp" and resp.json["field"] == "amount"
    assert {u["path"]: u["expression"] for u in resp.json["data"]} == {
        "objects.opp.fields.net.expression": "amount * (1 - coalesce(discount, 0) / 100)",
        "objects.opp.validations.lost_amount.condition": 'stage == "lost" and is_blank(amount)',
        "objects.account.fields.pipeline": "sum(opp.amount)",
        "objects.account.fields.won_total": "sum(opp.amount)",
    }
    paths = {u["path"] for u in rapi.get(f"{META}/objects/opp/fields/stage/where-used").json["data"]}
    assert paths == {"objects.opp.fields.discount.read_only_if", "objects.opp.fields.lost_reason.visible_if",
                     "objects.opp.fields.lost_reason.required_if", "objects.opp.sections.loss.visible_if",
                     "objects.opp.validations.lost_amount.condition", "objects.opp.validations.no_reopen.condition",
                     "objects.account.fields.won_total.filter"}
    # Across a lookup, and through a formula used by another formula.
    assert rapi.get(f"{META}/objects/account/fields/industry/where-used").json["data"] == [
        {"path": "objects.opp.fields.sector.expression", "expression": "upper(account.industry)"}]
    assert [u["path"] for u in rapi.get(f"{META}/objects/opp/fields/net/where-used").json["data"]] == [
        "objects.opp.fields.big.expression"]
    assert rapi.get(f"{META}/objects/opp/fields/loss_notes/where-used").json["data"] == []
    assert "nope" in problem(rapi.get(f"{META}/objects/opp/fields/nope/where-used"), 404)["detail"]
    problem(rapi.get(f"{META}/objects/nope/fields/name/where-used"), 404)


def test_rename_of_a_used_field_refused_then_rewritten(rapi, acme):
    rec = rapi.post("/api/v1/data/opp", json={"name": "keep", "account": acme["id"], "amount": "2000"}).json
    version = rapi.get(META).json["version"]
    opp = object_doc(rapi, "opp")
    opp["fields"]["title"] = {**opp["fields"].pop("name"), "renamed_from": "name"}
    opp["fields"]["net_value"] = {**opp["fields"].pop("net"), "renamed_from": "net"}
    doc = problem(put_object(rapi, "opp", opp), 422)
    assert doc["errors"] == {
        "objects.opp.fields.code.default_expr": [
            "uses opp.name, which this change renames to title; change the expression, "
            "or publish with update_dependents to rewrite it"],
        "objects.opp.validations.no_tests.condition": [
            "uses opp.name, which this change renames to title; change the expression, "
            "or publish with update_dependents to rewrite it"],
        "objects.opp.fields.big.expression": [
            "uses opp.net, which this change renames to net_value; change the expression, "
            "or publish with update_dependents to rewrite it"],
    }
    assert "objects.opp.fields.code.default_expr" in doc["detail"]
    assert rapi.get(META).json["version"] == version
    problem(put_object(rapi, "opp", opp, update_dependents="yes"), 422)
    # A dry run shows the plan and changes nothing.
    dry = put_object(rapi, "opp", opp, update_dependents=True, dry_run=True)
    assert dry.status_code == 200, dry.json
    assert {(o["kind"], o["field"]) for o in dry.json["plan"]["operations"]} >= {
        ("rename_field", "title"), ("rename_field", "net_value")}
    assert rapi.get(META).json["version"] == version

    done = put_object(rapi, "opp", opp, update_dependents=True)
    assert done.status_code == 200, done.json
    assert done.json["version"] == version + 1
    now = object_doc(rapi, "opp")
    assert "name" not in now["fields"] and "renamed_from" not in now["fields"]["title"]
    assert now["fields"]["code"]["default_expr"] == 'concat("D/", upper(title))'
    assert now["validations"]["no_tests"]["condition"] == 'starts_with(lower(title), "test")'
    assert now["fields"]["big"]["expression"] == "net_value > 1000"
    # Data kept under the new names; records still validate with the rewritten rules.
    got = rapi.get(f"/api/v1/data/opp/{rec['id']}").json
    assert (got["title"], got["net_value"], got["big"]) == ("keep", "2000.00", True)
    made = rapi.post("/api/v1/data/opp", json={"title": "fresh", "amount": "10"})
    assert made.status_code == 201, made.json
    assert (made.json["code"], made.json["net_value"], made.json["big"]) == ("D/FRESH", "10.00", False)
    assert problem(rapi.post("/api/v1/data/opp", json={"title": "Test me"}), 422)["errors"] == {
        "_schema": ["No test deals"]}
    assert problem(rapi.post("/api/v1/data/opp", json={"name": "old name"}), 422)["errors"] == {
        "name": ["unknown field"], "title": ["is required"]}


def test_rename_through_publish_with_update_dependents(rapi):
    doc = rapi.get(META).json["doc"]
    fields = doc["objects"]["opp"]["fields"]
    fields["title"] = {**fields.pop("name"), "renamed_from": "name"}
    refused = problem(rapi.post(f"{META}/publish", json={"doc": doc}), 422)
    assert set(refused["errors"]) == {"objects.opp.fields.code.default_expr",
                                      "objects.opp.validations.no_tests.condition"}
    done = rapi.post(f"{META}/publish", json={"doc": doc, "update_dependents": True, "comment": "rename"})
    assert done.status_code == 200, done.json
    assert object_doc(rapi, "opp")["fields"]["code"]["default_expr"] == 'concat("D/", upper(title))'


def test_deleting_a_used_field_is_refused(rapi):
    opp = object_doc(rapi, "opp")
    del opp["fields"]["name"]
    doc = problem(put_object(rapi, "opp", opp), 422)
    assert doc["errors"] == {
        "objects.opp.fields.code.default_expr": ["uses opp.name, which this change deletes; change it first"],
        "objects.opp.validations.no_tests.condition": ["uses opp.name, which this change deletes; change it first"],
    }
    # update_dependents rewrites renames only: a deletion is still refused.
    assert problem(put_object(rapi, "opp", opp, update_dependents=True), 422)["errors"] == doc["errors"]
    # A field also summarised by roll-ups on another object.
    opp = object_doc(rapi, "opp")
    del opp["fields"]["amount"]
    doc = problem(put_object(rapi, "opp", opp), 422)
    assert doc["errors"] == {
        "objects.opp.fields.net.expression": ["uses opp.amount, which this change deletes; change it first"],
        "objects.opp.validations.lost_amount.condition": [
            "uses opp.amount, which this change deletes; change it first"],
        "objects.account.fields.pipeline.field": ["uses opp.amount, which this change deletes"],
        "objects.account.fields.won_total.field": ["uses opp.amount, which this change deletes"],
    }
    assert "name" in object_doc(rapi, "opp")["fields"] and "amount" in object_doc(rapi, "opp")["fields"]
    # Once nothing uses it, it goes.
    opp = object_doc(rapi, "opp")
    del opp["fields"]["loss_notes"]
    del opp["sections"]
    assert put_object(rapi, "opp", opp).status_code == 200


def test_rename_of_fields_named_outside_expressions(rapi, acme):
    """A roll-up's summarised field, a validation's field and a section's field list follow too."""
    rapi.post("/api/v1/data/opp", json={"name": "x", "account": acme["id"], "amount": "5"})
    opp = object_doc(rapi, "opp")
    opp["fields"]["value"] = {**opp["fields"].pop("amount"), "renamed_from": "amount"}
    opp["fields"]["discount_pct"] = {**opp["fields"].pop("discount"), "renamed_from": "discount"}
    opp["fields"]["notes"] = {**opp["fields"].pop("loss_notes"), "renamed_from": "loss_notes"}
    doc = problem(put_object(rapi, "opp", opp), 422)
    assert {"objects.opp.fields.net.expression", "objects.account.fields.pipeline.field"} <= set(doc["errors"])
    resp = put_object(rapi, "opp", opp, update_dependents=True)
    assert resp.status_code == 200, resp.json
    now = object_doc(rapi, "opp")
    assert now["fields"]["net"]["expression"] == "value * (1 - coalesce(discount_pct, 0) / 100)"
    assert now["validations"]["lost_amount"]["condition"] == 'stage == "lost" and is_blank(value)'
    assert now["validations"]["discount_cap"]["field"] == "discount_pct"
    assert now["sections"]["loss"]["fields"] == ["notes"]
    account = object_doc(rapi, "account")["fields"]
    assert (account["pipeline"]["field"], account["won_total"]["field"]) == ("value", "value")
    # Roll-ups keep working through the renamed field; the rules still run.
    assert rollups_of(rapi, acme) == (1, "5.00", "0.00")
    made = rapi.post("/api/v1/data/opp", json={"name": "y", "account": acme["id"], "value": "10",
                                               "discount_pct": "10", "stage": "won"})
    assert made.status_code == 201, made.json
    assert made.json["net"] == "9.00"
    assert rollups_of(rapi, acme) == (2, "15.00", "10.00")
    doc = problem(rapi.post("/api/v1/data/opp", json={"name": "z", "discount_pct": "70", "stage": "lost",
                                                      "lost_reason": "r"}), 422)
    assert doc["errors"] == {"discount_pct": ["Discount above 50%"], "notes": ["is required"],
                             "_schema": ["A lost deal needs its amount"]}


# -- expression check, recompute, permissions -------------------------------------------
def test_expression_check(rapi):
    resp = rapi.post(f"{META}/expressions/check", json={"object": "opp", "expression": "amount * 2 > 10"})
    assert resp.status_code == 200, resp.json
    assert resp.json["type"] == "boolean" and resp.json["reads"] == ["amount"] and resp.json["functions"] == []
    tree = resp.json["tree"]
    assert (tree["t"], tree["op"], tree["ty"]) == ("cmp", ">", "boolean")
    assert tree["a"]["a"] == {"t": "field", "pos": [1, 1], "path": ["amount"], "ty": "decimal"}
    resp = rapi.post(f"{META}/expressions/check", json={
        "object": "opp", "expression": "concat(name, account.industry)", "expect": "text"})
    assert resp.status_code == 200, resp.json
    assert (resp.json["type"], resp.json["reads"], resp.json["functions"]) == (
        "text", ["account.industry", "name"], ["concat"])

    def error(body):
        return problem(rapi.post(f"{META}/expressions/check", json=body), 422)["errors"]

    assert error({"object": "opp", "expression": "amount *"}) == {"expression": ["line 1, column 9: syntax error"]}
    assert error({"object": "opp", "expression": "amount +\n  * 2"}) == {
        "expression": ["line 2, column 3: syntax error"]}
    assert error({"object": "opp", "expression": "amout > 1"}) == {
        "expression": ["line 1, column 1: unknown field 'amout'"]}
    assert error({"object": "opp", "expression": "amount + 2", "expect": "boolean"}) == {
        "expression": ["line 1, column 1: must give a true/false condition, but gives decimal"]}
    assert list(error({"object": "opp", "expression": "1", "expect": "bogus"})) == ["expect"]
    problem(rapi.post(f"{META}/expressions/check", json={"object": "nope", "expression": "1"}), 404)


def test_recompute(rapi, acme):
    a = rapi.post("/api/v1/data/opp", json={"name": "a", "account": acme["id"], "amount": "100"}).json
    rapi.post("/api/v1/data/opp", json={"name": "b", "account": acme["id"], "amount": "50", "discount": "10"})
    st = rapi.client.application.extensions["loomwork"]
    tenant = st.platform.tenant("main")
    app = st.services.runtime.compiled(tenant)
    opp_t, acc_t = app.object("opp").table, app.object("account").table
    # Values gone stale behind the platform's back (as after an interrupted publish).
    with tenant.write() as conn:
        conn.execute(opp_t.update().where(opp_t.c.id == a["id"]).values(net=sa.null()))
        conn.execute(acc_t.update().where(acc_t.c.id == acme["id"]).values(pipeline=7, opp_count=9))
    assert rapi.get(f"/api/v1/data/opp/{a['id']}").json["net"] is None
    resp = rapi.post(f"{META}/objects/opp/recompute", json={})
    assert resp.status_code == 200, resp.json
    # The roll-ups over opp are refreshed with it (they may sum or filter on formulas).
    assert resp.json == {"object": "opp", "rows": {"opp.net": 1, "account.opp_count": 1,
                                                   "account.pipeline": 1, "account.won_total": 1}}
    with tenant.write() as conn:
        conn.execute(acc_t.update().where(acc_t.c.id == acme["id"]).values(pipeline=7, opp_count=9))
    assert rapi.get(f"/api/v1/data/opp/{a['id']}").json["net"] == "100.00"
    # One roll-up only.
    resp = rapi.post(f"{META}/objects/account/recompute", json={"field": "pipeline"})
    assert resp.status_code == 200, resp.json
    assert resp.json == {"object": "account", "rows": {"account.pipeline": 1}}
    assert rollups_of(rapi, acme) == (9, "150.00", "0.00")
    resp = rapi.post(f"{META}/objects/account/recompute", json={})
    assert set(resp.json["rows"]) == {"account.opp_count", "account.pipeline", "account.won_total",
                                      "account.open_deals", "account.won_amount"}  # the last two: sample package
    assert rollups_of(rapi, acme) == (2, "150.00", "0.00")
    # Idempotent; the body is optional (as documented).
    assert rapi.post(f"{META}/objects/opp/recompute").json["rows"]["opp.net"] == 0
    assert "not a stored formula" in problem(
        rapi.post(f"{META}/objects/opp/recompute", json={"field": "big"}), 409)["detail"]
    problem(rapi.post(f"{META}/objects/opp/recompute", json={"field": "nope"}), 404)
    problem(rapi.post(f"{META}/objects/opp/recompute", json={"field": 3}), 422)
    problem(rapi.post(f"{META}/objects/opp/recompute", json={"other": 1}), 422)
    problem(rapi.post(f"{META}/objects/nope/recompute", json={}), 404)


def test_admin_endpoints_refuse_non_admins(rapi, api_as):
    allow_sales(rapi)
    opp = object_doc(rapi, "opp")
    for who in ("sam", "vera"):
        client = api_as(who)
        for resp in (
            client.get(f"{META}/objects/opp/fields/amount/where-used"),
            client.post(f"{META}/objects/opp/recompute", json={}),
            client.post(f"{META}/expressions/check", json={"object": "opp", "expression": "1"}),
            client.put(f"{META}/objects/opp", json={"object": opp, "update_dependents": True}),
            client.post(f"{META}/publish", json={"doc": {"objects": {}}, "update_dependents": True}),
        ):
            assert "administrators" in problem(resp, 403)["detail"], (who, resp.request.path)


# -- formulas on an existing object, lists ---------------------------------------------
def test_formulas_added_to_an_existing_object(api):
    account = api.post("/api/v1/data/account", json={"name": "Acme"}).json
    deal = api.post("/api/v1/data/deal", json={"name": "old", "account": account["id"], "amount": "40"}).json
    doc = object_doc(api, "deal")
    doc["fields"]["double"] = {"type": "formula", "result_type": "decimal", "expression": "amount * 2"}
    doc["fields"]["taxed"] = {"type": "formula", "result_type": "decimal", "stored": True,
                              "expression": "amount * 1.2"}
    resp = put_object(api, "deal", doc)
    assert resp.status_code == 200, resp.json
    assert {(o["kind"], o["field"]) for o in resp.json["plan"]["operations"]} == {
        ("add_field", "double"), ("add_field", "taxed"), ("change_form", "double"), ("change_form", "taxed")}
    # Existing rows are computed by the publish; new rows on write.
    got = api.get(f"/api/v1/data/deal/{deal['id']}").json
    assert (got["double"], got["taxed"]) == ("80.00", "48.00")
    made = api.post("/api/v1/data/deal", json={"name": "new", "account": account["id"], "amount": "10"}).json
    assert (made["double"], made["taxed"]) == ("20.00", "12.00")


def test_virtual_formulas_in_lists(rapi, acme):
    rapi.post("/api/v1/data/opp", json=[{"name": "a", "account": acme["id"], "amount": "2000"},
                                        {"name": "b", "amount": "10"}])
    rows = rapi.get("/api/v1/data/opp?sort=-net").json["data"]
    assert [(r["name"], r["net"], r["big"], r["sector"]) for r in rows] == [
        ("a", "2000.00", True, "SOFTWARE"), ("b", "10.00", False, None)]
    assert [r["name"] for r in rapi.get("/api/v1/data/opp?big=true").json["data"]] == ["a"]
