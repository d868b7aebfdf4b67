"""JSON in and out. Numbers with a fraction are read as ``Decimal`` so amounts keep
every digit; responses are written with orjson (decimals as strings).

Every JSON document the API reads (request bodies and the ``filter`` parameter) goes
through :func:`parse`, which refuses what no field could store and what would only
surface later as a database error: ``NaN``/``Infinity``, integers beyond 64 bits,
lone UTF-16 surrogates, NUL characters (PostgreSQL text cannot hold them) and
nesting deeper than :data:`MAX_DEPTH`.
"""
from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any, Literal

from flask import Response, request

from loomwork.metadata.errors import BadQuery, LoomworkError
from loomwork.runtime.tenancy import json_dumps

MAX_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


class UnsupportedMediaType(LoomworkError):
    status = 415
    title = "Unsupported media type"


def parse(raw: str | bytes, what: str = "request body", *,
          floats: Literal["decimal", "float"] = "decimal") -> Any:
    """Parse and vet a JSON document. :raises BadQuery: with a message naming ``what``.

    :param floats: ``"decimal"`` reads numbers with a fraction as :class:`~decimal.Decimal`
        (record data: amounts keep every digit); ``"float"`` reads them as plain numbers,
        integral ones as ``int`` (metadata: settings such as ``min`` or ``precision``).
    """

    def parse_int(text: str) -> int:
        value = int(text)
        if not INT_MIN <= value <= INT_MAX:
            shown = text if len(text) <= 30 else text[:27] + "..."
            raise BadQuery(f"{what}: integer {shown} is out of range (at most 64 bits)")
        return value

    def reject_constant(name: str) -> Any:
        raise BadQuery(f"{what}: {name} is not allowed in JSON")

    def parse_float(text: str) -> float | int:
        value = float(text)
        if not math.isfinite(value):
            raise BadQuery(f"{what}: number {text[:30]} is out of range")
        # JSON has one number type: 14.0 is the integer 14 (a precision, a max_length, ...).
        return int(value) if value.is_integer() and abs(value) <= 2**53 else value

    try:
        data = json.loads(raw, parse_float=Decimal if floats == "decimal" else parse_float,
                          parse_int=parse_int, parse_constant=reject_constant)
    except RecursionError:
        raise BadQuery(f"{what} is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too many digits
        raise BadQuery(f"{what} is not valid JSON: {exc}") from None
    _vet(data, what)
    return data


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
    return parse(raw, floats=floats)


def _vet(value: Any, what: str) -> None:
    """Depth, surrogates and NUL characters, without recursion (the depth is untrusted)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_text(item, what)
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise BadQuery(f"{what} is nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for k, v in item.items():
                    _check_text(k, what)
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise BadQuery(f"{what}: text must not contain NUL (\\u0000) characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadQuery(f"{what}: text contains an unpaired UTF-16 surrogate") from None


def check_query_text(name: str, value: str) -> None:
    """Query parameters follow the same text rules as JSON bodies."""
    _check_text(value, f"query parameter {name!r}")
    _check_text(name, "query parameter name")


def respond(data: Any, status: int = 200, headers: dict[str, str] | None = None,
            mimetype: str = "application/json") -> Response:
    if status in (204, 304):
        response = Response(status=status, headers=headers)
        response.headers.pop("Content-Type", None)
        return response
    return Response(json_dumps(data), status=status, headers=headers, mimetype=mimetype)
