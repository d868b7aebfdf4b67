"""Diff two metadata versions: an element diff for people and a plan for the database.

:func:`doc_diff` lists what changed, path by path, for version history and review.
:func:`plan` turns two versions into typed operations, each classed *instant*
(metadata only), *fast* (DDL that touches no rows) or *heavy* (a rewrite of stored
data, which the runtime refuses inside a request). Roles, forms and views are always
instant. Nothing here touches a database;
:mod:`loomwork.runtime.schema_sync` checks data preconditions and applies the plan.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from dataclasses import field as dc_field
from types import MappingProxyType
from typing import Any, Literal

from .model import AppMetadata, ChangeAwareFieldTypeSpec, FieldDef, ObjectDef

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
    old_version: int
    operations: tuple[Operation, ...]

    @property
    def change(self) -> ChangeClass:
        classes = {op.change for op in self.operations}
        return HEAVY if HEAVY in classes else FAST if FAST in classes else INSTANT

    def as_dict(self) -> dict[str, Any]:
        return {"old_version": self.old_version, "change": self.change,
                "operations": [op.as_dict() for op in self.operations]}

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
        if old_rest != new_rest:
            instant.append(Operation("change_object", INSTANT, nname, f"Change settings of {nname}",
                                     detail={"changes": doc_diff(old_rest, new_rest)}))

    for section in ("roles", "packages"):
        changes = doc_diff(old.doc.get(section, {}), new.doc.get(section, {}), section)
        if changes:
            instant.append(Operation(f"change_{section}", INSTANT, "*", f"Change {section}",
                                     detail={"changes": changes}))
    for kind in ("form", "view", "script", "approval", "workflow"):
        instant.extend(_plan_layouts(kind, old.doc.get(f"{kind}s", {}), new.doc.get(f"{kind}s", {})))
    return Plan(old.version, tuple(drops_idx + structure + instant + adds_idx))


def _plan_layouts(kind: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Operation]:
    """One instant ``change_form`` / ``change_view`` per form or view added, changed or
    removed: they are metadata only, and the runtime reads them from the new version."""
    out = []
    for name in [*old, *(n for n in new if n not in old)]:
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        what = "Add" if before is None else "Remove" if after is None else "Change"
        out.append(Operation(f"change_{kind}", INSTANT, (after or before).get("object", "*"),
                             f"{what} {kind} {name}",
                             detail={"name": name, "op": what.lower(),
                                     "changes": doc_diff(before or {}, after or {})}))
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
        elif nfield.required and not ofield.required:
            instant.append(Operation("require_field", INSTANT, nobj.name,
                                     f"Make {nobj.name}.{fname} required (checked: no empty values)",
                                     field=fname, detail={"table": oobj.name, "column": source,
                                                          "type": nfield.type}))
        elif {k: v for k, v in vars(ofield).items() if k != "name"} != \
                {k: v for k, v in vars(nfield).items() if k != "name"}:
            instant.append(Operation("change_field", INSTANT, nobj.name, f"Change settings of {nobj.name}.{fname}",
                                     field=fname))
