"""Approval action kinds as a registry filled through ``loomwork_approval_actions``: a
plugin's kind is checked when a process is published (its schema, its own check, its
expressions) and runs on approval like a built-in, on both databases."""
from __future__ import annotations

import pytest

from loomwork.metadata.errors import ConflictError, MetadataError
from loomwork.plugin_manager import approval_actions, make_plugin_manager, make_services
from loomwork.runtime import hookimpl
from loomwork.runtime.approval_actions import ActionKind
from loomwork.runtime.context import Actor, Context

COMMON = "https://loomwork.dev/schemas/common.json#/$defs/"
QUOTE = {"fields": {"name": {"type": "text", "required": True}, "amount": {"type": "decimal", "scale": 2},
                    "note": {"type": "text"}}}
ROLES = {"sales": {"permissions": {"quote": ["create", "read", "update"]}},
         "finance": {"permissions": {"quote": ["read", "update"]}}}


class TagAction(ActionKind):
    """``tag: {field, text}``: write an expression's value into a text field and post it
    to an outside system (a webhook, here a list)."""

    name = "tag"
    description = "Tag the record and tell the outside world."
    schema = {"type": "object", "required": ["field", "text"], "additionalProperties": False,
              "properties": {"field": {"$ref": COMMON + "name"}, "text": {"$ref": COMMON + "expression"}}}

    def __init__(self) -> None:
        self.posted: list[dict] = []

    def check(self, body, path, process):
        if body["field"] not in process.fields:
            return [(f"{path}.field", f"{process.object} has no field {body['field']!r}")]
        return []

    def expressions(self, body):
        return [("text", body["text"])]

    def run(self, action):
        text = action.value(action.body["text"])
        action.records.update(action.system, action.instance.object, action.instance.record_id,
                              {action.body["field"]: text}, origin=action.origin)
        self.posted.append({"process": action.instance.process, "record": action.instance.record_id, "text": text,
                            "by": action.ctx.actor.id, "at": action.ctx.now().isoformat()})
        return {"posted": text}


class TagPlugin:
    def __init__(self) -> None:
        self.kind = TagAction()

    @hookimpl
    def loomwork_approval_actions(self):
        return [self.kind]


@pytest.fixture
def world(lw_ctx, lw_cheap_passwords):
    plugin = TagPlugin()
    services = make_services(make_plugin_manager([plugin], entry_points=False))
    services.metadata.publish(lw_ctx, {"objects": {"quote": QUOTE}, "roles": ROLES}, comment="setup")
    ids = {name: services.users.create(lw_ctx, name, None, roles=roles).id
           for name, roles in (("alice", ("sales",)), ("fin", ("finance",)), ("boss", ("finance",)))}
    return services, plugin.kind, ids


def as_(services, ctx, user_id) -> Context:
    return Context(ctx.tenant, services.users.get(ctx, user_id).actor(), clock=ctx.clock)


def process(**kw) -> dict:
    return {"object": "quote", "nodes": [{"name": "n", "type": "approval", "approvers": [{"user": "fin"}]}], **kw}


def publish(services, ctx, **processes) -> int:
    doc = dict(services.metadata.current(ctx).doc)
    doc["approvals"] = processes
    return services.metadata.publish(ctx, doc, comment="processes")


def test_a_plugin_action_is_checked_at_publish_with_paths(world, lw_ctx):
    services, _, _ = world
    cases = [
        ({"tag": {"field": "note"}}, "approvals.p.on_approved.0.tag", "text is required"),
        ({"tag": {"field": "note", "text": "name", "colour": 1}}, "approvals.p.on_approved.0.tag",
         "unknown property 'colour'"),
        ({"tag": {"field": "ghost", "text": "name"}}, "approvals.p.on_approved.0.tag.field",
         "quote has no field 'ghost'"),
        ({"tag": {"field": "note", "text": "nme + 1"}}, "approvals.p.on_approved.0.tag.text", "nme"),
        ({"stamp": {"field": "note"}}, "approvals.p.on_approved.0",
         "unknown action 'stamp'; known: create, lock, notify, script, set, tag"),
        ({"lock": "yes"}, "approvals.p.on_approved.0.lock", "must be of type boolean"),
        ({"set": {"ghost": "1"}}, "approvals.p.on_approved.0.set.ghost", "quote has no field 'ghost'"),
    ]
    for action, path, message in cases:
        with pytest.raises(MetadataError) as bad:
            publish(services, lw_ctx, p=process(on_approved=[action]))
        assert any(message in m for m in bad.value.errors.get(path, ())), (action, bad.value.errors)


def test_a_plugin_action_runs_on_approval_and_in_an_action_node(world, lw_ctx):
    """The kind runs in the decision's transaction: its write has the approval's origin
    (the lock lets it through, history names the approver), and its detail is kept."""
    services, tag, ids = world
    publish(services, lw_ctx, p=process(lock="nobody", nodes=[
        {"name": "n", "type": "approval", "approvers": [{"user": "fin"}]},
        {"name": "mark", "type": "action", "actions": [{"tag": {"field": "note", "text": '"checked " + name'}}]},
        {"name": "m", "type": "approval", "approvers": [{"user": "boss"}]},
    ], on_approved=[{"tag": {"field": "note", "text": '"approved " + ("big" if amount > 100 else "small")'}}]))
    alice, fin, boss = (as_(services, lw_ctx, ids[n]) for n in ("alice", "fin", "boss"))
    q = services.records.create(alice, "quote", {"name": "Q1", "amount": "120.50"})
    inst = services.approvals.submit(alice, "quote", q["id"])
    task = next(t["id"] for t in inst["tasks"] if t["status"] == "pending")
    inst = services.approvals.approve(fin, task)
    # The action node ran while the record is locked for everyone ("nobody").
    assert services.records.get(lw_ctx, "quote", q["id"])["note"] == "checked Q1"
    assert tag.posted[-1]["by"] == ids["fin"] and tag.posted[-1]["record"] == q["id"]
    task = next(t["id"] for t in inst["tasks"] if t["status"] == "pending")
    inst = services.approvals.approve(boss, task)
    assert inst["status"] == "approved"
    record = services.records.get(lw_ctx, "quote", q["id"])
    assert record["note"] == "approved big" and record["updated_by"] == ids["boss"]
    actions = [e["detail"] for e in inst["history"] if e["action"] == "action"]
    assert actions == [{"action": "tag", "posted": "checked Q1"}, {"action": "tag", "posted": "approved big"}]
    history = services.records.history(lw_ctx, "quote", q["id"])
    note = [h for h in history if h["field"] == "note"]
    assert note and all(h["origin"] == "approval" for h in note)
    # where-used finds expressions in the plugin's bodies too.
    used = {u["path"] for u in services.metadata.where_used(lw_ctx, "quote", "amount")}
    assert "approvals.p.on_approved.0.tag.text" in used


def test_a_kind_registered_twice_or_missing_at_run_time_is_refused(world, lw_ctx):
    class Again:
        @hookimpl
        def loomwork_approval_actions(self):
            return [TagAction(), TagAction()]

    with pytest.raises(Exception, match="approval action 'tag' is registered twice"):
        approval_actions(make_plugin_manager([Again()], entry_points=False))
    services, _, ids = world
    publish(services, lw_ctx, p=process(on_approved=[{"tag": {"field": "note", "text": "name"}}]))
    alice, fin = as_(services, lw_ctx, ids["alice"]), as_(services, lw_ctx, ids["fin"])
    q = services.records.create(alice, "quote", {"name": "Q2"})
    inst = services.approvals.submit(alice, "quote", q["id"])
    # The same tenant served by a process without the plugin: the decision is refused
    # (and rolled back) instead of skipping the action.
    plain = make_services(make_plugin_manager(entry_points=False))
    with pytest.raises(ConflictError, match="approval action 'tag' of p is not installed"):
        plain.approvals.approve(fin, inst["tasks"][0]["id"])
    assert plain.approvals.instance(lw_ctx, inst["id"])["status"] == "pending"


def test_the_served_schemas_describe_the_registered_kinds_and_widgets(tmp_path):
    """GET /api/v1/meta/schemas/approval fills in each registered kind's body, so a
    client validating a process with it refuses what publishing would."""
    import jsonschema
    from referencing import Registry, Resource

    from loomwork.app import create_app

    app = create_app({"database_url": f"sqlite:///{tmp_path / 'i'}", "secret_key": "x",
                      "instance_dir": str(tmp_path)},
                     plugin_manager=make_plugin_manager([TagPlugin()], entry_points=False))
    st = app.extensions["loomwork"]
    ctx = Context(st.platform.create_tenant("main"), Actor.system())
    admin = st.services.users.create(ctx, "admin", None, roles=("admin",))
    token = st.services.users.create_token(ctx, admin.id, "t")
    client = app.test_client()

    def get(kind: str) -> dict:
        resp = client.get(f"/api/v1/meta/schemas/{kind}", headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 200
        return resp.get_json()

    approval, common, form = get("approval"), get("common"), get("form")
    kinds = {next(iter(o["required"])): o["properties"] for o in approval["$defs"]["actions"]["items"]["oneOf"]}
    assert set(kinds) == {"create", "lock", "notify", "script", "set", "tag"}
    assert kinds["tag"]["tag"] == TagAction.schema
    assert {"stars", "text", "readonly"} - set(form["$defs"]["widget"]["enum"]) == {"stars"}
    registry = Registry().with_resources([(s["$id"], Resource.from_contents(s)) for s in (approval, common)])
    check = jsonschema.Draft202012Validator(approval, registry=registry)
    good = process(on_approved=[{"tag": {"field": "note", "text": "name"}}, {"lock": True}])
    assert not list(check.iter_errors(good))
    for bad in ({"tag": {"field": "note"}}, {"lock": "yes"}, {"stamp": {}}, {"lock": True, "set": {}}):
        assert list(check.iter_errors(process(on_approved=[bad]))), bad
    st.platform.dispose()


def test_renaming_a_field_rewrites_it_in_action_bodies(world, lw_ctx):
    """Expressions inside actions (a plugin's kind and a built-in) follow a rename
    published with update_dependents, and block one published without."""
    services, _, _ = world
    publish(services, lw_ctx, p=process(on_approved=[
        {"tag": {"field": "note", "text": '"big" if amount > 100 else "small"'}},
        {"set": {"note": '"done " + name'}}]))
    doc = dict(services.metadata.current(lw_ctx).doc)
    fields = dict(doc["objects"]["quote"]["fields"])
    fields["total"] = {**fields.pop("amount"), "renamed_from": "amount"}
    doc["objects"] = {"quote": {**doc["objects"]["quote"], "fields": fields}}
    with pytest.raises(MetadataError) as refused:
        services.metadata.publish(lw_ctx, doc)
    assert "approvals.p.on_approved.0.tag.text" in refused.value.errors
    services.metadata.publish(lw_ctx, doc, update_dependents=True)
    actions = services.metadata.current(lw_ctx).doc["approvals"]["p"]["on_approved"]
    assert actions == [{"tag": {"field": "note", "text": '"big" if total > 100 else "small"'}},
                       {"set": {"note": '"done " + name'}}]
