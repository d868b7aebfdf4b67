"""The OpenAPI description of the endpoints that are the same for every tenant: sign-in
and tokens, metadata, saved views and layouts, managers and delegations, approvals,
workflow transitions, scripts and the document itself.

The record endpoints (``/data/<object>``) are generated per object in :mod:`.openapi`.
Each endpoint is one :func:`_op` call; endpoints only administrators may call are
tagged ``admin``. ``tests/test_api_openapi.py`` walks Flask's URL map and fails for a
route under ``/api/v1`` that is not described here or there.
"""
from __future__ import annotations

from typing import Any

from apispec import APISpec

from loomwork.metadata.validation import SCHEMA_FILES
from loomwork.runtime.participants import MAX_RECORD_ID
from loomwork.runtime.scripts import MAX_RUNS_PAGE
from loomwork.runtime.systables import MAX_ID
from loomwork.runtime.users import TOKEN_CACHE_SECONDS

#: Tags in the order a reader meets them; ``admin`` marks administrator-only endpoints.
TAGS = [
    {"name": "auth", "description": "Browser sessions, the current user, passwords and API tokens"},
    {"name": "meta", "description": "Metadata: objects, roles, plans, publishing, versions"},
    {"name": "views", "description": "Saved list views and form layouts, as the generated pages use them"},
    {"name": "users", "description": "Managers and delegations (who approves for whom)"},
    {"name": "approvals", "description": "Approval processes, tasks and the inbox"},
    {"name": "workflows", "description": "Status transitions of a record"},
    {"name": "scripts", "description": "Script dry runs and the run log"},
    {"name": "admin", "description": "Only administrators may call these"},
]

_TEXT = {"type": "string", "maxLength": 4000}
_ANY_OBJECT = {"type": "object"}
_WRITE_OPTIONS = {
    "comment": {"type": "string", "maxLength": 2000, "description": "Recorded with the version"},
    "base_version": {"type": "integer", "minimum": 0,
                     "description": "The version you edited; 409 if someone published since"},
    "dry_run": {"type": "boolean", "description": "Return the plan, change nothing"},
    "update_dependents": {"type": "boolean",
                          "description": "Rewrite expressions that use a renamed field instead of refusing"},
}


#: What any request may answer, whatever its operation: a query string longer than the
#: request guard reads (414) or holding NUL characters (400); see :mod:`loomwork.inputs`.
REQUEST_CODES = ("400", "414")
#: What every operation that reads a JSON body may answer besides: a body that is not JSON
#: or holds what no field stores (400), one that is too large (413), one not sent as JSON
#: (415). The one list of them: :mod:`.openapi` uses it for the record endpoints.
BODY_CODES = ("400", "413", "415")
#: What an operation that may run a script adds: 503 when the tenant's share of the script
#: workers stays busy or its queue is full (:class:`loomwork.runtime.sandbox.quota.SandboxBusy`).
#: Record writes run before/after-save scripts; metadata writes compile scripts in a worker.
SCRIPT_CODES = ("503",)


#: A record's id in a path: other values name nothing (404).
RECORD_ID = {"type": "integer", "minimum": 1, "maximum": MAX_RECORD_ID}
#: The id of a system row in a path (a user, delegation, token, approval or task).
SYSTEM_ID = {"type": "integer", "minimum": 1, "maximum": MAX_ID}


def object_name(objects: list[str]) -> dict[str, Any]:
    """An object's name in a path: one of ``objects`` (those the caller may read; others
    answer 404, or 403 where the endpoint says so)."""
    return {"type": "string", "enum": list(objects)} if objects else {"type": "string"}


def with_codes(codes: tuple[str, ...], *extra: tuple[str, ...]) -> tuple[str, ...]:
    """``codes`` and ``extra`` as one sorted tuple without repeats."""
    return tuple(sorted(set(codes).union(*extra)))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _schemas(spec: APISpec) -> None:
    """Component schemas the platform endpoints answer with."""
    spec.components.schema("User", {
        "type": "object", "description": "A user of the tenant",
        "properties": {"id": {"type": "integer"}, "username": {"type": "string"},
                       "email": {"type": ["string", "null"]}, "full_name": {"type": ["string", "null"]},
                       "roles": {"type": "array", "items": {"type": "string"}},
                       "locale": {"type": ["string", "null"]}, "active": {"type": "boolean"},
                       "manager_id": {"type": ["integer", "null"]},
                       "time_zone": {"type": ["string", "null"],
                                     "description": "IANA name pages show times in; null until known"}},
        "required": ["id", "username", "roles"]})
    spec.components.schema("Plan", {
        "type": "object", "description": "What publishing a document does: typed operations, each instant, "
                                         "fast (DDL without a rewrite) or heavy (a background job)",
        "properties": {
            "old_version": {"type": "integer"}, "change": {"enum": ["instant", "fast", "heavy"]},
            "operations": {"type": "array", "items": {"type": "object", "properties": {
                "kind": {"type": "string"}, "change": {"enum": ["instant", "fast", "heavy"]},
                "description": {"type": "string"}, "object": {"type": ["string", "null"]},
                "field": {"type": ["string", "null"]}, "detail": _ANY_OBJECT}}},
            "warnings": {"type": "array", "items": _ANY_OBJECT}},
        "required": ["old_version", "change", "operations"]})
    spec.components.schema("PublishResult", {
        "type": "object", "description": "The version published (the current one when nothing changed) and "
                                         "what it applied; with dry_run, the plan only",
        "properties": {"version": {"type": "integer"}, "dry_run": {"type": "boolean"}, "plan": _ref("Plan")}})
    spec.components.schema("VersionSummary", {
        "type": "object",
        "properties": {"version": {"type": "integer"}, "created_at": {"type": "string", "format": "date-time"},
                       "created_by": {"type": "string"}, "comment": {"type": "string"},
                       "changes": {"type": "integer"}},
        "required": ["version", "created_at", "created_by"]})
    spec.components.schema("View", {
        "type": "object", "description": "A saved list view: a package's (key = its name), shared or personal "
                                         "(key = the row id)",
        "properties": {"key": {"type": "string"}, "label": {}, "source": {"enum": ["package", "shared", "personal"]},
                       "owner_id": {"type": ["integer", "null"]},
                       "definition": {"type": "object", "description": "A view document: columns, filter, "
                                                                       "sort, page_size, search "
                                                                       "(GET /api/v1/meta/schemas/view)",
                                      "properties": {"filter": _ref("Filter")}}},
        "required": ["key", "source", "definition"]})


def _op(tags: list[str], summary: str, op_id: str, *, path: dict[str, Any] | None = None,
        query: dict[str, Any] | None = None, body: dict[str, Any] | None = None, body_required: bool = False,
        ok: str = "200", ok_schema: dict[str, Any] | None = None, ok_text: str = "Done",
        codes: tuple[str, ...] = ("401",), errors: dict[str, Any], description: str | None = None,
        public: bool = False) -> dict[str, Any]:
    """One operation. ``path``/``query``: parameter name -> schema (or ``(schema,
    description)``); ``body``: the JSON object's properties; ``public``: no sign-in;
    ``codes``: its own error statuses (those of any request and of a body are added)."""
    codes = with_codes(codes, REQUEST_CODES, BODY_CODES if body is not None else ())
    params = []
    for where, group in (("path", path or {}), ("query", query or {})):
        for name, spec in group.items():
            schema, text = spec if isinstance(spec, tuple) else (spec, None)
            p: dict[str, Any] = {"name": name, "in": where, "schema": schema}
            if where == "path":
                p["required"] = True
            if text:
                p["description"] = text
            params.append(p)
    response: dict[str, Any] = {"description": ok_text}
    if ok_schema is not None:
        response["content"] = {"application/json": {"schema": ok_schema}}
    out: dict[str, Any] = {"tags": tags, "summary": summary, "operationId": op_id,
                           "responses": {ok: response, **{c: errors[c] for c in codes}}}
    if description:
        out["description"] = description
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "properties": body}}}}
    if public:
        out["security"] = []
    return out


def add_platform_paths(spec: APISpec, errors: dict[str, Any], objects: list[str]) -> None:
    """Describe every endpoint that is the same for every object; ``objects``: the names
    the caller may read, which the endpoints' ``{object}`` takes."""
    obj = object_name(objects)
    _schemas(spec)
    for tag in TAGS:
        spec.tag(tag)
    _auth_paths(spec, errors)
    _token_paths(spec, errors)
    _meta_paths(spec, errors, obj)
    _view_paths(spec, errors, obj)
    _user_paths(spec, errors)
    _approval_paths(spec, errors, obj)
    _script_paths(spec, errors, obj)
    spec.path(path="/api/v1/openapi.json", operations={"get": _op(
        ["meta"], "This document, for the objects you may read", "openapi_document",
        ok_text="OpenAPI 3.1", ok_schema=_ANY_OBJECT, errors=errors)})


def _auth_paths(spec: APISpec, errors: dict[str, Any]) -> None:
    session = {"type": "object", "properties": {"user": _ref("User"), "tenant": {"type": "string"},
                                                "csrf_token": {"type": "string"}}}
    spec.path(path="/api/v1/auth/login", operations={"post": _op(
        ["auth"], "Start a browser session", "login", public=True, body_required=True,
        body={"username": {"type": "string", "maxLength": 200}, "password": {"type": "string", "maxLength": 1000},
              "tenant": {"type": "string", "maxLength": 64, "description": "The workspace (default: the default "
                                                                          "tenant)"}},
        ok_schema=session, ok_text="Signed in; send csrf_token as X-CSRF-Token with unsafe requests",
        codes=("401", "422", "429"), errors=errors)})
    spec.path(path="/api/v1/auth/logout", operations={"post": _op(
        ["auth"], "End the browser session", "logout", public=True, ok="204", ok_text="Signed out",
        codes=("403",), errors=errors)})
    spec.path(path="/api/v1/auth/me", operations={"get": _op(
        ["auth"], "Who I am", "me", ok_schema=session, ok_text="The user (and, for a session, its CSRF token)",
        errors=errors)})
    spec.path(path="/api/v1/auth/password", operations={"post": _op(
        ["auth"], "Change my password", "change_password", body_required=True,
        body={"old_password": {"type": "string"}, "new_password": {"type": "string"}},
        ok="204", ok_text="Changed", codes=("401", "422", "429"), errors=errors)})
    spec.path(path="/api/v1/auth/tokens", operations={"post": _op(
        ["auth"], "Create an API token (shown only in this answer)", "create_token", body_required=True,
        body={"name": {"type": "string", "maxLength": 200}}, ok="201", ok_text="The token",
        ok_schema={"type": "object", "properties": {"token": {"type": "string"}}},
        codes=("401", "422"), errors=errors)})


def _token_paths(spec: APISpec, errors: dict[str, Any]) -> None:
    """Listing and revoking API tokens (creating one is with the other ``auth`` paths)."""
    stamp = {"type": ["string", "null"], "format": "date-time"}
    listed = {"type": "object", "properties": {"data": {"type": "array", "items": {
        "type": "object", "description": "A token without its secret",
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                       "hint": {"type": "string", "description": "The token's last characters"},
                       "created_at": {"type": "string", "format": "date-time"}, "expires_at": stamp,
                       "revoked_at": {**stamp, "description": "When it was revoked; null while it works"}},
        "required": ["id", "name", "hint", "created_at", "revoked_at"]}}}}
    spec.path(path="/api/v1/auth/tokens", operations={"get": _op(
        ["auth"], "My API tokens, revoked ones too", "list_tokens", ok_schema=listed, errors=errors)})
    spec.path(path="/api/v1/auth/tokens/{token_id}", operations={"delete": _op(
        ["auth"], "Revoke one of my API tokens (administrators: anyone's)", "revoke_token",
        path={"token_id": SYSTEM_ID}, ok="204", ok_text="Revoked",
        description=f"The token stops working at once in the process that answers and within "
                    f"{TOKEN_CACHE_SECONDS:g} seconds in the others. Changing a password keeps a user's tokens; "
                    f"revoke them here.",
        codes=("401", "403", "404"), errors=errors)})
    spec.path(path="/api/v1/users/{user_id}/tokens", operations={"get": _op(
        ["auth"], "A user's API tokens (my own, or anyone's as an administrator)", "user_tokens",
        path={"user_id": SYSTEM_ID}, ok_schema=listed, codes=("401", "403", "404"),
        errors=errors)})


def _meta_paths(spec: APISpec, errors: dict[str, Any], obj: dict[str, Any]) -> None:
    admin = ["meta", "admin"]
    name = {"name": {"type": "string"}}  # a new object's name too
    readable = {"name": obj}
    written = with_codes(("401", "403", "404", "409", "422"), SCRIPT_CODES)
    doc_with_version = {"type": "object", "properties": {"version": {"type": "integer"}, "doc": _ANY_OBJECT,
                                                        "ownership": _ANY_OBJECT}}
    object_doc = {"type": "object", "description": "An object document (GET /api/v1/meta/schemas/object)"}
    spec.path(path="/api/v1/meta", operations={"get": _op(
        admin, "The whole current metadata document", "meta_current", ok_schema=doc_with_version,
        codes=("401", "403"), errors=errors)})
    spec.path(path="/api/v1/meta/objects", operations={"get": _op(
        ["meta"], "The objects I may read", "meta_objects", ok_schema={"type": "object", "properties": {
            "version": {"type": "integer"}, "data": {"type": "array", "items": object_doc}}}, errors=errors)})
    spec.path(path="/api/v1/meta/objects/{name}", operations={
        "get": _op(["meta"], "One object's metadata", "meta_object", path=readable, ok_schema=object_doc,
                   codes=("401", "403", "404"), errors=errors),
        "put": _op(admin, "Create or replace an object (publishes a version)", "meta_put_object", path=name,
                   body={"object": object_doc, **_WRITE_OPTIONS}, body_required=True,
                   ok_schema=_ref("PublishResult"), codes=written, errors=errors),
        "delete": _op(admin, "Remove an object (its table and data are kept, hidden)", "meta_delete_object",
                      path=name, body=dict(_WRITE_OPTIONS), ok_schema=_ref("PublishResult"), codes=written,
                      errors=errors)})
    spec.path(path="/api/v1/meta/objects/{name}/rules", operations={"get": _op(
        ["meta"], "The object's conditions, dependent choices, rules and formulas as typed trees",
        "meta_object_rules", path=readable, ok_schema=_ANY_OBJECT, codes=("401", "403", "404"), errors=errors,
        description="What the generated forms evaluate as the user types; the server enforces them again.")})
    spec.path(path="/api/v1/meta/objects/{name}/fields/{field}/where-used", operations={"get": _op(
        admin, "Every expression and roll-up that reads a field", "meta_where_used",
        path={**readable, "field": {"type": "string"}},
        ok_schema={"type": "object", "properties": {"object": {"type": "string"}, "field": {"type": "string"},
                                                    "data": {"type": "array", "items": _ANY_OBJECT}}},
        codes=("401", "403", "404"), errors=errors)})
    spec.path(path="/api/v1/meta/objects/{name}/recompute", operations={"post": _op(
        admin, "Compute stored formulas and roll-ups again", "meta_recompute", path=readable,
        body={"field": {"type": "string", "description": "One field (default: all of the object's)"}},
        ok_schema={"type": "object", "properties": {"object": {"type": "string"}, "rows": _ANY_OBJECT}},
        codes=("401", "403", "404", "409", "422"), errors=errors)})
    spec.path(path="/api/v1/meta/expressions/check", operations={"post": _op(
        admin, "Check an expression against an object's fields", "meta_check_expression", body_required=True,
        body={"object": {"type": "string"}, "expression": {"type": "string"}, "expect": {"type": "string"}},
        ok_schema={"type": "object", "properties": {
            "type": {"type": "string"}, "tree": {}, "reads": {"type": "array", "items": {"type": "string"}},
            "functions": {"type": "array", "items": {"type": "string"}}}},
        codes=("401", "403", "404", "422"), errors=errors)})
    spec.path(path="/api/v1/meta/roles/{name}", operations={"put": _op(
        admin, "Create or replace a role (publishes a version)", "meta_put_role", path=name,
        body={"role": {"type": "object", "description": "A role document (GET /api/v1/meta/schemas/role)"},
              **_WRITE_OPTIONS}, body_required=True, ok_schema=_ref("PublishResult"), codes=written,
        errors=errors)})
    spec.path(path="/api/v1/meta/plan", operations={"post": _op(
        admin, "The plan publishing a whole document would apply (nothing changes)", "meta_plan",
        body={"doc": _ANY_OBJECT}, body_required=True,
        ok_schema={"type": "object", "properties": {"plan": _ref("Plan")}}, codes=written, errors=errors)})
    publish = _op(
        admin, "Publish a whole document", "meta_publish",
        body={"doc": _ANY_OBJECT, **_WRITE_OPTIONS,
              "base_version": {"type": "integer", "minimum": 0, "description": (
                  "The version the document was edited from: changes published since are merged in, per "
                  "element and property; a change both sides made differently is a 409")},
              "force": {"type": "boolean", "description": "Publish the document as it is, without merging"}},
        body_required=True, ok_schema={"allOf": [_ref("PublishResult"), {"type": "object", "properties": {
            "merged": {"type": "object", "description": "What was taken from the versions published since",
                       "properties": {"base_version": {"type": "integer"}, "head_version": {"type": "integer"},
                                      "taken": {"type": "array", "items": _ANY_OBJECT}}}}}]},
        codes=written, errors=errors,
        description="The `ETag` of the answer is the new version; a 409 for conflicting changes lists each "
                    "in `conflicts` (`path`, `base`, `yours`, `theirs`, `changed_in`, `summary`).")
    publish["parameters"] = [{"name": "If-Match", "in": "header", "required": False, "schema": {"type": "string"},
                              "description": 'The base version as "<version>" (instead of base_version)'}]
    spec.path(path="/api/v1/meta/publish", operations={"post": publish})
    spec.path(path="/api/v1/meta/versions", operations={"get": _op(
        admin, "Published versions, newest first", "meta_versions",
        ok_schema={"type": "object", "properties": {"data": {"type": "array", "items": _ref("VersionSummary")}}},
        codes=("401", "403"), errors=errors)})
    spec.path(path="/api/v1/meta/versions/{version}", operations={"get": _op(
        admin, "One version: its document, diff, plan and ownership", "meta_version",
        path={"version": {"type": "integer", "minimum": 0}},
        ok_schema={"allOf": [_ref("VersionSummary"), {"type": "object", "properties": {
            "doc": _ANY_OBJECT, "diff": {"type": "array", "items": _ANY_OBJECT},
            "plan": {"type": "array", "items": _ANY_OBJECT}, "ownership": _ANY_OBJECT}}]},
        codes=("400", "401", "403", "404"), errors=errors)})
    spec.path(path="/api/v1/meta/diff", operations={"get": _op(
        admin, "What changed between two versions", "meta_diff",
        query={"from": {"type": "integer", "minimum": 0}, "to": {"type": "integer", "minimum": 0}},
        ok_schema={"type": "object", "properties": {"from": {"type": "integer"}, "to": {"type": "integer"},
                                                    "changes": {"type": "array", "items": _ANY_OBJECT}}},
        codes=("400", "401", "403", "404"), errors=errors)})
    spec.path(path="/api/v1/meta/rollback", operations={"post": _op(
        admin, "Roll back to an earlier version (a new version undoing the later ones)", "meta_rollback",
        body={"version": {"type": "integer", "minimum": 0}, "comment": _WRITE_OPTIONS["comment"],
              "dry_run": _WRITE_OPTIONS["dry_run"]}, body_required=True, ok_schema=_ref("PublishResult"),
        codes=written, errors=errors)})
    spec.path(path="/api/v1/meta/schemas/{kind}", operations={"get": _op(
        ["meta"], "The JSON Schema of a metadata kind", "meta_schema", path={"kind": {"enum": list(SCHEMA_FILES)}},
        ok_text="A JSON Schema (draft 2020-12)", codes=("401", "404"), errors=errors)})


def _view_paths(spec: APISpec, errors: dict[str, Any], name: dict[str, Any]) -> None:
    obj = {"object": name}
    definition = {"columns": {"type": "array", "items": {"type": "string"}}, "filter": _ref("Filter"),
                  "sort": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
                  "page_size": {"type": "integer", "minimum": 1, "maximum": 200},
                  "search": {"type": "string", "maxLength": 200}, "label": {},
                  "description": {"type": "string"},
                  "shared": {"type": "boolean", "description": "Share with everyone (administrators)"}}
    saved = ("401", "403", "404", "422")
    spec.path(path="/api/v1/views/{object}", operations={
        "get": _op(["views"], "The views I may use on an object: package, shared, then my own", "list_views",
                   path=obj, ok_schema={"type": "object", "properties": {"data": {"type": "array",
                                                                                  "items": _ref("View")}}},
                   codes=("401", "403", "404"), errors=errors),
        "post": _op(["views"], "Save a view (checked by running it for one row)", "create_view", path=obj,
                    body=definition, body_required=True, ok="201", ok_schema=_ref("View"), codes=saved,
                    errors=errors)})
    spec.path(path="/api/v1/views/{object}/{key}", operations={
        "put": _op(["views"], "Replace one of my views (or, as an administrator, a shared one)", "replace_view",
                   path={**obj, "key": {"type": "string"}}, body=definition, body_required=True,
                   ok_schema=_ref("View"), codes=saved, errors=errors),
        "delete": _op(["views"], "Delete one of my views (or, as an administrator, a shared one)", "delete_view",
                      path={**obj, "key": {"type": "string"}}, ok="204", ok_text="Deleted",
                      codes=("401", "403", "404"), errors=errors)})
    spec.path(path="/api/v1/meta/objects/{object}/layout", operations={"get": _op(
        ["views"], "The form layout my roles get (a form document's, or the generated one)", "object_layout",
        path=obj, ok_schema=_ANY_OBJECT, codes=("401", "403", "404"), errors=errors)})


def _user_paths(spec: APISpec, errors: dict[str, Any]) -> None:
    user = {"user_id": SYSTEM_ID}
    delegation = {"type": "object", "properties": {
        "id": {"type": "integer"}, "delegate_id": {"type": "integer"},
        "starts_at": {"type": "string", "format": "date-time"}, "ends_at": {"type": "string", "format": "date-time"}}}
    spec.path(path="/api/v1/users/{user_id}/manager", operations={"put": _op(
        ["users", "admin"], "Set a user's manager (approvals up the manager chain)", "set_manager", path=user,
        body={"manager_id": {"type": ["integer", "null"]}}, body_required=True, ok_schema=_ref("User"),
        codes=("401", "403", "404", "422"), errors=errors)})
    spec.path(path="/api/v1/users/{user_id}/delegations", operations={
        "get": _op(["users"], "A user's delegations (my own, or anyone's as an administrator)",
                   "list_delegations", path=user,
                   ok_schema={"type": "object", "properties": {"data": {"type": "array", "items": delegation}}},
                   codes=("401", "403", "404"), errors=errors),
        "post": _op(["users"], "Let someone approve for a user from starts_at to ends_at", "create_delegation",
                    path=user, body={"delegate_id": {"type": "integer"},
                                     "starts_at": {"type": "string", "format": "date-time"},
                                     "ends_at": {"type": "string", "format": "date-time"}}, body_required=True,
                    ok="201", ok_schema={"type": "object", "properties": {"id": {"type": "integer"}}},
                    codes=("401", "403", "404", "422"), errors=errors)})
    spec.path(path="/api/v1/users/{user_id}/delegations/{delegation_id}", operations={"delete": _op(
        ["users"], "End a delegation", "delete_delegation",
        path={**user, "delegation_id": SYSTEM_ID}, ok="204", ok_text="Deleted",
        codes=("401", "403", "404"), errors=errors)})


def _approval_paths(spec: APISpec, errors: dict[str, Any], obj: dict[str, Any]) -> None:
    """The approval and workflow endpoints (the same for every object)."""
    instance = {"type": "object", "description": "The approval instance: status, nodes with their state, "
                                                 "tasks, history"}
    decided = with_codes(("401", "403", "404", "409", "422"), SCRIPT_CODES)

    def op(summary: str, op_id: str, path: list[str], body: dict[str, Any] | None, codes: tuple[str, ...],
           ok: str = "200", tags: tuple[str, ...] = ("approvals",)) -> dict[str, Any]:
        params = {p: {"object": obj, "id": RECORD_ID}.get(p, SYSTEM_ID) for p in path}  # instance, task
        return _op(list(tags), summary, op_id, path=params, body=body, ok=ok, ok_schema=instance,
                   ok_text="The approval instance", codes=codes, errors=errors)

    spec.path(path="/api/v1/data/{object}/{id}/approvals", operations={
        "get": op("The record's approvals, newest first", "record_approvals", ["object", "id"], None,
                  ("401", "403", "404")),
        "post": op("Submit the record for approval (or resubmit one sent back)", "submit_approval",
                   ["object", "id"], {"process": {"type": "string"}, "comment": _TEXT,
                                      "chosen": {"type": "object", "description": "node name -> user ids or names, "
                                                 "for steps whose approvers the submitter chooses"}},
                   decided, ok="201")})
    spec.path(path="/api/v1/approvals/inbox", operations={"get": _op(
        ["approvals"], "Waiting for me, submitted by me, or CC to me", "approval_inbox",
        query={"box": {"enum": ["waiting", "submitted", "cc"], "default": "waiting"}},
        ok_text="Tasks (waiting, cc) or instances (submitted)", codes=("401", "422"), errors=errors)})
    spec.path(path="/api/v1/approvals/processes/{object}", operations={"get": op(
        "The object's active approval processes", "approval_processes", ["object"], None, ("401", "403", "404"))})
    spec.path(path="/api/v1/approvals/{instance}", operations={"get": op(
        "An approval with its process drawn as nodes, its tasks and history", "approval_instance", ["instance"],
        None, ("401", "403", "404"))})
    spec.path(path="/api/v1/approvals/{instance}/recall", operations={"post": op(
        "Recall (the submitter, while it is not final)", "recall_approval", ["instance"], {"comment": _TEXT},
        decided)})
    spec.path(path="/api/v1/approvals/{instance}/comments", operations={"post": op(
        "Comment", "comment_approval", ["instance"], {"comment": _TEXT}, decided, ok="201")})
    spec.path(path="/api/v1/approvals/tasks/{task}/approve", operations={"post": op(
        "Approve a task of mine", "approve_task", ["task"],
        {"comment": _TEXT, "values": {"type": "object", "description": "fields this step lets me edit"}}, decided)})
    spec.path(path="/api/v1/approvals/tasks/{task}/reject", operations={"post": op(
        "Reject: to the end, back to the submitter, or back to an earlier step", "reject_task", ["task"],
        {"comment": _TEXT, "to": {"type": "string", "description": "end (default), submitter, or a step's name"}},
        decided)})
    spec.path(path="/api/v1/approvals/tasks/{task}/transfer", operations={"post": op(
        "Hand my task to someone else", "transfer_task", ["task"],
        {"to": {"description": "a user id or username"}, "comment": _TEXT}, decided)})
    spec.path(path="/api/v1/approvals/tasks/{task}/add-signer", operations={"post": op(
        "Add a signer before or after me", "add_signer", ["task"],
        {"user": {"description": "a user id or username"}, "position": {"enum": ["before", "after"]},
         "comment": _TEXT}, decided)})
    spec.path(path="/api/v1/approvals/tasks/batch-approve", operations={"post": _op(
        ["approvals"], "Approve several tasks (each on its own)", "batch_approve",
        body={"tasks": {"type": "array", "items": {"type": "integer"}, "maxItems": 200}, "comment": _TEXT},
        ok_text="One outcome per task", codes=("401", "422", *SCRIPT_CODES), errors=errors)})
    reason = {"type": ["object", "null"], "description": "Why not: a code, a message in your language and its "
                                                         "params", "properties": {
        "code": {"type": "string"}, "message": {"type": "string"}, "params": {"type": "object"}}}
    ability = {"type": "object", "properties": {"allowed": {"type": "boolean"}, "reason": reason}}
    spec.path(path="/api/v1/data/{object}/{id}/abilities", operations={"get": _op(
        ["workflows"], "What I may do with a record now, each refusal with its reason", "record_abilities",
        path={"object": obj, "id": RECORD_ID},
        description="Whether the caller may edit (and which fields, when only some may change), delete, take "
                    "each transition of and submit the record now.",
        ok_schema={"type": "object", "properties": {
            "edit": {"allOf": [ability, {"type": "object", "properties": {
                "fields": {"type": ["array", "null"], "items": {"type": "string"}}}}]},
            "delete": ability, "submit": {"type": "array", "items": _ANY_OBJECT},
            "transitions": {"type": "array", "items": _ANY_OBJECT}, "states": {"type": "array", "items": {}}}},
        codes=("401", "403", "404"), errors=errors)})
    spec.path(path="/api/v1/data/{object}/{id}/transitions", operations={"get": _op(
        ["workflows"], "The status transitions of a record, with whether I may take each and why not",
        "record_transitions", path={"object": obj, "id": RECORD_ID},
        ok_schema={"type": "object", "properties": {"data": {"type": "array", "items": _ANY_OBJECT}}},
        codes=("401", "403", "404"), errors=errors)})
    spec.path(path="/api/v1/data/{object}/{id}/transitions/{name}", operations={"post": _op(
        ["workflows"], "Take a status transition (roles and condition checked)", "take_transition",
        path={"object": obj, "id": RECORD_ID, "name": {"type": "string"}}, body={},
        ok_text="The updated record", ok_schema=_ANY_OBJECT, codes=decided, errors=errors)})


def _script_paths(spec: APISpec, errors: dict[str, Any], obj: dict[str, Any]) -> None:
    spec.path(path="/api/v1/data/{object}/{id}/actions/{name}", operations={"post": _op(
        ["scripts"], "Run an action script on a record", "run_action",
        path={"object": obj, "id": RECORD_ID, "name": {"type": "string"}},
        description="The object's action scripts are listed under its own paths too. The script's writes are "
                    "saved together or not at all.",
        body={"params": {"type": "object", "description": "Passed to the script as params"}},
        ok_text="Done: the script's result, the record, its log", ok_schema=_ANY_OBJECT,
        codes=("401", "403", "404", "409", "422", *SCRIPT_CODES), errors=errors)})
    spec.path(path="/api/v1/scripts/{name}/dry-run", operations={"post": _op(
        ["scripts", "admin"], "Dry-run a script", "dry_run_script", path={"name": {"type": "string"}},
        description="Runs the script against a stored record (record_id) and/or given values (record) "
                    "and rolls back whatever it wrote.",
        body={"record_id": {"type": "integer"}, "record": {"type": "object"}, "params": {"type": "object"}},
        ok_text="What the script did: status, record, result, errors, log, used", ok_schema=_ANY_OBJECT,
        codes=("401", "403", "404", "409", "422", *SCRIPT_CODES), errors=errors)})
    spec.path(path="/api/v1/scripts/runs", operations={"get": _op(
        ["scripts", "admin"], "The script run log, newest first", "script_runs",
        query={"script": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": MAX_RUNS_PAGE},
               "before": (SYSTEM_ID, "Runs with a smaller id (the next page: next_before)")},
        ok_text="Runs: script, object, record_id, trigger, actor, started_at, duration_ms, status, error, used, "
                "log, dry_run",
        ok_schema={"type": "object", "properties": {"data": {"type": "array", "items": _ANY_OBJECT},
                                                    "next_before": {"type": ["integer", "null"]}}},
        codes=("401", "403"), errors=errors)})
