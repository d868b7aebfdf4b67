"""Script endpoints: run an action on a record, dry-run a script, read the run log."""
from __future__ import annotations

from flask import request

from loomwork.metadata.errors import ValidationError
from loomwork.runtime.scripts import MAX_RUNS_PAGE, RUNS_PAGE
from loomwork.runtime.systables import MAX_ID

from ..auth import current_context
from ..inputs import query_int
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
    limit = query_int("limit", RUNS_PAGE, high=MAX_RUNS_PAGE)
    before = query_int("before", None, high=MAX_ID)  # a run's id: a system row's
    runs = state().services.scripts.runs(ctx, script=request.args.get("script") or None, limit=limit, before=before)
    return respond({"data": runs, "next_before": runs[-1]["id"] if len(runs) == limit else None})
