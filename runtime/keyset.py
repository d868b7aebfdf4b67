"""Keyset paging for list queries: sort keys, their ``ORDER BY``, "rows after this
one" conditions and cursors.

A list is sorted by :class:`SortKey` s, ending with ``id`` so the order is total. A key
is a column of the object, or of a record it looks up (a lookup sorts by its target's
title, ``account.industry`` by the industry of the account): those come through an
outer join, so they may always be empty. Empty counts as the largest value, on both
dialects: last ascending, first descending.

A cursor carries the sort spec, a key of the filter and the sort values of the last
row read; it is opaque but not secret (a digest catches edits, and its values are
parsed and bound like filter values).
"""
from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
import sqlalchemy as sa
from marshmallow import fields as mf

from loomwork.metadata.errors import BadQuery

MAX_CURSOR = 256 * 1024
MALFORMED_CURSOR = "cursor is malformed; use next_cursor from a previous page unchanged"
_CURSOR_SALT = b"loomwork.cursor.v1:"


@dataclass(frozen=True)
class SortKey:
    """One key of a list's order."""

    #: As the sort names it (``amount``, ``account``, ``account.industry``).
    name: str
    desc: bool
    #: What is compared: a column of the object's source or of a joined record.
    column: sa.ColumnElement
    nullable: bool
    #: The key's name among the columns a page reads (a joined key's is ``lw_sort<n>``).
    label: str
    #: Parses the key's values in a cursor.
    parser: mf.Field
    #: Whether the key comes from a joined record (no index of the object can serve it).
    joined: bool = False

    @property
    def selected(self) -> sa.ColumnElement:
        return self.column.label(self.label) if self.joined else self.column


def order_by(keys: Sequence[SortKey], dialect: str, *, not_null=frozenset()) -> list[sa.ColumnElement]:
    """``ORDER BY`` terms with NULL as the largest value: PostgreSQL's own default, so
    plain ASC/DESC there matches its indexes; spelled out for SQLite, and left out where
    no NULL can occur.

    :param not_null: labels of keys the caller already restricted to values.
    """
    out = []
    for k in keys:
        c = k.column
        if k.label in not_null or not k.nullable or dialect == "postgresql":
            out.append(c.desc() if k.desc else c.asc())
        else:
            out.append(c.desc().nulls_first() if k.desc else c.asc().nulls_last())
    return out


def after(keys: Sequence[SortKey], values: Sequence[Any], *, not_null=frozenset()) -> sa.ColumnElement:
    """Rows strictly after ``values`` in the order of ``keys`` (NULL counts as largest).

    :param not_null: labels of keys the caller already restricted to values.
    """
    cols = [k.column for k in keys]
    nullable = [k.nullable and k.label not in not_null for k in keys]
    directions = {k.desc for k in keys}
    if len(directions) == 1 and not any(nullable):
        # Row-value comparison: both dialects walk the sort index with it.
        left = sa.tuple_(*cols)
        right = sa.tuple_(*(sa.literal(v, c.type) for c, v in zip(cols, values, strict=True)))
        return left < right if directions == {True} else left > right

    def beyond_from(i: int) -> sa.ColumnElement:
        c, desc, v = cols[i], keys[i].desc, values[i]
        if v is None:  # only nullable keys: NULL is the largest value
            beyond = c.is_not(None) if desc else None
            equal = c.is_(None)
        else:
            v = sa.literal(v, c.type)  # typed, so booleans compare too
            beyond = c < v if desc else (sa.or_(c > v, c.is_(None)) if nullable[i] else c > v)
            equal = c == v
        if i == len(keys) - 1:
            return beyond if beyond is not None else sa.false()
        rest = sa.and_(equal, beyond_from(i + 1))
        return rest if beyond is None else sa.or_(beyond, rest)

    cond = beyond_from(0)
    c, desc, v = cols[0], keys[0].desc, values[0]
    if v is not None and (desc or not nullable[0]):
        # A redundant range on the first key lets the planner start an index scan there.
        v = sa.literal(v, c.type)
        cond = sa.and_(c <= v if desc else c >= v, cond)
    return cond


def wire(value: Any) -> Any:
    """A sort value as cursor JSON."""
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


def _digest(spec: list[str], query_key: str, values: list[Any]) -> str:
    return hashlib.sha256(_CURSOR_SALT + orjson.dumps([spec, query_key, values])).hexdigest()[:16]


def encode_cursor(spec: list[str], query_key: str, values: list[Any]) -> str:
    payload = {"s": spec, "q": query_key, "v": values, "d": _digest(spec, query_key, values)}
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def decode_cursor(text: Any) -> dict[str, Any]:
    """:raises BadQuery: for anything but a cursor this module wrote, unchanged."""
    try:
        if not isinstance(text, str) or len(text) > MAX_CURSOR:
            raise ValueError
        data = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if (not isinstance(data, dict) or not isinstance(data.get("v"), list)
                or data.get("d") != _digest(data.get("s"), data.get("q"), data["v"])):
            raise ValueError
        return data
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise BadQuery(MALFORMED_CURSOR) from None


__all__ = ["SortKey", "order_by", "after", "wire", "encode_cursor", "decode_cursor", "MALFORMED_CURSOR",
           "MAX_CURSOR"]
