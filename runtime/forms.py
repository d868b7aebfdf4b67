"""Form layouts resolved for an actor: what a record page and its edit form show.

A tenant's ``form`` documents lay an object's fields out in tabs and sections, with
related lists of child records. The layout an actor gets is the highest-priority
form assigned to one of their roles, else a form assigned to nobody in particular,
else one generated from the object (its sections, then the remaining fields, then a
related list per lookup pointing at it). Layouts carry no conditions of their own:
conditions live on fields and object sections, where the record service enforces
them (decision D30). A layout is built once per metadata version and cached on the
compiled app.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from .compiled import CompiledApp, CompiledObject
from .context import Context
from .evaluation import fetch_paths, make_env
from .expr import EvaluationError

#: Related lists show this many of the child's fields unless the form says otherwise.
RELATED_FIELDS = 4


@dataclass(frozen=True)
class Slot:
    """One field placed in a section."""

    field: str
    widget: str
    span: int = 1
    label: Any = None
    help: Any = None


@dataclass(frozen=True)
class Section:
    name: str
    label: Any
    columns: int
    slots: tuple[Slot, ...]
    collapsible: bool = False
    collapsed: bool = False


@dataclass(frozen=True)
class Related:
    """Child records of ``object`` whose lookup ``via`` points at the record shown."""

    object: str
    via: str
    label: Any
    fields: tuple[str, ...]
    sort: tuple[str, ...]
    limit: int


@dataclass(frozen=True)
class Tab:
    name: str
    label: Any
    sections: tuple[Section, ...]
    related: tuple[Related, ...] = ()


@dataclass(frozen=True)
class Layout:
    object: str
    #: The form document's name, or None for a generated layout.
    name: str | None
    tabs: tuple[Tab, ...]

    def slots(self) -> Iterator[Slot]:
        for tab in self.tabs:
            for section in tab.sections:
                yield from section.slots

    @property
    def related(self) -> tuple[Related, ...]:
        return tuple(r for tab in self.tabs for r in tab.related)


def layout_for(app: CompiledApp, object_name: str, roles: frozenset[str]) -> Layout:
    """The layout ``roles`` see for ``object_name``. :raises NotFound: for an unknown object."""
    obj = app.object(object_name)
    name = choose_form(app.meta.doc.get("forms", {}), object_name, roles)
    return app.artefact(f"layout:{object_name}:{name or ''}",
                        lambda: build_layout(app, obj, name, app.meta.doc["forms"][name] if name else None))


def choose_form(forms: dict[str, Any], object_name: str, roles: frozenset[str]) -> str | None:
    """The form for these roles: assigned ones win over unassigned, then priority, then name."""
    candidates = [
        (not doc.get("roles"), -doc.get("priority", 0), name)
        for name, doc in forms.items()
        if doc.get("object") == object_name and (not doc.get("roles") or roles.intersection(doc["roles"]))
    ]
    return min(candidates)[2] if candidates else None


def build_layout(app: CompiledApp, obj: CompiledObject, name: str | None, doc: dict[str, Any] | None) -> Layout:
    if doc is None:
        return generated_layout(app, obj)
    tabs = []
    for tdoc in doc["tabs"]:
        sections = tuple(_section(app, obj, sdoc) for sdoc in tdoc.get("sections", ()))
        related = tuple(_related(app, rdoc) for rdoc in tdoc.get("related", ()))
        tabs.append(Tab(tdoc["name"], tdoc.get("label"), sections, related))
    return Layout(obj.name, name, tuple(tabs))


def _wide(app: CompiledApp, widget: str) -> bool:
    """Whether the widget's control takes the whole row of a multi-column section."""
    w = app.widgets.get(widget)
    return w is not None and w.wide


def _slot(app: CompiledApp, obj: CompiledObject, entry: str | dict[str, Any], columns: int) -> Slot:
    entry = {"field": entry} if isinstance(entry, str) else entry
    f = obj.fields[entry["field"]]
    widget = entry.get("widget") or f.ftype.widget
    span = entry.get("span") or (columns if _wide(app, widget) else 1)
    return Slot(f.name, widget, min(span, columns), entry.get("label"), entry.get("help"))


def _section(app: CompiledApp, obj: CompiledObject, sdoc: dict[str, Any]) -> Section:
    columns = sdoc.get("columns", 2)
    shared = obj.defn.sections.get(sdoc["section"]) if sdoc.get("section") else None
    entries = sdoc.get("fields") or (list(shared.fields) if shared else [])
    label = sdoc.get("label") or (shared.label if shared else None)
    return Section(sdoc["name"], label, columns, tuple(_slot(app, obj, e, columns) for e in entries),
                   bool(sdoc.get("collapsible")), bool(sdoc.get("collapsed")))


def _related(app: CompiledApp, rdoc: dict[str, Any]) -> Related:
    child = app.object(rdoc["object"])
    fields = tuple(rdoc.get("fields") or _summary_fields(app, child, exclude=rdoc["via"]))
    sort = tuple(rdoc.get("sort") or child.defn.default_sort)
    return Related(child.name, rdoc["via"], rdoc.get("label") or child.defn.plural_label or child.defn.label,
                   fields, sort, rdoc.get("limit", 5))


def _summary_fields(app: CompiledApp, obj: CompiledObject, exclude: str) -> list[str]:
    """A few short fields that say what a record is: its title first."""
    out = [obj.defn.title_field] if obj.defn.title_field else []
    for f in obj.fields.values():
        if len(out) >= RELATED_FIELDS:
            break
        if f.name not in out and f.name != exclude and not _wide(app, f.ftype.widget):
            out.append(f.name)
    return out


def generated_layout(app: CompiledApp, obj: CompiledObject) -> Layout:
    """One tab: the object's own sections, then every other field, then related lists."""
    placed: set[str] = set()
    sections = []
    for sec in obj.defn.sections.values():
        slots = tuple(_slot(app, obj, n, 2) for n in sec.fields if n not in placed)
        placed.update(s.field for s in slots)
        sections.append(Section(sec.name, sec.label, 2, slots))
    rest = tuple(_slot(app, obj, n, 2) for n in obj.fields if n not in placed)
    if rest:
        sections.insert(0, Section("details", None, 2, rest))
    related = tuple(
        Related(ref.object, ref.field, app.object(ref.object).defn.plural_label or app.object(ref.object).defn.label,
                tuple(_summary_fields(app, app.object(ref.object), exclude=ref.field)),
                tuple(app.object(ref.object).defn.default_sort), 5)
        for ref in obj.referenced_by)
    return Layout(obj.name, None, (Tab("main", None, tuple(sections), related),))


@dataclass(frozen=True)
class FieldStates:
    """How a stored record's conditions come out: what a record page hides, and what
    an edit form starts with (the browser re-evaluates as the user types)."""

    hidden: frozenset[str]
    required: frozenset[str]
    read_only: frozenset[str]
    #: Values behind lookups the conditions read (``account.industry``), JSON-ready.
    paths: dict[str, Any]


def field_states(ctx: Context, conn: sa.Connection, app: CompiledApp, obj: CompiledObject,
                 row: Mapping[str, Any]) -> FieldStates:
    """Evaluate visible_if / required_if / read_only_if on the stored ``row`` as the
    record service would; a condition that cannot be evaluated counts as not true."""
    rules = obj.rules
    paths = fetch_paths(conn, app, obj, row, rules.paths, ctx) if rules.paths else {}
    env = make_env(ctx, row, row, paths)

    def holds(exprs: Any) -> bool:
        try:
            return any(e.evaluate(env) is True for e in exprs)
        except EvaluationError:
            return False

    def shown(exprs: Any) -> bool:
        try:
            return all(e.evaluate(env) is True for e in exprs)
        except EvaluationError:
            return False

    hidden = frozenset(n for n, exprs in rules.visible.items() if not shown(exprs))
    required = frozenset(n for n, exprs in rules.required.items() if n not in hidden and holds(exprs))
    locked = frozenset(n for n, exprs in rules.read_only.items() if not ctx.actor.is_admin and holds(exprs))
    return FieldStates(hidden, required, locked, {k: _wire(v) for k, v in paths.items()})


def _wire(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    return value
