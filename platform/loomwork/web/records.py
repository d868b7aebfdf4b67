"""Record pages and create/edit forms, generated from the object's form layout.

Every write goes through the record service: a form post is parsed into the same
JSON the API takes, and the service's 422 errors come back inline at their fields.
The browser re-evaluates conditions as the user types (lw-form.js); the page is
complete without JavaScript.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for

from loomwork.metadata.errors import ConflictError, LoomworkError, PermissionDenied, ValidationError
from loomwork.metadata.model import label_text
from loomwork.runtime.compiled import CompiledApp, CompiledObject
from loomwork.runtime.evaluation import primary_role, reads
from loomwork.runtime.forms import FieldStates, Layout, layout_for
from loomwork.runtime.query import ListRequest
from loomwork.runtime.rules import rules_document
from loomwork.runtime.sandbox.budget import BudgetExceeded, ScriptFailed

from .. import auth
from ..inputs import INT_MAX, whole_number
from ..state import state
from . import bp
from .approvals import panel as approval_panel
from .common import _, compiled, locale, navigation, object_label, parse_id, signed_in
from .messages import reason_text, translate, translate_all
from .present import choice_labels, display, input_value, parse_form, scale, shown_as
from .titles import Titles, user_names

#: How many history entries a record page shows.
HISTORY_LIMIT = 50


def _record_id(raw: str) -> int:
    """The record id in the URL, or 404 (``abc``, ``0``, ``01`` and huge numbers name no record)."""
    rid = parse_id(raw)
    if rid is None:
        abort(404)
    return rid


def _editable(obj: CompiledObject, layout: Layout) -> list[str]:
    """The fields a form for ``layout`` sends: placed, and neither computed nor numbered."""
    return [s.field for s in layout.slots()
            if s.widget != "readonly" and not obj.fields[s.field].ftype.system_set
            and not obj.fields[s.field].defn.read_only]


def _field_view(app: CompiledApp, obj: CompiledObject, slot: Any, record: dict[str, Any], states: FieldStates,
                titles: Titles, raw: dict[str, Any] | None, errors: dict[str, list[dict[str, Any]]],
                limits: _Limits | None = None) -> dict[str, Any]:
    f = obj.fields[slot.field]
    loc = locale()
    value = record.get(f.name)
    system_set = f.ftype.system_set  # shown, never typed in
    view = {
        "name": f.name, "id": f"f-{f.name}", "kind": f.ftype.kind, "widget": "readonly" if system_set else slot.widget,
        "span": slot.span,
        "label": label_text(slot.label or f.defn.label, loc, f.name.replace("_", " ").capitalize()),
        "help": label_text(slot.help or f.defn.prop("help"), loc, ""),
        "required": bool(f.defn.required) or f.name in states.required,
        "read_only": slot.widget == "readonly" or system_set or bool(f.defn.read_only) or f.name in states.read_only,
        "hidden": f.name in states.hidden,
        "limited": limits is not None and f.name in limits.read_only,
        "value": raw[f.name] if raw is not None and f.name in raw else input_value(f, value),
        "errors": errors.get(f.name, []),  # {"text", "reads", "rule"} (see _form_errors)
        "scale": f.defn.prop("scale"), "currency": f.ftype.currency(f.defn),
    }
    if view["limited"]:
        view["read_only"] = True
    if f.ftype.computed:
        view["computed"] = {"kind": shown_as(f, slot.widget), "scale": scale(f), "currency": f.ftype.currency(f.defn),
                            "formula": f.name in obj.rules.formulas, "preview": _previewable(obj, f.name)}
    if f.ftype.has_options:
        view["choices"] = list(choice_labels(f, loc).items())
        offered = limits.choices.get(f.name) if limits is not None else None
        if offered is not None:
            view["choices"] = [(v, lbl) for v, lbl in view["choices"] if v in offered]
    target_name = obj.lookups.get(f.name)
    if target_name is not None:
        target = app.object(target_name)
        view["lookup"] = {"object": target.name, "title_field": target.defn.title_field or "id",
                          "title": titles.title(target.name, view["value"]) if view["value"] else ""}
    link = titles.link(target_name, value) if target_name is not None else None
    view["display"] = display(f, value, loc, title=titles.title(target_name, value)
                              if target_name is not None else None, link=link, widget=slot.widget)
    return view


def _previewable(obj: CompiledObject, name: str) -> bool:
    """Whether a form can compute formula ``name`` as the user types: it reads only this
    record's fields (no lookup, also through the formulas it reads), which the form
    holds; lookups are the server's to follow."""
    formulas = obj.rules.formulas
    if name not in formulas:
        return False
    return not any("." in p for n in reads(obj.rules, formulas[name]) | {name} if n in formulas
                   for p in formulas[n].deps.paths)


def _tabs(app, obj, layout: Layout, record, states, titles, raw=None, errors=None,
          limits: _Limits | None = None) -> list[dict[str, Any]]:
    tabs = []
    for tab in layout.tabs:
        sections = []
        for sec in tab.sections:
            fields = [_field_view(app, obj, s, record, states, titles, raw, errors or {}, limits) for s in sec.slots]
            sections.append({"name": sec.name, "label": label_text(sec.label, locale(), ""), "columns": sec.columns,
                             "collapsible": sec.collapsible, "collapsed": sec.collapsed, "fields": fields,
                             "hidden": bool(fields) and all(f["hidden"] for f in fields)})
        tabs.append({"name": tab.name, "label": label_text(tab.label, locale(), _("Details")),
                     "sections": sections, "related": tab.related})
    return tabs


def _form_data(ctx, app: CompiledApp, obj: CompiledObject, layout: Layout, tabs, record, states: FieldStates,
               editing: bool) -> dict[str, Any]:
    """What lw-form.js needs: the typed condition trees, the environment and the fields."""
    now = ctx.now()
    lookups: dict[str, list[str]] = {}
    for path in obj.rules.paths:
        head, _sep, rest = path.partition(".")
        lookups.setdefault(head, []).append(rest.split(".")[0])
    fields = {}
    for tab in tabs:
        for sec in tab["sections"]:
            for fv in sec["fields"]:
                entry = {k: fv[k] for k in ("kind", "widget", "required", "read_only", "label")}
                entry["required"] = bool(obj.fields[fv["name"]].defn.required)
                entry["read_only"] = fv["read_only"] and fv["name"] not in states.read_only
                if "choices" in fv:
                    entry["choices"] = [{"value": v, "label": lbl} for v, lbl in fv["choices"]]
                if "computed" in fv:
                    entry["computed"] = fv["computed"]
                if "lookup" in fv:
                    entry["lookup"] = {"object": fv["lookup"]["object"], "title_field": fv["lookup"]["title_field"],
                                       "fields": sorted(set(lookups.get(fv["name"], ())))}
                fields[fv["name"]] = entry
    return {
        "rules": rules_document(obj, locale()),
        "env": {"old": record if editing else None, "paths": states.paths, "user_id": ctx.actor.id,
                "is_admin": ctx.actor.is_admin,
                "user_role": primary_role(ctx.actor.roles), "now": now.astimezone(dt.UTC).isoformat(),
                "today": now.astimezone(dt.UTC).date().isoformat()},
        "fields": fields,
        "editing": editing,
    }


def _page(template: str, ctx, app: CompiledApp, obj: CompiledObject, **values: Any):
    perms = state().services.permissions
    return render_template(
        template, ctx=ctx, nav=navigation(ctx, app), object=obj.name, csrf=auth.csrf_token(),
        object_label=object_label(app, obj.name), object_plural=object_label(app, obj.name, plural=True),
        can={op: perms.allowed(ctx, app, obj.name, op) for op in ("create", "read", "update", "delete")},
        **values)


@bp.get("/app/<object_name>/<raw_id>")
def record_page(object_name: str, raw_id: str):
    ctx = signed_in()
    rid = _record_id(raw_id)
    services = state().services
    record, states = services.records.for_form(ctx, object_name, rid)
    app = compiled(ctx)
    obj = app.object(object_name)
    layout = layout_for(app, object_name, ctx.actor.roles)
    history = services.records.history(ctx, object_name, rid, limit=HISTORY_LIMIT)
    titles = Titles(ctx, app)
    titles.want_record(obj, record)
    related = {f"{r.object}:{r.via}": _related(ctx, app, r, rid, titles) for r in layout.related
               if services.permissions.allowed(ctx, app, r.object, "read")}
    for entry in history:
        target = obj.lookups.get(entry["field"] or "")
        if target is not None:
            titles.want(target, [entry["old"], entry["new"]])
    titles.fetch()
    users = user_names(ctx, {record.get("created_by"), record.get("updated_by"), record.get("owner_id"),
                             *(h["changed_by"] for h in history)})
    tabs = _tabs(app, obj, layout, record, states, titles)

    def present(child: CompiledObject, name: str, row: dict[str, Any]) -> Any:
        f = child.fields[name]
        target = child.lookups.get(name)
        return display(f, row.get(name), locale(), title=titles.title(target, row.get(name)) if target else None)

    actions = [{"name": s.name, "label": s.title(locale())} for s in services.scripts.actions(ctx, object_name)]
    abilities = services.abilities.for_record(ctx, object_name, rid)
    approval = approval_panel(ctx, app, object_name, record, abilities)
    transitions = [{"name": t["name"], "label": t["label"], "allowed": t["ability"].allowed,
                    "reason": reason_text(t["ability"].reason)} for t in abilities.transitions]
    return _page("record.html", ctx, app, obj, record=record, tabs=tabs, related=related, present=present,
                 history=_history(obj, history, titles, users, {s.field: s.widget for s in layout.slots()}),
                 users=users, actions=actions, approval=approval, transitions=transitions, abilities=abilities,
                 edit_reason=reason_text(abilities.edit.reason),
                 title=titles.title(obj.name, rid) or f"#{rid}",
                 created_at=_when(record.get("created_at")), updated_at=_when(record.get("updated_at")))


@bp.post("/app/<object_name>/<raw_id>/transitions/<name>")
def take_transition(object_name: str, raw_id: str, name: str):
    """A status button: take the transition, then back to the record."""
    ctx = signed_in()
    rid = _record_id(raw_id)
    try:
        state().services.workflows.transition(ctx, object_name, rid, name)
        flash(_("Status changed."), "ok")
    except (ValidationError, PermissionDenied, ConflictError) as exc:
        reason = "; ".join(m for ms in translate_all(exc.errors).values() for m in ms) \
            if isinstance(exc, ValidationError) else exc.message
        flash(_("Status not changed: %(reason)s", reason=reason), "error")
    return redirect(url_for("web.record_page", object_name=object_name, raw_id=rid))


@bp.post("/app/<object_name>/<raw_id>/actions/<name>")
def run_action(object_name: str, raw_id: str, name: str):
    """An action button: run the script, then back to the record saying how it went."""
    ctx = signed_in()
    rid = _record_id(raw_id)
    app = compiled(ctx)
    script = app.meta.scripts.get(name)
    label = script.title(locale()) if script is not None else name
    try:
        outcome = state().services.scripts.run_action(ctx, object_name, rid, name)
    except ValidationError as exc:
        messages = [m for ms in translate_all(exc.errors).values() for m in ms]
        flash(_("%(action)s refused: %(reason)s", action=label, reason="; ".join(messages)), "error")
    except (ConflictError, ScriptFailed, BudgetExceeded) as exc:
        flash(_("%(action)s failed: %(reason)s", action=label, reason=exc.message), "error")
    else:
        result = outcome["result"]
        if result is None or isinstance(result, (dict, list)):
            flash(_("%(action)s done.", action=label), "ok")
        else:
            flash(_("%(action)s done: %(result)s", action=label, result=str(result)[:300]), "ok")
    return redirect(url_for("web.record_page", object_name=object_name, raw_id=rid))


def _when(value: str | None) -> str:
    from .present import format_plain
    return format_plain("datetime", value, locale()) if value else ""


def _history(obj: CompiledObject, entries: list[dict[str, Any]], titles: Titles, users: dict[int, str],
             widgets: dict[str, str]):
    """The timeline entries, values formatted as the layout shows them."""
    out = []
    for e in entries:
        f = obj.fields.get(e["field"] or "")
        label = label_text(f.defn.label, locale(), f.name) if f is not None else (e["field"] or "")

        def show(v: Any, _f=f) -> Any:
            if _f is None:
                return "" if v is None else str(v)
            target = obj.lookups.get(_f.name)
            return display(_f, v, locale(), title=titles.title(target, v) if target else None,
                           widget=widgets.get(_f.name))
        out.append({"action": e["action"], "field": label, "old": show(e["old"]), "new": show(e["new"]),
                    "by": users.get(e["changed_by"], _("system")), "at": _when(e["changed_at"]),
                    "how": _how(e.get("origin"), e.get("via"))})
    return out


def _how(origin: str | None, via: str | None) -> str:
    """How a history entry came about, when it was not a person's own edit."""
    if origin == "derived":
        return _("follows another change")
    if origin == "approval":
        return _("by the approval")
    if origin == "script":
        return _("by a script")
    if origin == "import":
        return _("imported")
    return ""


def _related(ctx, app: CompiledApp, rel: Any, rid: int, titles: Titles) -> dict[str, Any]:
    child = app.object(rel.object)
    flt = {"field": rel.via, "op": "eq", "value": rid}
    try:
        result = state().services.query.list(ctx, rel.object, ListRequest(
            filter=flt, sort=list(rel.sort), fields=list(rel.fields), limit=rel.limit))
        rows, error = result.data, None
        more = result.next_cursor is not None
    except LoomworkError as exc:
        rows, error, more = [], exc.message, False
    for row in rows:
        titles.want_record(child, row)
    columns = [{"name": n, "label": label_text(child.fields[n].defn.label, locale(), n)} for n in rel.fields]
    return {"object": rel.object, "via": rel.via, "rows": rows, "columns": columns, "error": error, "more": more,
            "label": label_text(rel.label, locale(), rel.object), "filter": flt, "child": child}


@bp.route("/app/<object_name>/new", methods=["GET", "POST"])
def create_form(object_name: str):
    ctx = signed_in()
    services = state().services
    record, states = services.records.for_form(ctx, object_name, None)
    app = compiled(ctx)
    obj = app.object(object_name)
    layout = layout_for(app, object_name, ctx.actor.roles)
    for key, value in request.args.items():  # "New deal" from an account's related list
        if key in obj.lookups and (rid := parse_id(value)) is not None:
            record[key] = rid
    raw, errors, banner = None, {}, None
    if request.method == "POST":
        data, raw, errors = parse_form(obj.fields, _editable(obj, layout), request.form)
        if not errors:
            # A field left empty on a new record is not given, so its default (or
            # default_expr, which may depend on what the user did fill in) applies.
            given = {k: v for k, v in data.items() if v is not None and v != []}
            try:
                created = services.records.create(ctx, object_name, given)
            except ValidationError as exc:
                errors, banner = exc.errors, _("Please correct the errors below.")
            else:
                flash(_("%(object)s created.", object=object_label(app, object_name)), "ok")
                return redirect(url_for("web.record_page", object_name=object_name, raw_id=created["id"]))
        else:
            banner = _("Please correct the errors below.")
    return _form_page(ctx, app, obj, layout, record, states, raw, errors, banner, editing=False)


@bp.route("/app/<object_name>/<raw_id>/edit", methods=["GET", "POST"])
def edit_form(object_name: str, raw_id: str):
    ctx = signed_in()
    rid = _record_id(raw_id)
    services = state().services
    app = compiled(ctx)
    services.permissions.check(ctx, app, object_name, "update")
    record, states = services.records.for_form(ctx, object_name, rid)
    obj = app.object(object_name)
    layout = layout_for(app, object_name, ctx.actor.roles)
    # Said before the user types: a locked record (approval, state) is shown, not edited.
    abilities = services.abilities.for_record(ctx, object_name, rid)
    locked = None if abilities.edit.allowed else reason_text(abilities.edit.reason)
    limits = _edit_limits(app, obj, abilities)
    raw, errors, banner, stale = None, {}, None, False
    if request.method == "POST":
        editable = [n for n in _editable(obj, layout) if n not in limits.read_only]
        data, raw, errors = parse_form(obj.fields, editable, request.form)
        version = request.form.get("row_version", "")
        # An empty box for an empty field is no change (a form cannot tell null from []).
        data = {k: v for k, v in data.items() if not (v in (None, []) and record.get(k) in (None, []))}
        if locked is not None:  # locked since the form was opened: say so, keep what was typed
            errors, banner = {}, _("Not saved: %(reason)s", reason=locked)
        elif not errors:
            try:
                services.records.update(ctx, object_name, rid, data,
                                        expected_version=whole_number(version, INT_MAX, low=0))
            except ValidationError as exc:
                errors, banner = exc.errors, _("Please correct the errors below.")
            except ConflictError:
                stale = True
            except PermissionDenied as exc:  # refused meanwhile (say, submitted): keep what was typed
                banner = _("Not saved: %(reason)s", reason=translate(exc.message))
            else:
                flash(_("Changes saved."), "ok")
                return redirect(url_for("web.record_page", object_name=object_name, raw_id=rid))
        else:
            banner = _("Please correct the errors below.")
        if not stale:
            record["row_version"] = whole_number(version, INT_MAX, low=0) or record["row_version"]
    return _form_page(ctx, app, obj, layout, record, states, raw, errors, banner, editing=True, stale=stale,
                      locked=locked, limits=limits)


class _Limits:
    """What the services allow this edit: fields kept read-only, choices offered."""

    def __init__(self, read_only: frozenset[str] = frozenset(), choices: dict[str, list[Any]] | None = None):
        self.read_only, self.choices = read_only, choices or {}


def _edit_limits(app: CompiledApp, obj: CompiledObject, abilities: Any) -> _Limits:
    """The workflow's state field offers the current state and the transitions open
    now; fields outside an approver's or a state's editable ones stay read-only."""
    choices: dict[str, list[Any]] = {}
    wf = app.meta.workflow_for(obj.name)
    if wf is not None:
        choices[wf.field] = list(abilities.states)
    read_only = frozenset()
    if abilities.editable_fields is not None:
        read_only = frozenset(n for n in obj.fields if n not in abilities.editable_fields
                              and not (wf is not None and n == wf.field))
    return _Limits(read_only, choices)


def _form_page(ctx, app, obj, layout, record, states, raw, errors, banner, *, editing: bool, stale: bool = False,
               locked: str | None = None, limits: _Limits | None = None):
    titles = Titles(ctx, app)
    titles.want_record(obj, record)
    if raw:
        for name, value in raw.items():
            target = obj.lookups.get(name)
            if target is not None and (rid := parse_id(value)) is not None:
                titles.want(target, [rid])
    titles.fetch()
    shown = _form_errors(errors)
    tabs = _tabs(app, obj, layout, record, states, titles, raw, shown, limits)
    placed = {s.field for s in layout.slots()}
    other_errors = [{**m, "text": f"{k}: {m['text']}" if k != "_schema" else m["text"]}
                    for k, msgs in shown.items() if k not in placed for m in msgs]
    status = 409 if stale else 422 if errors else 200
    return _page("form.html", ctx, app, obj, record=record, tabs=tabs, editing=editing, banner=banner,
                 stale=stale, other_errors=other_errors, locked=locked, errors_banner=bool(errors),
                 title=titles.title(obj.name, record.get("id")) if editing else "",
                 form_data=_form_data(ctx, app, obj, layout, tabs, record, states, editing)), status


def _form_errors(errors: dict[str, list[str]]) -> dict[str, list[dict[str, Any]]]:
    """The record service's errors in the page's language, each with what decided it:
    the fields it ``reads`` (a message from the rules says, see ``RuleMessage``; any other
    one is about its own field) and the validation ``rule`` behind it, for lw-form.js to
    drop or re-check the message when the user changes one of those fields."""
    out: dict[str, list[dict[str, Any]]] = {}
    for key, messages in errors.items():
        for m in messages:
            reads = sorted(getattr(m, "reads", None) or ({key} if key != "_schema" else ()))
            out.setdefault(key, []).append({"text": translate(m), "reads": reads, "rule": getattr(m, "rule", None)})
    return out
