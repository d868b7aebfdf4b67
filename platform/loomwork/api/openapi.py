"""``/api/v1/openapi.json``: OpenAPI 3.1 generated from the current metadata version.

Every endpoint under ``/api/v1`` is described: the record endpoints here, per object;
the rest (sign-in, metadata, views, users, approvals, workflows, scripts) in
:mod:`.openapi_platform`.

Built with apispec from each object's marshmallow schema, cached on the compiled app
(so once per tenant and version), and filtered to what the caller may read.

Each object ``deal`` has three component schemas: ``Deal`` (a record as the API returns
it), ``DealInput`` (the body of a create: required fields without a default are
required) and ``DealPatch`` (the body of a change: any subset, plus ``row_version``).
"""
from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

import loomwork
from loomwork.metadata import filters
from loomwork.metadata.filters import MAX_CONDITIONS, MAX_DEPTH, MAX_LIST, MAX_PATH_HOPS, OPERATORS
from loomwork.metadata.model import label_text
from loomwork.runtime.compiled import READ_MAX_AGE, CompiledApp, CompiledObject
from loomwork.runtime.fieldtypes import AwareDateTimeField, ExactDecimalField, JsonValueField
from loomwork.runtime.query import DEFAULT_LIMIT, MAX_LIMIT
from loomwork.runtime.titles import TITLE_SUFFIX

from ..auth import current_context
from ..inputs import MAX_QUERY_BYTES
from ..state import state
from . import bp
from .jsonio import respond
from .openapi_platform import BODY_CODES, RECORD_ID, REQUEST_CODES, SCRIPT_CODES, add_platform_paths, with_codes

FILTER_GRAMMAR = f"""\
Filter records either with the JSON filter AST in `filter` or with compact parameters.

**AST** (`filter={{"and":[{{"field":"stage","op":"eq","value":"won"}},{{"field":"amount","op":"gte","value":"1000"}}]}}`):
a node is `{{"and": [...]}}`, `{{"or": [...]}}`, `{{"not": node}}` or `{{"field": path, "op": op, "value": v}}`.
`path` is a field name or a dotted path through lookups (`account.industry`, at most {MAX_PATH_HOPS} hops).
Operators: `{' '.join(OPERATORS)}` (each field lists the ones it takes in `x-filter-ops`):
{chr(10).join(f"- `{op.name}`: {op.doc}" for op in OPERATORS.values())}

`in`/`nin` take a list (at most {MAX_LIST} values), `between` takes `[low, high]` (inclusive),
`is_null` takes true/false; a text operand has at most {filters.MAX_TEXT} characters.
The schema `Filter` describes the tree.
Variables: `"$user.id"`, `"$now"`, `"$today"` (write `"$$x"` for a literal `$x`).
Empty values: `ne`, `nin` and `not` keep records whose value is empty; other comparisons never match empty values.
At most {MAX_DEPTH} levels deep and {MAX_CONDITIONS} conditions.

**Compact form**: `field__op=value` (`amount__gte=1000&stage__in=new,won&account.name__icontains=acme`);
`field=value` means `eq`; lists are comma-separated; `null` is the empty value. All conditions are ANDed
(and ANDed with `filter` when both are given).
"""

PROBLEM = {"$ref": "#/components/schemas/Problem"}
DECIMAL_TYPES = (ExactDecimalField,)


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
        "deleted_at": {**dt, "readOnly": True, "description": "Only on deleted records (history, restore)."},
    }


def _component_names(objects: list[str]) -> dict[str, str]:
    """``deal_item`` -> ``DealItem``, made unique (also against the fixed ``Problem``)."""
    taken = {"Problem", "Filter"}
    out = {}
    for name in objects:
        base = "".join(p.capitalize() for p in name.split("_")) or name
        comp = base
        n = 2
        while any(c in taken for c in (comp, f"{comp}Input", f"{comp}Patch")) or comp in ("ProblemInput",):
            comp = f"{base}{n}"
            n += 1
        taken.update((comp, f"{comp}Input", f"{comp}Patch"))
        out[name] = comp
    return out


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    prop = dict(prop)
    if isinstance(prop.get("type"), list):
        kinds = [t for t in prop["type"] if t != "null"]
        prop["type"] = kinds[0] if len(kinds) == 1 else kinds
    if "enum" in prop:
        prop["enum"] = [v for v in prop["enum"] if v is not None]
    return prop


def _field_properties(obj: CompiledObject, converter, locale: str) -> dict[str, dict[str, Any]]:
    """JSON Schema of each field as it travels (the same for input and output)."""
    out = {}
    for name, f in obj.fields.items():
        field = obj.schema.fields[name]
        prop = converter.field2property(field)
        prop["description"] = label_text(f.defn.help, locale, "") or f.defn.title(locale)
        if isinstance(field, DECIMAL_TYPES):
            # Written as a JSON number or a string; always returned as a string (no binary floats).
            prop["type"] = ["string", "number", "null"]
            prop["pattern"] = r"^-?[0-9]+(\.[0-9]+)?$"
            prop.pop("x-minimum", None)
            prop.pop("x-maximum", None)
            for bound in ("min", "max"):
                if f.defn.prop(bound) is not None:
                    prop[f"x-{bound}imum"] = str(f.defn.prop(bound))
        if isinstance(field, JsonValueField):
            prop.pop("type", None)
        if f.ftype.system_set:
            prop["readOnly"] = True
        if name in obj.rules.formulas:
            prop["x-formula"] = f.defn.prop("expression")
            prop["x-stored"] = f.column is not None
        for key in ("visible_if", "required_if", "read_only_if", "default_expr"):
            if getattr(f.defn, key):
                prop[f"x-{key.replace('_', '-')}"] = getattr(f.defn, key)
        if f.defn.read_only:
            prop["x-read-only-for-non-admins"] = True
        if f.ftype.has_options:
            prop["x-options"] = [{"value": o["value"], "label": label_text(o.get("label"), locale, o["value"])}
                                 for o in f.defn.prop("options", ())]
        if name in obj.lookups:
            prop["x-lookup"] = obj.lookups[name]
        prop["x-filter-ops"] = sorted(f.ftype.field_ops(f.defn))
        prop.pop("default", None)
        out[name] = prop
    return out


def _schemas(obj: CompiledObject, converter, locale: str) -> tuple[dict, dict, dict]:
    """(record, create body, patch body) schemas of one object."""
    props = _field_properties(obj, converter, locale)
    required = [n for n, f in obj.fields.items()
                if f.defn.required and f.defn.default is None and not f.ftype.system_set
                and not f.defn.default_expr and not f.defn.visible_if]
    create_props = {n: (_not_null(p) if n in required else p) for n, p in props.items()}
    titles = {f"{n}{TITLE_SUFFIX}": {
        "type": ["string", "null"], "readOnly": True,
        "description": f"With expand={n}: the title of the {target} record {n} names; null when {n} is empty "
                       f"or names no {target} record you may read"} for n, target in obj.lookups.items()}
    record = {"type": "object", "properties": {**_system_properties(), **props, **titles},
              "required": ["id", "row_version"], "description": label_text(obj.defn.label, locale, obj.name)}
    create = {"type": "object", "properties": create_props, "additionalProperties": False}
    if required:
        create["required"] = required
    patch = {"type": "object", "additionalProperties": False,
             "properties": {**props, "row_version": {
                 "type": "integer", "description": "The version you read; a stale one gives 409 (like If-Match)."}}}
    return record, create, patch


def build_spec(app: CompiledApp, objects: list[str], locale: str = "en") -> dict[str, Any]:
    """The OpenAPI document for ``objects`` of ``app``."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Loomwork API", version=f"{loomwork.__version__}+meta.{app.version}", openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": f"Generated from the tenant's metadata (version {app.version}).\n\n{FILTER_GRAMMAR}"},
        servers=[{"url": "/"}],
    )
    plugin.converter.field_mapping[ExactDecimalField] = ("string", "decimal")
    plugin.converter.field_mapping[AwareDateTimeField] = ("string", "date-time")
    plugin.converter.field_mapping[JsonValueField] = (None, None)
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer",
                                               "description": "An API token: POST /api/v1/auth/tokens"})
    spec.components.security_scheme("session", {
        "type": "apiKey", "in": "cookie", "name": "loomwork_session",
        "description": "A browser session from POST /api/v1/auth/login; unsafe requests must send "
                       "its csrf_token as the X-CSRF-Token header."})
    spec.components.schema("Problem", {
        "type": "object",
        "properties": {"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                       "detail": {"type": "string"},
                       "errors": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}},
                                  "description": "Per-field messages (422); bulk rows are keyed index.field."}},
        "required": ["title", "status", "detail"],
    })
    spec.components.schema("Filter", filters.json_schema())
    params = {
        "filter": {"name": "filter", "in": "query",
                   "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Filter"}}},
                   "description": "JSON filter AST. " + FILTER_GRAMMAR},
        "sort": {"name": "sort", "in": "query", "schema": {"type": "string"},
                 "description": "Comma-separated fields, '-' for descending (at most 4). A lookup sorts by the "
                                "title of the record it names (by id when you may not read its object); a "
                                "path (account.industry) by the field it ends at."},
        "fields": {"name": "fields", "in": "query", "schema": {"type": "string"},
                   "description": "Comma-separated fields to return (id and row_version always come)."},
        "limit": {"name": "limit", "in": "query",
                  "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}},
        "cursor": {"name": "cursor", "in": "query", "schema": {"type": "string"},
                   "description": "next_cursor of the previous page (keyset paging)."},
        "count": {"name": "count", "in": "query", "schema": {"enum": ["none", "exact", "estimate"], "default": "none"}},
        "search": {"name": "search", "in": "query", "schema": {"type": "string", "maxLength": 200},
                   "description": "Text searched in the object's search fields."},
        "expand": {"name": "expand", "in": "query", "schema": {"type": "string"},
                   "description": f"Comma-separated lookup fields: each record gets `<field>{TITLE_SUFFIX}`, the "
                                  f"title of the record the lookup names (null if you may not read it). One "
                                  f"query per target object for the whole page."},
    }
    for name, p in params.items():
        spec.components.parameter(name, p["in"], dict(p))
    errors = {str(code): _problem_response(text) for code, text in (
        ("400", "Malformed request or query"), ("401", "Not signed in"), ("403", "Not allowed"),
        ("404", "No such object or record"), ("409", "Stale row_version or conflicting state"),
        ("413", "Request body too large"), ("414", f"Query string longer than {MAX_QUERY_BYTES} bytes"),
        ("415", "Body is not JSON"),
        ("422", "Validation failed; errors per field"),
        ("429", "Too many password checks; wait the Retry-After seconds"),
        ("503", "The workspace's script workers are busy; try again in a moment"))}

    def codes(*own: str, body: bool = False, scripts: bool = False) -> dict[str, Any]:
        """The error responses of an operation: its own, any request's, a JSON body's and,
        where scripts may run (``scripts``), a busy sandbox's."""
        return {c: errors[c] for c in with_codes(own, REQUEST_CODES, BODY_CODES if body else (),
                                                 SCRIPT_CODES if scripts else ())}

    etag_header = {"ETag": {"description": 'The record\'s version, "<id>-<row_version>".',
                            "schema": {"type": "string"}}}
    history_item = {"type": "object", "properties": {
        "action": {"enum": ["create", "update", "delete", "restore"]},
        "field": {"type": ["string", "null"]}, "old": {}, "new": {},
        "changed_by": {"type": ["integer", "null"]}, "changed_at": {"type": "string", "format": "date-time"}}}

    names = _component_names(objects)
    for name in objects:
        obj = app.object(name)
        comp = names[name]
        record, create, patch = _schemas(obj, plugin.converter, locale)
        spec.components.schema(comp, record)
        spec.components.schema(f"{comp}Input", create)
        spec.components.schema(f"{comp}Patch", patch)
        ref = {"$ref": f"#/components/schemas/{comp}"}
        ref_in = {"$ref": f"#/components/schemas/{comp}Input"}
        ref_patch = {"$ref": f"#/components/schemas/{comp}Patch"}
        tag = label_text(obj.defn.plural_label or obj.defn.label, locale, name)
        spec.path(path=f"/api/v1/data/{name}", operations={
            "get": {
                "tags": [tag], "summary": f"List {tag}", "operationId": f"list_{name}",
                "description": "Besides the parameters below, any `field__op=value` query parameter filters "
                               "(see the compact form in the API description).",
                "parameters": list(params),
                "responses": {"200": {"description": "A page of records", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {
                        "data": {"type": "array", "items": ref},
                        "next_cursor": {"type": ["string", "null"]},
                        "count": {"type": "integer"}, "count_kind": {"enum": ["exact", "estimate"]}}}}}},
                    **codes("401", "403", "404")},
            },
            "post": {
                "tags": [tag], "summary": f"Create one {name} (object) or many (array, all or nothing)",
                "operationId": f"create_{name}",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "oneOf": [ref_in, {"type": "array", "items": ref_in, "maxItems": 1000}]}}}},
                "responses": {"201": {"description": "Created", "headers": etag_header,
                                      "content": {"application/json": {"schema": {
                    # A record always has an id; the bulk answer has only data: each matches one branch.
                    "oneOf": [ref, {"type": "object", "properties": {"data": {"type": "array", "items": ref}},
                                    "required": ["data"], "additionalProperties": False}]}}}},
                    **codes("401", "403", "404", "409", "422", body=True, scripts=True)},
            },
        })
        id_param = {"name": "id", "in": "path", "required": True, "schema": RECORD_ID}
        if_match = {"name": "If-Match", "in": "header", "schema": {"type": "string"},
                    "description": "The ETag you read; a stale one gives 409."}
        if_none_match = {"name": "If-None-Match", "in": "header", "schema": {"type": "string"},
                         "description": "The ETag you have; 304 if the record has not changed."}
        spec.path(path=f"/api/v1/data/{name}/{{id}}", operations={
            "get": {"tags": [tag], "summary": f"Get one {name}", "operationId": f"get_{name}",
                    "description": "With `expand`, the answer is never 304: the titles are other records' "
                                   "values, which the ETag does not cover.",
                    "parameters": [id_param, if_none_match, "expand"],
                    "responses": {"200": {"description": "The record", "headers": etag_header,
                                          "content": {"application/json": {"schema": ref}}},
                                  "304": {"description": "Not modified (If-None-Match)", "headers": etag_header},
                                  **codes("401", "403", "404")}},
            "patch": {"tags": [tag], "summary": f"Change fields of a {name}", "operationId": f"update_{name}",
                      "parameters": [id_param, if_match],
                      "requestBody": {"required": True, "content": {"application/json": {"schema": ref_patch}}},
                      "responses": {"200": {"description": "The updated record", "headers": etag_header,
                                            "content": {"application/json": {"schema": ref}}},
                                    **codes("401", "403", "404", "409", "422", body=True, scripts=True)}},
            "delete": {"tags": [tag], "summary": f"Delete a {name} (soft; restorable)", "operationId": f"delete_{name}",
                       "parameters": [id_param, if_match],
                       "responses": {"204": {"description": "Deleted"},
                                     **codes("400", "401", "403", "404", "409", scripts=True)}},
        })
        spec.path(path=f"/api/v1/data/{name}/{{id}}/restore", operations={"post": {
            "tags": [tag], "summary": f"Restore a deleted {name}", "operationId": f"restore_{name}",
            "description": "A record that is not deleted is answered as it is. 409 when a lookup of the record "
                           "names a deleted record (restore that one first); 422 when one of its unique values "
                           "has been taken since.",
            "parameters": [id_param],
            "responses": {"200": {"description": "Restored", "headers": etag_header,
                                  "content": {"application/json": {"schema": ref}}},
                          **codes("401", "403", "404", "409", "422", scripts=True)}}})
        spec.path(path=f"/api/v1/data/{name}/deleted", operations={"get": {
            "tags": [tag], "summary": f"Deleted {tag} (the recycle bin)", "operationId": f"list_deleted_{name}",
            "description": "The list's parameters; the last deleted first unless `sort` is given (deleting "
                           "sets `updated_at` and `updated_by`). Restore one with POST .../{id}/restore "
                           "(needs the delete permission).",
            "parameters": list(params),
            "responses": {"200": {"description": "A page of deleted records", "content": {"application/json": {
                "schema": {"type": "object", "properties": {
                    "data": {"type": "array", "items": ref}, "next_cursor": {"type": ["string", "null"]},
                    "count": {"type": "integer"}, "count_kind": {"enum": ["exact", "estimate"]}}}}}},
                **codes("401", "403", "404")}}})
        spec.path(path=f"/api/v1/data/{name}/{{id}}/history", operations={"get": {
            "tags": [tag], "summary": f"Field history of a {name}", "operationId": f"history_{name}",
            "parameters": [id_param],
            "responses": {"200": {"description": "Newest first", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"data": {"type": "array", "items": history_item}}}}}},
                **codes("401", "403", "404")}}})
        for script in app.meta.scripts_for(name, action=True):
            spec.path(path=f"/api/v1/data/{name}/{{id}}/actions/{script.name}", operations={"post": {
                "tags": [tag], "summary": script.title(locale), "operationId": f"action_{name}_{script.name}",
                "description": "Runs the action script on the record; its writes are saved together or not at all.",
                "parameters": [id_param],
                "requestBody": {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"params": {"type": "object", "description": "Passed to the script as params"}}}}}},
                "responses": {"200": {"description": "Done", "content": {"application/json": {"schema": {
                    "type": "object", "properties": {"result": {"description": "The script's result"},
                                                     "record": ref, "log": {"type": "string"}}}}}},
                              **codes("401", "403", "404", "409", "422", body=True, scripts=True)}}})
    add_platform_paths(spec, errors, objects)
    doc = spec.to_dict()
    doc["security"] = [{"bearer": []}, {"session": []}]
    return doc


@bp.get("/openapi.json")
def openapi_document():
    """The OpenAPI document of the caller's tenant, for the objects the caller may read."""
    ctx = current_context()
    st = state()
    app = st.services.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
    readable = st.services.permissions.readable_objects(ctx, app)
    key = "openapi:" + ",".join(readable)
    return respond(app.artefact(key, lambda: build_spec(app, readable)))
