"""Validate metadata documents: JSON Schema first, then semantic checks.

Every error names the path of the offending value, in the form admins see in the
designer and the API: ``objects.deal.fields.amount.precision: must be <= 18``.
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
from referencing import Registry, Resource

from . import filters
from .errors import MetadataError
from .extensions import ApprovalActionSpec, WidgetSpec
from .model import COMMON_FIELD_KEYS, SYSTEM_COLUMNS, FieldTypeSpec
from .new_fields import new_fields_errors

SCHEMA_FILES = ("common", "object", "role", "form", "view", "script", "approval", "workflow", "package", "app")

#: Words that would make generated SQL or API payloads ambiguous; names may not use them.
RESERVED_NAMES = frozenset(SYSTEM_COLUMNS) | frozenset(
    """all and any array as asc between by case cast check collate column constraint
    create cross current_date current_time current_timestamp current_user default
    delete desc distinct do else end except false fetch for foreign from grant group
    having in index inner insert intersect into is join key leading left like limit
    natural not null offset on only or order outer primary references returning right
    select session_user set some symmetric table then to trailing true union unique
    update user using values when where window with meta data api
    """.split()
)


@cache
def _registry() -> tuple[Registry, dict[str, dict]]:
    schemas = {}
    registry = Registry()
    root = resources.files("loomwork.metadata") / "schemas"
    for name in SCHEMA_FILES:
        doc = json.loads((root / f"{name}.json").read_text(encoding="utf-8"))
        schemas[name] = doc
        resource = Resource.from_contents(doc)
        registry = registry.with_resources([(doc["$id"], resource), (f"{name}.json", resource)])
    return registry, schemas


def schema(kind: str) -> dict:
    """The JSON Schema document of a metadata kind (``object``, ``role``, ``form``, ``view``,
    ``package``, ``app``)."""
    return _registry()[1][kind]


def registered_schema(kind: str, *, widgets: Mapping[str, WidgetSpec] | None = None,
                      actions: Mapping[str, ApprovalActionSpec] | None = None) -> dict:
    """The JSON Schema of ``kind`` as clients get it: :func:`schema` with what plugins
    registered filled in — each approval action kind's body (``approval``) and the
    widget names (``form``). (Publishing checks the same through :func:`validate_app`.)"""
    doc = copy.deepcopy(schema(kind))
    if kind == "approval" and actions is not None:
        doc["$defs"]["actions"]["items"]["oneOf"] = [
            {"required": [name], "properties": {name: copy.deepcopy(dict(a.schema))}}
            for name, a in sorted(actions.items())]
    if kind == "form" and widgets is not None:
        doc["$defs"]["widget"] = {**doc["$defs"]["widget"], "enum": sorted(widgets)}
    return doc


@cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    registry, schemas = _registry()
    return jsonschema.Draft202012Validator(schemas[kind], registry=registry)


def _message(err: jsonschema.ValidationError) -> str:
    v, val = err.validator, err.validator_value
    if v == "maximum":
        return f"must be <= {val}"
    if v == "minimum":
        return f"must be >= {val}"
    if v == "exclusiveMinimum":
        return f"must be > {val}"
    if v == "maxLength":
        return f"must be at most {val} characters"
    if v == "minLength":
        return "must not be empty" if val == 1 else f"must be at least {val} characters"
    if v == "pattern":
        return f"must match {val}"
    if v == "type":
        return f"must be of type {val}"
    if v == "enum":
        return "must be one of " + ", ".join(map(str, val))
    if v == "const":
        return f"must be {val!r}"
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return f"{missing} is required"
    if v == "additionalProperties":
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        return "unknown property " + ", ".join(repr(e) for e in extra)
    if v in ("maxItems", "maxProperties"):
        return f"must have at most {val} entries"
    if v in ("minItems", "minProperties"):
        return f"must have at least {val} entries"
    if v == "uniqueItems":
        return "must not repeat entries"
    if v == "propertyNames":
        return f"name {err.instance!r} is not allowed (lower-case letters, digits and _, starting with a letter)"
    if v == "oneOf":
        common = _registry()[1]["common"]["$defs"]
        if err.schema in (common["label"], common["help"]):
            return "must be a text or a mapping of locale to text"
        return "has the wrong shape"
    return err.message


def _path(prefix: str, parts: Iterable[Any]) -> str:
    return ".".join([prefix, *map(str, parts)]) if prefix else ".".join(map(str, parts))


def schema_errors(kind: str, doc: Any, prefix: str = "") -> list[tuple[str, str]]:
    """JSON Schema errors of ``doc`` as ``(path, message)`` pairs, most specific first."""
    return _errors(_validator(kind), doc, prefix)


def body_errors(body_schema: Mapping[str, Any], body: Any, prefix: str) -> list[tuple[str, str]]:
    """JSON Schema errors of ``body`` against a schema a plugin gives (an approval
    action kind's), which may ``$ref`` the schemas of :data:`SCHEMA_FILES` by ``$id``."""
    return _errors(jsonschema.Draft202012Validator(body_schema, registry=_registry()[0]), body, prefix)


def _errors(validator: jsonschema.Draft202012Validator, doc: Any, prefix: str) -> list[tuple[str, str]]:
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path))):
        # oneOf / anyOf wrap their causes; report the most useful leaf.
        leaf = err
        if err.context:
            leaf = min(err.context, key=lambda e: len(list(e.absolute_path)) * -1)
            if leaf.validator in ("type",) and err.validator == "oneOf":
                leaf = err
        if "propertyNames" in err.absolute_schema_path:
            # A bad key: jsonschema reports it at the enclosing mapping with the key as
            # the instance; name the key itself (``objects.deal.fields.Amount``).
            out.append((_path(prefix, [*err.absolute_path, err.instance]),
                        f"name {err.instance!r} is not allowed (lower-case letters, digits and _, "
                        f"starting with a letter, at most 63 characters)"))
            continue
        path = _path(prefix, err.absolute_path if leaf is err else leaf.absolute_path)
        out.append((path, _message(leaf)))
    return out


def _raise(errors: list[tuple[str, str]]) -> None:
    if errors:
        merged: dict[str, list[str]] = {}
        for path, msg in errors:
            merged.setdefault(path, [])
            if msg not in merged[path]:
                merged[path].append(msg)
        raise MetadataError(merged)


def _check_name(name: str, path: str, errors: list[tuple[str, str]]) -> None:
    if name.startswith("lw_"):
        errors.append((path, f"name {name!r} must not start with 'lw_' (reserved for system tables)"))
    elif name in RESERVED_NAMES:
        errors.append((path, f"name {name!r} is reserved"))


def validate_field(
    obj_name: str, name: str, fdoc: Mapping[str, Any], app_doc: Mapping[str, Any],
    types: Mapping[str, FieldTypeSpec],
) -> list[tuple[str, str]]:
    path = f"objects.{obj_name}.fields.{name}"
    errors: list[tuple[str, str]] = []
    _check_name(name, path, errors)
    ftype = types.get(fdoc.get("type"))
    if ftype is None:
        errors.append((f"{path}.type", f"unknown field type {fdoc.get('type')!r}; known: {', '.join(sorted(types))}"))
        return errors
    extra = set(fdoc) - COMMON_FIELD_KEYS - set(ftype.properties)
    for key in sorted(extra):
        errors.append((f"{path}.{key}", f"unknown property for a {ftype.name} field"))
    sub = {
        "type": "object",
        "properties": dict(ftype.properties),
        "required": list(ftype.required_properties),
    }
    validator = jsonschema.Draft202012Validator(sub, registry=_registry()[0])
    for err in validator.iter_errors({k: v for k, v in fdoc.items() if k in ftype.properties}):
        errors.append((_path(path, err.absolute_path), _message(err)))
    for key, value in fdoc.items():
        # JSON Schema counts 10.0 as an integer; the code using these settings does not.
        if ftype.properties.get(key, {}).get("type") == "integer" and isinstance(value, float):
            errors.append((f"{path}.{key}", "must be a whole number"))
    if errors:
        return errors
    if (fdoc.get("unique") or fdoc.get("indexed")) and not ftype.indexable:
        errors.append((f"{path}.unique" if fdoc.get("unique") else f"{path}.indexed",
                       f"a {ftype.name} field cannot be unique or indexed"))
    errors.extend(ftype.check(fdoc, path, app_doc))
    return errors


def _type_of(fdoc: Any, types: Mapping[str, FieldTypeSpec] | None) -> FieldTypeSpec | None:
    """The registered type of field document ``fdoc`` (None: unknown, reported elsewhere)."""
    return types.get(fdoc.get("type")) if isinstance(fdoc, Mapping) and types is not None else None


def _references(fdoc: Any, types: Mapping[str, FieldTypeSpec] | None) -> bool:
    """Whether field document ``fdoc`` holds ids of the records its ``target`` names
    (its type says so: a lookup, or a plugin's type built on it)."""
    ftype = _type_of(fdoc, types)
    return ftype is not None and ftype.references


def _unsortable(fdoc: Any, types: Mapping[str, FieldTypeSpec] | None) -> bool:
    """Whether the type of field document ``fdoc`` has no order to sort by."""
    ftype = _type_of(fdoc, types)
    return ftype is not None and not ftype.sortable


def _lookup_cycles(app_doc: Mapping[str, Any], types: Mapping[str, FieldTypeSpec]) -> list[tuple[str, str]]:
    """Required lookups and cascading deletes must not form cycles.

    A cycle of required lookups makes it impossible to create the first record; a
    cycle of cascades makes one delete walk forever.
    """
    errors = []
    for kind, pred in (
        ("required lookups", lambda f: f.get("required")),
        ("cascading deletes", lambda f: f.get("on_delete") == "cascade"),
    ):
        graph: dict[str, list[tuple[str, str]]] = {}
        for oname, odoc in app_doc.get("objects", {}).items():
            for fname, f in odoc.get("fields", {}).items():
                if _references(f, types) and pred(f) and f.get("target"):
                    graph.setdefault(oname, []).append((f["target"], fname))
        state: dict[str, int] = {}

        def visit(node: str, trail: list[str], graph=graph, state=state) -> list[str] | None:
            state[node] = 1
            for target, _ in graph.get(node, []):
                if state.get(target) == 1:
                    return [*trail, node, target]
                if state.get(target) is None:
                    found = visit(target, [*trail, node])
                    if found:
                        return found
            state[node] = 2
            return None

        for start in sorted(graph):
            if state.get(start) is None:
                cycle = visit(start, [])
                if cycle:
                    first = cycle[cycle.index(cycle[-1])]
                    ring = cycle[cycle.index(first):]
                    field = next(f for t, f in graph[ring[0]] if t == ring[1])
                    errors.append((f"objects.{ring[0]}.fields.{field}",
                                   f"{kind} form a cycle: {' -> '.join(ring)}"))
                    break
    return errors


def validate_object(
    name: str, odoc: Mapping[str, Any], app_doc: Mapping[str, Any], types: Mapping[str, FieldTypeSpec]
) -> list[tuple[str, str]]:
    path = f"objects.{name}"
    errors = schema_errors("object", odoc, path)
    if errors:
        # Still check the fields the schema found nothing wrong with, so one publish
        # reports every problem; cross-references need a well-formed object, so wait.
        fields = odoc.get("fields") if isinstance(odoc, Mapping) else None
        if isinstance(fields, Mapping):
            for fname, fdoc in fields.items():
                fpath = f"{path}.fields.{fname}"
                if _name_ok(fname) and isinstance(fdoc, Mapping) and \
                        not any(p == fpath or p.startswith(fpath + ".") for p, _ in errors):
                    errors.extend(validate_field(name, fname, fdoc, app_doc, types))
        return errors
    _check_name(name, path, errors)
    if "name" in odoc and odoc["name"] != name:
        errors.append((f"{path}.name", f"must be {name!r}, the object's key"))
    fields = odoc.get("fields", {})
    for fname, fdoc in fields.items():
        errors.extend(validate_field(name, fname, fdoc, app_doc, types))
    names = set(fields)
    sortable = names | set(SYSTEM_COLUMNS)
    title = odoc.get("title_field")
    if title and title not in names:
        errors.append((f"{path}.title_field", f"unknown field {title!r}"))
    for i, sf in enumerate(odoc.get("search_fields", [])):
        if sf not in names:
            errors.append((f"{path}.search_fields.{i}", f"unknown field {sf!r}"))
        elif not ((ftype := _type_of(fields[sf], types)) is not None and ftype.searchable):
            errors.append((f"{path}.search_fields.{i}", f"field {sf!r} is not a text field"))
    seen_sort: set[str] = set()
    for i, s in enumerate(odoc.get("default_sort", [])):
        name = s.lstrip("-")
        if name not in sortable or name == "deleted_at":
            errors.append((f"{path}.default_sort.{i}", f"unknown field {name!r}"))
        elif name in fields and _unsortable(fields[name], types):
            errors.append((f"{path}.default_sort.{i}", f"a {fields[name]['type']} field cannot be sorted"))
        elif name in seen_sort:
            errors.append((f"{path}.default_sort.{i}", f"{name!r} is already in the sort"))
        seen_sort.add(name)
    placed: dict[str, str] = {}
    for sname, sec in odoc.get("sections", {}).items():
        for j, f in enumerate(sec["fields"]):
            if f not in names:
                errors.append((f"{path}.sections.{sname}.fields.{j}", f"unknown field {f!r}"))
            elif f in placed:
                errors.append((f"{path}.sections.{sname}.fields.{j}", f"{f!r} is already in section {placed[f]}"))
            else:
                placed[f] = sname
    for vname, rule in odoc.get("validations", {}).items():
        if rule.get("field") and rule["field"] not in names:
            errors.append((f"{path}.validations.{vname}.field", f"unknown field {rule['field']!r}"))
    for iname, idx in odoc.get("indexes", {}).items():
        for j, f in enumerate(idx["fields"]):
            if f not in sortable:
                errors.append((f"{path}.indexes.{iname}.fields.{j}", f"unknown field {f!r}"))
            elif f in fields and fields[f].get("type") in types and not types[fields[f]["type"]].indexable:
                errors.append((f"{path}.indexes.{iname}.fields.{j}", f"field {f!r} cannot be indexed"))
    return errors


def validate_app(doc: Any, types: Mapping[str, FieldTypeSpec], *,
                 widgets: Mapping[str, WidgetSpec] | None = None,
                 actions: Mapping[str, ApprovalActionSpec] | None = None) -> None:
    """Validate a whole tenant metadata document.

    :param types: the registered field types by name.
    :param widgets: the registered form widgets by name (layouts may name only these,
        for fields they fit); None leaves layouts' widgets unchecked.
    :param actions: the registered approval action kinds by name (processes may use
        only these, with bodies their schemas and checks accept); None leaves actions
        unchecked. The runtime always passes both registries.
    :raises MetadataError: with every problem found, keyed by path.
    """
    if not isinstance(doc, dict):
        _raise([("", "must be an object")])
    _raise(_plain_json_errors(doc, ""))
    errors = schema_errors("app", {k: v for k, v in doc.items() if k != "objects"}, "")
    _raise(errors)
    objects = doc.get("objects", {})
    if not isinstance(objects, dict):
        _raise([("objects", "must be an object")])
    for name, odoc in objects.items():
        name_errs = [] if _name_ok(name) else [(f"objects.{name}", "name must match ^[a-z][a-z0-9_]{0,62}$")]
        errors.extend(name_errs or validate_object(name, odoc, doc, types))
    for rname, rdoc in doc.get("roles", {}).items():
        if rname not in ("admin", "user"):
            _check_name(rname, f"roles.{rname}", errors)
        if "name" in rdoc and rdoc["name"] != rname:
            errors.append((f"roles.{rname}.name", f"must be {rname!r}, the role's key"))
        for obj in rdoc.get("permissions", {}):
            if obj != "*" and obj not in objects:
                errors.append((f"roles.{rname}.permissions.{obj}", f"unknown object {obj!r}"))
    if not errors:
        errors.extend(_lookup_cycles(doc, types))
    if not errors:
        errors.extend(_index_clashes(objects))
    if not errors:
        # Layouts and views refer to fields; check them once the objects are sound.
        errors.extend(layout_errors(doc, types, widgets))
        errors.extend(script_errors(doc))
        errors.extend(approval_errors(doc, actions))
        errors.extend(workflow_errors(doc))
    _raise(errors)


def _index_clashes(objects: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Index names are global to a tenant's namespace (on both dialects); two elements
    asking for the same name would silently share, or skip, an index."""
    from .diff import index_sources
    from .model import ObjectDef

    seen: dict[str, str] = {}
    errors = []
    for oname, odoc in objects.items():
        for where, spec in index_sources(ObjectDef.from_doc(oname, odoc)):
            path = f"objects.{oname}.{where}"
            if spec.name in seen:
                errors.append((path, f"its index name {spec.name!r} clashes with the one of {seen[spec.name]}; "
                                     f"rename one of them"))
            else:
                seen[spec.name] = path
    return errors


def _plain_json_errors(value: Any, path: str) -> list[tuple[str, str]]:
    """Metadata is stored as JSON: only text keys, finite numbers and 64-bit integers."""
    stack, out = [(value, path)], []
    while stack:
        v, p = stack.pop()
        if isinstance(v, dict):
            for k, x in v.items():
                if not isinstance(k, str):
                    out.append((p, f"key {k!r} must be a text"))
                else:
                    stack.append((x, f"{p}.{k}" if p else k))
        elif isinstance(v, list):
            stack.extend((x, f"{p}.{i}") for i, x in enumerate(v))
        elif isinstance(v, bool) or v is None or isinstance(v, str):
            continue
        elif isinstance(v, int):
            if not -(2**63) <= v < 2**63:
                out.append((p, "must be a 64-bit integer"))
        elif isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                out.append((p, "must be a finite number"))
        else:
            out.append((p, f"must be a JSON value, not {type(v).__name__}"))
    return sorted(out)


def _name_ok(name: Any) -> bool:
    return isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,62}", name) is not None


def validate_manifest(doc: Any, prefix: str = "package") -> None:
    _raise(schema_errors("package", doc, prefix))


# -- forms and views ---------------------------------------------------------

#: System columns a view or related list may show, sort and filter on (``deleted_at``
#: is internal: deleted records are never listed).
LIST_SYSTEM_COLUMNS = tuple(c for c in SYSTEM_COLUMNS if c != "deleted_at")


def widgets_for(fdoc: Mapping[str, Any], types: Mapping[str, FieldTypeSpec],
                widgets: Mapping[str, WidgetSpec]) -> frozenset[str]:
    """The widgets a form may show field document ``fdoc`` with: the registered ones
    that fit its type (or what it declares it computes), and its type's default."""
    ftype = types.get(fdoc.get("type"))
    if ftype is None:
        return frozenset()
    computes = ftype.widget_result_type(fdoc)
    # A plugin's type built on a built-in one takes that one's widgets too.
    return frozenset(w.name for w in widgets.values()
                     if w.fits(ftype.name, computes) or w.fits(ftype.kind, computes)) | {ftype.widget}


def _resolve(objects: Mapping[str, Any], obj: str, path: str, types: Mapping[str, FieldTypeSpec] | None, *,
             system: bool = True) -> tuple[str | None, Mapping[str, Any] | None]:
    """Follow a field path (``stage``, ``account.industry``) from object ``obj``.

    :returns: ``(problem, field document)``; the document is None for a system column.
    """
    parts = path.split(".")
    for hop in parts[:-1]:
        f = objects[obj].get("fields", {}).get(hop)
        if not _references(f, types) or f.get("target") not in objects:
            return f"{hop!r} in {path!r} is not a lookup field of {obj}", None
        obj = f["target"]
    last, fields = parts[-1], objects[obj].get("fields", {})
    if last in fields:
        return None, fields[last]
    if system and last in LIST_SYSTEM_COLUMNS:
        return None, None
    where = f" (in {path!r})" if len(parts) > 1 else ""
    return f"unknown field {last!r} of {obj}{where}", None


def _filter_walk(node: Any, path: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Check a filter AST by the rules of :mod:`.filters` (shape, operators and their
    operands, depth, size). :returns: ``(errors, [(path of a field key, field path)])``;
    the field paths are resolved against the objects by :func:`layout_errors`, and the
    runtime compiles the whole filter for each object (types, values) before a publish."""
    errors, found = filters.check(node, path)
    bad = {p for p, _ in errors}
    refs = [(f"{c.path}.field", c.field) for c in found if f"{c.path}.field" not in bad]
    return errors, refs


def layout_refs(doc: Mapping[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    """Every field a form or view names, as ``(path, object, field path, use)``.

    ``use`` is ``field`` (a form field: object fields only), ``via`` (a related list's
    lookup), ``column`` or ``sort`` (lists: system columns too). Malformed filters
    yield what can be found; :func:`layout_errors` reports their shape.
    """
    for fname, form in doc.get("forms", {}).items():
        base = f"forms.{fname}"
        for ti, tab in enumerate(form.get("tabs", ())):
            for si, sec in enumerate(tab.get("sections", ())):
                for fi, item in enumerate(sec.get("fields", ())):
                    where = f"{base}.tabs.{ti}.sections.{si}.fields.{fi}"
                    if isinstance(item, str):
                        yield where, form["object"], item, "field"
                    else:
                        yield f"{where}.field", form["object"], item["field"], "field"
            for ri, rel in enumerate(tab.get("related", ())):
                where = f"{base}.tabs.{ti}.related.{ri}"
                yield f"{where}.via", rel["object"], rel["via"], "via"
                for j, f in enumerate(rel.get("fields", ())):
                    yield f"{where}.fields.{j}", rel["object"], f, "column"
                for j, s in enumerate(rel.get("sort", ())):
                    yield f"{where}.sort.{j}", rel["object"], s.lstrip("-"), "sort"
    for vname, view in doc.get("views", {}).items():
        base = f"views.{vname}"
        for j, c in enumerate(view.get("columns", ())):
            yield f"{base}.columns.{j}", view["object"], c, "column"
        for j, s in enumerate(view.get("sort", ())):
            yield f"{base}.sort.{j}", view["object"], s.lstrip("-"), "sort"
        if "filter" in view:
            for where, ref in _filter_walk(view["filter"], f"{base}.filter")[1]:
                yield where, view["object"], ref, "column"


_CRON_FIELD = re.compile(r"^(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[0-9]{1,2})?(,(\*|[0-9]{1,2}(-[0-9]{1,2})?)(/[0-9]{1,2})?)*$")


def script_errors(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """What a script refers to: its object, its run-as role, a sound cron schedule.
    (Its source is compiled by the runtime, which owns the sandbox's rules.)"""
    objects = doc.get("objects", {})
    roles = set(doc.get("roles", {})) | {"admin", "user"}
    errors = []
    for name, script in doc.get("scripts", {}).items():
        base = f"scripts.{name}"
        trigger = script.get("trigger", {})
        if "object" in script and script["object"] not in objects:
            errors.append((f"{base}.object", f"unknown object {script['object']!r}"))
        elif "object" not in script and "schedule" not in trigger:
            errors.append((f"{base}.object", "a record event or action script names its object"))
        if script.get("run_as") is not None and script["run_as"] not in roles:
            errors.append((f"{base}.run_as", f"unknown role {script['run_as']!r}"))
        if "schedule" in trigger:
            parts = trigger["schedule"].split()
            if len(parts) != 5 or not all(_CRON_FIELD.match(p) for p in parts):
                errors.append((f"{base}.trigger.schedule",
                               "must be five cron fields: minute hour day-of-month month day-of-week"))
    return errors


#: Fields every record has that hold a user id (approvers from a record field).
USER_COLUMNS = ("owner_id", "created_by", "updated_by")


def approval_errors(doc: Mapping[str, Any],
                    actions: Mapping[str, ApprovalActionSpec] | None = None) -> list[tuple[str, str]]:
    """Approval processes: their object, node names and links (no loop through ``next``
    and branches: a process always ends), fields and roles they name, and their actions
    by the registered ``actions`` kinds (unchecked when None).
    (Their expressions are checked by the runtime with the rest.)"""
    objects = doc.get("objects", {})
    roles = set(doc.get("roles", {})) | {"admin", "user"}
    errors: list[tuple[str, str]] = []
    for name, proc in doc.get("approvals", {}).items():
        base = f"approvals.{name}"
        if proc["object"] not in objects:
            errors.append((f"{base}.object", f"unknown object {proc['object']!r}"))
            continue
        check = ProcessCheck(doc, proc, roles, actions)
        nodes = proc.get("nodes", [])
        names = [n["name"] for n in nodes]
        for i, n in enumerate(nodes):
            if names.index(n["name"]) != i:
                errors.append((f"{base}.nodes.{i}.name", f"node {n['name']!r} is already defined"))
        known = set(names) | {"end"}
        for role in (proc.get("submitters") or {}).get("roles", ()):
            if role not in roles:
                errors.append((f"{base}.submitters.roles", f"unknown role {role!r}"))
        for i, n in enumerate(nodes):
            where = f"{base}.nodes.{i}"
            links = [(n["next"], f"{where}.next")] if "next" in n else []
            links += [(b["next"], f"{where}.branches.{j}.next") for j, b in enumerate(n.get("branches", ()))]
            errors.extend((w, f"no node {t!r} (use a node's name, or end)") for t, w in links if t not in known)
            if n["type"] == "approval":
                errors.extend(check.people(n.get("approvers"), f"{where}.approvers"))
                errors.extend(check.people((n.get("deadline") or {}).get("reassign_to"),
                                           f"{where}.deadline.reassign_to"))
                for fname in n.get("editable_fields", ()):
                    if fname not in check.fields:
                        errors.append((f"{where}.editable_fields", f"{proc['object']} has no field {fname!r}"))
                if n.get("mode") == "ratio" and "ratio" not in n:
                    errors.append((f"{where}.ratio", "a ratio node says which share must approve (0 to 1)"))
            elif n["type"] == "cc":
                errors.extend(check.people(n.get("recipients"), f"{where}.recipients"))
            elif n["type"] == "action":
                errors.extend(check.actions(n.get("actions"), f"{where}.actions"))
        for key in ("on_approved", "on_rejected", "on_recalled"):
            errors.extend(check.actions(proc.get(key), f"{base}.{key}"))
        if not errors:
            errors.extend(_approval_loops(base, nodes))
    return errors


class ProcessCheck:
    """What the checks of one approval process know, and the checks they share; an
    approval action kind's ``check`` receives it.

    :ivar doc: the tenant's whole document; ``objects``, ``scripts`` and ``roles`` (a
        set of names, built-in roles included) are read from it.
    :ivar proc: the process document; ``object`` is its object's name and ``fields``
        that object's field documents.
    """

    def __init__(self, doc: Mapping[str, Any], proc: Mapping[str, Any], roles: set[str],
                 kinds: Mapping[str, ApprovalActionSpec] | None = None) -> None:
        self.doc = doc
        self.objects = doc.get("objects", {})
        self.scripts = doc.get("scripts", {})
        self.proc, self.roles, self.kinds = proc, roles, kinds
        self.object: str = proc["object"]
        self.fields = self.objects[self.object].get("fields", {})

    def people(self, specs: Any, where: str) -> list[tuple[str, str]]:
        """Problems of approver specs (users, roles, record fields, manager chains) at ``where``."""
        errors = []
        for j, spec in enumerate(specs or ()):
            if "role" in spec and spec["role"] not in self.roles:
                errors.append((f"{where}.{j}.role", f"unknown role {spec['role']!r}"))
            if "field" in spec:
                f = self.fields.get(spec["field"])
                if spec["field"] not in USER_COLUMNS and (f is None or f.get("type") != "integer"):
                    errors.append((f"{where}.{j}.field", f"{spec['field']!r} is not a user field "
                                   f"(owner_id, created_by, updated_by or an integer field)"))
            manager = spec.get("manager") or {}
            if manager.get("up_to_role") and manager["up_to_role"] not in self.roles:
                errors.append((f"{where}.{j}.manager.up_to_role", f"unknown role {manager['up_to_role']!r}"))
        return errors

    def actions(self, actions: Any, where: str) -> list[tuple[str, str]]:
        """Problems of a list of actions: each a registered kind whose body its schema
        and its own check accept (errors at ``<where>.<i>.<kind>...``)."""
        errors: list[tuple[str, str]] = []
        if self.kinds is None:
            return errors
        for j, action in enumerate(actions or ()):
            for name, body in action.items():  # one key: the schema says so
                kind = self.kinds.get(name)
                if kind is None:
                    errors.append((f"{where}.{j}", f"unknown action {name!r}; known: "
                                                   f"{', '.join(sorted(self.kinds))}"))
                    continue
                here = f"{where}.{j}.{name}"
                errors.extend(body_errors(kind.schema, body, here) or kind.check(body, here, self))
        return errors


def workflow_errors(doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Workflows: one per object, on a field of it, with states that the field can hold
    and transitions between known states."""
    objects = doc.get("objects", {})
    roles = set(doc.get("roles", {})) | {"admin", "user"}
    errors: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for name, wf in doc.get("workflows", {}).items():
        base = f"workflows.{name}"
        obj = objects.get(wf["object"])
        if obj is None:
            errors.append((f"{base}.object", f"unknown object {wf['object']!r}"))
            continue
        if wf["object"] in seen:
            errors.append((f"{base}.object", f"{wf['object']} already has workflow {seen[wf['object']]!r}"))
        seen[wf["object"]] = name
        fdoc = obj.get("fields", {}).get(wf["field"])
        if fdoc is None or fdoc.get("type") not in ("choice", "text"):
            errors.append((f"{base}.field", f"{wf['object']} has no choice or text field {wf['field']!r}"))
            continue
        states = [s["name"] for s in wf["states"]]
        if len(set(states)) != len(states):
            errors.append((f"{base}.states", "each state is listed once"))
        if fdoc["type"] == "choice":
            options = {o["value"] for o in fdoc.get("options", ())}
            for i, s in enumerate(states):
                if s not in options:
                    errors.append((f"{base}.states.{i}.name", f"{s!r} is not an option of {wf['field']}"))
        if wf.get("initial") is not None and wf["initial"] not in states:
            errors.append((f"{base}.initial", f"no state {wf['initial']!r}"))
        initial = wf.get("initial") or (states[0] if states else None)
        if fdoc.get("default") is not None and fdoc["default"] != initial:
            errors.append((f"{base}.field", f"{wf['field']}'s default ({fdoc['default']!r}) must be the initial "
                                            f"state ({initial!r}), or none"))
        fields = obj.get("fields", {})
        for i, s in enumerate(wf["states"]):
            edit = s.get("edit") or {}
            for r in edit.get("roles", ()):
                if r not in roles:
                    errors.append((f"{base}.states.{i}.edit.roles", f"unknown role {r!r}"))
            for f in edit.get("fields", ()):
                if f not in fields:
                    errors.append((f"{base}.states.{i}.edit.fields", f"{wf['object']} has no field {f!r}"))
        names = [t["name"] for t in wf.get("transitions", ())]
        for i, t in enumerate(wf.get("transitions", ())):
            if names.index(t["name"]) != i:
                errors.append((f"{base}.transitions.{i}.name", f"transition {t['name']!r} is already defined"))
            for s in [*t["from"], t["to"]]:
                if s not in states:
                    errors.append((f"{base}.transitions.{i}", f"no state {s!r}"))
            for r in t.get("roles", ()):
                if r not in roles:
                    errors.append((f"{base}.transitions.{i}.roles", f"unknown role {r!r}"))
            final = {st["name"] for st in wf["states"] if st.get("final")}
            if set(t["from"]) & final:
                errors.append((f"{base}.transitions.{i}.from", "no transition leaves a final state"))
    return errors


def _approval_loops(base: str, nodes: list[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """A path through ``next`` links and branches that comes back to a node."""
    index = {n["name"]: i for i, n in enumerate(nodes)}

    def successors(i: int) -> list[str]:
        n = nodes[i]
        default = n.get("next") or (nodes[i + 1]["name"] if i + 1 < len(nodes) else "end")
        if n["type"] == "branch":
            return [b["next"] for b in n["branches"]] + [default]
        return [default]

    state: dict[int, int] = {}  # 1: on the path, 2: done
    for start in range(len(nodes)):
        stack = [(start, iter(successors(start)))]
        if state.get(start):
            continue
        state[start] = 1
        while stack:
            i, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[i] = 2
                stack.pop()
                continue
            if nxt == "end":
                continue
            j = index[nxt]
            if state.get(j) == 1:
                return [(f"{base}.nodes.{j}", f"node {nxt!r} can be reached again from itself: a process must end")]
            if not state.get(j):
                state[j] = 1
                stack.append((j, iter(successors(j))))
    return []


def layout_errors(doc: Mapping[str, Any], types: Mapping[str, FieldTypeSpec],
                  widgets: Mapping[str, WidgetSpec] | None = None) -> list[tuple[str, str]]:
    """Semantic problems of the forms and views of a document whose objects are valid;
    forms' widgets are checked against the registered ``widgets`` when given."""
    objects = doc.get("objects", {})
    roles = set(doc.get("roles", {})) | {"admin", "user"}
    errors: list[tuple[str, str]] = []
    for name, form in doc.get("forms", {}).items():
        errors.extend(_form_errors(name, form, objects, roles, types, widgets))
    defaults: dict[str, str] = {}
    for name, view in doc.get("views", {}).items():
        errors.extend(_view_errors(name, view, objects, roles))
        if view.get("default") and view["object"] in objects:
            if view["object"] in defaults:
                errors.append((f"views.{name}.default",
                               f"view {defaults[view['object']]!r} is already the default view of {view['object']}"))
            else:
                defaults[view["object"]] = name
    for path, obj, ref, use in layout_refs(doc):
        if obj not in objects:
            continue  # reported at the element's ``object``
        problem, fdoc = _resolve(objects, obj, ref, types, system=use in ("column", "sort"))
        if problem:
            errors.append((path, problem))
        elif use == "sort" and _unsortable(fdoc, types):
            errors.append((path, f"a {fdoc['type']} field cannot be sorted"))
    return errors


def _element_errors(section: str, name: str, edoc: Mapping[str, Any], objects: Mapping[str, Any],
                    roles: set[str]) -> list[tuple[str, str]]:
    """Checks every form and view gets: its name, its object and its roles."""
    path = f"{section}.{name}"
    errors: list[tuple[str, str]] = []
    _check_name(name, path, errors)
    if "name" in edoc and edoc["name"] != name:
        errors.append((f"{path}.name", f"must be {name!r}, the {section[:-1]}'s key"))
    if edoc["object"] not in objects:
        errors.append((f"{path}.object", f"unknown object {edoc['object']!r}"))
    for i, role in enumerate(edoc.get("roles", ())):
        if role not in roles:
            errors.append((f"{path}.roles.{i}", f"unknown role {role!r}"))
    return errors


def _sort_repeats(items: Iterable[str], path: str) -> list[tuple[str, str]]:
    seen: set[str] = set()
    errors = []
    for i, s in enumerate(items):
        if s.lstrip("-") in seen:
            errors.append((f"{path}.{i}", f"{s.lstrip('-')!r} is already in the sort"))
        seen.add(s.lstrip("-"))
    return errors


def _form_errors(name: str, form: Mapping[str, Any], objects: Mapping[str, Any], roles: set[str],
                 types: Mapping[str, FieldTypeSpec] | None,
                 widgets: Mapping[str, WidgetSpec] | None) -> list[tuple[str, str]]:
    """A form's own checks (its field names are resolved by :func:`layout_errors`)."""
    errors = _element_errors("forms", name, form, objects, roles)
    errors.extend(new_fields_errors(name, form))
    odoc = objects.get(form["object"])
    if odoc is None:
        return errors
    fields, obj_sections = odoc.get("fields", {}), odoc.get("sections", {})
    base = f"forms.{name}"
    tabs: set[str] = set()
    sections: dict[str, str] = {}
    placed: dict[str, str] = {}  # field -> where the form shows it first
    for ti, tab in enumerate(form["tabs"]):
        tpath = f"{base}.tabs.{ti}"
        if tab["name"] in tabs:
            errors.append((f"{tpath}.name", f"tab {tab['name']!r} is already in the form"))
        tabs.add(tab["name"])
        for si, sec in enumerate(tab.get("sections", ())):
            spath = f"{tpath}.sections.{si}"
            if sec["name"] in sections:
                errors.append((f"{spath}.name", f"section {sec['name']!r} is already in the form at "
                                                f"{sections[sec['name']]}"))
            sections.setdefault(sec["name"], spath)
            shared = sec.get("section")
            if shared is not None and shared not in obj_sections:
                errors.append((f"{spath}.section", f"unknown section {shared!r} of {form['object']}"))
            if sec.get("fields"):
                items = [(f"{spath}.fields.{fi}", item if isinstance(item, str) else item["field"],
                          None if isinstance(item, str) else item.get("widget"))
                         for fi, item in enumerate(sec["fields"])]
            elif shared is None:
                errors.append((spath, "needs fields, or a section of the object to show"))
                items = []
            else:
                items = [(f"{spath}.section", f, None) for f in obj_sections.get(shared, {}).get("fields", ())]
            for where, fname, widget in items:
                if fname not in fields:
                    continue  # reported by layout_errors
                if fname in placed:
                    errors.append((where, f"{fname!r} is already in the form at {placed[fname]}"))
                else:
                    placed[fname] = where
                if widget is None or widgets is None or types is None:
                    continue
                fits = widgets_for(fields[fname], types, widgets)
                if widget not in fits:
                    kind, choice = fields[fname]["type"], ", ".join(sorted(fits))
                    a = "an" if kind[:1] in ("a", "e", "i", "o") else "a"
                    errors.append((f"{where}.widget",
                                   f"widget {widget!r} does not fit {a} {kind} field; use one of {choice}"
                                   if widget in widgets else
                                   f"unknown widget {widget!r}; {a} {kind} field takes one of {choice}"))
        for ri, rel in enumerate(tab.get("related", ())):
            rpath = f"{tpath}.related.{ri}"
            child = objects.get(rel["object"])
            if child is None:
                errors.append((f"{rpath}.object", f"unknown object {rel['object']!r}"))
                continue
            via = child.get("fields", {}).get(rel["via"])
            if via is not None and (not _references(via, types) or via.get("target") != form["object"]):
                errors.append((f"{rpath}.via", f"must be a lookup field of {rel['object']} "
                                               f"pointing at {form['object']}"))
            errors.extend(_sort_repeats(rel.get("sort", ()), f"{rpath}.sort"))
    return errors


def _view_errors(name: str, view: Mapping[str, Any], objects: Mapping[str, Any],
                 roles: set[str]) -> list[tuple[str, str]]:
    """A view's own checks (its paths are resolved by :func:`layout_errors`)."""
    errors = _element_errors("views", name, view, objects, roles)
    errors.extend(_sort_repeats(view.get("sort", ()), f"views.{name}.sort"))
    if "filter" in view:
        errors.extend(_filter_walk(view["filter"], f"views.{name}.filter")[0])
    return errors


def layout_dependents(old_doc: Mapping[str, Any], new_doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """Forms and views of ``new_doc`` that use a field or object which ``new_doc``
    deletes (or renames) relative to ``old_doc``, keyed by path.

    Publishing checks this before validation, so the admin reads which form or view
    to change first rather than an unknown name. (Forms and views are not rewritten
    to follow renames.) A malformed document yields nothing: validation reports it.
    """
    try:
        return _layout_dependents(old_doc, new_doc)
    except (AttributeError, KeyError, TypeError, ValueError):
        return {}


def _layout_dependents(old_doc: Mapping[str, Any], new_doc: Mapping[str, Any]) -> dict[str, list[str]]:
    old_objects, new_objects = old_doc.get("objects", {}), new_doc.get("objects", {})
    renamed_objects = {o["renamed_from"]: n for n, o in new_objects.items()
                       if o.get("renamed_from") in old_objects and n not in old_objects}
    gone = {o: f"which this change renames to {renamed_objects[o]}" if o in renamed_objects
            else "which this change deletes" for o in old_objects if o not in new_objects}
    changed: dict[tuple[str, str], str] = {}  # (object, field) -> what happens to it
    for oname, odoc in old_objects.items():
        if oname not in new_objects:
            continue
        nfields = new_objects[oname].get("fields", {})
        renames = {f.get("renamed_from"): n for n, f in nfields.items() if n not in odoc.get("fields", {})}
        for fname in odoc.get("fields", {}):
            if fname in renames:
                changed[(oname, fname)] = f"which this change renames to {renames[fname]}"
            elif fname not in nfields:
                changed[(oname, fname)] = "which this change deletes"
    problems: dict[str, list[str]] = {}
    if not gone and not changed:
        return problems

    def owner(path: str) -> str:
        section, name = path.split(".")[:2]
        return f"{section[:-1]} {name}"

    for section in ("forms", "views"):
        for name, edoc in new_doc.get(section, {}).items():
            uses = [(f"{section}.{name}.object", edoc.get("object"))]
            uses += [(f"{section}.{name}.tabs.{ti}.related.{ri}.object", rel.get("object"))
                     for ti, tab in enumerate(edoc.get("tabs", ())) for ri, rel in enumerate(tab.get("related", ()))]
            for path, obj in uses:
                if obj in gone:
                    problems.setdefault(path, []).append(
                        f"uses object {obj}, {gone[obj]}; change {section[:-1]} {name} first")
    for path, obj, ref, _ in layout_refs(new_doc):
        if obj in gone:
            continue  # reported at its ``object``
        for seg in ref.split("."):
            if (obj, seg) in changed:
                problems.setdefault(path, []).append(
                    f"uses {obj}.{seg}, {changed[(obj, seg)]}; change {owner(path)} first")
                break
            f = old_objects.get(obj, {}).get("fields", {}).get(seg)
            if not isinstance(f, Mapping) or f.get("type") != "lookup":
                break
            obj = f.get("target")
    return problems


def check_layout_dependents(old_doc: Mapping[str, Any], new_doc: Mapping[str, Any]) -> None:
    """:raises MetadataError: naming every form and view that uses a deleted or renamed field."""
    problems = layout_dependents(old_doc, new_doc)
    if problems:
        n = len(problems)
        raise MetadataError(problems, message=f"{n} form or view setting{'s' if n != 1 else ''} "
                                              f"still use{'s' if n == 1 else ''} a renamed or deleted field or "
                                              f"object: " + ", ".join(sorted(problems)))
