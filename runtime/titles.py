"""Titles of records: what a lookup shows instead of the id it holds.

A record's title is its object's ``title_field`` as text, or ``#<id>`` when the object
has none or the value is empty. The pages (lookup cells, related lists, history) and
the API's ``expand=`` (``account$title`` next to ``account``) both ask here, so they
always agree.

:class:`Titles` collects the ids a page or a response needs first and then reads each
target object's titles in one query through the query service, so permissions apply
as they do to any list: a record of an object the actor may not read, or one the
actor's row filter hides, or one deleted, has no title (``None``).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from loomwork.metadata.errors import BadQuery, NotFound, PermissionDenied
from loomwork.metadata.filters import MAX_LIST

from .compiled import CompiledApp, CompiledObject
from .context import Context

#: What a title field's name is suffixed with in an expanded API record.
TITLE_SUFFIX = "$title"


def record_title(obj: CompiledObject, row: Mapping[str, Any]) -> str:
    """The title of a record of ``obj`` read with its title field."""
    field = obj.defn.title_field
    value = row.get(field) if field else None
    return str(value) if value not in (None, "") else f"#{row['id']}"


def _ids(values: Iterable[Any]) -> set[int]:
    return {v for v in values if isinstance(v, int) and not isinstance(v, bool)}


class Titles:
    """Titles (and chosen fields) of records by id, read once per object.

    ``want(object, ids)`` for everything needed, ``fetch()``, then ``title(object, id)``.
    """

    def __init__(self, query: Any, ctx: Context, app: CompiledApp) -> None:
        """:param query: the :class:`~loomwork.runtime.query.QueryService`."""
        self.query, self.ctx, self.app = query, ctx, app
        self._wanted: dict[str, set[int]] = {}
        self._extra: dict[str, set[str]] = {}
        self._rows: dict[tuple[str, int], dict[str, Any]] = {}
        self._readable: dict[str, bool] = {}
        #: Queries :meth:`fetch` ran (one per object with ids to read).
        self.queries = 0

    def readable(self, object_name: str) -> bool:
        if object_name not in self._readable:
            self._readable[object_name] = self.query.permissions.allowed(self.ctx, self.app, object_name, "read")
        return self._readable[object_name]

    def want(self, object_name: str | None, ids: Iterable[Any], fields: Iterable[str] = ()) -> None:
        """Ask for the records ``ids`` of ``object_name`` (and their ``fields`` besides the title)."""
        if object_name is None:
            return
        self._wanted.setdefault(object_name, set()).update(
            i for i in _ids(ids) if (object_name, i) not in self._rows)
        self._extra.setdefault(object_name, set()).update(fields)

    def want_record(self, obj: CompiledObject, record: Mapping[str, Any]) -> None:
        """Titles of ``record``'s lookups; the record's own title is known already."""
        if record.get("id") is not None:
            self._rows.setdefault((obj.name, record["id"]), dict(record))
        for name, target in obj.lookups.items():
            if record.get(name) is not None:
                self.want(target, [record[name]])

    def fetch(self) -> None:
        """Read what was asked for: one query per object (of up to :data:`MAX_LIST` ids)."""
        for name, ids in self._wanted.items():
            ids -= {i for (o, i) in self._rows if o == name}
            if not ids or not self.readable(name):
                continue
            obj = self.app.object(name)
            fields = sorted({obj.defn.title_field or "id", *self._extra.get(name, ())})
            wanted = sorted(ids)
            for start in range(0, len(wanted), MAX_LIST):
                try:
                    rows = self.query.rows_by_id(self.ctx, name, wanted[start:start + MAX_LIST], fields)
                except (PermissionDenied, NotFound, BadQuery):
                    break  # the titles stay unknown: the ids show as they are
                self.queries += 1
                for row in rows:
                    self._rows[(name, row["id"])] = row
        self._wanted.clear()

    def row(self, object_name: str, record_id: Any) -> dict[str, Any] | None:
        return self._rows.get((object_name, record_id)) if isinstance(record_id, int) else None

    def title(self, object_name: str | None, record_id: Any) -> str | None:
        """The record's title; None when there is no id, or no record the actor may read."""
        if object_name is None or record_id is None or isinstance(record_id, bool):
            return None
        try:
            rid = int(record_id)
        except (TypeError, ValueError):
            return None
        row = self._rows.get((object_name, rid))
        return None if row is None else record_title(self.app.object(object_name), row)

    def value(self, object_name: str, record_id: Any, field: str) -> Any:
        row = self.row(object_name, record_id)
        return None if row is None else row.get(field)


def expand_fields(obj: CompiledObject, names: Sequence[str]) -> dict[str, str]:
    """The lookup fields ``names`` of ``obj`` with their targets, for ``expand=``.

    :raises BadQuery: for a name that is not a lookup field of ``obj``.
    """
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise BadQuery("expand must be a list of lookup fields")
    out: dict[str, str] = {}
    for name in names:
        if not isinstance(name, str) or name not in obj.lookups:
            shown = repr(name)[:60]
            known = ", ".join(obj.lookups) or "none"
            raise BadQuery(f"expand: {shown} is not a lookup field of {obj.name} (its lookups: {known})")
        out[name] = obj.lookups[name]
    return out


def expand(query: Any, ctx: Context, app: CompiledApp, obj: CompiledObject, records: list[dict[str, Any]],
           names: Sequence[str]) -> None:
    """Add ``<lookup>$title`` next to each lookup in ``names`` of ``records`` (in place):
    the target's title, or None (empty lookup, or no record the actor may read).
    One query per target object for all the records."""
    fields = expand_fields(obj, names)
    if not fields or not records:
        return
    titles = Titles(query, ctx, app)
    for name, target in fields.items():
        titles.want(target, [r.get(name) for r in records])
    titles.fetch()
    for r in records:
        for name, target in fields.items():
            r[name + TITLE_SUFFIX] = titles.title(target, r.get(name))


__all__ = ["Titles", "TITLE_SUFFIX", "record_title", "expand", "expand_fields"]
