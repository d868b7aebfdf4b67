"""Names for ids on a page: a lookup shows its record's title, a user id their name.

Pages collect the ids they show first and fetch each object's titles in one query
through the query service, so a list of 50 rows with two lookup columns costs two
extra queries, and a record the user may not read shows as ``#12`` without a link.
"""
from __future__ import annotations

from typing import Any

from flask import url_for

from loomwork.metadata.errors import LoomworkError
from loomwork.runtime.compiled import CompiledApp, CompiledObject
from loomwork.runtime.context import Context
from loomwork.runtime.query import ListRequest

from ..state import state


class Titles:
    def __init__(self, ctx: Context, app: CompiledApp) -> None:
        self.ctx, self.app = ctx, app
        self._wanted: dict[str, set[int]] = {}
        self._extra: dict[str, set[str]] = {}
        self._rows: dict[tuple[str, int], dict[str, Any]] = {}
        self._readable: dict[str, bool] = {}

    def readable(self, object_name: str) -> bool:
        if object_name not in self._readable:
            self._readable[object_name] = state().services.permissions.allowed(
                self.ctx, self.app, object_name, "read")
        return self._readable[object_name]

    def want(self, object_name: str | None, ids: Any, fields: Any = ()) -> None:
        if object_name is None:
            return
        wanted = self._wanted.setdefault(object_name, set())
        wanted.update(i for i in ids if isinstance(i, int) and not isinstance(i, bool)
                      and (object_name, i) not in self._rows)
        self._extra.setdefault(object_name, set()).update(fields)

    def want_record(self, obj: CompiledObject, record: dict[str, Any]) -> None:
        """Titles of ``record``'s lookups; the record's own title is known already."""
        if record.get("id") is not None:
            self._rows.setdefault((obj.name, record["id"]), record)
        for f in obj.fields.values():
            if f.ftype.name == "lookup" and record.get(f.name) is not None:
                self.want(f.defn.prop("target"), [record[f.name]])

    def fetch(self) -> None:
        for name, ids in self._wanted.items():
            ids -= {i for (o, i) in self._rows if o == name}
            if not ids or not self.readable(name):
                continue
            obj = self.app.object(name)
            fields = sorted({obj.defn.title_field or "id", *self._extra.get(name, ())})
            try:
                result = state().services.query.list(self.ctx, name, ListRequest(
                    filter={"field": "id", "op": "in", "value": sorted(ids)}, fields=fields, limit=len(ids)))
            except LoomworkError:
                continue  # a title that cannot be read shows as #id
            for row in result.data:
                self._rows[(name, row["id"])] = row
        self._wanted.clear()

    def title(self, object_name: str | None, record_id: Any) -> str | None:
        if object_name is None or record_id in (None, ""):
            return None
        try:
            rid = int(record_id)
        except (TypeError, ValueError):
            return None
        row = self._rows.get((object_name, rid))
        field = self.app.object(object_name).defn.title_field
        if row is None:
            return f"#{rid}"
        value = row.get(field) if field else None
        return str(value) if value not in (None, "") else f"#{rid}"

    def value(self, object_name: str, record_id: Any, field: str) -> Any:
        row = self._rows.get((object_name, record_id))
        return None if row is None else row.get(field)

    def link(self, object_name: str | None, record_id: Any) -> str | None:
        if object_name is None or record_id is None or not self.readable(object_name):
            return None
        return url_for("web.record_page", object_name=object_name, raw_id=record_id)


def user_names(ctx: Context, ids: Any) -> dict[int, str]:
    """Display names of the tenant's users among ``ids``."""
    wanted = {i for i in ids if isinstance(i, int)}
    if not wanted:
        return {}
    return state().services.users.names(ctx, wanted)
