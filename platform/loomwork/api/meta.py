"""``/api/v1/meta``: read and change metadata, preview plans, publish, versions, diff, rollback.

Writes go through :class:`~loomwork.runtime.publishing.MetadataService`, so a change is
validated, planned and applied with its version in one transaction. Every write takes
``dry_run`` (return the plan, change nothing) and ``base_version`` (refuse if someone
published in between).

Reading the whole document, its versions and diffs is for administrators: it shows
every object and role of the tenant. Everybody may list the objects they can read
(``/meta/objects``).
"""
from __future__ import annotations

import copy
import re
from typing import Any

from flask import request

from loomwork.metadata.errors import BadQuery, NotFound, PermissionDenied, ValidationError
from loomwork.metadata.store import MAX_VERSION
from loomwork.metadata.validation import SCHEMA_FILES, registered_schema
from loomwork.runtime.compiled import READ_MAX_AGE
from loomwork.runtime.expr import ExpressionError, compile_expression
from loomwork.runtime.expr.types import TYPES
from loomwork.runtime.publishing import Rebased
from loomwork.runtime.rules import build_scope

from ..auth import current_context
from ..state import state
from . import bp
from .auth import json_object
from .jsonio import body, respond

#: Metadata is configuration, not money: its numbers are read as plain JSON numbers.
_FLOATS = "float"
_WRITE_OPTIONS = ("comment", "base_version", "dry_run", "update_dependents")
_VERSION = re.compile(r"^(0|[1-9][0-9]{0,9})$")


def _admin(ctx, write: bool = False) -> None:
    """Refuse non-administrators up front (the metadata service checks writes again)."""
    if not ctx.actor.is_admin:
        raise PermissionDenied("only administrators may change metadata" if write else
                               "only administrators may read the whole metadata; use /meta/objects")


def app_types():
    return state().services.runtime.field_types


def _current():
    ctx = current_context()
    return ctx, state().services.metadata.current(ctx)


def _options(data: dict) -> tuple[str, int | None, bool]:
    comment = data.get("comment", "")
    base = data.get("base_version")
    dry = data.get("dry_run", False)
    if not isinstance(data.get("update_dependents", False), bool):
        raise ValidationError({"update_dependents": ["must be true or false"]})
    if not isinstance(comment, str) or len(comment) > 2000:
        raise ValidationError({"comment": ["must be a text of at most 2000 characters"]})
    if base is not None and (not isinstance(base, int) or isinstance(base, bool) or base < 0):
        raise ValidationError({"base_version": ["must be a version number"]})
    if not isinstance(dry, bool):
        raise ValidationError({"dry_run": ["must be true or false"]})
    return comment, base, dry


def _published(ctx, version: int, before: int) -> dict[str, Any]:
    """The plan that publishing actually applied (empty when nothing changed)."""
    if version == before:
        return {"old_version": before, "change": "instant", "operations": []}
    stored = state().services.metadata.version(ctx, version)
    ops = stored.plan
    change = "heavy" if any(o["change"] == "heavy" for o in ops) else \
        "fast" if any(o["change"] == "fast" for o in ops) else "instant"
    return {"old_version": version - 1, "change": change, "operations": ops}


def _publish(ctx, doc: dict, data: dict, *, base_default: int | None = None, rebased: Rebased | None = None):
    """Preview or publish ``doc``; ``rebased`` when it was merged onto the head first
    (the response then says what it took from the versions in between)."""
    comment, base, dry = _options(data)
    if rebased is not None:
        base = rebased.head
    update = data.get("update_dependents", False)
    svc = state().services.metadata
    plan = svc.preview(ctx, doc, update_dependents=update)
    merged = {"merged": rebased.as_dict()} if rebased is not None and rebased.merged else {}
    if dry:
        return respond({"dry_run": True, "plan": plan.as_dict(), **merged})
    before = plan.old_version
    version = svc.publish(ctx, doc, comment=comment, base_version=base if base is not None else base_default,
                          update_dependents=update)
    applied = {**_published(ctx, version, before), "warnings": plan.as_dict()["warnings"]}
    return respond({"version": version, "plan": applied, **merged}, 200, {"ETag": f'"{version}"'})


def _version_number(raw: Any, name: str) -> int:
    """A version number from the URL or query. :raises BadQuery: if it is not one."""
    if not isinstance(raw, str) or not _VERSION.match(raw):
        raise BadQuery(f"{name} must be a version number (0, 1, 2, ...)")
    value = int(raw)
    if value > MAX_VERSION:
        raise NotFound(f"metadata version {value} does not exist")
    return value


@bp.get("/meta")
def meta_current():
    ctx, cur = _current()
    _admin(ctx)
    return respond({"version": cur.version, "doc": cur.doc, "ownership": cur.ownership})


@bp.get("/meta/objects")
def meta_objects():
    version, objects = state().services.metadata.readable_objects(current_context())
    return respond({"version": version, "data": [{"name": n, **o} for n, o in objects.items()]})


@bp.get("/meta/objects/<name>")
def meta_object(name: str):
    """One object's metadata: 404 when there is none, 403 when the caller may not read it (D16)."""
    version, doc = state().services.metadata.object_doc(current_context(), name)
    return respond({"version": version, "name": name, **doc})


@bp.get("/meta/objects/<name>/rules")
def meta_object_rules(name: str):
    """The object's conditions, dependent choices, validation rules and formulas as typed
    expression trees, for forms to evaluate as the user types (the server enforces them
    again on save)."""
    return respond(state().services.metadata.object_rules(current_context(), name))


@bp.get("/meta/objects/<name>/fields/<field>/where-used")
def meta_where_used(name: str, field: str):
    """Every expression and roll-up that reads the field (before renaming or deleting it)."""
    ctx = current_context()
    _admin(ctx)
    return respond({"object": name, "field": field,
                    "data": state().services.metadata.where_used(ctx, name, field)})


@bp.post("/meta/objects/<name>/recompute")
def meta_recompute(name: str):
    """Compute the object's stored formulas and roll-ups again; optional body ``{"field"}``
    (without one, all of them)."""
    ctx = current_context()
    _admin(ctx, write=True)
    data = body(floats=_FLOATS) if request.get_data(cache=True).strip() else {}
    data = json_object(data, ("field",), '{"field": optional name}')
    field = data.get("field")
    if field is not None and not isinstance(field, str):
        raise ValidationError({"field": ["must be a field name"]})
    return respond({"object": name, "rows": state().services.metadata.recompute(ctx, name, field)})


@bp.post("/meta/expressions/check")
def meta_check_expression():
    """Check an expression against an object's fields: ``{"object", "expression", "expect"}``.
    Returns its type, what it reads and its typed tree; a bad one is a 422 with line and column."""
    ctx = current_context()
    _admin(ctx)
    data = json_object(body(floats=_FLOATS), ("object", "expression", "expect"),
                       '{"object": name, "expression": text, "expect": optional type}')
    app = state().services.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
    obj = app.object(data.get("object"))
    expect = data.get("expect")
    if expect is not None and expect not in TYPES:
        raise ValidationError({"expect": [f"must be one of {', '.join(TYPES)}"]})
    try:
        e = compile_expression(data.get("expression"), build_scope(app.meta, app_types(), obj.name),
                               app.functions, expect)
    except ExpressionError as exc:
        raise ValidationError({"expression": [exc.message]}) from None
    return respond({"type": e.type, "tree": e.tree, "reads": sorted(e.deps.paths),
                    "functions": sorted(e.deps.functions)})


def _put(section: str, key: str, name: str):
    """Create or replace one element of ``section`` from ``{key: {...}, comment, base_version, dry_run}``."""
    ctx, cur = _current()
    _admin(ctx, write=True)
    data = json_object(body(floats=_FLOATS), (key, *_WRITE_OPTIONS),
                       f'{{"{key}": {{...}}, "comment", "base_version", "dry_run"}}')
    if not isinstance(data.get(key), dict):
        raise ValidationError({key: [f"is required and must be a JSON object (the {key}'s metadata)"]})
    doc = copy.deepcopy(cur.doc)
    doc.setdefault(section, {})[name] = data[key]
    return _publish(ctx, doc, data, base_default=cur.version)


@bp.put("/meta/objects/<name>")
def meta_put_object(name: str):
    """Create or replace one object; ``{"object": {...}, "comment", "base_version", "dry_run"}``."""
    return _put("objects", "object", name)


@bp.delete("/meta/objects/<name>")
def meta_delete_object(name: str):
    """Remove an object (its table and data are kept, hidden); optional body ``{comment, base_version, dry_run}``."""
    ctx, cur = _current()
    _admin(ctx, write=True)
    data = body(floats=_FLOATS) if request.get_data(cache=True).strip() else {}
    data = json_object(data, _WRITE_OPTIONS, '{"comment", "base_version", "dry_run"}')
    if name not in cur.doc["objects"]:
        raise NotFound(f"no object {name!r}")
    doc = copy.deepcopy(cur.doc)
    del doc["objects"][name]
    return _publish(ctx, doc, data, base_default=cur.version)


@bp.put("/meta/roles/<name>")
def meta_put_role(name: str):
    """Create or replace one role; ``{"role": {...}, "comment", "base_version", "dry_run"}``."""
    return _put("roles", "role", name)


@bp.post("/meta/plan")
def meta_plan():
    """Preview the plan for a whole document, changing nothing."""
    ctx = current_context()
    _admin(ctx, write=True)
    data = json_object(body(floats=_FLOATS), ("doc",), '{"doc": {...}}')
    if not isinstance(data.get("doc"), dict):
        raise ValidationError({"doc": ["is required and must be a JSON object (the whole metadata)"]})
    return respond({"plan": state().services.metadata.preview(ctx, data["doc"]).as_dict()})


@bp.post("/meta/publish")
def meta_publish():
    """Publish a whole document: ``{"doc": {...}, "comment", "base_version", "force", "dry_run"}``.

    ``base_version`` (or an ``If-Match: "<version>"`` header) is the version the document
    was edited from. When others published since, their changes are merged in (three
    ways, per element and property) and the response's ``merged`` lists them; a change
    both made differently is a 409 naming each conflict (base, yours, theirs, and the
    versions that changed it). ``force: true`` publishes the document as it is."""
    ctx = current_context()
    _admin(ctx, write=True)
    data = json_object(body(floats=_FLOATS), ("doc", "force", *_WRITE_OPTIONS),
                       '{"doc": {...}, "comment", "base_version", "force", "dry_run"}')
    if not isinstance(data.get("doc"), dict):
        raise ValidationError({"doc": ["is required and must be a JSON object (the whole metadata)"]})
    force = data.get("force", False)
    if not isinstance(force, bool):
        raise ValidationError({"force": ["must be true or false"]})
    _, base, _ = _options(data)
    header = _if_match()
    if header is not None and base is not None and header != base:
        raise ValidationError({"base_version": [f"is {base}, but If-Match names version {header}"]})
    base = base if base is not None else header
    options = {k: v for k, v in data.items() if k not in ("doc", "force", "base_version")}
    if base is None or force:
        return _publish(ctx, data["doc"], options)
    rebased = state().services.metadata.rebase(ctx, data["doc"], base)
    return _publish(ctx, rebased.doc, options, rebased=rebased)


def _if_match() -> int | None:
    """The metadata version an ``If-Match`` header names (``"7"``; ``*`` names none)."""
    raw = request.headers.get("If-Match")
    if raw is None or raw.strip() == "*":
        return None
    tag = raw.strip().removeprefix("W/").strip('"')
    if not _VERSION.match(tag) or int(tag) > MAX_VERSION:
        raise BadQuery('If-Match must name a metadata version, like "7"')
    return int(tag)


@bp.get("/meta/versions")
def meta_versions():
    ctx = current_context()
    _admin(ctx)
    return respond({"data": [v.summary() for v in state().services.metadata.versions(ctx)]})


@bp.get("/meta/versions/<raw>")
def meta_version(raw: str):
    ctx = current_context()
    _admin(ctx)
    v = state().services.metadata.version(ctx, _version_number(raw, "the version"))
    return respond({**v.summary(), "doc": v.doc, "diff": v.diff, "plan": v.plan, "ownership": v.ownership})


@bp.get("/meta/diff")
def meta_diff():
    """What changed between two versions: ``?from=N&to=M``."""
    ctx = current_context()
    _admin(ctx)
    a = _version_number(request.args.get("from"), "from")
    b = _version_number(request.args.get("to"), "to")
    return respond({"from": a, "to": b, "changes": state().services.metadata.diff(ctx, a, b)})


@bp.post("/meta/rollback")
def meta_rollback():
    """Roll back to an earlier version: a new version whose plan undoes the later ones.
    ``{"version": N, "comment", "dry_run"}``."""
    ctx = current_context()
    _admin(ctx, write=True)
    data = json_object(body(floats=_FLOATS), ("version", "comment", "dry_run"), '{"version": N, "comment", "dry_run"}')
    target = data.get("version")
    if not isinstance(target, int) or isinstance(target, bool) or target < 0:
        raise ValidationError({"version": ["is required and must be a version number"]})
    if target > MAX_VERSION:
        raise NotFound(f"metadata version {target} does not exist")
    comment, _, dry = _options({k: v for k, v in data.items() if k != "version"})
    svc = state().services.metadata
    plan = svc.preview_rollback(ctx, target)
    if dry:
        return respond({"dry_run": True, "plan": plan.as_dict()})
    version = svc.rollback(ctx, target, comment=comment)
    return respond({"version": version, "plan": _published(ctx, version, plan.old_version)})


@bp.get("/meta/schemas/<kind>")
def meta_schema(kind: str):
    """The JSON Schema of a metadata kind (object, role, package, app, common), with the
    approval action kinds and form widgets this installation registers filled in."""
    current_context()
    if kind not in SCHEMA_FILES:
        raise NotFound(f"no schema {kind!r}; known: {', '.join(SCHEMA_FILES)}")
    runtime = state().services.runtime
    return respond(registered_schema(kind, widgets=runtime.widgets, actions=runtime.approval_actions),
                   mimetype="application/schema+json")
