"""``/api/v1/openapi.json``: OpenAPI 3.1 generated from metadata, cached per version,
filtered to what the caller may read, describing every route under ``/api/v1``, and
true to what the API really sends and takes.

The document is validated by ``openapi-spec-validator`` (a dev dependency) and checked
structurally besides: unique operation ids, declared path parameters, resolvable
``$ref``s, every schema valid under JSON Schema 2020-12 (the dialect of OpenAPI 3.1),
and real requests and responses validated against those schemas.
"""
from __future__ import annotations

import re

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from loomwork.runtime.participants import MAX_RECORD_ID
from loomwork.runtime.systables import MAX_ID

pytestmark = pytest.mark.usefixtures("fast_setup")


OPERATIONS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


#: Some of the paths every document lists whatever the caller reads (the endpoints
#: check access themselves): scripts, approvals, workflows, metadata, views, sign-in.
PLATFORM_PATHS = {"/api/v1/scripts/{name}/dry-run", "/api/v1/scripts/runs", "/api/v1/data/{object}/{id}/approvals",
                  "/api/v1/approvals/inbox", "/api/v1/approvals/tasks/batch-approve",
                  "/api/v1/data/{object}/{id}/transitions", "/api/v1/data/{object}/{id}/transitions/{name}",
                  "/api/v1/meta", "/api/v1/meta/objects", "/api/v1/meta/publish", "/api/v1/views/{object}",
                  "/api/v1/auth/login", "/api/v1/auth/me", "/api/v1/users/{user_id}/delegations",
                  "/api/v1/openapi.json"}


def object_paths(doc: dict) -> set[str]:
    """The paths generated for concrete objects (``/api/v1/data/deal...``)."""
    return {p for p in doc["paths"] if p.startswith("/api/v1/data/") and not p.startswith("/api/v1/data/{")}

def spec_of(client) -> dict:
    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
    assert resp.mimetype == "application/json"
    return resp.json


def refs(node, found=None) -> set[str]:
    found = set() if found is None else found
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.add(node["$ref"])
        for v in node.values():
            refs(v, found)
    elif isinstance(node, list):
        for v in node:
            refs(v, found)
    return found


def resolve(doc: dict, ref: str):
    assert ref.startswith("#/"), ref
    node = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def check_structure(doc: dict) -> None:
    """The document is valid OpenAPI 3.1, and what a validator does not catch."""
    validate_openapi(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert isinstance(doc["paths"], dict)
    for ref in refs(doc):
        resolve(doc, ref)  # raises KeyError if dangling
    op_ids = []
    schemes = doc["components"]["securitySchemes"]
    for req in doc.get("security", []):
        assert set(req) <= set(schemes)
    for path, item in doc["paths"].items():
        assert path.startswith("/")
        templated = set(re.findall(r"{([^}]+)}", path))
        for method, op in item.items():
            assert method in OPERATIONS, method
            op_ids.append(op["operationId"])
            params = [resolve(doc, p["$ref"]) if "$ref" in p else p for p in op.get("parameters", [])]
            for p in params:
                assert p["in"] in ("query", "header", "path", "cookie") and p["name"]
                assert "schema" in p or "content" in p
                jsonschema.Draft202012Validator.check_schema(p.get("schema", {}))
            in_path = {p["name"] for p in params if p["in"] == "path"}
            assert in_path == templated, (path, method)
            assert all(p["required"] is True for p in params if p["in"] == "path")
            assert len({(p["name"], p["in"]) for p in params}) == len(params)
            assert op["responses"], (path, method)
            for code, resp in op["responses"].items():
                assert re.fullmatch(r"[1-5][0-9][0-9]|default", code)
                assert resp["description"]
                for media in resp.get("content", {}).values():
                    jsonschema.Draft202012Validator.check_schema(media["schema"])
            if "requestBody" in op:
                for media in op["requestBody"]["content"].values():
                    jsonschema.Draft202012Validator.check_schema(media["schema"])
    assert len(op_ids) == len(set(op_ids)), "operationId must be unique"
    for name, schema in doc["components"]["schemas"].items():
        assert re.fullmatch(r"[a-zA-Z0-9._-]+", name)
        jsonschema.Draft202012Validator.check_schema(schema)


def validator(doc: dict, component: str) -> jsonschema.Draft202012Validator:
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(doc, DRAFT202012))
    return jsonschema.Draft202012Validator({"$ref": f"urn:openapi#/components/schemas/{component}"},
                                           registry=registry)


def test_document_shape(api):
    doc = spec_of(api)
    check_structure(doc)
    assert doc["info"]["version"].endswith("+meta.1")
    for obj in ("account", "contact", "deal", "quote"):
        base = f"/api/v1/data/{obj}"
        assert set(doc["paths"][base]) == {"get", "post"}
        assert set(doc["paths"][f"{base}/{{id}}"]) == {"get", "patch", "delete"}
        assert set(doc["paths"][f"{base}/{{id}}/restore"]) == {"post"}
        assert set(doc["paths"][f"{base}/{{id}}/history"]) == {"get"}
        assert set(doc["paths"][f"{base}/deleted"]) == {"get"}  # the recycle bin
    assert len(object_paths(doc)) == 20
    assert PLATFORM_PATHS <= set(doc["paths"])
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "session"}


def test_deal_schemas(api):
    schemas = spec_of(api)["components"]["schemas"]
    deal, deal_in, deal_patch = schemas["Deal"], schemas["DealInput"], schemas["DealPatch"]
    fields = {"number", "name", "account", "contact", "amount", "stage", "probability", "close_date",
              "next_step_at", "tags", "notes", "details", "weighted_amount", "days_to_close", "lost_reason"}
    system = {"id", "created_at", "created_by", "updated_at", "updated_by", "owner_id", "row_version"}
    assert fields | system <= set(deal["properties"])
    assert set(deal_in["properties"]) == fields
    assert set(deal_patch["properties"]) == fields | {"row_version"}
    # Required on create: required fields without a default (stage defaults to prospecting).
    assert sorted(deal_in["required"]) == ["account", "name"]
    assert "required" not in deal_patch
    assert deal_in["additionalProperties"] is False
    props = deal_in["properties"]
    assert props["number"]["readOnly"] is True and deal["properties"]["id"]["readOnly"] is True
    assert props["name"]["maxLength"] == 200 and props["name"]["type"] == "string"
    assert set(props["amount"]["type"]) == {"string", "number", "null"} and props["amount"]["x-minimum"] == "0"
    assert props["stage"]["enum"][:2] == ["prospecting", "qualification"] and None in props["stage"]["enum"]
    assert props["tags"]["items"]["enum"] == ["strategic", "renewal", "upsell"]
    assert props["account"]["x-lookup"] == "account" and props["account"]["type"] == "integer"
    assert props["close_date"]["format"] == "date" and props["next_step_at"]["format"] == "date-time"
    assert props["name"]["description"] == "Deal name"
    assert "icontains" in props["name"]["x-filter-ops"] and props["details"]["x-filter-ops"] == ["is_null"]
    assert {o["value"] for o in props["stage"]["x-options"]} >= {"won", "lost"}
    # Formulas are read-only and say how they are computed; conditions are described.
    assert props["weighted_amount"]["readOnly"] is True and props["weighted_amount"]["x-stored"] is True
    assert props["days_to_close"]["x-formula"].startswith("date_diff(today(), close_date)")
    assert props["lost_reason"]["x-required-if"] == 'stage == "lost"'
    assert props["probability"]["x-default-expr"].startswith("case(stage")


def test_filter_grammar_is_described(api):
    doc = spec_of(api)
    text = doc["info"]["description"]
    for words in ('{"and": [...]}', '{"not": node}', "account.industry", "field__op=value", "$user.id",
                  "eq ne lt lte gt gte in nin contains icontains starts_with is_null between", "6 levels", "50 conditions"):
        assert words in text, words
    params = doc["components"]["parameters"]
    assert "field__op=value" in params["filter"]["description"]
    assert params["limit"]["schema"]["maximum"] == 500
    assert params["count"]["schema"]["enum"] == ["none", "exact", "estimate"]


def test_real_traffic_matches_the_schemas(api):
    doc = spec_of(api)
    acc = api.post("/api/v1/data/account", json={"name": "Acme", "industry": "software"}).json
    body = {"name": "Big", "account": acc["id"], "amount": 12.5, "tags": ["renewal"], "details": {"k": [1]},
            "next_step_at": "2026-01-31T09:30:00+08:00"}
    assert not list(validator(doc, "DealInput").iter_errors(body))
    assert list(validator(doc, "DealInput").iter_errors({"name": "x"}))  # account missing
    assert list(validator(doc, "DealInput").iter_errors({**body, "bogus": 1}))
    created = api.post("/api/v1/data/deal", json=body)
    assert created.status_code == 201
    record = api.get(f"/api/v1/data/deal/{created.json['id']}").json
    validator(doc, "Deal").validate(record)
    validator(doc, "Deal").validate(created.json)
    patch = {"stage": "won", "row_version": record["row_version"]}
    validator(doc, "DealPatch").validate(patch)
    updated = api.patch(f"/api/v1/data/deal/{record['id']}", json=patch).json
    validator(doc, "Deal").validate(updated)
    listing = api.get("/api/v1/data/deal").json
    list_schema = doc["paths"]["/api/v1/data/deal"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(doc, DRAFT202012))
    jsonschema.Draft202012Validator(_rebase(list_schema), registry=registry).validate(listing)
    # The 201 is a oneOf: a single record and a bulk answer each match exactly one branch.
    created_schema = doc["paths"]["/api/v1/data/deal"]["post"]["responses"]["201"]["content"]["application/json"][
        "schema"]
    bulk = api.post("/api/v1/data/deal", json=[{"name": "One", "account": acc["id"]},
                                                {"name": "Two", "account": acc["id"]}])
    assert bulk.status_code == 201 and len(bulk.json["data"]) == 2
    for answer in (created.json, bulk.json):
        jsonschema.Draft202012Validator(_rebase(created_schema), registry=registry).validate(answer)
    api.delete(f"/api/v1/data/deal/{record['id']}")
    history = api.get(f"/api/v1/data/deal/{record['id']}/history").json
    history_schema = doc["paths"]["/api/v1/data/deal/{id}/history"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    jsonschema.Draft202012Validator(_rebase(history_schema), registry=registry).validate(history)
    restored = api.post(f"/api/v1/data/deal/{record['id']}/restore").json
    validator(doc, "Deal").validate(restored)
    for bad in (api.get("/api/v1/data/deal/999"), api.post("/api/v1/data/deal", json={"name": 5}),
                api.get("/api/v1/data/deal?limit=0")):
        validator(doc, "Problem").validate(bad.json)


def test_error_statuses_are_listed(api):
    """What any request can cause (a long or malformed query string) is listed on every
    operation, what a body can cause on every one that takes one, and the statuses
    particular endpoints answer on them."""
    doc = spec_of(api)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"400", "414"} <= codes, (method, path)
            if "requestBody" in op:
                assert {"413", "415"} <= codes, (method, path)
    # Malformed bodies on approvals, transitions and dry runs (issue 12).
    for path in ("/api/v1/data/{object}/{id}/approvals", "/api/v1/approvals/tasks/{task}/approve",
                 "/api/v1/data/{object}/{id}/transitions/{name}", "/api/v1/scripts/{name}/dry-run"):
        assert "400" in doc["paths"][path]["post"]["responses"], path
    # A restore whose lookup names a deleted record; a create racing a publish.
    assert "409" in doc["paths"]["/api/v1/data/deal/{id}/restore"]["post"]["responses"]
    assert "409" in doc["paths"]["/api/v1/data/deal"]["post"]["responses"]
    assert "429" in doc["paths"]["/api/v1/auth/login"]["post"]["responses"]


def test_path_parameters_say_what_names_something(api):
    """``{object}`` is one of the objects the caller may read; ids are their column's range
    (records 64 bits, system rows such as users, approvals and tasks 32)."""
    doc = spec_of(api)

    def schema(path: str, method: str, name: str) -> dict:
        return next(p["schema"] for p in doc["paths"][path][method]["parameters"] if p["name"] == name)

    objects = schema("/api/v1/views/{object}", "get", "object")
    assert sorted(objects["enum"]) == ["account", "contact", "deal", "quote"]
    assert schema("/api/v1/data/{object}/{id}/approvals", "post", "object") == objects
    record_id = schema("/api/v1/data/deal/{id}", "get", "id")
    assert record_id == {"type": "integer", "minimum": 1, "maximum": MAX_RECORD_ID}
    assert schema("/api/v1/data/{object}/{id}/abilities", "get", "id") == record_id
    # Users, delegations, tokens, approvals and tasks are system rows, with their column's bound.
    system_id = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
    assert schema("/api/v1/approvals/{instance}", "get", "instance") == system_id
    assert schema("/api/v1/approvals/tasks/{task}/approve", "post", "task") == system_id
    assert schema("/api/v1/users/{user_id}/delegations", "get", "user_id") == system_id
    assert schema("/api/v1/auth/tokens/{token_id}", "delete", "token_id") == system_id
    # A new object's name is any name: the enum is for the endpoints that read one.
    assert schema("/api/v1/meta/objects/{name}", "put", "name") == {"type": "string"}
    assert api.get("/api/v1/views/invoice").status_code == 404


def _rebase(node):
    """Point local ``#/...`` refs of an inline schema at the registered document."""
    if isinstance(node, dict):
        return {k: (f"urn:openapi{v}" if k == "$ref" else _rebase(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [_rebase(v) for v in node]
    return node


def test_cached_per_metadata_version(api, monkeypatch):
    from loomwork.api import openapi as module

    calls = []
    real = module.build_spec
    monkeypatch.setattr(module, "build_spec", lambda *a, **kw: calls.append(a) or real(*a, **kw))
    first = spec_of(api)
    assert spec_of(api) == first and len(calls) == 1
    deal = {k: v for k, v in api.get("/api/v1/meta/objects/deal").json.items() if k not in ("version", "name")}
    deal["fields"]["region"] = {"type": "text", "max_length": 30}
    assert api.put("/api/v1/meta/objects/deal", json={"object": deal}).status_code == 200
    second = spec_of(api)
    assert len(calls) == 2
    assert second["info"]["version"].endswith("+meta.2")
    assert second["components"]["schemas"]["DealInput"]["properties"]["region"]["maxLength"] == 30
    assert "region" not in first["components"]["schemas"]["DealInput"]["properties"]
    assert spec_of(api) == second and len(calls) == 2
    check_structure(second)


def test_lists_only_objects_the_caller_may_read(crm_app, api, api_as, anon):
    from loomwork.runtime.context import Actor, Context

    role = {"label": {"en": "Deal reader"}, "permissions": {"deal": ["read"]}}
    assert api.put("/api/v1/meta/roles/dealer", json={"role": role}).status_code == 200
    st = crm_app.extensions["loomwork"]
    st.services.users.create(Context(st.platform.tenant("main"), Actor.system()), "dan", "dealer-password",
                             roles=("dealer",))
    dan = spec_of(api_as("dan"))
    check_structure(dan)
    assert object_paths(dan) == {"/api/v1/data/deal", "/api/v1/data/deal/{id}", "/api/v1/data/deal/{id}/restore",
                                 "/api/v1/data/deal/{id}/history", "/api/v1/data/deal/deleted"}
    assert set(dan["paths"]) - object_paths(dan) == set(spec_of(api)["paths"]) - object_paths(spec_of(api))
    assert PLATFORM_PATHS <= set(dan["paths"])
    assert not any(name.startswith(("Account", "Contact")) for name in dan["components"]["schemas"])
    assert len(object_paths(spec_of(api))) == 20
    assert len(object_paths(spec_of(api_as("vera")))) == 20
    assert anon.get("/api/v1/openapi.json").status_code == 401
    # What the document hides, the API refuses too.
    assert api_as("dan").get("/api/v1/data/account").status_code == 403


def test_component_names_never_collide(api):
    for name in ("problem", "deal_input", "dealinput"):
        obj = {"fields": {"title": {"type": "text"}}}
        assert api.put(f"/api/v1/meta/objects/{name}", json={"object": obj}).status_code == 200, name
    doc = spec_of(api)
    check_structure(doc)
    schemas = doc["components"]["schemas"]
    assert schemas["Problem"]["properties"]["detail"] == {"type": "string"}
    targets = {p: doc["paths"][f"/api/v1/data/{p}"]["get"]["responses"]["200"]["content"]["application/json"][
        "schema"]["properties"]["data"]["items"]["$ref"] for p in ("problem", "deal_input", "dealinput", "deal")}
    assert len(set(targets.values())) == 4
    assert "title" in resolve(doc, targets["problem"])["properties"]


def _pattern(rule: str) -> re.Pattern:
    """A Flask rule as a pattern of documented paths: each parameter is either a
    template (``{id}``) or a concrete name (an object, an action script)."""
    parts = re.split(r"<(?:[a-z]+:)?[a-z_]+>", rule)
    return re.compile(r"(?:\{[a-z_]+\}|[a-z][a-z0-9_]*)".join(map(re.escape, parts)))


def test_every_api_route_is_described(crm_app, api):
    """Walk Flask's URL map: every route under /api/v1, with each of its methods, is in
    the document, generically (``{object}``) or for the objects (and their action
    scripts) the caller may read."""
    doc = spec_of(api)
    missing = []
    for rule in crm_app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        pattern = _pattern(rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            if not any(pattern.fullmatch(path) and method.lower() in item for path, item in doc["paths"].items()):
                missing.append(f"{method} {rule.rule}")
    assert not missing, f"routes missing from the OpenAPI document: {missing}"


def test_admin_endpoints_are_tagged(api):
    doc = spec_of(api)
    tagged = {(path, method) for path, item in doc["paths"].items() for method, op in item.items()
              if "admin" in op["tags"]}
    for path, method in [("/api/v1/meta", "get"), ("/api/v1/meta/publish", "post"), ("/api/v1/meta/versions", "get"),
                         ("/api/v1/meta/objects/{name}", "put"), ("/api/v1/scripts/runs", "get"),
                         ("/api/v1/users/{user_id}/manager", "put")]:
        assert (path, method) in tagged, (path, method)
    assert ("/api/v1/meta/objects", "get") not in tagged and ("/api/v1/views/{object}", "get") not in tagged
    assert "admin" in {t["name"] for t in doc["tags"]}
    assert doc["paths"]["/api/v1/auth/login"]["post"]["security"] == []


def test_platform_answers_match_the_schemas(api):
    """Answers of the platform endpoints validate against the schemas they are given."""
    doc = spec_of(api)
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(doc, DRAFT202012))

    def check(path: str, method: str, resp, code: str = "200") -> None:
        assert resp.status_code == int(code), resp.get_data(as_text=True)[:300]
        schema = doc["paths"][path][method]["responses"][code]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator(_rebase(schema), registry=registry).validate(resp.json)

    check("/api/v1/auth/me", "get", api.get("/api/v1/auth/me"))
    check("/api/v1/meta/versions", "get", api.get("/api/v1/meta/versions"))
    check("/api/v1/meta/versions/{version}", "get", api.get("/api/v1/meta/versions/1"))
    check("/api/v1/views/{object}", "get", api.get("/api/v1/views/deal"))
    view = {"label": "Big", "filter": {"field": "amount", "op": "gte", "value": "1000"}, "sort": ["-amount"]}
    check("/api/v1/views/{object}", "post", api.post("/api/v1/views/deal", json=view), "201")
    acc = api.post("/api/v1/data/account", json={"name": "Acme"}).json
    record = api.post("/api/v1/data/deal", json={"name": "Big", "account": acc["id"]}).json
    check("/api/v1/data/{object}/{id}/abilities", "get", api.get(f"/api/v1/data/deal/{record['id']}/abilities"))
    deal = {k: v for k, v in api.get("/api/v1/meta/objects/deal").json.items() if k not in ("version", "name")}
    check("/api/v1/meta/objects/{name}", "put",
          api.put("/api/v1/meta/objects/deal", json={"object": deal, "dry_run": True}))
