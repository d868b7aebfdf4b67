"""Script endpoints: run an action on a record, dry-run a script, read the run log."""
from __future__ import annotations

from flask import request

from loomwork.metadata.errors import BadQuery, ValidationError

from ..auth import current_context
from ..state import state
from . import bp
from .jsonio import body, respond


def _object_body() -> dict:
    data = body() if request.content_length else {}
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["send a JSON object"]})
    return data


@bp.post("/data/<object_name>/<record_id>/actions/<name>")
def run_action(object_name: str, record_id: str, name: str):
    ctx = current_context()
    data = _object_body()
    unknown = sorted(set(data) - {"params"})
    if unknown:
        raise ValidationError({k: ["unknown field"] for k in unknown})
    return respond(state().services.scripts.run_action(ctx, object_name, record_id, name, data.get("params")))


@bp.post("/scripts/<name>/dry-run")
def dry_run(name: str):
    ctx = current_context()
    data = _object_body()
    unknown = sorted(set(data) - {"record_id", "record", "params"})
    if unknown:
        raise ValidationError({k: ["unknown field"] for k in unknown})
    return respond(state().services.scripts.dry_run(ctx, name, data.get("record_id"), record=data.get("record"),
                                                    params=data.get("params")))


@bp.get("/scripts/runs")
def script_runs():
    ctx = current_context()
    args = request.args
    try:
        limit = int(args.get("limit", "50"))
        before = int(args["before"]) if args.get("before") else None
    except ValueError:
        raise BadQuery("limit and before are whole numbers") from None
    runs = state().services.scripts.runs(ctx, script=args.get("script") or None, limit=limit, before=before)
    return respond({"data": runs, "next_before": runs[-1]["id"] if len(runs) == limit else None})
