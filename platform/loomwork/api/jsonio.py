"""JSON in and out. Numbers with a fraction are read as ``Decimal`` so amounts keep
every digit; responses are written with orjson (decimals as strings)."""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from flask import Response, request

from loomwork.metadata.errors import BadQuery
from loomwork.runtime.tenancy import json_dumps

MAX_DEPTH = 64


def body() -> Any:
    """The request's JSON body. :raises BadQuery: if missing or malformed."""
    if not request.mimetype or not (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        raise BadQuery("send a JSON body with Content-Type: application/json")
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise BadQuery(f"request body is not valid JSON: {exc}") from None
    _check_depth(data)
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in JSON")


def _check_depth(value: Any, depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise BadQuery(f"JSON is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for v in value.values():
            _check_depth(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_depth(v, depth + 1)


def respond(data: Any, status: int = 200, headers: dict[str, str] | None = None,
            mimetype: str = "application/json") -> Response:
    if status in (204, 304):
        return Response(status=status, headers=headers)
    return Response(json_dumps(data), status=status, headers=headers, mimetype=mimetype)
