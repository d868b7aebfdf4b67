"""Names for ids on a page: a lookup shows its record's title, a user id their name.

The titles come from :class:`loomwork.runtime.titles.Titles` (the same the API's
``expand=`` uses): pages collect the ids they show first and fetch each object's
titles in one query, so a list of 50 rows with two lookup columns costs two extra
queries. A record the user may not read shows as ``#12`` without a link.
"""
from __future__ import annotations

from typing import Any

from flask import url_for

from loomwork.runtime import titles
from loomwork.runtime.compiled import CompiledApp
from loomwork.runtime.context import Context

from ..state import state


class Titles(titles.Titles):
    """The runtime's titles, with what a page adds: ``#id`` for a title it cannot show,
    and links to records the user may open."""

    def __init__(self, ctx: Context, app: CompiledApp) -> None:
        super().__init__(state().services.query, ctx, app)

    def title(self, object_name: str | None, record_id: Any) -> str | None:
        """The record's title, ``#<id>`` for one the user may not read (None: no id)."""
        known = super().title(object_name, record_id)
        if known is not None or object_name is None or record_id in (None, ""):
            return known
        try:
            return f"#{int(record_id)}"
        except (TypeError, ValueError):
            return None

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
