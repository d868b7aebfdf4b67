"""Status workflows enforced by the record service, on both databases: the initial state,
transitions with roles and conditions, per-state edit rules, and taking a transition."""
from __future__ import annotations

import pytest

from loomwork.metadata.errors import MetadataError, NotFound, PermissionDenied, ValidationError
from loomwork.runtime.context import Context

TICKET = {"fields": {
    "title": {"type": "text", "required": True},
    "status": {"type": "choice", "options": [{"value": v} for v in ("new", "open", "waiting", "closed")]},
    "resolution": {"type": "text"},
    "priority": {"type": "integer"},
}}
WORKFLOW = {
    "object": "ticket", "field": "status", "initial": "new",
    "states": [{"name": "new"}, {"name": "open"},
               {"name": "waiting", "edit": {"roles": ["support"], "fields": ["priority"]}},
               {"name": "closed", "final": True, "edit": {"roles": []}}],
    "transitions": [
        {"name": "open", "from": ["new", "waiting"], "to": "open", "label": {"en": "Open", "zh-CN": "受理"}},
        {"name": "wait", "from": ["open"], "to": "waiting"},
        {"name": "close", "from": ["open", "waiting"], "to": "closed", "roles": ["support"],
         "condition": 'resolution != ""'},
    ],
}
ROLES = {"support": {"permissions": {"ticket": ["create", "read", "update"]}},
         "agent": {"permissions": {"ticket": ["create", "read", "update"]}}}


@pytest.fixture
def tickets(lw_services, lw_ctx, lw_cheap_passwords):
    lw_services.metadata.publish(lw_ctx, {"objects": {"ticket": TICKET}, "roles": ROLES,
                                          "workflows": {"support": WORKFLOW}}, comment="workflow")
    users = lw_services.users

    def as_(name: str, role: str) -> Context:
        return Context(lw_ctx.tenant, users.create(lw_ctx, name, None, roles=(role,)).actor(), clock=lw_ctx.clock)

    return lw_services, as_("sue", "support"), as_("al", "agent")


def test_states_transitions_and_edit_rules(tickets):
    s, sue, al = tickets
    rec, wf = s.records, s.workflows
    t = rec.create(al, "ticket", {"title": "Printer on fire"})
    assert t["status"] == "new"  # the initial state
    with pytest.raises(ValidationError, match="starts as new"):
        rec.create(al, "ticket", {"title": "x", "status": "closed"})
    with pytest.raises(ValidationError, match="cannot go from new to closed"):
        rec.update(al, "ticket", t["id"], {"status": "closed"})
    t = rec.update(al, "ticket", t["id"], {"status": "open"})
    assert [x["name"] for x in wf.available(al, "ticket", t["id"])] == ["wait"]  # close needs support
    # and a resolution: shown, disabled, with why (never the raw condition)
    options = {x["name"]: x for x in wf.available(sue, "ticket", t["id"])}
    assert options["wait"]["allowed"] and not options["close"]["allowed"]
    assert options["close"]["reason"]["message"] == "close is not possible yet"
    assert "resolution" not in options["close"]["reason"]["message"]
    with pytest.raises(PermissionDenied, match="may not take close"):
        rec.update(al, "ticket", t["id"], {"status": "closed", "resolution": "fixed"})
    with pytest.raises(ValidationError, match="not possible yet"):
        rec.update(sue, "ticket", t["id"], {"status": "closed"})
    t = wf.transition(al, "ticket", t["id"], "wait")
    assert t["status"] == "waiting"
    with pytest.raises(PermissionDenied, match="cannot be changed by you"):
        rec.update(al, "ticket", t["id"], {"priority": 1})
    with pytest.raises(PermissionDenied, match="fixed: title"):
        rec.update(sue, "ticket", t["id"], {"title": "renamed"})
    t = rec.update(sue, "ticket", t["id"], {"priority": 2})
    t = rec.update(sue, "ticket", t["id"], {"status": "open"})
    t = rec.update(sue, "ticket", t["id"], {"status": "closed", "resolution": "replaced the toner"})
    assert t["status"] == "closed"
    # The final state: the record page offers no Edit, and says why.
    can = s.abilities.for_record(sue, "ticket", t["id"])
    assert not can.edit.allowed and can.edit.reason.code == "state_locked" and can.transitions == []
    assert can.states == ["closed"]
    with pytest.raises(PermissionDenied, match="closed cannot be changed"):
        rec.update(sue, "ticket", t["id"], {"priority": 3})
    with pytest.raises(ValidationError, match="cannot go from closed"):
        rec.update(sue, "ticket", t["id"], {"status": "open"})
    with pytest.raises(NotFound):
        wf.transition(sue, "ticket", t["id"], "teleport")


def test_a_transition_says_in_its_own_words_why_it_is_not_open(lw_services, lw_ctx, lw_cheap_passwords):
    import copy

    workflow = copy.deepcopy(WORKFLOW)
    workflow["transitions"][2]["message"] = {"en": "Fill in the resolution first", "zh-CN": "请先填写解决方案"}
    lw_services.metadata.publish(lw_ctx, {"objects": {"ticket": TICKET}, "roles": ROLES,
                                          "workflows": {"support": workflow}}, comment="workflow")
    sue = Context(lw_ctx.tenant, lw_services.users.create(lw_ctx, "sue", None, roles=("support",)).actor(),
                  clock=lw_ctx.clock)
    rec = lw_services.records
    t = rec.create(sue, "ticket", {"title": "t"})
    t = rec.update(sue, "ticket", t["id"], {"status": "open"})
    with pytest.raises(ValidationError) as err:
        rec.update(sue, "ticket", t["id"], {"status": "closed"})
    assert err.value.errors == {"status": ["Fill in the resolution first"]}
    zh = Context(sue.tenant, sue.actor, locale="zh-CN", clock=sue.clock)
    can = lw_services.abilities.for_record(zh, "ticket", t["id"])
    close = next(x for x in can.transitions if x["name"] == "close")
    assert close["ability"].reason.params["message"] == "请先填写解决方案"
    # The edit form's state field offers where the record can go now, not every state.
    assert can.states == ["open", "waiting"]


def test_bulk_writes_and_the_api_follow_the_workflow_too(tickets, lw_ctx):
    s, sue, al = tickets
    with pytest.raises(ValidationError) as bulk:
        s.records.bulk_create(al, "ticket", [{"title": "a"}, {"title": "b", "status": "open"}])
    assert list(bulk.value.errors) == ["1.status"]
    made = s.records.bulk_create(lw_ctx, "ticket", [{"title": "an admin may", "status": "open"}])
    assert made[0]["status"] == "open"


def test_workflows_are_checked_when_published(lw_services, lw_ctx):
    bad = {**WORKFLOW, "states": [*WORKFLOW["states"], {"name": "lost"}],
           "transitions": [*WORKFLOW["transitions"], {"name": "reopen", "from": ["closed"], "to": "open"}]}
    with pytest.raises(MetadataError) as err:
        lw_services.metadata.publish(lw_ctx, {"objects": {"ticket": TICKET}, "roles": ROLES,
                                              "workflows": {"support": bad}})
    errors = err.value.errors
    assert "'lost' is not an option of status" in errors["workflows.support.states.4.name"][0]
    assert "no transition leaves a final state" in errors["workflows.support.transitions.3.from"][0]
    broken = {**WORKFLOW, "transitions": [{"name": "x", "from": ["new"], "to": "open", "condition": "priority >"}]}
    with pytest.raises(MetadataError) as err:
        lw_services.metadata.publish(lw_ctx, {"objects": {"ticket": TICKET}, "roles": ROLES,
                                              "workflows": {"support": broken}})
    assert "workflows.support.transitions.0.condition" in err.value.errors


def test_transitions_through_the_api_and_the_page(crm_app, fast_setup, api, api_as):
    import copy
    import re

    from loomwork.runtime.context import Actor

    st = crm_app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
    doc["objects"]["ticket"] = TICKET
    doc["roles"]["sales"]["permissions"]["ticket"] = ["create", "read", "update"]
    doc["roles"]["support"] = ROLES["support"]
    doc["workflows"] = {"support": WORKFLOW}
    st.services.metadata.publish(ctx, doc, comment="workflow")
    sam = api_as("sam")
    t = sam.post("/api/v1/data/ticket", json={"title": "Broken chair"}).get_json()
    assert [x["name"] for x in sam.get(f"/api/v1/data/ticket/{t['id']}/transitions").get_json()["data"]] == ["open"]
    jump = sam.patch(f"/api/v1/data/ticket/{t['id']}", json={"status": "closed"})
    assert jump.status_code == 422 and "cannot go from new to closed" in str(jump.get_json()["errors"])
    moved = sam.post(f"/api/v1/data/ticket/{t['id']}/transitions/open")
    assert moved.status_code == 200 and moved.get_json()["status"] == "open"
    assert sam.post(f"/api/v1/data/ticket/{t['id']}/transitions/close").status_code == 403
    assert sam.post(f"/api/v1/data/ticket/{t['id']}/transitions/nope").status_code == 404
    # the record page offers the transitions as buttons that post with CSRF
    web = crm_app.test_client()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', web.get("/login").get_data(as_text=True)).group(1)
    web.post("/login", data={"username": "sam", "password": "sales-password", "csrf_token": csrf})
    page = web.get(f"/app/ticket/{t['id']}").get_data(as_text=True)
    assert f"/app/ticket/{t['id']}/transitions/wait" in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    web.post(f"/app/ticket/{t['id']}/transitions/wait", data={"csrf_token": csrf})
    assert "Status changed." in web.get(f"/app/ticket/{t['id']}").get_data(as_text=True)
    assert api.get(f"/api/v1/data/ticket/{t['id']}").get_json()["status"] == "waiting"


def test_defaults_and_records_from_before_the_workflow(lw_services, lw_ctx, lw_cheap_passwords):
    ticket = {"fields": {**TICKET["fields"], "status": {**TICKET["fields"]["status"], "default": "open"}}}
    with pytest.raises(MetadataError, match="must be the initial state"):
        lw_services.metadata.publish(lw_ctx, {"objects": {"ticket": ticket}, "roles": ROLES,
                                              "workflows": {"support": WORKFLOW}})
    lw_services.metadata.publish(lw_ctx, {"objects": {"ticket": TICKET}, "roles": ROLES})
    old = lw_services.records.create(lw_ctx, "ticket", {"title": "from before"})
    lw_services.metadata.publish(lw_ctx, {"objects": {"ticket": TICKET}, "roles": ROLES,
                                          "workflows": {"support": WORKFLOW}})
    al = Context(lw_ctx.tenant, lw_services.users.create(lw_ctx, "al", None, roles=("agent",)).actor())
    with pytest.raises(ValidationError, match="enters the workflow as new"):
        lw_services.records.update(al, "ticket", old["id"], {"status": "open"})
    assert lw_services.records.update(al, "ticket", old["id"], {"status": "new"})["status"] == "new"
