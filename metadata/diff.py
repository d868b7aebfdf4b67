"""Diff two metadata versions: an element diff for people and a plan for the database.

:func:`doc_diff` lists what changed, path by path, for version history and review.
:func:`plan` turns two versions into typed operations, each classed *instant*
(metadata only), *fast* (DDL that touches no rows) or *heavy* (a rewrite of stored
data, which the runtime refuses inside a request). Roles, forms and views are always
instant. Each operation's description names what changes ("Add validation rule
deal.won_needs_amount", "Change label of deal.amount"), and the plan warns about fields
that form layouts listing their fields explicitly leave unseen. Nothing here touches a
database; :mod:`loomwork.runtime.schema_sync` checks data preconditions and applies the plan.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from dataclasses import field as dc_field
from dataclasses import fields as dc_fields
from types import MappingProxyType
from typing import Any, Literal

from .model import AppMetadata, ChangeAwareFieldTypeSpec, FieldDef, FormDef, ObjectDef

INSTANT, FAST, HEAVY = "instant", "fast", "heavy"
ChangeClass = Literal["instant", "fast", "heavy"]


def doc_diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """Every difference between two documents as ``{path, op, old, new}``."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[dict[str, Any]] = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in new:
                out.append({"path": sub, "op": "removed", "old": old[key], "new": None})
            elif key not in old:
                out.append({"path": sub, "op": "added", "old": None, "new": new[key]})
            else:
                out.extend(doc_diff(old[key], new[key], sub))
        return out
    if old != new:
        return [{"path": path, "op": "changed", "old": old, "new": new}]
    return []


@dataclass(frozen=True)
class IndexSpec:
    """An index the metadata asks for; ``live_only`` makes it partial on ``deleted_at IS NULL``."""

    name: str
    table: str
    columns: tuple[str, ...]
    unique: bool = False
    live_only: bool = False


def index_name(prefix: str, table: str, suffix: str) -> str:
    """A readable index name within PostgreSQL's 63-byte limit."""
    name = f"{prefix}_{table}_{suffix}"
    if len(name) > 63:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:54]}_{digest}"
    return name


def index_sources(obj: ObjectDef) -> list[tuple[str, IndexSpec]]:
    """Every index an object's metadata implies, with the element asking for it
    (``default_sort``, ``fields.<name>`` or ``indexes.<name>``)."""
    out: list[tuple[str, IndexSpec]] = []
    sort_cols = tuple(s.lstrip("-") for s in obj.default_sort)
    out.append(("default_sort", IndexSpec(index_name("ix", obj.name, "sort"), obj.name,
                                          (*sort_cols, "id") if "id" not in sort_cols else sort_cols)))
    for f in obj.fields.values():
        if f.unique:
            out.append((f"fields.{f.name}", IndexSpec(index_name("ux", obj.name, f.name), obj.name, (f.name,),
                                                      unique=True, live_only=True)))
        elif f.type == "lookup" or f.indexed:
            out.append((f"fields.{f.name}", IndexSpec(index_name("ix", obj.name, f.name), obj.name, (f.name,))))
    for idx in obj.indexes.values():
        # A non-unique index ends with id, so it also serves keyset pages sorted by its
        # last column (id is always the final sort key).
        columns = idx.fields if idx.unique or "id" in idx.fields else (*idx.fields, "id")
        out.append((f"indexes.{idx.name}", IndexSpec(index_name("ux" if idx.unique else "ix", obj.name, idx.name),
                                                     obj.name, columns, unique=idx.unique,
                                                     live_only=idx.unique)))
    return out


def desired_indexes(obj: ObjectDef) -> dict[str, IndexSpec]:
    """The indexes an object's metadata implies, by name.

    Names are unique per object and across objects: :func:`loomwork.metadata.validation.validate_app`
    refuses metadata whose index names would clash.
    """
    out: dict[str, IndexSpec] = {}
    for _, spec in index_sources(obj):
        out.setdefault(spec.name, spec)
    return out


@dataclass(frozen=True)
class Operation:
    """One step of a plan. ``detail`` is plain JSON so plans can be stored and shown."""

    kind: str
    change: ChangeClass
    object: str
    description: str
    field: str | None = None
    detail: Mapping[str, Any] = dc_field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["detail"] = dict(self.detail)
        return d


@dataclass(frozen=True)
class Plan:
    """The operations of a publish, and warnings about what it leaves unseen (a field
    on no form layout): they do not stop the publish, the admin should read them."""

    old_version: int
    operations: tuple[Operation, ...]
    warnings: tuple[Mapping[str, Any], ...] = ()

    @property
    def change(self) -> ChangeClass:
        classes = {op.change for op in self.operations}
        return HEAVY if HEAVY in classes else FAST if FAST in classes else INSTANT

    def as_dict(self) -> dict[str, Any]:
        return {"old_version": self.old_version, "change": self.change,
                "operations": [op.as_dict() for op in self.operations],
                "warnings": [dict(w) for w in self.warnings]}

    def __bool__(self) -> bool:
        return bool(self.operations)


def _field_doc(f: FieldDef) -> dict[str, Any]:
    return {"name": f.name, "type": f.type}


def plan(old: AppMetadata, new: AppMetadata, types: Mapping[str, ChangeAwareFieldTypeSpec]) -> Plan:
    """The operations that take the database from ``old`` to ``new``.

    Renames are recognised from ``renamed_from`` hints in the new document (a rename
    without a hint would be a drop and an add, losing the column's data).
    """
    drops_idx: list[Operation] = []
    structure: list[Operation] = []
    adds_idx: list[Operation] = []
    instant: list[Operation] = []

    new_objs = new.doc.get("objects", {})
    # new name -> old name, for objects renamed with a ``renamed_from`` hint
    renamed_objects = {
        name: odoc["renamed_from"] for name, odoc in new_objs.items()
        if name not in old.objects and odoc.get("renamed_from") in old.objects
    }
    for oname in old.objects:
        if oname not in new.objects and oname not in renamed_objects.values():
            structure.append(Operation("drop_object", INSTANT, oname,
                                       f"Hide object {oname} (its table and data are kept)"))

    for nname, nobj in new.objects.items():
        source = nname if nname in old.objects else renamed_objects.get(nname)
        if source is None:
            structure.append(Operation("create_object", FAST, nname, f"Create table {nname}",
                                       detail={"fields": [_field_doc(f) for f in nobj.fields.values()]}))
            for spec in desired_indexes(nobj).values():
                adds_idx.append(_add_index(spec))
            continue
        oobj = old.objects[source]
        if source != nname:
            structure.append(Operation("rename_object", FAST, nname, f"Rename table {source} to {nname}",
                                       detail={"old": source}))
        _plan_fields(oobj, nobj, new_objs[nname], types, structure, instant,
                     {old: new for new, old in renamed_objects.items()})
        old_idx, new_idx = desired_indexes(oobj), desired_indexes(nobj)
        for name, spec in old_idx.items():
            if source != nname or name not in new_idx or new_idx[name] != spec:
                drops_idx.append(Operation("drop_index", FAST, nname, f"Drop index {name}",
                                           detail={"name": name, "table": source}))
        for name, spec in new_idx.items():
            if source != nname or name not in old_idx or old_idx[name] != spec:
                adds_idx.append(_add_index(spec))
        old_rest = {k: v for k, v in old.doc["objects"][source].items() if k not in ("fields", "renamed_from")}
        new_rest = {k: v for k, v in new_objs[nname].items() if k not in ("fields", "renamed_from")}
        instant.extend(_object_ops(nname, old_rest, new_rest))

    instant.extend(_role_ops(old.doc.get("roles", {}), new.doc.get("roles", {})))
    instant.extend(_package_ops(old.doc.get("packages", {}), new.doc.get("packages", {})))
    for kind in ("form", "view", "script", "approval", "workflow"):
        instant.extend(_plan_elements(kind, old, new))
    return Plan(old.version, tuple(drops_idx + structure + instant + adds_idx),
                tuple(layout_warnings(old, new, renamed_objects)))


# -- what each plan line says ------------------------------------------------------
# Every line names what changes ("Add validation rule deal.won_needs_amount", "Delete
# role auditor", "Change label of deal.amount"): the admin approves a plan by reading it.

def _verb(before: Any, after: Any) -> str:
    return "Add" if before is None else "Delete" if after is None else "Change"


def _changed_keys(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                  skip: tuple[str, ...] = ()) -> list[str]:
    """Keys whose values differ, in ``before``'s order, then ``after``'s new ones."""
    before, after = before or {}, after or {}
    return [k for k in dict.fromkeys([*before, *after]) if k not in skip and before.get(k) != after.get(k)]


def _join(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


#: Named parts of an object, each added, deleted or changed on a plan line of its own.
_OBJECT_PARTS = {"validations": "validation rule", "sections": "section"}


def _object_ops(name: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[Operation]:
    """Object-level settings: a line per validation rule and section, one for the rest.
    (Declared indexes are named by their ``add_index`` and ``drop_index`` lines.)"""
    out: list[Operation] = []
    plain: list[str] = []
    for key in _changed_keys(before, after, skip=("indexes",)):
        if key not in _OBJECT_PARTS:
            plain.append(key)
            continue
        olds, news = before.get(key) or {}, after.get(key) or {}
        for part in _changed_keys(olds, news):
            b, a = olds.get(part), news.get(part)
            what = _verb(b, a)
            desc = (f"Change {_join(_changed_keys(b, a))} of {_OBJECT_PARTS[key]} {name}.{part}" if what == "Change"
                    else f"{what} {_OBJECT_PARTS[key]} {name}.{part}")
            out.append(Operation("change_object", INSTANT, name, desc, detail={
                "element": f"{key}.{part}", "op": what.lower(),
                "changes": doc_diff({part: b} if b is not None else {}, {part: a} if a is not None else {}, key)}))
    if plain:
        out.insert(0, Operation("change_object", INSTANT, name, f"Change {_join(plain)} of {name}", detail={
            "changes": doc_diff({k: before[k] for k in plain if k in before},
                                {k: after[k] for k in plain if k in after})}))
    return out


def _role_ops(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Operation]:
    out = []
    for name in _changed_keys(old, new):
        b, a = old.get(name), new.get(name)
        what = _verb(b, a)
        if what != "Change":
            desc = f"{what} role {name}"
        elif _changed_keys(b, a) == ["permissions"]:
            desc = f"Change permissions of role {name} on {_join(_changed_keys(b.get('permissions'), a.get('permissions')))}"
        else:
            desc = f"Change {_join(_changed_keys(b, a))} of role {name}"
        out.append(Operation("change_role", INSTANT, "*", desc, detail={
            "name": name, "op": what.lower(), "changes": doc_diff(b or {}, a or {})}))
    return out


def _package_ops(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Operation]:
    out = []
    for name in _changed_keys(old, new):
        b, a = old.get(name), new.get(name)
        if b is None:
            desc = f"Install package {name} {a.get('version', '')}".rstrip()
        elif a is None:
            desc = f"Remove package {name} from the installed packages"
        elif b.get("version") != a.get("version"):
            desc = f"Change package {name} from version {b.get('version')} to {a.get('version')}"
        else:
            desc = f"Change {_join(_changed_keys(b, a))} of package {name}"
        out.append(Operation("change_package", INSTANT, "*", desc, detail={
            "name": name, "op": _verb(b, a).lower(), "changes": doc_diff(b or {}, a or {})}))
    return out


def _plan_elements(kind: str, old: AppMetadata, new: AppMetadata) -> list[Operation]:
    """Instant ``change_form``, ``change_view``, ... lines for each form, view, script,
    approval or workflow added, changed or deleted: they are metadata only, and the
    runtime reads them from the new version."""
    olds, news = old.doc.get(f"{kind}s", {}), new.doc.get(f"{kind}s", {})
    out: list[Operation] = []
    for name in _changed_keys(olds, news):
        before, after = olds.get(name), news.get(name)
        obj = (after or before).get("object", "*")
        what = _verb(before, after)
        if what != "Change":
            out.append(Operation(f"change_{kind}", INSTANT, obj, f"{what} {kind} {name}", detail={
                "name": name, "op": what.lower(), "changes": doc_diff(before or {}, after or {})}))
        elif kind == "form":
            out.extend(_form_ops(name, before, after, old.forms[name], new.forms[name]))
        else:
            out.append(Operation(f"change_{kind}", INSTANT, obj,
                                 f"Change {_join(_changed_keys(before, after))} of {kind} {name}",
                                 detail={"name": name, "op": "change", "changes": doc_diff(before, after)}))
    return out


def _form_ops(name: str, before: Mapping[str, Any], after: Mapping[str, Any],
              old_form: FormDef, new_form: FormDef) -> list[Operation]:
    """A line per field the form starts or stops showing, and one for its other changes."""
    obj = new_form.object
    old_names, new_names = old_form.field_names(), new_form.field_names()
    added = [f for f in new_names if f not in old_names]
    removed = [f for f in old_names if f not in new_names]
    old_sections = {sec.name for sec in old_form.sections()}
    out = []
    for f in added:
        tab, section = new_form.where(f) or ("", "")
        where = f"new section {section}" if section not in old_sections else f"section {section}"
        out.append(Operation("change_form", INSTANT, obj, f"Add {obj}.{f} to form {name} ({where})", field=f,
                             detail={"name": name, "op": "add_field", "tab": tab, "section": section}))
    for f in removed:
        out.append(Operation("change_form", INSTANT, obj, f"Remove {obj}.{f} from form {name}", field=f,
                             detail={"name": name, "op": "remove_field"}))
    moved = [f for f in new_names if f in old_names and old_form.where(f) != new_form.where(f)]
    for f in moved:
        tab, section = new_form.where(f) or ("", "")
        out.append(Operation("change_form", INSTANT, obj, f"Move {obj}.{f} on form {name} to section {section}",
                             field=f, detail={"name": name, "op": "move_field", "tab": tab, "section": section}))
    rest = _changed_keys(before, after)
    named = set(added) | set(removed) | set(moved)
    if "tabs" in rest and _skeleton(before["tabs"], named) == _skeleton(after["tabs"], named):
        rest.remove("tabs")
    if rest:
        out.append(Operation("change_form", INSTANT, obj, f"Change {_join(rest)} of form {name}", detail={
            "name": name, "op": "change",
            "changes": doc_diff({k: before[k] for k in rest if k in before}, {k: after[k] for k in rest if k in after})}))
    return out


def _skeleton(tabs: list[Any], drop: set[str]) -> list[Any]:
    """Tabs without the entries of fields in ``drop``, and without the sections that
    held only such fields: what is left to compare once added and removed fields are named."""
    out = []
    for tab in tabs:
        tab = dict(tab)
        sections = []
        for sec in tab.get("sections", ()):
            entries = sec.get("fields")
            if entries:
                kept = [e for e in entries if (e if isinstance(e, str) else e.get("field")) not in drop]
                if not kept:
                    continue
                sec = {**sec, "fields": kept}
            sections.append(sec)
        if "sections" in tab:
            tab["sections"] = sections
        out.append(tab)
    return out


def layout_warnings(old: AppMetadata, new: AppMetadata,
                    renamed_objects: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """Fields that forms listing their fields explicitly do not show, where the admin
    would not expect it: fields this change adds (a form with ``new_fields: none``, or
    a form added with the field left out), and fields that were visible (on a form, or
    on the generated layout of an object without forms) and are now on none.

    :param renamed_objects: new object name -> old name, for objects this change renames.
    """
    renamed_objects = renamed_objects or {}
    out = []
    for oname, obj in new.objects.items():
        forms = new.forms_for(oname)
        if not forms:
            continue  # the generated layout shows every field
        source = oname if oname in old.objects else renamed_objects.get(oname)
        old_obj = old.objects.get(source) if source else None
        old_forms = old.forms_for(source) if old_obj is not None else []
        shown_before = ({f for form in old_forms for f in form.field_names()} if old_forms
                        else set(old_obj.fields) if old_obj is not None else set())
        fdocs = new.doc["objects"][oname].get("fields", {})
        for fname in obj.fields:
            missing = [form for form in forms if fname not in form.field_names()]
            if not missing:
                continue
            was = fdocs.get(fname, {}).get("renamed_from", fname)
            added = old_obj is None or was not in old_obj.fields
            if not added and (len(missing) < len(forms) or was not in shown_before):
                continue
            names = [f"{form.name} (new_fields: none)" if form.new_fields == "none" else form.name
                     for form in missing]
            if len(missing) < len(forms):
                message = (f"{oname}.{fname} is not on form{'s' if len(names) > 1 else ''} {_join(names)}, "
                           f"which list{'' if len(names) > 1 else 's'} {'their' if len(names) > 1 else 'its'} "
                           f"fields explicitly: users who get {'those layouts' if len(names) > 1 else 'it'} "
                           f"do not see it")
            else:
                message = (f"{oname}.{fname} is on no form layout{'' if added else ' any more'}: "
                           f"form{'s' if len(names) > 1 else ''} {_join(names)} "
                           f"list{'' if len(names) > 1 else 's'} {'their' if len(names) > 1 else 'its'} "
                           f"fields explicitly")
            out.append({"object": oname, "field": fname, "forms": [form.name for form in missing],
                        "message": message})
    return out


def _add_index(spec: IndexSpec) -> Operation:
    return Operation("add_index", FAST, spec.table, f"Create index {spec.name}",
                     detail={"name": spec.name, "table": spec.table, "columns": list(spec.columns),
                             "unique": spec.unique, "live_only": spec.live_only})


def _retarget(f: FieldDef, renamed_objects: Mapping[str, str]) -> FieldDef:
    """``f`` with a lookup target renamed in the same plan under its new name (renaming
    the target object is not a change of the lookup)."""
    target = f.props.get("target") if f.type == "lookup" else None
    if target not in renamed_objects:
        return f
    return replace(f, props=MappingProxyType({**f.props, "target": renamed_objects[target]}))


def _plan_fields(oobj: ObjectDef, nobj: ObjectDef, ndoc: Mapping[str, Any],
                 types: Mapping[str, ChangeAwareFieldTypeSpec],
                 structure: list[Operation], instant: list[Operation],
                 renamed_objects: Mapping[str, str]) -> None:
    nfields = ndoc.get("fields", {})
    renamed = {
        nfields[n]["renamed_from"]: n for n in nfields
        if nfields[n].get("renamed_from") in oobj.fields and n not in oobj.fields
    }
    for fname, ofield in oobj.fields.items():
        if fname not in nobj.fields and fname not in renamed:
            structure.append(Operation("drop_field", INSTANT, nobj.name,
                                       f"Hide field {nobj.name}.{fname} (its data is kept)", field=fname,
                                       detail={"type": ofield.type}))
    for fname, nfield in nobj.fields.items():
        source = fname if fname in oobj.fields else next((o for o, n in renamed.items() if n == fname), None)
        if source is None:
            # ``table`` is the object's table before this plan runs (it may be renamed
            # in the same plan): data checks run before any DDL.
            detail = {"type": nfield.type, "table": oobj.name}
            if nfield.required:
                detail["required"] = True
            structure.append(Operation("add_field", FAST, nobj.name, f"Add column {nobj.name}.{fname}",
                                       field=fname, detail=detail))
            continue
        ofield = _retarget(oobj.fields[source], renamed_objects)
        if source != fname:
            structure.append(Operation("rename_field", FAST, nobj.name,
                                       f"Rename column {nobj.name}.{source} to {fname}", field=fname,
                                       detail={"old": source}))
        reason = types[nfield.type].heavy_change(ofield, nfield) if nfield.type in types else None
        if reason:
            structure.append(Operation("change_field", HEAVY, nobj.name,
                                       f"Change {nobj.name}.{fname}: {reason}", field=fname,
                                       detail={"reason": reason, "old_type": ofield.type, "new_type": nfield.type}))
        else:
            settings = _field_changes(ofield, nfield)
            if nfield.required and not ofield.required:
                instant.append(Operation("require_field", INSTANT, nobj.name,
                                         f"Make {nobj.name}.{fname} required (checked: no empty values)",
                                         field=fname, detail={"table": oobj.name, "column": source,
                                                              "type": nfield.type}))
                settings.remove("required")
            if settings:
                instant.append(Operation("change_field", INSTANT, nobj.name,
                                         f"Change {_join(settings)} of {nobj.name}.{fname}", field=fname,
                                         detail={"settings": settings}))


def _field_changes(old: FieldDef, new: FieldDef) -> list[str]:
    """The settings (common ones, then the type's own) that differ between two versions of a field."""
    out = [f.name for f in dc_fields(FieldDef) if f.name not in ("name", "props")
           and getattr(old, f.name) != getattr(new, f.name)]
    return out + _changed_keys(old.props, new.props)
