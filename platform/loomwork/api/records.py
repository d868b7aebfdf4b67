"""``/api/v1/data/<object>``: list, create (one or many), get, patch, delete, restore, history."""
from __future__ import annotations

import re

import orjson
from flask import request

from loomwork.metadata.errors import BadQuery, ConflictError
from loomwork.runtime.query import DEFAULT_LIMIT, ListRequest, parse_query_string

from ..auth import current_context
from ..state import state
from . import bp
from .jsonio import body, respond

_ETAG = re.compile(r'^\s*(?:W/)?"(\d+)-(\d+)"\s*$')


def etag(record: dict) -> str:
    return f'"{record["id"]}-{record["row_version"]}"'


def if_match(record_id: str) -> int | None:
    """The ``row_version`` the client claims from ``If-Match``, if any."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    m = _ETAG.match(header)
    if not m or m.group(1) != str(record_id).lstrip("0"):
        raise ConflictError("If-Match does not name this record's current version; fetch it again")
    return int(m.group(2))


def list_request() -> ListRequest:
    args = request.args
    req = ListRequest()
    if "filter" in args:
        try:
            req.filter = orjson.loads(args["filter"])
        except orjson.JSONDecodeError:
            raise BadQuery("filter must be a JSON filter AST (see the API guide) or use field__op=value") from None
    compact = parse_query_string(list(args.items(multi=True)))
    if compact is not None:
        req.filter = compact if req.filter is None else {"and": [req.filter, compact]}
    if "sort" in args:
        req.sort = [s for s in args["sort"].split(",") if s]
    if "fields" in args:
        req.fields = [f for f in args["fields"].split(",") if f]
    try:
        req.limit = int(args.get("limit", DEFAULT_LIMIT))
    except ValueError:
        raise BadQuery("limit must be a whole number") from None
    req.cursor = args.get("cursor") or None
    req.count = args.get("count", "none")
    req.search = args.get("search") or None
    return req


@bp.get("/data/<object_name>")
def list_records(object_name: str):
    ctx = current_context()
    result = state().services.query.list(ctx, object_name, list_request())
    doc = {"data": result.data, "next_cursor": result.next_cursor}
    if result.count is not None:
        doc["count"] = result.count
        doc["count_kind"] = result.count_kind
    return respond(doc)


@bp.post("/data/<object_name>")
def create_records(object_name: str):
    ctx = current_context()
    data = body()
    records = state().services.records
    if isinstance(data, list):
        created = records.bulk_create(ctx, object_name, data)
        return respond({"data": created}, 201)
    record = records.create(ctx, object_name, data)
    return respond(record, 201, {"ETag": etag(record),
                                 "Location": f"{bp.url_prefix}/data/{object_name}/{record['id']}"})


@bp.get("/data/<object_name>/<record_id>")
def get_record(object_name: str, record_id: str):
    ctx = current_context()
    record = state().services.records.get(ctx, object_name, record_id)
    tag = etag(record)
    if request.headers.get("If-None-Match") == tag:
        return respond(None, 304, {"ETag": tag})
    return respond(record, 200, {"ETag": tag})


@bp.patch("/data/<object_name>/<record_id>")
def update_record(object_name: str, record_id: str):
    ctx = current_context()
    expected = if_match(record_id)
    record = state().services.records.update(ctx, object_name, record_id, body(), expected_version=expected)
    return respond(record, 200, {"ETag": etag(record)})


@bp.delete("/data/<object_name>/<record_id>")
def delete_record(object_name: str, record_id: str):
    ctx = current_context()
    state().services.records.delete(ctx, object_name, record_id, expected_version=if_match(record_id))
    return respond(None, 204)


@bp.post("/data/<object_name>/<record_id>/restore")
def restore_record(object_name: str, record_id: str):
    ctx = current_context()
    record = state().services.records.restore(ctx, object_name, record_id)
    return respond(record, 200, {"ETag": etag(record)})


@bp.get("/data/<object_name>/<record_id>/history")
def record_history(object_name: str, record_id: str):
    ctx = current_context()
    return respond({"data": state().services.records.history(ctx, object_name, record_id)})
