"""JSON in and out. Request bodies are read with :func:`loomwork.inputs.parse_json`
(numbers with a fraction as ``Decimal``, so amounts keep every digit; what no field
could store is refused there); responses are written with orjson (decimals as strings).
"""
from __future__ import annotations

from typing import Any, Literal

from flask import Response, request

from loomwork.metadata.errors import BadQuery, LoomworkError
from loomwork.runtime.tenancy import json_dumps

from ..inputs import parse_json


class UnsupportedMediaType(LoomworkError):
    status = 415
    title = "Unsupported media type"


def body(*, floats: Literal["decimal", "float"] = "decimal") -> Any:
    """The request's JSON body.

    :raises UnsupportedMediaType: if it is not sent as JSON.
    :raises BadQuery: if it is missing or malformed.
    """
    if not request.mimetype or not (request.mimetype == "application/json" or request.mimetype.endswith("+json")):
        raise UnsupportedMediaType("send a JSON body with Content-Type: application/json")
    raw = request.get_data(cache=True)
    if not raw.strip():
        raise BadQuery("the request body is empty; send a JSON document")
    return parse_json(raw, floats=floats)


def respond(data: Any, status: int = 200, headers: dict[str, str] | None = None,
            mimetype: str = "application/json") -> Response:
    if status in (204, 304):
        response = Response(status=status, headers=headers)
        response.headers.pop("Content-Type", None)
        return response
    return Response(json_dumps(data), status=status, headers=headers, mimetype=mimetype)
