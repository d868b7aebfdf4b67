"""The metadata API end to end (``/api/v1/meta``): read, change with a plan preview,
publish, versions, diff, rollback, and who may do it."""
from __future__ import annotations

import copy

import pytest

from loomwork.testing import assert_problem as problem

pytestmark = pytest.mark.usefixtures("fast_setup")


def deal_doc(api) -> tuple[int, dict]:
    resp = api.get("/api/v1/meta/objects/deal")
    assert resp.status_code == 200, resp.json
    return resp.json["version"], {k: v for k, v in resp.json.items() if k not in ("version", "name")}


def with_region(doc: dict) -> dict:
    doc = copy.deepcopy(doc)
    doc["fields"]["region"] = {"type": "text", "max_length": 50, "label": {"en": "Region"}}
    return doc


@pytest.fixture
def account_id(api):
    return api.post("/api/v1/data/account", json={"name": "Acme"}).json["id"]


def test_read_metadata(api, api_as):
    whole = api.get("/api/v1/meta")
    assert whole.status_code == 200
    assert whole.json["version"] == 1
    assert set(whole.json["doc"]["objects"]) == {"account", "contact", "deal", "quote"}
    assert set(whole.json["doc"]["roles"]) == {"sales", "viewer", "finance"}
    assert whole.json["ownership"]["objects.deal.fields.amount"] == {"package": "crm_sample", "customized": False}
    listed = api.get("/api/v1/meta/objects").json
    assert [o["name"] for o in listed["data"]] == ["account", "contact", "deal", "quote"]
    assert listed["version"] == 1
    one = api.get("/api/v1/meta/objects/deal").json
    assert one["name"] == "deal" and one["fields"]["amount"]["precision"] == 14
    problem(api.get("/api/v1/meta/objects/nope"), 404)
    schema = api.get("/api/v1/meta/schemas/object")
    assert schema.status_code == 200 and schema.mimetype == "application/schema+json"
    assert schema.json["$schema"].endswith("2020-12/schema")
    assert "known:" in problem(api.get("/api/v1/meta/schemas/nope"), 404)["detail"]

    vera = api_as("vera")
    assert [o["name"] for o in vera.get("/api/v1/meta/objects").json["data"]] == ["account", "contact", "deal", "quote"]
    assert vera.get("/api/v1/meta/objects/deal").status_code == 200
    for path in ("/api/v1/meta", "/api/v1/meta/versions", "/api/v1/meta/versions/1",
                 "/api/v1/meta/diff?from=0&to=1"):
        assert "administrators" in problem(vera.get(path), 403)["detail"], path


def test_objects_the_caller_may_not_read_answer_403_everywhere(crm_app, api, api_as):
    """D16 across the metadata and view endpoints: an object the caller may not read is a
    403 naming it (whatever the body), an unknown one a 404; and a view may not show a
    column of an object the caller may not read (finance reads deals, not contacts)."""
    from loomwork.runtime.context import Actor, Context

    st = crm_app.extensions["loomwork"]
    st.services.users.create(Context(st.platform.tenant("main"), Actor.system()), "fiona", None, roles=("finance",))
    fiona = api_as("fiona")
    assert "contact" not in [o["name"] for o in fiona.get("/api/v1/meta/objects").json["data"]]
    for path in ("/api/v1/meta/objects/{}", "/api/v1/meta/objects/{}/rules", "/api/v1/meta/objects/{}/layout",
                 "/api/v1/views/{}"):
        assert "read contact" in problem(fiona.get(path.format("contact")), 403)["detail"], path
        problem(fiona.get(path.format("nope")), 404)
        assert api.get(path.format("contact")).status_code == 200, path
    assert "read contact" in problem(fiona.post("/api/v1/views/contact", json={"label": "x", "page_size": 1000}),
                                     403)["detail"]
    refused = problem(fiona.post("/api/v1/views/deal", json={"label": "x", "columns": ["name", "contact.email"]}), 403)
    assert "'contact.email' shows contact records" in refused["detail"]
    made = fiona.post("/api/v1/views/deal", json={"label": "Mine", "columns": ["name", "account.industry"]})
    assert made.status_code == 201, made.json
    key = made.json["key"]
    problem(fiona.put(f"/api/v1/views/deal/{key}", json={"label": "Mine", "columns": ["contact.email"]}), 403)
    assert next(v for v in fiona.get("/api/v1/views/deal").json["data"] if v["key"] == key)["definition"][
        "columns"] == ["name", "account.industry"]
    assert api.post("/api/v1/views/deal", json={"label": "All", "columns": ["contact.email"]}).status_code == 201


def test_put_object_dry_run_then_for_real(api, account_id):
    version, deal = deal_doc(api)
    dry = api.put("/api/v1/meta/objects/deal", json={"object": with_region(deal), "dry_run": True})
    assert dry.status_code == 200, dry.json
    assert dry.json["dry_run"] is True and "version" not in dry.json
    ops = dry.json["plan"]["operations"]
    # The new field also lands on the deal form, which lists its fields (decision D52).
    assert [(o["kind"], o["field"], o["change"]) for o in ops] == [("add_field", "region", "fast"),
                                                                    ("change_form", "region", "instant")]
    assert dry.json["plan"]["old_version"] == version
    # Nothing changed: same version, and the field is unknown to the data API.
    assert deal_doc(api)[0] == version
    assert "region" in problem(api.post("/api/v1/data/deal", json={
        "name": "x", "account": account_id, "region": "EMEA"}), 422)["errors"]

    real = api.put("/api/v1/meta/objects/deal", json={
        "object": with_region(deal), "comment": "regions", "base_version": version})
    assert real.status_code == 200, real.json
    assert real.json["version"] == version + 1
    assert [o["kind"] for o in real.json["plan"]["operations"]] == ["add_field", "change_form"]
    assert deal_doc(api)[0] == version + 1
    # Usable at once through /data, with its max_length enforced.
    made = api.post("/api/v1/data/deal", json={"name": "x", "account": account_id, "region": "EMEA"})
    assert made.status_code == 201 and made.json["region"] == "EMEA"
    assert api.get("/api/v1/data/deal?region=EMEA").json["data"][0]["id"] == made.json["id"]
    assert "region" in problem(api.patch(f"/api/v1/data/deal/{made.json['id']}", json={"region": "x" * 51}),
                               422)["errors"]
    # Publishing the same again changes nothing.
    again = api.put("/api/v1/meta/objects/deal", json={"object": with_region(deal)})
    assert again.json["version"] == version + 1 and again.json["plan"]["operations"] == []

    versions = api.get("/api/v1/meta/versions").json["data"]
    assert [v["version"] for v in versions] == [version + 1, version]
    assert versions[0]["comment"] == "regions" and versions[0]["created_by"] == "admin"
    stored = api.get(f"/api/v1/meta/versions/{version + 1}").json
    assert stored["plan"][0]["kind"] == "add_field"
    assert any(c["path"] == "objects.deal.fields.region" and c["op"] == "added" for c in stored["diff"])
    assert stored["ownership"]["objects.deal.fields.region"]["package"] is None
    assert stored["doc"]["objects"]["deal"]["fields"]["region"]["max_length"] == 50
    diff = api.get(f"/api/v1/meta/diff?from={version}&to={version + 1}").json
    assert [c["path"] for c in diff["changes"]] == ["objects.deal.fields.region", "forms.deal_main.tabs"]
    back = api.get(f"/api/v1/meta/diff?from={version + 1}&to={version}").json["changes"]
    assert back[0]["op"] == "removed"


def test_new_object_and_role(api, api_as):
    obj = {"label": {"en": "Project"}, "fields": {"title": {"type": "text", "required": True},
                                                    "budget": {"type": "decimal", "precision": 12, "scale": 2,
                                                               "min": 0.5, "max": 100000.25}}}
    resp = api.put("/api/v1/meta/objects/project", json={"object": obj})
    assert resp.status_code == 200, resp.json
    assert api.get("/api/v1/meta/objects/project").json["fields"]["budget"]["min"] == 0.5
    # JSON numbers are numbers: 10.0 is the integer 10 wherever metadata wants an integer.
    obj["fields"]["code"] = {"type": "decimal", "precision": 10.0, "scale": 2.0, "max": 5.0}
    obj["fields"]["title"]["max_length"] = 40.0
    assert api.put("/api/v1/meta/objects/project", json={"object": obj}).status_code == 200
    fields = api.get("/api/v1/meta/objects/project").json["fields"]
    assert fields["code"]["precision"] == 10 and fields["title"]["max_length"] == 40
    assert "code" in problem(api.post("/api/v1/data/project", json={"title": "P", "code": "5.01"}), 422)["errors"]
    assert api.post("/api/v1/data/project", json={"title": "P", "budget": "0.50"}).status_code == 201
    assert "budget" in problem(api.post("/api/v1/data/project", json={"title": "P", "budget": "0.25"}), 422)["errors"]
    # sam's role does not cover it yet; adding it to the role opens it.
    sam = api_as("sam")
    problem(sam.get("/api/v1/data/project"), 403)
    role = api.get("/api/v1/meta").json["doc"]["roles"]["sales"]
    role["permissions"]["project"] = ["read"]
    assert api.put("/api/v1/meta/roles/sales", json={"role": role}).status_code == 200
    assert sam.get("/api/v1/data/project").status_code == 200
    problem(sam.post("/api/v1/data/project", json={"title": "Q"}), 403)
    # Removing an object hides it (its data is kept).
    gone = api.delete("/api/v1/meta/objects/project", json={"comment": "no more projects"})
    assert gone.status_code == 422  # the role still names it
    role["permissions"].pop("project")
    assert api.put("/api/v1/meta/roles/sales", json={"role": role}).status_code == 200
    dry = api.delete("/api/v1/meta/objects/project", json={"dry_run": True})
    assert dry.json["plan"]["operations"][0]["kind"] == "drop_object"
    assert api.get("/api/v1/meta/objects/project").status_code == 200
    assert api.delete("/api/v1/meta/objects/project").status_code == 200
    problem(api.get("/api/v1/meta/objects/project"), 404)
    problem(api.get("/api/v1/data/project"), 404)
    problem(api.delete("/api/v1/meta/objects/project"), 404)


def test_conflicts_and_heavy_changes(api, account_id):
    version, deal = deal_doc(api)
    stale = api.put("/api/v1/meta/objects/deal", json={"object": with_region(deal), "base_version": version - 1})
    assert "changed since" in problem(stale, 409)["detail"]
    # base_version defaults to the version the object was read at; a publish in between is a conflict.
    api.post("/api/v1/data/deal", json={"name": "x", "account": account_id, "amount": "1"})
    heavy = copy.deepcopy(deal)
    heavy["fields"]["amount"]["precision"] = 16
    for dry in (True, False):
        doc = problem(api.put("/api/v1/meta/objects/deal", json={"object": heavy, "dry_run": dry}), 409)
        assert doc["title"] == "Heavy schema change refused"
        assert "deal.amount" in doc["detail"] and "precision" in doc["detail"]
    required = copy.deepcopy(deal)
    required["fields"]["notes"]["required"] = True
    assert "1 record" in problem(api.put("/api/v1/meta/objects/deal", json={"object": required}), 409)["detail"]
    assert deal_doc(api)[0] == version


def test_invalid_metadata_names_the_path(api):
    _, deal = deal_doc(api)
    cases = [
        (("fields", "amount", "precision"), 99, "objects.deal.fields.amount.precision", "<= 18"),
        (("fields", "name", "type"), "money", "objects.deal.fields.name.type", "unknown field type"),
        (("fields", "account", "target"), "nope", "objects.deal.fields.account.target", "unknown object"),
        (("fields", "name", "max_length"), "long", "objects.deal.fields.name.max_length", "integer"),
        (("fields", "amount", "bogus"), 1, "objects.deal.fields.amount.bogus", "unknown property"),
        (("title_field",), "nope", "objects.deal.title_field", ""),
    ]
    for (*parents, key), value, path, words in cases:
        doc = copy.deepcopy(deal)
        target = doc
        for p in parents:
            target = target[p]
        target[key] = value
        resp = api.put("/api/v1/meta/objects/deal", json={"object": doc})
        body = problem(resp, 422)
        assert body["title"] == "Invalid metadata"
        assert path in body["errors"], (path, body["errors"])
        assert words in " ".join(body["errors"][path]), body["errors"]
        # The detail names the first problem (another object's roll-up may come first).
        assert any(body["detail"].startswith(k) for k in body["errors"]), body["detail"]
    for name in ("Bad", "lw_x", "select", "a" * 70):
        resp = api.put(f"/api/v1/meta/objects/{name}", json={"object": {"fields": {"a": {"type": "text"}}}})
        assert any(k.startswith(f"objects.{name}") for k in problem(resp, 422)["errors"]), name
    bad_role = api.put("/api/v1/meta/roles/sales", json={"role": {"permissions": {"deal": ["fly"]}}})
    assert "roles.sales.permissions.deal.0" in problem(bad_role, 422)["errors"]


def test_unknown_type_of_an_indexed_field_is_422(api):
    _, deal = deal_doc(api)
    deal["fields"]["amount"]["type"] = "money"
    body = problem(api.put("/api/v1/meta/objects/deal", json={"object": deal}), 422)
    assert "objects.deal.fields.amount.type" in body["errors"]


def test_plan_publish_versions_and_rollback(api, account_id):
    whole = api.get("/api/v1/meta").json
    v1 = whole["version"]
    doc = copy.deepcopy(whole["doc"])
    doc["objects"]["deal"] = with_region(doc["objects"]["deal"])
    plan = api.post("/api/v1/meta/plan", json={"doc": doc})
    assert plan.status_code == 200 and plan.json["plan"]["operations"][0]["kind"] == "add_field"
    dry = api.post("/api/v1/meta/publish", json={"doc": doc, "dry_run": True})
    assert dry.json["dry_run"] is True and dry.json["plan"] == plan.json["plan"]
    assert api.get("/api/v1/meta").json["version"] == v1

    pub = api.post("/api/v1/meta/publish", json={"doc": doc, "comment": "whole doc", "base_version": v1})
    assert pub.status_code == 200 and pub.json["version"] == v1 + 1
    # The same document again, edited from v1: the merge finds nothing of its own to add.
    again = api.post("/api/v1/meta/publish", json={"doc": doc, "base_version": v1})
    assert again.status_code == 200 and again.json["version"] == v1 + 1
    assert again.json["merged"]["head_version"] == v1 + 1
    # A base beyond any version the store can hold names none (it was a 500 on PostgreSQL).
    for base in (2**31, 2**40):
        assert api.post("/api/v1/meta/publish", json={"doc": doc, "base_version": base}).status_code == 404
        assert api.put("/api/v1/meta/objects/deal", json={"object": doc["objects"]["deal"],
                                                          "base_version": base}).status_code == 409  # not the head
    api.post("/api/v1/data/deal", json={"name": "r", "account": account_id, "region": "APAC"})

    rb_dry = api.post("/api/v1/meta/rollback", json={"version": v1, "dry_run": True})
    assert rb_dry.status_code == 200
    assert [(o["kind"], o["field"]) for o in rb_dry.json["plan"]["operations"]] == [("drop_field", "region"),
                                                                                     ("change_form", "region")]
    assert api.get("/api/v1/meta").json["version"] == v1 + 1
    rb = api.post("/api/v1/meta/rollback", json={"version": v1, "comment": "undo"})
    assert rb.status_code == 200 and rb.json["version"] == v1 + 2
    assert rb.json["plan"]["operations"][0]["kind"] == "drop_field"
    assert "region" not in api.get("/api/v1/meta/objects/deal").json["fields"]
    assert "region" in problem(api.post("/api/v1/data/deal", json={
        "name": "x", "account": account_id, "region": "EMEA"}), 422)["errors"]
    versions = api.get("/api/v1/meta/versions").json["data"]
    assert [(v["version"], v["comment"]) for v in versions[:2]] == [(v1 + 2, "undo"), (v1 + 1, "whole doc")]
    # Rolling forward again brings the hidden column back with its data.
    assert api.post("/api/v1/meta/rollback", json={"version": v1 + 1}).json["version"] == v1 + 3
    assert api.get("/api/v1/data/deal?region=APAC").json["data"][0]["name"] == "r"


def test_bad_meta_parameters(api, subtests):
    for path in ("/api/v1/meta/versions/abc", "/api/v1/meta/versions/-1", "/api/v1/meta/versions/1.5",
                 "/api/v1/meta/versions/" + "9" * 30, "/api/v1/meta/diff", "/api/v1/meta/diff?from=1",
                 "/api/v1/meta/diff?from=1&to=x", "/api/v1/meta/diff?from=%201&to=1",
                 "/api/v1/meta/diff?from=1&to=" + "9" * 30):
        with subtests.test(path=path):
            assert "version number" in problem(api.get(path), 400)["detail"]
    for path in ("/api/v1/meta/versions/999", "/api/v1/meta/versions/4294967296", "/api/v1/meta/diff?from=1&to=999"):
        with subtests.test(path=path):
            assert "does not exist" in problem(api.get(path), 404)["detail"]
    assert api.get("/api/v1/meta/versions/0").json["doc"]["objects"] == {}
    for body, status in [({"version": "1"}, 422), ({"version": -1}, 422), ({"version": True}, 422), ({}, 422),
                         ({"version": 999}, 404), ({"version": 2**40}, 404), ({"version": 1, "dry_run": "no"}, 422),
                         ({"version": 1, "comment": 5}, 422), ({"version": 1, "base_version": 1}, 422)]:
        with subtests.test(rollback=body):
            problem(api.post("/api/v1/meta/rollback", json=body), status)
    _, deal = deal_doc(api)
    for extra, key in [({"dry_run": "yes"}, "dry_run"), ({"base_version": "1"}, "base_version"),
                       ({"base_version": -1}, "base_version"), ({"comment": "x" * 2001}, "comment"),
                       ({"comment": None}, "comment"), ({"bogus": 1}, "bogus")]:
        with subtests.test(put=extra):
            doc = problem(api.put("/api/v1/meta/objects/deal", json={"object": deal, **extra}), 422)
            assert key in doc["errors"]
    for body in ({}, {"object": None}, {"object": []}, {"object": "deal"}):
        with subtests.test(put=body):
            assert "object" in problem(api.put("/api/v1/meta/objects/deal", json=body), 422)["errors"]
    for path, body in [("/api/v1/meta/plan", {}), ("/api/v1/meta/plan", {"doc": []}),
                       ("/api/v1/meta/publish", {"doc": "x"}), ("/api/v1/meta/plan", {"doc": {"objects": []}}),
                       ("/api/v1/meta/publish", {"doc": {"objects": {"x": 5}}})]:
        with subtests.test(path=path, body=body):
            problem(api.post(path, json=body), 422)


def test_only_administrators_change_metadata(api, api_as, subtests):
    _, deal = deal_doc(api)
    doc = api.get("/api/v1/meta").json["doc"]
    writes = [("PUT", "/api/v1/meta/objects/deal", {"object": with_region(deal)}),
              ("PUT", "/api/v1/meta/objects/deal", {"object": with_region(deal), "dry_run": True}),
              ("PUT", "/api/v1/meta/objects/deal", {"bogus": "invalid body: still 403"}),
              ("PUT", "/api/v1/meta/roles/sales", {"role": {"permissions": {"deal": ["read"]}}}),
              ("DELETE", "/api/v1/meta/objects/contact", None),
              ("POST", "/api/v1/meta/plan", {"doc": doc}),
              ("POST", "/api/v1/meta/publish", {"doc": doc}),
              ("POST", "/api/v1/meta/rollback", {"version": 0, "dry_run": True}),
              ("POST", "/api/v1/meta/rollback", {"version": 999})]
    for user in ("sam", "vera"):
        client = api_as(user)
        for method, path, body in writes:
            with subtests.test(user=user, method=method, path=path, body=str(body)[:40]):
                problem(client.request(method, path, json=body), 403)
    assert api.get("/api/v1/meta").json["version"] == 1
