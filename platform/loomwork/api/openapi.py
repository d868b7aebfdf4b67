"""``/api/v1/openapi.json``: OpenAPI 3.1 generated from the current metadata version.

Built with apispec from each object's marshmallow schema, cached on the compiled app
(so once per tenant and version), and filtered to what the caller may read.
"""
from __future__ import annotations

from typing import Any

import marshmallow as ma
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

import loomwork
from loomwork.metadata.model import label_text
from loomwork.runtime.compiled import CompiledApp, CompiledObject
from loomwork.runtime.fieldtypes import AwareDateTimeField, ExactDecimalField, JsonValueField
from loomwork.runtime.query import DEFAULT_LIMIT, MAX_LIMIT, OPERATORS

from ..auth import current_context
from ..state import state
from . import bp
from .jsonio import respond

FILTER_GRAMMAR = """\
Filter records either with the JSON filter AST in `filter` or with compact parameters.

**AST** (`filter={"and":[{"field":"stage","op":"eq","value":"won"},{"field":"amount","op":"gte","value":"1000"}]}`):
a node is `{"and": [...]}`, `{"or": [...]}`, `{"not": node}` or `{"field": path, "op": op, "value": v}`.
`path` is a field name or a dotted path through lookups (`account.industry`, at most 3 hops).
Operators: `eq ne lt lte gt gte in nin contains icontains starts_with is_null between`.
`in`/`nin` take a list, `between` takes `[low, high]` (inclusive), `is_null` takes true/false.
Variables: `"$user.id"`, `"$now"`, `"$today"` (write `"$$x"` for a literal `$x`).
Empty values: `ne`, `nin` and `not` keep records whose value is empty; other comparisons never match empty values.
At most 6 levels deep and 50 conditions.

**Compact form**: `field__op=value` (`amount__gte=1000&stage__in=new,won&account.name__icontains=acme`);
`field=value` means `eq`; lists are comma-separated; `null` is the empty value. All conditions are ANDed
(and ANDed with `filter` when both are given).
"""

PROBLEM = {"$ref": "#/components/schemas/Problem"}


def _problem_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/problem+json": {"schema": PROBLEM}}}


def _system_properties() -> dict[str, Any]:
    dt = {"type": "string", "format": "date-time"}
    return {
        "id": {"type": "integer", "readOnly": True},
        "created_at": {**dt, "readOnly": True},
        "created_by": {"type": ["integer", "null"], "readOnly": True},
        "updated_at": {**dt, "readOnly": True},
        "updated_by": {"type": ["integer", "null"], "readOnly": True},
        "owner_id": {"type": ["integer", "null"], "readOnly": True},
        "row_version": {"type": "integer", "description": "Optimistic concurrency: send it back (or If-Match) to update."},
    }


def _component(name: str) -> str:
    return "".join(p.capitalize() for p in name.split("_"))


def build_spec(app: CompiledApp, objects: list[str], locale: str = "en") -> dict[str, Any]:
    """The OpenAPI document for ``objects`` of ``app``."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Loomwork API", version=f"{loomwork.__version__}+meta.{app.version}", openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": "Generated from the tenant's metadata (version %d).\n\n%s" % (app.version, FILTER_GRAMMAR)},
        servers=[{"url": "/"}],
    )
    plugin.converter.field_mapping[ExactDecimalField] = ("string", "decimal")
    plugin.converter.field_mapping[AwareDateTimeField] = ("string", "date-time")
    plugin.converter.field_mapping[JsonValueField] = (None, None)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                               "description": "An API token: POST /api/v1/auth/tokens"})
    spec.components.security_scheme("session", {"type": "apiKey", "in": "cookie", "name": "loomwork_session"})
    spec.components.schema("Problem", {
        "type": "object",
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"},
                       "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                                  "description": "Per-field messages (422); bulk rows are keyed index.field."}},
    })
    params = {
        "filter": {"name": "filter", "in": "query", "schema": {"type": "string"},
                   "description": "JSON filter AST (see the API description)."},
        "sort": {"name": "sort", "in": "query", "schema": {"type": "string"},
                 "description": "Comma-separated fields, '-' for descending (at most 4)."},
        "fields": {"name": "fields", "in": "query", "schema": {"type": "string"},
                   "description": "Comma-separated fields to return (id and row_version always come)."},
        "limit": {"name": "limit", "in": "query",
                  "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
        "cursor": {"name": "cursor", "in": "query", "schema": {"type": "string"},
                   "description": "next_cursor of the previous page (keyset paging)."},
        "count": {"name": "count", "in": "query", "schema": {"enum": ["none", "exact", "estimate"], "default": "none"}},
        "search": {"name": "search", "in": "query", "schema": {"type": "string", "maxLength": 200},
                   "description": "Text searched in the object's search fields."},
    }
    for name, p in params.items():
        spec.components.parameter(name, p["in"], dict(p))
    errors = {str(code): _problem_response(text) for code, text in (
        ("400", "Malformed request or query"), ("401", "Not signed in"), ("403", "Not allowed"),
        ("404", "No such object or record"), ("409", "Stale row_version or conflicting state"),
        ("422", "Validation failed; errors per field"))}

    for name in objects:
        obj = app.object(name)
        comp = _component(name)
        spec.components.schema(f"{comp}Input", schema=_input_schema(obj))
        spec.components.schema(comp, {
            "allOf": [{"type": "object", "properties": _system_properties()}, {"$ref": f"#/components/schemas/{comp}Input"}],
            "description": label_text(obj.defn.label, locale, name),
        })
        ref = {"$ref": f"#/components/schemas/{comp}"}
        ref_in = {"$ref": f"#/components/schemas/{comp}Input"}
        tag = label_text(obj.defn.plural_label or obj.defn.label, locale, name)
        spec.path(path=f"/api/v1/data/{name}", operations={
            "get": {
                "tags": [tag], "summary": f"List {tag}", "operationId": f"list_{name}",
                "parameters": list(params),
                "responses": {"200": {"description": "A page of records", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "data": {"type": "array", "items": ref},
                        "next_cursor": {"type": ["string", "null"]},
                        "count": {"type": "integer"}, "count_kind": {"type": "string"}}}}}},
                    **{c: errors[c] for c in ("400", "401", "403", "404")}},
            },
            "post": {
                "tags": [tag], "summary": f"Create one {name} (object) or many (array, all or nothing)",
                "operationId": f"create_{name}",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [ref_in, {"type": "array", "items": ref_in, "maxItems": 1000}]}}}},
                "responses": {"201": {"description": "Created", "content": {"application/json": {"schema": {
                    "oneOf": [ref, {"type": "object", "properties": {"data": {"type": "array", "items": ref}}}]}}}},
                    **{c: errors[c] for c in ("400", "401", "403", "404", "422")}},
            },
        })
        id_param = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
        if_match = {"name": "If-Match", "in": "header", "schema": {"type": "string"},
                    "description": "The ETag you read; a stale one gives 409."}
        spec.path(path=f"/api/v1/data/{name}/{{id}}", operations={
            "get": {"tags": [tag], "summary": f"Get one {name}", "operationId": f"get_{name}", "parameters": [id_param],
                    "responses": {"200": {"description": "The record", "headers": {"ETag": {"schema": {"type": "string"}}},
                                          "content": {"application/json": {"schema": ref}}},
                                  **{c: errors[c] for c in ("401", "403", "404")}}},
            "patch": {"tags": [tag], "summary": f"Change fields of a {name}", "operationId": f"update_{name}",
                      "parameters": [id_param, if_match],
                      "requestBody": {"required": True, "content": {"application/json": {"schema": ref_in}}},
                      "responses": {"200": {"description": "The updated record", "content": {"application/json": {"schema": ref}}},
                                    **{c: errors[c] for c in ("400", "401", "403", "404", "409", "422")}}},
            "delete": {"tags": [tag], "summary": f"Delete a {name} (soft; restorable)", "operationId": f"delete_{name}",
                       "parameters": [id_param, if_match],
                       "responses": {"204": {"description": "Deleted"},
                                     **{c: errors[c] for c in ("401", "403", "404", "409")}}},
        })
        spec.path(path=f"/api/v1/data/{name}/{{id}}/restore", operations={"post": {
            "tags": [tag], "summary": f"Restore a deleted {name}", "operationId": f"restore_{name}",
            "parameters": [id_param],
            "responses": {"200": {"description": "Restored", "content": {"application/json": {"schema": ref}}},
                          **{c: errors[c] for c in ("401", "403", "404", "422")}}}})
        spec.path(path=f"/api/v1/data/{name}/{{id}}/history", operations={"get": {
            "tags": [tag], "summary": f"Field history of a {name}", "operationId": f"history_{name}",
            "parameters": [id_param],
            "responses": {"200": {"description": "Newest first"}, **{c: errors[c] for c in ("401", "403", "404")}}}})
    doc = spec.to_dict()
    doc["security"] = [{"bearer": []}, {"session": []}]
    return doc


def _input_schema(obj: CompiledObject) -> ma.Schema:
    """The writable fields, with metadata (labels, help, required) the plain schema lacks."""
    fields = {}
    for name, f in obj.fields.items():
        field = obj.schema.fields[name]
        meta = {"description": label_text(f.defn.help, "en", "") or f.defn.title()}
        if f.defn.type == "autonumber":
            meta["readOnly"] = True
        if f.defn.type in ("choice", "multi_choice"):
            meta["x-options"] = [{"value": o["value"], "label": label_text(o.get("label"), "en", o["value"])}
                                 for o in f.defn.prop("options", ())]
        if f.defn.type == "lookup":
            meta["x-lookup"] = f.defn.prop("target")
        clone = type(field).__new__(type(field))
        clone.__dict__.update(field.__dict__)
        clone.metadata = {**field.metadata, **meta}
        clone.required = f.defn.required and f.defn.type != "autonumber"
        fields[name] = clone
    return ma.Schema.from_dict(fields, name=f"{obj.name}_openapi")()


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI document of the caller's tenant, for the objects the caller may read."""
    ctx = current_context()
    st = state()
    app = st.services.runtime.compiled(ctx.tenant)
    readable = st.services.permissions.readable_objects(ctx, app)
    key = "openapi:" + ",".join(readable)
    return respond(app.artefact(key, lambda: build_spec(app, readable)))
