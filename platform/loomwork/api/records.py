"""``/api/v1/data/<object>``: list, create (one or many), get, patch, delete, restore, history;
``/api/v1/data/<object>/deleted``: the recycle bin."""
from __future__ import annotations

import re
from typing import Any

from flask import request

from loomwork.metadata.errors import BadQuery, ConflictError, NotFound
from loomwork.runtime.participants import written_id
from loomwork.runtime.pipeline import Origin
from loomwork.runtime.query import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ListRequest,
    ListResult,
    parse_query_string,
)

from ..auth import current_context
from ..inputs import parse_json, query_int
from ..state import state
from . import bp
from .jsonio import body, respond

#: One entity tag of a record: ``"<id>-<row_version>"``, possibly weak (``W/``).
_ETAG = re.compile(r'^(W/)?"([0-9]{1,19})-([0-9]{1,19})"$')
#: Parameters that must come at most once (the compact filter may repeat a field).
_SINGLE = ("filter", "sort", "fields", "limit", "cursor", "count", "search", "expand")


def etag(record: dict) -> str:
    return f'"{record["id"]}-{record["row_version"]}"'


def record_id(object_name: str, raw: str) -> int:
    """The id in the URL, or 404 (``abc``, ``0``, ``01``, ``1.5`` and huge numbers name no record)."""
    rid = written_id(raw)
    if rid is None:
        raise NotFound(f"no {object_name} record {raw[:40]!r}")
    return rid


def _etags(header: str) -> list[tuple[bool, int, int] | None]:
    """Parse an ``If-Match``/``If-None-Match`` list: ``(weak, id, version)`` or ``None`` for a
    tag that is not one of ours (which then simply never matches)."""
    out: list[tuple[bool, int, int] | None] = []
    for part in header.split(","):
        part = part.strip()
        if not part:
            continue
        m = _ETAG.match(part)
        out.append((bool(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None)
    return out


def if_match(rid: int) -> int | None:
    """The ``row_version`` the client claims from ``If-Match``, if any.

    :raises BadQuery: for a header that is not an entity tag.
    :raises ConflictError: for a tag of another record (it cannot be this one's current version).
    """
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    tags = _etags(header)
    if len(tags) != 1 or tags[0] is None:
        raise BadQuery('If-Match takes one ETag as returned by GET, like "12-3"')
    _weak, tag_id, version = tags[0]
    if tag_id != rid:
        raise ConflictError("If-Match names another record; fetch this one and send its ETag")
    return version


def not_modified(record: dict) -> bool:
    """``If-None-Match`` (weak comparison, RFC 9110 §13.1.2) matches the current record."""
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    if header.strip() == "*":
        return True
    return any(t is not None and (t[1], t[2]) == (record["id"], record["row_version"]) for t in _etags(header))


def _checked_args(single: tuple[str, ...]) -> Any:
    """The query string, each of ``single`` given at most once (its text is checked for
    every request by :func:`loomwork.inputs.vet_request`)."""
    args = request.args
    for name in single:
        if len(args.getlist(name)) > 1:
            raise BadQuery(f"give {name} at most once")
    return args


def list_request() -> ListRequest:
    args = _checked_args(_SINGLE)
    req = ListRequest()
    if "filter" in args:
        req.filter = parse_json(args["filter"], "filter")
        if req.filter is None:
            raise BadQuery("filter must be a JSON filter AST such as "
                           '{"field": "stage", "op": "eq", "value": "won"}, or use field__op=value')
    compact = parse_query_string(list(args.items(multi=True)))
    if compact is not None:
        req.filter = compact if req.filter is None else {"and": [req.filter, compact]}
    if "sort" in args:
        req.sort = [s for s in args["sort"].split(",") if s]
    if "fields" in args:
        req.fields = [f for f in args["fields"].split(",") if f]
    req.limit = query_int("limit", DEFAULT_LIMIT, high=MAX_LIMIT)
    req.cursor = args.get("cursor") or None
    req.count = args.get("count") or "none"
    req.search = args.get("search") or None
    req.expand = expand_param()
    return req


def expand_param() -> list[str]:
    """``expand=account,contact``: lookups to give their target's title alongside."""
    return [n for n in request.args.get("expand", "").split(",") if n]


@bp.get("/data/<object_name>")
def list_records(object_name: str):
    ctx = current_context()
    return _page(state().services.query.list(ctx, object_name, list_request()))


@bp.get("/data/<object_name>/deleted")
def list_deleted_records(object_name: str):
    """The recycle bin: the soft-deleted records the caller may read, with the list's
    parameters; the last deleted first unless ``sort`` says otherwise (deleting a record
    sets its ``updated_at`` and ``updated_by``)."""
    ctx = current_context()
    req = list_request()
    req.only_deleted = True
    req.sort = req.sort or ["-updated_at"]
    return _page(state().services.query.list(ctx, object_name, req))


def _page(result: ListResult) -> Any:
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
        created = records.bulk_create(ctx, object_name, data, origin=Origin.API)
        return respond({"data": created}, 201)
    record = records.create(ctx, object_name, data, origin=Origin.API)
    return respond(record, 201, {"ETag": etag(record),
                                 "Location": f"{bp.url_prefix}/data/{object_name}/{record['id']}"})


@bp.get("/data/<object_name>/<raw_id>")
def get_record(object_name: str, raw_id: str):
    ctx = current_context()
    _checked_args(("expand",))
    expand = expand_param()
    services = state().services
    record = services.records.get(ctx, object_name, record_id(object_name, raw_id))
    headers = {"ETag": etag(record), "Cache-Control": "private, no-cache"}
    if expand:
        # The titles are other records' values: the ETag cannot vouch for them, so an
        # expanded answer is never "not modified".
        services.query.expand(ctx, object_name, [record], expand)
    elif not_modified(record):
        return respond(None, 304, headers)
    return respond(record, 200, headers)


@bp.patch("/data/<object_name>/<raw_id>")
def update_record(object_name: str, raw_id: str):
    ctx = current_context()
    rid = record_id(object_name, raw_id)
    expected = if_match(rid)
    record = state().services.records.update(ctx, object_name, rid, body(), expected_version=expected,
                                              origin=Origin.API)
    return respond(record, 200, {"ETag": etag(record)})


@bp.delete("/data/<object_name>/<raw_id>")
def delete_record(object_name: str, raw_id: str):
    ctx = current_context()
    rid = record_id(object_name, raw_id)
    state().services.records.delete(ctx, object_name, rid, expected_version=if_match(rid), origin=Origin.API)
    return respond(None, 204)


@bp.post("/data/<object_name>/<raw_id>/restore")
def restore_record(object_name: str, raw_id: str):
    ctx = current_context()
    record = state().services.records.restore(ctx, object_name, record_id(object_name, raw_id), origin=Origin.API)
    return respond(record, 200, {"ETag": etag(record)})


@bp.get("/data/<object_name>/<raw_id>/history")
def record_history(object_name: str, raw_id: str):
    ctx = current_context()
    return respond({"data": state().services.records.history(ctx, object_name, record_id(object_name, raw_id))})
