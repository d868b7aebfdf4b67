"""The list page's filter in words: one chip per condition ("Account is Acme",
"Stage is any of Won, Lost"), each with a link that drops it.

Lookup values are record ids in the filter AST (that is what the query engine
compares); a chip shows the record's title, read with the page's other titles
(:class:`.titles.Titles`, one query per target object). The chips are rendered by the
server, so they read the same with or without JavaScript; the filter builder
(``lw-list.js``) edits the same AST and gets the same titles in the page data.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from loomwork.metadata.filters import OPERATORS
from loomwork.runtime.compiled import CompiledApp, CompiledField, CompiledObject

from .common import _, locale, parse_id
from .present import choice_labels, format_plain, value_kind
from .titles import Titles


def flat(flt: Any) -> tuple[str, list[Mapping[str, Any]]] | None:
    """``(join, conditions)`` of a filter that is one condition or one ``and``/``or`` of
    conditions (what the builder edits); None for anything else."""
    def condition(node: Any) -> bool:
        return isinstance(node, Mapping) and set(node) == {"field", "op", "value"} and isinstance(node["field"], str)

    if condition(flt):
        return "and", [flt]
    if isinstance(flt, Mapping) and len(flt) == 1:
        (join, items), = flt.items()
        if join in ("and", "or") and isinstance(items, list) and items and all(map(condition, items)):
            return join, items
    return None


def _field(app: CompiledApp, obj: CompiledObject, path: str) -> tuple[CompiledObject, CompiledField | None, str]:
    """The object a path ends in, its field there (None: a system column) and the name."""
    *hops, name = path.split(".")
    for hop in hops:
        target = obj.lookups.get(hop)
        if target is None:
            break
        obj = app.object(target)
    return obj, obj.fields.get(name), name


def _ids(value: Any) -> list[int]:
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        rid = parse_id(v)  # the compact form ?account=12 has text
        if rid is not None:
            out.append(rid)
    return out


def want_titles(app: CompiledApp, obj: CompiledObject, flt: Any, titles: Titles) -> None:
    """Ask ``titles`` for the records the filter's lookup conditions name."""
    shape = flat(flt)
    for c in shape[1] if shape else ():
        target_obj, f, name = _field(app, obj, c["field"])
        target = target_obj.lookups.get(name) if f is not None else None
        if target is not None:
            titles.want(target, _ids(c["value"]))


def lookup_titles(app: CompiledApp, obj: CompiledObject, flt: Any, titles: Titles) -> dict[str, dict[str, str]]:
    """``{field: {id: title}}`` for the builder's lookup rows (fetched titles only)."""
    out: dict[str, dict[str, str]] = {}
    shape = flat(flt)
    for c in shape[1] if shape else ():
        if "." in c["field"] or c["field"] not in obj.lookups:
            continue
        target = obj.lookups[c["field"]]
        for rid in _ids(c["value"]):
            if titles.row(target, rid) is not None:  # a record the user may read
                out.setdefault(c["field"], {})[str(rid)] = titles.title(target, rid)
    return out


def _value_text(app: CompiledApp, obj: CompiledObject, path: str, value: Any, titles: Titles) -> str:
    target_obj, f, name = _field(app, obj, path)
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False)[:200]  # not a value of a valid filter: as written
    if isinstance(value, str) and value.startswith("$") and not value.startswith("$$"):
        return value  # a variable: $today, $user.id
    if f is None:
        kind = "datetime" if name in ("created_at", "updated_at") else "text"
        return format_plain(kind, value, locale()) if value is not None else ""
    lookup = target_obj.lookups.get(name)
    if lookup is not None:
        ids = _ids(value)
        return titles.title(lookup, ids[0]) or str(value) if ids else str(value)
    kind = value_kind(f)
    if f.ftype.has_options:
        return choice_labels(f, locale()).get(value, str(value))
    if kind == "boolean":
        return _("Yes") if value in (True, "true") else _("No")
    return format_plain(kind, value, locale(), None, f.ftype.currency(f.defn))


def describe(app: CompiledApp, obj: CompiledObject, c: Mapping[str, Any], titles: Titles,
             label: Callable[[str], str], op_labels: Mapping[str, str]) -> str:
    """One condition in words: "Account is Acme"."""
    field, op, value = label(c["field"]), c["op"], c["value"]
    operator = OPERATORS.get(op) if isinstance(op, str) else None
    if operator is None:
        return f"{field} {op} {value}"
    if operator.operand == "flag" or (op in ("eq", "ne") and value is None):
        empty = value is True or (op == "eq" and value is None)
        return _("%(field)s is empty", field=field) if empty else _("%(field)s is not empty", field=field)
    if operator.operand == "list" and isinstance(value, list):
        text = ", ".join(_value_text(app, obj, c["field"], v, titles) for v in value)
    elif operator.operand == "range" and isinstance(value, list) and len(value) == 2:
        text = " – ".join(_value_text(app, obj, c["field"], v, titles) for v in value)
    else:
        text = _value_text(app, obj, c["field"], value, titles)
    return f"{field} {op_labels.get(op, op)} {text}"


def chips(app: CompiledApp, obj: CompiledObject, flt: Any, titles: Titles, label: Callable[[str], str],
          op_labels: Mapping[str, str]) -> dict[str, Any] | None:
    """The filter as chips: ``{"join", "items": [{"text", "rest"}]}``, ``rest`` being the
    filter without that condition (None: no filter left). A filter the builder cannot
    show is one chip that clears it."""
    if flt is None:
        return None
    shape = flat(flt)
    if shape is None:
        return {"join": "and", "items": [{"text": _("Custom filter"), "rest": None}]}
    join, conds = shape
    items = []
    for i, c in enumerate(conds):
        others = conds[:i] + conds[i + 1:]
        rest = None if not others else others[0] if len(others) == 1 else {join: others}
        items.append({"text": describe(app, obj, c, titles, label, op_labels), "rest": rest})
    return {"join": join, "items": items}


__all__ = ["flat", "want_titles", "lookup_titles", "describe", "chips"]
