"""Script hooks, actions, dry runs and the run log, through the record service, the API
and the CLI, on both databases. The sandbox's own defences are in test_sandbox_corpus.py."""
from __future__ import annotations

import copy
import json
import re

import pytest

from loomwork.metadata.errors import ConflictError, LoomworkError, MetadataError, ValidationError
from loomwork.runtime.context import Actor, Clock, Context
from loomwork.runtime.sandbox.budget import BudgetExceeded, ScriptFailed
from loomwork.runtime.scripts import SCRIPTS_FLAG

QUOTE = {"fields": {
    "name": {"type": "text", "required": True},
    "account": {"type": "lookup", "target": "account"},
    "discount": {"type": "percent"},
    "lines": {"type": "json"},
    "total": {"type": "decimal", "scale": 2},
    "valid_until": {"type": "date"},
    "code": {"type": "text"},
}}

TOTALS = """
total = Decimal(0)
for line in record["lines"] or []:
    total = total + Decimal(str(line["qty"])) * Decimal(str(line["price"]))
discount = record["discount"] or Decimal(0)
record["total"] = (total * (1 - discount / 100)).quantize(Decimal("0.01"))
record["code"] = (record["code"] or "").strip().upper().replace(" ", "-") or None
if record["valid_until"] is not None and record["valid_until"] < ctx.today():
    ctx.error("must not be in the past", field="valid_until")
if record["account"] is not None:
    acct = ctx.get("account", record["account"])
    if acct["industry"] == "finance" and discount > 10:
        ctx.error("government accounts get at most 10% off", field="discount")
"""


@pytest.fixture
def scripted(crm_app, fast_setup):
    """The CRM app with a ``quote`` object, scripts turned on, and ``publish(scripts)``."""
    st = crm_app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    st.platform.set_flag("main", SCRIPTS_FLAG, True)

    def publish(scripts: dict, objects: dict | None = None) -> int:
        doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
        doc["approvals"] = {}  # the sample's quote approval; this test brings its own quote
        doc["objects"]["quote"] = QUOTE
        doc["objects"].update(objects or {})
        doc["scripts"] = scripts
        return st.services.metadata.publish(ctx, doc, comment="scripts")

    return st, ctx, publish


def _user(st, ctx, name):
    user = next(u for u in st.services.users.list(ctx) if u.username == name)
    return Context(ctx.tenant, user.actor())


def test_before_save_computes_cleans_and_refuses(scripted):
    st, ctx, publish = scripted
    publish({"totals": {"object": "quote", "trigger": {"event": "before_save"}, "source": TOTALS}})
    rec = st.services.records
    gov = rec.create(ctx, "account", {"name": "Ministry", "industry": "finance"})
    q = rec.create(ctx, "quote", {"name": "Q1", "discount": "5", "code": " ab 12 ",
                                  "lines": [{"qty": 3, "price": "19.99"}, {"qty": 1, "price": "0.03"}]})
    assert q["total"] == "57.00" and q["code"] == "AB-12"
    changed = rec.update(ctx, "quote", q["id"], {"discount": "0"})
    assert changed["total"] == "60.00"  # recomputed from the stored lines
    with pytest.raises(ValidationError) as refused:
        rec.create(ctx, "quote", {"name": "Q2", "account": gov["id"], "discount": "15",
                                  "valid_until": "2001-01-01"})
    assert refused.value.errors == {"valid_until": ["must not be in the past"],
                                    "discount": ["government accounts get at most 10% off"]}
    # bulk: each record through the script in one round trip; errors keyed by row
    rows = rec.bulk_create(ctx, "quote", [{"name": f"B{i}", "lines": [{"qty": i, "price": "2"}]} for i in range(3)])
    assert [r["total"] for r in rows] == ["0.00", "2.00", "4.00"]
    with pytest.raises(ValidationError) as bulk:
        rec.bulk_create(ctx, "quote", [{"name": "ok"}, {"name": "old", "valid_until": "2000-01-01"}])
    assert bulk.value.errors == {"1.valid_until": ["must not be in the past"]}


def test_script_changes_obey_the_actors_field_rules(scripted):
    st, ctx, publish = scripted
    publish({"sneaky": {"object": "deal", "trigger": {"event": "before_save"},
                        "source": "record['deal_number'] = 'X-1'\n"}})
    sam = _user(st, ctx, "sam")
    acct = st.services.records.create(sam, "account", {"name": "Acme"})
    with pytest.raises(ValidationError) as refused:
        st.services.records.create(sam, "deal", {"name": "D", "account": acct["id"], "stage": "prospecting"})
    assert "deal_number" in refused.value.errors


def test_before_delete_can_refuse_and_before_scripts_cannot_write(scripted):
    st, ctx, publish = scripted
    publish({"keep": {"object": "quote", "trigger": {"event": "before_delete"},
                      "source": "if record['code'] == 'KEEP':\n    ctx.error('this quote is kept')\n"},
             "writer": {"object": "quote", "trigger": {"event": "before_save"},
                        "source": "if record['name'] == 'w':\n    ctx.create('account', {'name': 'x'})\n"}})
    rec = st.services.records
    kept = rec.create(ctx, "quote", {"name": "k", "code": "KEEP"})
    with pytest.raises(ValidationError, match="this quote is kept"):
        rec.delete(ctx, "quote", kept["id"])
    gone = rec.create(ctx, "quote", {"name": "g"})
    rec.delete(ctx, "quote", gone["id"])
    with pytest.raises(ScriptFailed, match="not available in a before_save script"):
        rec.create(ctx, "quote", {"name": "w"})


def test_after_save_writes_join_the_transaction(scripted):
    st, ctx, publish = scripted
    publish({"follow_up": {"object": "quote", "trigger": {"event": "after_save"}, "source": """
same = ctx.query("quote", filter={"field": "name", "op": "eq", "value": record["name"]}, fields=["id"])
ctx.create("account", {"name": "Follow " + record["name"] + " " + str(len(same))})
if record["code"] == "FAIL":
    ctx.error("refused after the write")
"""}})
    rec, query = st.services.records, st.services.query
    from loomwork.runtime.query import ListRequest

    def accounts():
        return sorted(a["name"] for a in query.list(ctx, "account", ListRequest(limit=100)).data)

    rec.create(ctx, "quote", {"name": "A"})
    assert accounts() == ["Follow A 1"]  # the script's query saw the record being written
    with pytest.raises(ValidationError, match="refused after the write"):
        rec.create(ctx, "quote", {"name": "B", "code": "FAIL"})
    assert accounts() == ["Follow A 1"]  # the account and the quote were rolled back together
    assert [q["name"] for q in query.list(ctx, "quote", ListRequest()).data] == ["A"]
    runs = st.services.scripts.runs(ctx, script="follow_up")
    assert [r["status"] for r in runs] == ["refused", "ok"]  # logged although rolled back
    assert runs[0]["used"]["rows_written"] == 1 and runs[0]["used"]["queries"] == 1


def test_budgets_fail_the_write_naming_the_limit(scripted):
    st, ctx, publish = scripted
    publish({"greedy": {"object": "quote", "trigger": {"event": "before_save"}, "budget": {"queries": 2},
                        "source": "for i in range(5):\n    ctx.query('account')\n"},
             "spin": {"object": "account", "trigger": {"event": "before_save"}, "budget": {"steps": 1000},
                      "source": "while True:\n    pass\n"}})
    rec = st.services.records
    with pytest.raises(BudgetExceeded, match="queries limit"):
        rec.create(ctx, "quote", {"name": "q"})
    with pytest.raises(BudgetExceeded, match="steps limit"):
        rec.create(ctx, "account", {"name": "a"})
    assert st.services.scripts.runs(ctx, script="spin")[0]["status"] == "limit"


def test_ctx_calls_are_checked_by_the_host(scripted):
    st, ctx, publish = scripted
    attempts = {
        "unknown_kw": "ctx.query('account', ignore_permissions=True)",
        "bad_object": "ctx.query('lw_user')",
        "field_injection": "ctx.query('account', fields=['name; drop table account'])",
        "order_injection": "ctx.query('account', order=['name desc; --'])",
        "filter_injection": "ctx.query('account', filter={'field': 'password_hash', 'op': 'eq', 'value': 1})",
        "limit": "ctx.query('account', limit=10**6)",
        "get_kw": "ctx.get('account', 1, sudo=True)",
        "write_beyond": "ctx.update('account', params['acct'], {'name': 'renamed'})",
    }
    scripts = {name: {"object": "quote", "trigger": {"action": True},
                      "source": f"try:\n    {src}\n    result = 'allowed'\nexcept ScriptApiError as e:\n"
                                f"    result = str(e)\n"}
               for name, src in attempts.items()}
    publish(scripts)
    rec = st.services.records
    acct = rec.create(ctx, "account", {"name": "Locked"})
    vera_role = {"roles": ["viewer"]}
    for s in scripts.values():
        s.update(vera_role)
    publish(scripts)
    quote = rec.create(ctx, "quote", {"name": "q"})
    vera = _user(st, ctx, "vera")
    results = {}
    for name in attempts:
        try:
            out = st.services.scripts.run_action(ctx if name != "write_beyond" else vera, "quote", quote["id"], name,
                                                 {"acct": acct["id"]})
            results[name] = out["result"]
        except Exception as exc:  # noqa: BLE001  (collected and asserted below)
            results[name] = f"{type(exc).__name__}: {exc}"
    assert "unknown argument(s) ignore_permissions" in results["unknown_kw"]
    assert "unknown object 'lw_user'" in results["bad_object"]
    assert results["field_injection"].startswith("ctx.query:") and "drop" in results["field_injection"]
    assert results["order_injection"].startswith("ctx.query:")
    assert results["filter_injection"].startswith("ctx.query:")
    assert "limit must be" in results["limit"]
    assert "unknown argument(s) sudo" in results["get_kw"]
    # vera may read but not update: she may not run the action at all (it needs update)
    assert results["write_beyond"].startswith("PermissionDenied")
    assert rec.get(ctx, "account", acct["id"])["name"] == "Locked"


def test_scripts_see_only_their_tenant(scripted):
    st, ctx, publish = scripted
    other = st.platform.create_tenant("other")
    octx = Context(other, Actor.system())
    st.services.metadata.publish(octx, {"objects": {"account": {"fields": {"name": {"type": "text"}}}}})
    secret = st.services.records.create(octx, "account", {"name": "Other tenant's secret"})
    publish({"peek": {"object": "quote", "trigger": {"action": True},
                      "source": "result = [a['name'] for a in ctx.query('account', limit=500)]\n"
                                "try:\n    ctx.get('account', params['id'])\nexcept ScriptApiError as e:\n"
                                "    result.append(str(e))\n"}})
    mine = st.services.records.create(ctx, "account", {"name": "Mine"})
    quote = st.services.records.create(ctx, "quote", {"name": "q"})
    out = st.services.scripts.run_action(ctx, "quote", quote["id"], "peek", {"id": secret["id"] + 1000})
    assert "Other tenant's secret" not in json.dumps(out)
    assert "Mine" in out["result"] and mine["id"]


def test_actions_api_page_button_dry_run_and_run_log(scripted, api, api_as):
    st, ctx, publish = scripted
    publish({"apply_discount": {"object": "quote", "trigger": {"action": True}, "label": {"en": "Apply 10% off"},
                                "source": "record['discount'] = Decimal(params.get('pct', 10))\n"
                                          "print('discount set for', record['name'])\nresult = 'ok'\n"},
             "check": {"object": "quote", "trigger": {"event": "before_save"},
                       "source": "if record['name'] == 'x':\n    ctx.error('no x', field='name')\n"}})
    quote = st.services.records.create(ctx, "quote", {"name": "Q"})
    resp = api.post(f"/api/v1/data/quote/{quote['id']}/actions/apply_discount", json={"params": {"pct": 15}})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["result"] == "ok" and body["record"]["discount"] == "15.00" and "discount set for Q" in body["log"]
    assert api.post(f"/api/v1/data/quote/{quote['id']}/actions/nope").status_code == 404
    assert api.post(f"/api/v1/data/quote/{quote['id']}/actions/apply_discount",
                    json={"params": {}, "sudo": 1}).status_code == 422
    assert api_as("vera").post(f"/api/v1/data/quote/{quote['id']}/actions/apply_discount").status_code == 403
    spec = api.get("/api/v1/openapi.json").get_json()
    assert "/api/v1/data/quote/{id}/actions/apply_discount" in spec["paths"]

    dry = api.post("/api/v1/scripts/check/dry-run", json={"record_id": quote["id"], "record": {"name": "x"}})
    assert dry.status_code == 200 and dry.get_json()["errors"] == [{"field": "name", "message": "no x"}]
    dry = api.post("/api/v1/scripts/apply_discount/dry-run", json={"record_id": quote["id"], "params": {"pct": 50}})
    assert dry.get_json()["record"]["discount"] == "50"
    assert st.services.records.get(ctx, "quote", quote["id"])["discount"] == "15.00"  # nothing saved
    assert api_as("sam").post("/api/v1/scripts/check/dry-run", json={}).status_code == 403

    runs = api.get("/api/v1/scripts/runs?limit=2").get_json()
    assert [r["dry_run"] for r in runs["data"]] == [True, True] and runs["next_before"]
    older = api.get(f"/api/v1/scripts/runs?before={runs['next_before']}&script=apply_discount").get_json()
    assert older["data"][0]["log"].startswith("discount set for Q") and older["data"][0]["status"] == "ok"
    assert api_as("sam").get("/api/v1/scripts/runs").status_code == 403

    # the record page shows the action as a button that runs it
    web = api.client.application.test_client()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").get_data(as_text=True)).group(1)
    signed = web.post("/login", data={"username": "admin", "password": "admin-password", "csrf_token": csrf})
    assert signed.status_code == 302 and "/login" not in signed.headers["Location"], signed.get_data(as_text=True)
    page = web.get(f"/app/quote/{quote['id']}").get_data(as_text=True)
    assert "Apply 10% off" in page and f"/app/quote/{quote['id']}/actions/apply_discount" in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    done = web.post(f"/app/quote/{quote['id']}/actions/apply_discount", data={"csrf_token": csrf})
    assert done.status_code == 302
    assert "Apply 10% off done: ok" in web.get(done.headers["Location"]).get_data(as_text=True)
    assert st.services.records.get(ctx, "quote", quote["id"])["discount"] == "10.00"


def test_scripts_are_off_until_an_operator_turns_them_on(scripted):
    st, ctx, publish = scripted
    publish({"shout": {"object": "quote", "trigger": {"event": "before_save"},
                       "source": "record['code'] = 'SET'\n"},
             "act": {"object": "quote", "trigger": {"action": True}, "source": "result = 1\n"}})
    st.platform.set_flag("main", SCRIPTS_FLAG, False)
    q = st.services.records.create(ctx, "quote", {"name": "q"})
    assert q["code"] is None
    with pytest.raises(ConflictError, match="loomwork tenant scripts --enable"):
        st.services.scripts.run_action(ctx, "quote", q["id"], "act")
    assert st.services.scripts.actions(ctx, "quote") == []
    st.platform.set_flag("main", SCRIPTS_FLAG, True)
    assert st.services.records.create(ctx, "quote", {"name": "q2"})["code"] == "SET"


def test_publish_reports_compile_errors_by_line(scripted):
    st, ctx, publish = scripted
    with pytest.raises(MetadataError) as bad:
        publish({"evil": {"object": "quote", "trigger": {"event": "before_save"},
                          "source": "x = 1\nimport os\ny = type(x)\n"}})
    errors = bad.value.errors
    assert any(m.startswith("Line 2:") and "import" in m for m in errors["scripts.evil.source"])
    assert any(m.startswith("Line 3:") and '"type"' in m for m in errors["scripts.evil.source"])
    with pytest.raises(MetadataError) as bad:
        publish({"late": {"object": "quote", "trigger": {"schedule": "every day"}, "source": "x = 1\n"},
                 "lost": {"object": "nothing", "trigger": {"action": True}, "source": "x = 1\n"}})
    errors = bad.value.errors
    assert "five cron fields" in errors["scripts.late.trigger.schedule"][0]
    assert "unknown object 'nothing'" in errors["scripts.lost.object"][0]


def test_scheduled_scripts_run_once_per_cron_time(scripted):
    import datetime as dt

    st, ctx, publish = scripted
    publish({"nightly": {"trigger": {"schedule": "0 2 * * *"},
                         "source": "n = len(ctx.query('account', limit=500))\n"
                                   "ctx.create('account', {'name': 'Nightly ' + ctx.now().date().isoformat()})\n"
                                   "result = n\n"},
             "broken": {"trigger": {"schedule": "1 2 * * *"}, "source": "x = 1 / 0\n"}})
    scripts = st.services.scripts
    # Any day will do: the script reads the date from the same clock the schedule uses.
    t0 = dt.datetime(2031, 5, 17, 1, 0, tzinfo=dt.UTC)
    clock = Clock(t0)
    ctx = Context(ctx.tenant, ctx.actor, clock=clock)
    assert scripts.run_schedules(ctx) == []  # first seen: counts from now
    clock.now = t0 + dt.timedelta(minutes=30)
    assert scripts.run_schedules(ctx) == []  # 01:30: nothing due
    clock.now = t0 + dt.timedelta(hours=1, minutes=1)
    due = scripts.run_schedules(ctx)  # 02:01
    assert {r["script"]: r["status"] for r in due} == {"nightly": "ok", "broken": "failed"}
    assert "ZeroDivisionError" in next(r["error"] for r in due if r["script"] == "broken")
    clock.now = t0 + dt.timedelta(hours=1, minutes=2)
    assert scripts.run_schedules(ctx) == []  # claimed already
    from loomwork.runtime.query import ListRequest
    names = [a["name"] for a in st.services.query.list(ctx, "account", ListRequest(limit=100)).data]
    assert names == ["Nightly 2031-05-17"]
    clock.now = t0 + dt.timedelta(days=1, hours=1, minutes=5)
    later = scripts.run_schedules(ctx)
    assert {r["script"] for r in later} == {"nightly", "broken"}
    st.platform.set_flag("main", SCRIPTS_FLAG, False)
    clock.now = t0 + dt.timedelta(days=5)
    assert scripts.run_schedules(ctx) == []


def test_operator_settings_set_the_limits(lw_database_url, tmp_path):
    from loomwork import create_app

    app = create_app({"database_url": lw_database_url, "namespace": "lwtset", "secret_key": "x",
                      "instance_dir": str(tmp_path), "script_wall_ms": 250, "script_steps": 5000,
                      "script_long_wall_ms": 90_000})
    settings = app.extensions["loomwork"].services.scripts.settings
    assert settings.defaults.wall_ms == 250 and settings.defaults.steps == 5000
    assert settings.long_running.wall_ms == 90_000 and settings.ceiling.wall_ms == 90_000
    # Tenants' shares of the pool: all workers but one by default, or as the operator says.
    assert settings.tenant_workers is None and settings.tenant_queue == 16 and settings.wait_ms == 30_000
    app.extensions["loomwork"].platform.drop_all()
    app.extensions["loomwork"].platform.dispose()
    app = create_app({"database_url": lw_database_url, "namespace": "lwtset", "secret_key": "x",
                      "instance_dir": str(tmp_path), "script_workers": 3, "script_tenant_workers": 3,
                      "script_tenant_queue": 4, "script_wait_ms": 2500})
    slots = app.extensions["loomwork"].services.scripts.pool.slots
    assert (slots.size, slots.per_tenant, slots.queue, slots.wait_s) == (3, 3, 4, 2.5)
    app.extensions["loomwork"].platform.drop_all()
    app.extensions["loomwork"].platform.dispose()
    from loomwork.app import script_settings
    from loomwork.config import load_settings

    for bad, message in (({"script_tenant_workers": 3}, "script_tenant_workers: must be from 0"),
                         ({"script_wait_ms": -1}, "script_wait_ms: must not be negative")):
        with pytest.raises(LoomworkError, match=message):
            script_settings(load_settings(bad, environ={}))


def test_values_a_script_leaves_alone_are_not_rewritten(scripted):
    st, ctx, publish = scripted
    publish({"tag": {"object": "quote", "trigger": {"event": "before_save"}, "source": "record['code'] = 'X'\n"}},
            objects={"quote": {"fields": {
                **QUOTE["fields"], "meet_at": {"type": "datetime"},
                "net": {"type": "formula", "result_type": "decimal", "stored": True,
                        "expression": "coalesce(total, 0) * (100 - coalesce(discount, 0)) / 100"}}}})
    rec = st.services.records
    # a number where the API takes text, a datetime with "Z": the same values after the
    # script's round trip, so nothing but the code is written (the formula is not "set")
    q = rec.create(ctx, "quote", {"name": "n", "discount": 5, "total": 10.5, "meet_at": "2026-01-02T10:30:45Z"})
    assert q["code"] == "X" and q["net"] == "9.98" and q["meet_at"].startswith("2026-01-02T10:30:45")
    again = rec.update(ctx, "quote", q["id"], {"name": "m"})
    assert again["name"] == "m" and again["net"] == "9.98"
    history = st.services.records.history(ctx, "quote", q["id"])
    assert {h["field"] for h in history if h["action"] == "update"} == {"name"}


def test_record_is_read_only_after_the_save_and_run_as_limits_writes(scripted):
    st, ctx, publish = scripted
    publish({"late_change": {"object": "quote", "trigger": {"event": "after_save"},
                             "source": "record['code'] = 'TOO LATE'\n"},
             "as_viewer": {"object": "quote", "trigger": {"action": True}, "run_as": "viewer",
                           "source": "n = len(ctx.query('account'))\n"
                                     "ctx.update('account', params['id'], {'name': 'renamed'})\n"}})
    rec = st.services.records
    with pytest.raises(ScriptFailed, match="cannot be changed here"):
        rec.create(ctx, "quote", {"name": "q"})
    publish({"as_viewer": {"object": "quote", "trigger": {"action": True}, "run_as": "viewer",
                           "source": "n = len(ctx.query('account'))\n"
                                     "ctx.update('account', params['id'], {'name': 'renamed'})\n"}})
    acct = rec.create(ctx, "account", {"name": "Kept"})
    quote = rec.create(ctx, "quote", {"name": "q"})
    # an administrator runs it, but its calls act as the viewer role: reading works, writing does not
    with pytest.raises(ScriptFailed, match="may not"):
        st.services.scripts.run_action(ctx, "quote", quote["id"], "as_viewer", {"id": acct["id"]})
    assert rec.get(ctx, "account", acct["id"])["name"] == "Kept"


def test_each_record_of_a_bulk_write_has_the_whole_budget(scripted):
    st, ctx, publish = scripted
    publish({"lookup": {"object": "quote", "trigger": {"event": "before_save"}, "budget": {"queries": 2},
                        "source": "ctx.query('account', limit=1)\nctx.query('account', limit=1)\n"
                                  "if record['name'] == 'greedy':\n    ctx.query('account', limit=1)\n"}})
    rows = st.services.records.bulk_create(ctx, "quote", [{"name": f"q{i}"} for i in range(20)])
    assert len(rows) == 20  # 40 queries in all, 2 per record: within each record's budget
    with pytest.raises(BudgetExceeded) as exc:
        st.services.records.bulk_create(ctx, "quote", [{"name": "fine"}, {"name": "greedy"}])
    assert exc.value.message == "script 'lookup' went past its queries limit (2)"


def test_a_failed_statement_inside_after_save_does_not_lose_the_save(scripted):
    """A ctx call whose SQL fails (a virtual formula overflowing, here) is reported to the
    script; the write's transaction must stay usable (on PostgreSQL a failed statement
    would otherwise abort it, and the commit would silently roll back)."""
    st, ctx, publish = scripted
    cube = {"n": {"fields": {"x": {"type": "integer"}, "label": {"type": "text"},
                             "cube": {"type": "formula", "result_type": "number", "expression": "x * x * x"}}}}
    publish({"audit": {"object": "n", "trigger": {"event": "after_save"}, "source": (
        "try:\n    ctx.query('n', filter={'field': 'cube', 'op': 'gt', 'value': 0})\n"
        "except ScriptApiError as e:\n    print('refused')\n"
        "ctx.create('account', {'name': 'after ' + record['label']})\n")}}, objects=cube)
    from loomwork.runtime.query import ListRequest
    created = st.services.records.create(ctx, "n", {"x": 2**40, "label": "big"})
    stored = st.services.query.list(ctx, "n", ListRequest(fields=["id", "label"])).data
    assert [r["id"] for r in stored] == [created["id"]]
    names = [a["name"] for a in st.services.query.list(ctx, "account", ListRequest()).data]
    assert names == ["after big"]


def test_a_host_fault_fails_the_run_not_the_process(scripted, monkeypatch, caplog):
    import datetime as dt

    st, ctx, publish = scripted
    publish({"a_broken": {"trigger": {"schedule": "* * * * *"}, "source": "ctx.query('account')\n"},
             "b_fine": {"trigger": {"schedule": "* * * * *"}, "source": "ctx.create('account', {'name': 'tick'})\n"}})
    scripts = st.services.scripts
    clock = Clock(dt.datetime(2031, 5, 17, 1, 0, tzinfo=dt.UTC))
    ctx = Context(ctx.tenant, ctx.actor, clock=clock)
    scripts.run_schedules(ctx)

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(scripts.query, "list", broken)
    clock.advance(minutes=2)
    done = {r["script"]: r for r in scripts.run_schedules(ctx)}
    assert done["a_broken"]["status"] == "failed" and "could not be answered" in done["a_broken"]["error"]
    assert done["b_fine"]["status"] == "ok"  # the next script still ran
    assert scripts.runs(ctx, script="a_broken")[0]["status"] == "error"
    assert "the database went away" in caplog.text


def test_a_tenant_saturating_the_workers_does_not_delay_another_tenants_save(lw_platform, lw_services):
    """Six concurrent saves of tenant a, each with a 0.5 s before_save script, on the two
    workers; tenant b saves meanwhile. a's scripts take one worker at a time (its share:
    all but one), so b's save does not wait for them (it waited 4.3 s before the shares)."""
    import threading
    import time

    scripts = lw_services.scripts
    scripts.enabled = lambda tenant: True
    contexts = {}
    for name, source in (("a", "while ctx.budget['used']['wall_ms'] < 500:\n    pass\n"),
                         ("b", "record['name'] = record['name'].strip()\n")):
        ctx = contexts[name] = Context(lw_platform.create_tenant(name), Actor.system())
        lw_services.metadata.publish(ctx, {"objects": {"note": {"fields": {"name": {"type": "text"}}}}, "scripts": {
            "hook": {"object": "note", "trigger": {"event": "before_save"}, "source": source}}})
        lw_services.records.create(ctx, "note", {"name": "warm"})  # workers started, code compiled
    slots = scripts.pool.slots
    saved = []
    flood = [threading.Thread(target=lambda: saved.append(lw_services.records.create(
        contexts["a"], "note", {"name": "x"})["name"])) for _ in range(6)]
    for thread in flood:
        thread.start()
    deadline = time.monotonic() + 10
    while slots.state()["waiting"].get(contexts["a"].tenant.cache_key, 0) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert slots.state()["held"] == {contexts["a"].tenant.cache_key: 1}
    waits = []
    for i in range(3):
        started = time.monotonic()
        assert lw_services.records.create(contexts["b"], "note", {"name": f" b{i} "})["name"] == f"b{i}"
        waits.append(time.monotonic() - started)
    for thread in flood:
        thread.join()
    assert saved == ["x"] * 6  # a's saves waited their turn; none was refused
    # measured: 1-45 ms each (the save, its script and the write)
    assert max(waits) < 0.5, waits
