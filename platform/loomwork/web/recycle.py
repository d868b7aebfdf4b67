"""Deleting and restoring records: the confirmation, the refusal when other records hold
on to one, and the recycle bin.

A delete is soft (the record keeps its row with ``deleted_at``), so the bin of an object
lists its deleted records — through the query service, so the reader's permissions and
row filters apply — with who deleted them and when, and *Restore* for those who may
(restoring is the record service's, and needs the ``delete`` permission). A delete that
other records refuse (a lookup with ``on_delete: restrict``) keeps the user on the record,
saying which records hold it, with links to them.
"""
from __future__ import annotations

import json
from typing import Any

from flask import flash, redirect, request, url_for
from markupsafe import Markup, escape

from loomwork.metadata.errors import ConflictError, LoomworkError, PermissionDenied, ValidationError
from loomwork.metadata.model import label_text
from loomwork.runtime.compiled import CompiledApp, CompiledObject
from loomwork.runtime.context import Context
from loomwork.runtime.query import ListRequest
from loomwork.runtime.titles import record_title

from ..state import state
from . import bp
from .common import _, compiled, locale, object_label, signed_in
from .messages import translate
from .present import format_plain
from .records import _page, _record_id
from .titles import user_names

#: Deleted records per page of the bin.
BIN_PAGE = 25
#: The bin lists the last deleted first: deleting a record sets its updated_at.
BIN_SORT = ("-updated_at",)


@bp.route("/app/<object_name>/<raw_id>/delete", methods=["GET", "POST"])
def delete_record(object_name: str, raw_id: str):
    """Ask, then delete; a refusal is said on the record page, which the user never left."""
    ctx = signed_in()
    rid = _record_id(raw_id)
    services = state().services
    app = compiled(ctx)
    obj = app.object(object_name)
    back = url_for("web.record_page", object_name=object_name, raw_id=rid)
    if request.method == "POST":
        try:
            services.records.delete(ctx, object_name, rid)
        except ConflictError as exc:
            flash(_held_by(ctx, app, obj, rid, exc), "error")
            return redirect(back)
        except PermissionDenied as exc:
            flash(_("Not deleted: %(reason)s", reason=translate(exc.message)), "error")
            return redirect(back)
        flash(_("%(object)s deleted.", object=object_label(app, object_name)), "ok")
        return redirect(url_for("web.list_page", object_name=object_name))
    services.permissions.check(ctx, app, object_name, "delete")
    record = services.records.get(ctx, object_name, rid)
    return _page("confirm.html", ctx, app, obj, question=_(
        "Delete %(object)s “%(title)s”? It goes to the recycle bin, where it can be restored.",
        object=object_label(app, object_name), title=record_title(obj, record)),
        action=url_for("web.delete_record", object_name=object_name, raw_id=rid), hidden=[],
        cancel=back, record=record, confirm_label=_("Delete"))


def _held_by(ctx: Context, app: CompiledApp, obj: CompiledObject, rid: int, exc: ConflictError) -> Markup:
    """Why a delete was refused, with a link to each kind of record that holds this one
    (those the user may read); the service's reason when none is found."""
    query = state().services.query
    perms = state().services.permissions
    refs = [r for r in obj.referenced_by if r.on_delete == "restrict" and perms.allowed(ctx, app, r.object, "read")]
    links = []
    for ref in refs:
        flt = {"field": ref.field, "op": "eq", "value": rid}
        try:
            found = query.list(ctx, ref.object, ListRequest(filter=flt, fields=["id"], limit=1, count="exact")).count
        except LoomworkError:  # a row filter the reader cannot use here: say it without the link
            continue
        if not found:
            continue
        text = _("%(count)s %(objects)s", count=found, objects=object_label(app, ref.object, plural=found != 1))
        if sum(r.object == ref.object for r in refs) > 1:  # two lookups from one object: say which
            child = app.object(ref.object)
            text += f" ({label_text(child.fields[ref.field].defn.label, locale(), ref.field)})"
        href = url_for("web.list_page", object_name=ref.object, view="", filter=json.dumps(flt))
        links.append(Markup('<a href="{}">{}</a>').format(href, text))
    if not links:
        return escape(_("Not deleted: %(reason)s", reason=translate(exc.message)))
    lead = _("Not deleted: other records refer to this %(object)s. Delete them or link them elsewhere first:",
             object=object_label(app, obj.name))
    return escape(lead) + Markup(" ") + Markup(", ").join(links)


@bp.get("/app/<object_name>/deleted")
def recycle_bin(object_name: str):
    """An object's deleted records: who deleted each and when, and Restore."""
    ctx = signed_in()
    services = state().services
    app = compiled(ctx)
    obj = app.object(object_name)
    search = request.args.get("search", "").strip()[:200]
    result = services.query.list(ctx, object_name, ListRequest(
        sort=list(BIN_SORT), limit=BIN_PAGE, cursor=request.args.get("cursor") or None, search=search or None,
        only_deleted=True))
    users = user_names(ctx, {r.get("updated_by") for r in result.data})
    loc = locale()
    rows = [{"id": r["id"], "title": record_title(obj, r),
             "when": format_plain("datetime", r["deleted_at"], loc) if r.get("deleted_at") else "",
             "by": users.get(r.get("updated_by"), _("system"))} for r in result.data]
    more = url_for("web.recycle_bin", object_name=object_name, cursor=result.next_cursor,
                   **({"search": search} if search else {})) if result.next_cursor else None
    return _page("recycle.html", ctx, app, obj, rows=rows, search=search, more=more,
                 first_page=not request.args.get("cursor"))


@bp.post("/app/<object_name>/<raw_id>/restore")
def restore_record(object_name: str, raw_id: str):
    """Restore from the bin; back to the bin saying why when the service refuses."""
    ctx = signed_in()
    rid = _record_id(raw_id)
    app = compiled(ctx)
    label = object_label(app, object_name)
    try:
        state().services.records.restore(ctx, object_name, rid)
    except ValidationError as exc:  # a unique value taken meanwhile
        flash(_("Not restored: %(reason)s", reason=_reasons(exc.errors)), "error")
    except (ConflictError, PermissionDenied) as exc:
        flash(_("Not restored: %(reason)s", reason=translate(exc.message)), "error")
    else:
        flash(_("%(object)s restored.", object=label), "ok")
        return redirect(url_for("web.record_page", object_name=object_name, raw_id=rid))
    return redirect(url_for("web.recycle_bin", object_name=object_name))


def _reasons(errors: dict[str, list[Any]]) -> str:
    return "; ".join(f"{k}: {translate(m)}" if k != "_schema" else translate(m) for k, ms in errors.items() for m in ms)
