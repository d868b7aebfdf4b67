"""List pages: columns, click-to-sort, the filter builder's AST, search, keyset
paging, saved views and bulk actions — all through the query and record services.

The URL holds the whole state (``view``, ``filter``, ``sort``, ``q``, ``columns``,
``page_size``, ``cursor``), so a list can be bookmarked and shared; a saved view is
that state under a name.
"""
from __future__ import annotations

from typing import Any

import orjson
from flask import flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from loomwork.metadata import filters
from loomwork.metadata.errors import BadQuery, LoomworkError, ValidationError
from loomwork.metadata.model import SYSTEM_COLUMNS, label_text
from loomwork.runtime.compiled import CompiledApp, CompiledObject
from loomwork.runtime.query import MAX_LIMIT, ListRequest, field_ops, parse_query_string

from .. import auth
from ..inputs import parse_json, whole_number
from ..state import state
from . import bp, filter_chips
from .common import (
    _,
    compiled,
    local_path,
    locale,
    navigation,
    object_label,
    parse_id,
    signed_in,
)
from .messages import translate_all
from .present import choice_labels, display, format_plain, parse_form, value_kind
from .titles import Titles, user_names

PAGE_SIZES = (10, 25, 50, 100, 200)
#: Query parameters of the page itself; any other parameter is the compact filter form.
PAGE_PARAMS = frozenset({"view", "filter", "sort", "q", "columns", "page_size", "cursor", "lang"})
#: Columns a list shows when neither the URL nor a view chooses them.
DEFAULT_COLUMNS = 6
USER_COLUMNS = ("created_by", "updated_by", "owner_id")


def _columns(obj: CompiledObject, wanted: list[str]) -> list[str]:
    """Known columns among ``wanted`` (one-hop lookup paths allowed), or a default set."""
    out = []
    for name in wanted:
        head, _sep, rest = name.partition(".")
        if head in obj.fields or head in SYSTEM_COLUMNS:
            if not rest or (head in obj.lookups and "." not in rest):
                out.append(name)
    if out:
        return list(dict.fromkeys(out))
    title = obj.defn.title_field
    short = [n for n, f in obj.fields.items() if n != title and f.ftype.widget not in ("textarea", "json")]
    return ([title] if title else []) + short[: DEFAULT_COLUMNS - (1 if title else 0)]


def _label(app: CompiledApp, obj: CompiledObject, path: str) -> str:
    head, _sep, rest = path.partition(".")
    if head in SYSTEM_COLUMNS:
        return {"id": _("ID"), "created_at": _("Created"), "updated_at": _("Last modified"),
                "created_by": _("Created by"), "updated_by": _("Last modified by"), "owner_id": _("Owner"),
                "row_version": _("Version")}.get(head, head)
    f = obj.fields.get(head)
    if f is None:
        return path  # a filter naming no field (its error is shown): as written
    text = label_text(f.defn.label, locale(), head)
    if rest:
        if head not in obj.lookups:
            return path
        text += " › " + _label(app, app.object(obj.lookups[head]), rest)
    return text


def _state(obj: CompiledObject, views: list, args: MultiDict) -> dict[str, Any]:
    """The list's state from the URL, completed by the chosen (or default) view."""
    key = args.get("view")
    view = next((v for v in views if v.key == key), None)
    explicit = any(k in args for k in ("filter", "sort", "q", "columns")) or any(
        k not in PAGE_PARAMS for k in args)
    if view is None and key is None and not explicit:
        view = next((v for v in views if v.definition.get("default")), None)
    d = view.definition if view else {}
    flt: Any = None
    error = None
    if args.get("filter"):
        try:
            flt = parse_json(args["filter"], "the filter", floats="float")
        except BadQuery as exc:
            error = _("The filter in the address cannot be read: %(reason)s", reason=exc.message)
    else:
        flt = parse_query_string([(k, v) for k, v in args.items(multi=True) if k not in PAGE_PARAMS])
    if flt is None and not args.get("filter"):
        flt = d.get("filter")
    columns = [c for raw in args.getlist("columns") for c in raw.split(",") if c] or list(d.get("columns", ()))
    try:
        size = int(args.get("page_size") or d.get("page_size") or 50)
    except ValueError:
        size = 50
    return {
        "view": view, "filter": flt, "search": args.get("q", d.get("search") or ""),
        "sort": [s for s in (args.get("sort") or ",".join(d.get("sort", ()))).split(",") if s]
        or list(obj.defn.default_sort),
        "columns": _columns(obj, columns), "page_size": max(1, min(size, MAX_LIMIT)),
        "cursor": args.get("cursor") or None, "error": error,
    }


def _filter_fields(app: CompiledApp, obj: CompiledObject, titles: Titles) -> dict[str, Any]:
    """Fields the filter builder offers, with their operators and choices; a lookup
    whose target the user may read is picked by searching it (``lookup``), like a form's."""
    out = {}
    for name, f in obj.fields.items():
        ops = sorted(field_ops(obj, name))
        if not ops:
            continue
        entry: dict[str, Any] = {"label": label_text(f.defn.label, locale(), name), "kind": value_kind(f),
                                 "ops": ops}
        if f.ftype.has_options:
            entry["choices"] = [{"value": v, "label": lbl} for v, lbl in choice_labels(f, locale()).items()]
        target = obj.lookups.get(name)
        if target is not None and titles.readable(target):
            entry["lookup"] = {"object": target, "title_field": app.object(target).defn.title_field or "id"}
        out[name] = entry
    for name in ("created_at", "updated_at"):
        out[name] = {"label": _label(app, obj, name), "kind": "datetime", "ops": sorted(field_ops(obj, name))}
    return out


#: Kinds of values the bulk bar has no control for (a JSON document, a record picked by search).
NO_BULK_CONTROL = frozenset({"json", "lookup"})


def _bulk_fields(app: CompiledApp, obj: CompiledObject) -> list[dict[str, Any]]:
    """The fields the bulk bar can set: typed in (not computed or numbered by the system,
    not read-only) with a control of its kind."""
    return [{"name": n, "label": _label(app, obj, n), "kind": f.ftype.kind} for n, f in obj.fields.items()
            if not f.ftype.system_set and not f.defn.read_only and f.ftype.kind not in NO_BULK_CONTROL]


def _op_labels() -> dict[str, str]:
    return {"eq": _("is"), "ne": _("is not"), "lt": _("less than"), "lte": _("at most"), "gt": _("greater than"),
            "gte": _("at least"), "in": _("is any of"), "nin": _("is none of"), "contains": _("contains"),
            "icontains": _("contains (any case)"), "starts_with": _("starts with"), "is_null": _("is empty"),
            "between": _("between")}


@bp.get("/app/<object_name>")
def list_page(object_name: str):
    ctx = signed_in()
    services = state().services
    app = compiled(ctx)
    obj = app.object(object_name)
    views = services.views.list(ctx, object_name)
    st = _state(obj, views, request.args)
    plain = [c.split(".")[0] for c in st["columns"]]
    req = ListRequest(filter=st["filter"], sort=st["sort"], fields=list(dict.fromkeys(plain)),
                      limit=st["page_size"], cursor=st["cursor"], search=st["search"] or None)
    rows, next_cursor, error = [], None, st["error"]
    if error is None:
        try:
            result = services.query.list(ctx, object_name, req)
            rows, next_cursor = result.data, result.next_cursor
        except LoomworkError as exc:
            error = exc.message
    titles = Titles(ctx, app)
    filter_chips.want_titles(app, obj, st["filter"], titles)
    rows_view = _rows(ctx, app, obj, rows, st["columns"], titles)
    chips = filter_chips.chips(app, obj, st["filter"], titles, lambda path: _label(app, obj, path), _op_labels())
    query = _query(st)
    for chip in chips["items"] if chips else ():
        rest = chip.pop("rest")
        # "null": no filter, rather than the view's own (which an absent filter means).
        chip["remove"] = url_for("web.list_page", object_name=obj.name, **dict(
            query, filter=orjson.dumps(rest).decode(), cursor=None))
    perms = services.permissions
    return render_template(
        "list.html", ctx=ctx, nav=navigation(ctx, app), csrf=auth.csrf_token(), object=obj.name,
        object_label=object_label(app, obj.name), object_plural=object_label(app, obj.name, plural=True),
        can={op: perms.allowed(ctx, app, obj.name, op) for op in ("create", "update", "delete")},
        columns=[{"name": c, "label": _label(app, obj, c), "sortable": _sortable(app, obj, c)} for c in st["columns"]],
        all_columns=[{"name": n, "label": _label(app, obj, n)} for n in [*obj.fields, "created_at", "updated_at"]],
        rows=rows_view, state=st, views=views, error=error, next_cursor=next_cursor,
        page_sizes=PAGE_SIZES, query=query, filter_json=orjson.dumps(st["filter"]).decode()
        if st["filter"] is not None else "", chips=chips,
        list_data={"object": obj.name, "fields": _filter_fields(app, obj, titles), "op_labels": _op_labels(),
                   "filter": st["filter"], "rules": filters.rules_document(),
                   "titles": filter_chips.lookup_titles(app, obj, st["filter"], titles)},
        bulk_fields=_bulk_fields(app, obj),
    ), 400 if error else 200


def _query(st: dict[str, Any]) -> dict[str, Any]:
    """The list's current URL parameters (for sort links, paging and saving a view)."""
    q: dict[str, Any] = {}
    if st["view"] is not None:
        q["view"] = st["view"].key
    if st["filter"] is not None:
        q["filter"] = orjson.dumps(st["filter"]).decode()
    if st["search"]:
        q["q"] = st["search"]
    q["sort"] = ",".join(st["sort"])
    q["columns"] = ",".join(st["columns"])
    q["page_size"] = st["page_size"]
    return q


def _sortable(app: CompiledApp, obj: CompiledObject, column: str) -> bool:
    """Whether the list can be sorted by a column: a lookup sorts by its target's
    title, a path by the field it ends at (see ``runtime.query.sort_keys``)."""
    *hops, name = column.split(".")
    for hop in hops:
        obj = app.object(obj.lookups[hop])
    f = obj.fields.get(name)
    return name in SYSTEM_COLUMNS if f is None else f.ftype.sortable


def _rows(ctx, app: CompiledApp, obj: CompiledObject, rows: list[dict[str, Any]], columns: list[str],
          titles: Titles):
    """The table's cells; ``titles`` may hold other wishes of the page, fetched together."""
    for c in columns:
        head, _sep, rest = c.partition(".")
        if head in obj.lookups:
            titles.want(obj.lookups[head], [r.get(head) for r in rows], [rest] if rest else ())
    titles.fetch()
    users = user_names(ctx, {r.get(c) for r in rows for c in columns if c in USER_COLUMNS})
    loc = locale()
    out = []
    for r in rows:
        cells = []
        for c in columns:
            head, _sep, rest = c.partition(".")
            value = r.get(head)
            if head in USER_COLUMNS:
                cells.append(users.get(value, "") if value is not None else "")
            elif head in ("created_at", "updated_at"):
                cells.append(format_plain("datetime", value, loc) if value else "")
            elif head in SYSTEM_COLUMNS:
                cells.append("" if value is None else str(value))
            else:
                f = obj.fields[head]
                if rest:
                    target = app.object(obj.lookups[head])
                    sub = target.fields.get(rest)
                    v = titles.value(target.name, value, rest)
                    cells.append(display(sub, v, loc) if sub is not None else "")
                elif head in obj.lookups:
                    target = obj.lookups[head]
                    cells.append(display(f, value, loc, title=titles.title(target, value),
                                         link=titles.link(target, value)))
                else:
                    cells.append(display(f, value, loc))
        out.append({"id": r["id"], "cells": cells})
    return out


@bp.post("/app/<object_name>/views")
def save_view(object_name: str):
    ctx = signed_in()
    form = request.form
    label = form.get("label", "").strip()
    definition: dict[str, Any] = {"label": label}
    try:
        if form.get("filter"):
            definition["filter"] = parse_json(form["filter"], "the filter", floats="float")
    except BadQuery:
        flash(_("The filter could not be read; the view was not saved."), "error")
        return redirect(url_for("web.list_page", object_name=object_name))
    for key in ("columns", "sort"):
        if form.get(key):
            definition[key] = [c for c in form[key].split(",") if c]
    if form.get("q"):
        definition["search"] = form["q"]
    if (size := whole_number(form.get("page_size", ""), MAX_LIMIT, low=0)) is not None:
        definition["page_size"] = size  # 0: the view's schema says what a page size is
    if not label:
        flash(_("Give the view a name."), "error")
        return redirect(url_for("web.list_page", object_name=object_name, **_args_of(definition)))
    try:
        view = state().services.views.save(ctx, object_name, definition, shared=form.get("shared") == "1")
    except LoomworkError as exc:
        flash(_("The view was not saved: %(reason)s", reason=exc.message), "error")
        return redirect(url_for("web.list_page", object_name=object_name, **_args_of(definition)))
    flash(_("View “%(label)s” saved.", label=label), "ok")
    return redirect(url_for("web.list_page", object_name=object_name, view=view.key))


def _args_of(definition: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "filter" in definition:
        out["filter"] = orjson.dumps(definition["filter"]).decode()
    for key in ("columns", "sort"):
        if key in definition:
            out[key] = ",".join(definition[key])
    if "search" in definition:
        out["q"] = definition["search"]
    return out


@bp.post("/app/<object_name>/views/<key>/delete")
def delete_view(object_name: str, key: str):
    ctx = signed_in()
    state().services.views.delete(ctx, object_name, key)
    flash(_("View deleted."), "ok")
    return redirect(url_for("web.list_page", object_name=object_name))


@bp.post("/app/<object_name>/bulk")
def bulk_action(object_name: str):
    """Delete or update the selected records, one transaction each, and say how it went."""
    ctx = signed_in()
    services = state().services
    app = compiled(ctx)
    obj = app.object(object_name)
    ids = [rid for i in request.form.getlist("ids") if (rid := parse_id(i)) is not None]
    back = local_path(request.form.get("back")) or url_for("web.list_page", object_name=object_name)
    if not ids:
        flash(_("Select at least one record first."), "error")
        return redirect(back)
    action = request.form.get("action")
    if action == "delete" and request.form.get("confirm") != "1":
        services.permissions.check(ctx, app, object_name, "delete")
        return render_template(
            "confirm.html", ctx=ctx, nav=navigation(ctx, app), csrf=auth.csrf_token(), object=obj.name,
            object_label=object_label(app, obj.name), object_plural=object_label(app, obj.name, plural=True),
            question=_("Delete %(n)s selected records? An administrator can restore them.", n=len(ids)),
            action=url_for("web.bulk_action", object_name=object_name),
            hidden=[("action", "delete"), ("confirm", "1"), ("back", back), *(("ids", i) for i in ids)],
            cancel=back, confirm_label=_("Delete"))
    done, failed = 0, []
    if action == "delete":
        for rid in ids:
            try:
                services.records.delete(ctx, object_name, rid)
                done += 1
            except LoomworkError as exc:
                failed.append(f"#{rid}: {exc.message}")
        flash(_("%(n)s records deleted.", n=done), "ok")
    elif action == "update":
        name = request.form.get("field", "")
        if name not in obj.fields:
            flash(_("Choose a field to update."), "error")
            return redirect(back)
        values = MultiDict([(name, v) for v in request.form.getlist("value")])
        if obj.fields[name].ftype.multiple:
            values.add(f"{name}__present", "1")
        data, _raw, errors = parse_form(obj.fields, [name], values)
        if errors or name not in data:
            flash("; ".join(m for ms in errors.values() for m in ms) or _("Choose a value."), "error")
            return redirect(back)
        for rid in ids:
            try:
                services.records.update(ctx, object_name, rid, data)
                done += 1
            except ValidationError as exc:
                failed.append(f"#{rid}: " + "; ".join(f"{_label(app, obj, k) if k in obj.fields else k}: {m}"
                                                      for k, ms in translate_all(exc.errors).items() for m in ms))
            except LoomworkError as exc:
                failed.append(f"#{rid}: {exc.message}")
        flash(_("%(n)s records updated.", n=done), "ok")
    else:
        flash(_("Unknown action."), "error")
    if failed:
        flash(_("%(n)s records were not changed: %(details)s", n=len(failed), details="; ".join(failed[:10])), "error")
    return redirect(back)
