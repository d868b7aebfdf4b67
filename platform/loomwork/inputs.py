"""What a request may carry, checked in one place for pages and the API alike.

Bad input is the client's mistake and answers a 4xx (a problem document under the
API), never a 500 from deep inside a service or the database. The rules:

- **ids in URLs** are read by :func:`loomwork.runtime.participants.written_id`: written
  plainly, within the bound of the column they name. Routes take them with the ``id``
  converter (``<id:user_id>``), so anything else does not match the route and its view
  never sees it (404); Werkzeug's ``int`` converter takes numbers of any size, which the
  database refuses. Record ids are read by the record views, to name the object in a 404.
- **query strings** are at most :data:`MAX_QUERY_BYTES` (414), and no name or value of a
  query string or a form post holds a NUL character (400: PostgreSQL text cannot store
  one), nor does a URL parameter (404: it names nothing): :func:`vet_request` checks
  them before any view runs. Whole-number parameters are read with :func:`query_int`,
  whole numbers in forms with :func:`whole_number`.
- **JSON documents** (API bodies, the API's and the list page's ``filter``, a page's
  JSON field, a view's filter) are read with :func:`parse_json`, which refuses nesting
  deeper than :data:`MAX_DEPTH`, integers beyond 64 bits, ``NaN``/``Infinity``, NUL
  characters and lone surrogates.
"""
from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any, Literal

from flask import Flask, request
from werkzeug.exceptions import NotFound, RequestURITooLarge
from werkzeug.routing import BaseConverter

from loomwork.metadata import errors
from loomwork.metadata.errors import BadQuery
from loomwork.runtime.participants import ID_PATTERN, written_id
from loomwork.runtime.systables import MAX_ID

#: Deepest nesting of a JSON document (the filter AST, metadata and JSON fields have
#: their own, smaller caps; this one keeps a parser from recursing on hostile input).
MAX_DEPTH = 64
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
#: Longest query string, in bytes as sent (percent-encoded). Python's HTTP server (the
#: development server) refuses request lines from 64 KiB; gunicorn from 4 KiB unless
#: started with ``--limit-request-line 0``, which leaves the limit to this one.
MAX_QUERY_BYTES = 64 * 1024
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


class IdConverter(BaseConverter):
    """``<id:name>``: the id of a system table's row (a user, a delegation, a token), as
    :func:`written_id` reads it up to :data:`~loomwork.runtime.systables.MAX_ID`.

    Record ids (64-bit) stay text segments that the record views read with
    :func:`written_id`, so that their 404 names the object.
    """

    regex = ID_PATTERN
    weight = 50  # like werkzeug's number converters: tried before a string segment

    def to_python(self, value: str) -> int:
        rid = written_id(value, MAX_ID)
        if rid is None:
            # Not werkzeug's ValidationError: it converts after choosing the rule, and
            # would answer 405 where another method shares the path.
            raise NotFound(f"{value[:40]} names nothing: ids here are at most {MAX_ID}")
        return rid

    def to_url(self, value: Any) -> str:
        return str(int(value))


def install(app: Flask) -> None:
    """Register the ``id`` converter and the request guard. Call before any blueprint is
    registered: a rule finds its converters when it is added to the URL map."""
    app.url_map.converters["id"] = IdConverter
    app.before_request(vet_request)


def vet_request() -> None:
    """Refuse an over-long query string (414), NUL characters in the query string or a
    posted form (400) and in the path (404), before the view runs. An unknown route keeps
    its 404 or 405.

    :raises RequestURITooLarge: :raises BadQuery: :raises NotFound:
    """
    if len(request.query_string) > MAX_QUERY_BYTES:
        raise RequestURITooLarge(f"the query string is {len(request.query_string)} bytes long; "
                                 f"at most {MAX_QUERY_BYTES} bytes are read")
    if request.routing_exception is not None:
        return
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str) and "\x00" in value:  # names nothing: no row holds a NUL
            raise errors.NotFound(f"{name} {value[:40]!r} names nothing (it holds a NUL character)")
    for name, value in request.args.items(multi=True):
        check_text(name, "query parameter name")
        check_text(value, f"query parameter {name[:40]!r}")
    if request.mimetype in _FORM_TYPES:
        request.get_data(cache=True)  # parse the form from a copy: a view may still read the body
        for name, value in request.form.items(multi=True):
            check_text(name, "form field name")
            check_text(value, f"form field {name[:40]!r}")


def whole_number(text: Any, high: int, *, low: int = 1) -> int | None:
    """``text`` (a query or form value) as a whole number from ``low`` to ``high``, else
    None. Digits only: at most as many as ``high`` has, as ``int()`` of thousands of digits
    is refused (and slow by design)."""
    if not isinstance(text, str) or not text.isascii() or not text.isdigit() or len(text) > len(str(high)):
        return None
    value = int(text)
    return value if low <= value <= high else None


def query_int(name: str, default: int | None, *, low: int = 1, high: int) -> int | None:
    """The whole-number query parameter ``name`` from ``low`` to ``high`` (``default``
    when it is not given). :raises BadQuery: for anything else, an empty value included."""
    raw = request.args.get(name)
    if raw is None:
        return default
    value = whole_number(raw, high, low=low)
    if value is None:
        raise BadQuery(f"{name} must be a whole number from {low} to {high}")
    return value


def parse_json(raw: str | bytes, what: str = "request body", *,
               floats: Literal["decimal", "float"] = "decimal") -> Any:
    """Parse and vet a JSON document. :raises BadQuery: with a message naming ``what``.

    :param floats: ``"decimal"`` reads numbers with a fraction as :class:`~decimal.Decimal`
        (record data: amounts keep every digit); ``"float"`` reads them as plain numbers,
        integral ones as ``int`` (metadata, saved views: settings such as ``min``).
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


def _vet(value: Any, what: str) -> None:
    """Depth, surrogates and NUL characters, without recursion (the depth is untrusted)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            check_text(item, what)
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise BadQuery(f"{what} is nested deeper than {MAX_DEPTH} levels")
            if isinstance(item, dict):
                for k, v in item.items():
                    check_text(k, what)
                    stack.append((v, depth + 1))
            else:
                stack.extend((v, depth + 1) for v in item)


def check_text(text: str, what: str) -> None:
    """:raises BadQuery: if ``text`` holds a NUL character or a lone UTF-16 surrogate."""
    if "\x00" in text:
        raise BadQuery(f"{what}: text must not contain NUL (\\u0000) characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadQuery(f"{what}: text contains an unpaired UTF-16 surrogate") from None
