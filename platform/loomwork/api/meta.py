"""``/api/v1/meta``: read and change metadata, preview plans, publish, versions, diff, rollback.

Writes go through :class:`~loomwork.runtime.publishing.MetadataService`, so a change is
validated, planned and applied with its version in one transaction. Every write takes
``dry_run`` (return the plan, change nothing) and ``base_version`` (refuse if someone
published in between).
"""
from __future__ import annotations

import copy
from typing import Any

from flask import request

from loomwork.metadata.errors import BadQuery, NotFound, ValidationError
from loomwork.metadata.validation import SCHEMA_FILES, schema

from ..auth import current_context
from ..state import state
from . import bp
from .jsonio import body, respond


def _current():
    ctx = current_context()
    return ctx, state().services.metadata.current(ctx)


def _options(data: dict) -> tuple[str, int | None, bool]:
    comment = data.get("comment", "")
    base = data.get("base_version")
    dry = data.get("dry_run", False)
    if not isinstance(comment, str) or len(comment) > 2000:
        raise ValidationError({"comment": ["must be a text of at most 2000 characters"]})
    if base is not None and (not isinstance(base, int) or isinstance(base, bool)):
        raise ValidationError({"base_version": ["must be an integer"]})
    if not isinstance(dry, bool):
        raise ValidationError({"dry_run": ["must be true or false"]})
    return comment, base, dry


def _publish(ctx, doc: dict, data: dict, *, base_default: int | None = None):
    comment, base, dry = _options(data)
    svc = state().services.metadata
    if dry:
        return respond({"plan": svc.preview(ctx, doc).as_dict()})
    plan = svc.preview(ctx, doc)
    version = svc.publish(ctx, doc, comment=comment, base_version=base if base is not None else base_default)
    return respond({"version": version, "plan": plan.as_dict()}, 200)


def _json_object(data: Any, what: str) -> dict:
    if not isinstance(data, dict):
        raise ValidationError({"_schema": [f"send a JSON object: {what}"]})
    return data


@bp.get("/meta")
def meta_current():
    ctx, cur = _current()
    return respond({"version": cur.version, "doc": cur.doc, "ownership": cur.ownership})


@bp.get("/meta/objects")
def meta_objects():
    ctx, cur = _current()
    app = state().services.runtime.compiled(ctx.tenant)
    readable = set(state().services.permissions.readable_objects(ctx, app))
    return respond({"version": cur.version,
                    "data": [{"name": n, **o} for n, o in cur.doc["objects"].items() if n in readable]})


@bp.get("/meta/objects/<name>")
def meta_object(name: str):
    ctx, cur = _current()
    app = state().services.runtime.compiled(ctx.tenant)
    if name not in cur.doc["objects"] or name not in state().services.permissions.readable_objects(ctx, app):
        raise NotFound(f"no object {name!r}")
    return respond({"version": cur.version, "name": name, **cur.doc["objects"][name]})


@bp.put("/meta/objects/<name>")
def meta_put_object(name: str):
    """Create or replace one object; ``{"object": {...}, "comment", "base_version", "dry_run"}``."""
    ctx, cur = _current()
    data = _json_object(body(), '{"object": {...}, "comment": "..."}')
    doc = copy.deepcopy(cur.doc)
    doc["objects"][name] = _json_object(data.get("object"), "object")
    return _publish(ctx, doc, data, base_default=cur.version)


@bp.delete("/meta/objects/<name>")
def meta_delete_object(name: str):
    ctx, cur = _current()
    if name not in cur.doc["objects"]:
        raise NotFound(f"no object {name!r}")
    data = body() if request.content_length else {}
    doc = copy.deepcopy(cur.doc)
    del doc["objects"][name]
    return _publish(ctx, doc, _json_object(data, "{comment}"), base_default=cur.version)


@bp.put("/meta/roles/<name>")
def meta_put_role(name: str):
    ctx, cur = _current()
    data = _json_object(body(), '{"role": {...}}')
    doc = copy.deepcopy(cur.doc)
    doc["roles"][name] = _json_object(data.get("role"), "role")
    return _publish(ctx, doc, data, base_default=cur.version)


@bp.post("/meta/plan")
def meta_plan():
    """Preview the plan for a whole document, changing nothing."""
    ctx = current_context()
    data = _json_object(body(), '{"doc": {...}}')
    return respond({"plan": state().services.metadata.preview(ctx, _json_object(data.get("doc"), "doc")).as_dict()})


@bp.post("/meta/publish")
def meta_publish():
    """Publish a whole document: ``{"doc": {...}, "comment", "base_version", "dry_run"}``."""
    ctx = current_context()
    data = _json_object(body(), '{"doc": {...}}')
    return _publish(ctx, _json_object(data.get("doc"), "doc"), data)


@bp.get("/meta/versions")
def meta_versions():
    ctx = current_context()
    return respond({"data": [v.summary() for v in state().services.metadata.versions(ctx)]})


def _int_arg(value: Any, name: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadQuery(f"{name} must be a version number") from None


@bp.get("/meta/versions/<int:version>")
def meta_version(version: int):
    ctx = current_context()
    v = state().services.metadata.version(ctx, version)
    return respond({**v.summary(), "doc": v.doc, "diff": v.diff, "plan": v.plan, "ownership": v.ownership})


@bp.get("/meta/diff")
def meta_diff():
    ctx = current_context()
    a = _int_arg(request.args.get("from"), "from")
    b = _int_arg(request.args.get("to"), "to")
    return respond({"from": a, "to": b, "changes": state().services.metadata.diff(ctx, a, b)})


@bp.post("/meta/rollback")
def meta_rollback():
    """Roll back to an earlier version: a new version whose plan undoes the later ones."""
    ctx = current_context()
    data = _json_object(body(), '{"version": N}')
    target = data.get("version")
    if not isinstance(target, int) or isinstance(target, bool):
        raise ValidationError({"version": ["must be an integer"]})
    comment, _, dry = _options({k: v for k, v in data.items() if k != "version"})
    svc = state().services.metadata
    if dry:
        return respond({"plan": svc.preview_rollback(ctx, target).as_dict()})
    plan = svc.preview_rollback(ctx, target)
    version = svc.rollback(ctx, target, comment=comment)
    return respond({"version": version, "plan": plan.as_dict()})


@bp.get("/meta/schemas/<kind>")
def meta_schema(kind: str):
    """The JSON Schema of a metadata kind (object, role, package, app, common)."""
    if kind not in SCHEMA_FILES:
        raise NotFound(f"no schema {kind!r}; known: {', '.join(SCHEMA_FILES)}")
    return respond(schema(kind), mimetype="application/schema+json")
