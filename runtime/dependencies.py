"""What depends on a field: "where used", and renames or deletions that would break it.

Publishing a document that renames or deletes a field some expression (or roll-up)
still uses is refused with the list of dependents. For a rename the admin may ask
for the dependents to be rewritten instead (``update_dependents``): each use of the
old name is replaced in the expression text, at the position the parser recorded,
so the rest of the text (spacing, quotes) stays as the admin wrote it.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from loomwork.metadata.errors import MetadataError
from loomwork.metadata.model import AppMetadata

from .approval_actions import ActionKind
from .expr import ExpressionError, Function, compile_expression, parse
from .fieldtypes import FieldType
from .rules import build_scope, iter_expressions

Key = tuple[str, str]


def field_changes(old: AppMetadata, doc: Mapping[str, Any]) -> tuple[dict[Key, str], set[Key]]:
    """Fields renamed (old key -> new name) and deleted between ``old`` and ``doc``
    (nothing for a malformed document: validation reports what is wrong with it)."""
    renames: dict[Key, str] = {}
    drops: set[Key] = set()
    objects = doc.get("objects") if isinstance(doc, Mapping) else None
    if not isinstance(objects, Mapping):
        return renames, drops
    for oname, oobj in old.objects.items():
        ndoc = objects.get(oname)
        nfields = ndoc.get("fields") if isinstance(ndoc, Mapping) else None
        if not isinstance(nfields, Mapping) or not all(isinstance(f, Mapping) for f in nfields.values()):
            continue
        renamed = {f.get("renamed_from"): n for n, f in nfields.items()
                   if f.get("renamed_from") in oobj.fields and n not in oobj.fields}
        for fname in oobj.fields:
            if fname in renamed:
                renames[(oname, fname)] = renamed[fname]
            elif fname not in nfields:
                drops.add((oname, fname))
    return renames, drops


def check_dependents(old: AppMetadata, doc: Mapping[str, Any], types: Mapping[str, FieldType],
                     functions: Mapping[str, Function], *, update: bool = False,
                     actions: Mapping[str, ActionKind] | None = None) -> Mapping[str, Any]:
    """Refuse renames and deletions of fields still in use, or rewrite the uses of
    renamed fields when ``update``. Returns the document to publish. ``actions`` are
    the approval action kinds, which find the expressions in actions' bodies."""
    renames, drops = field_changes(old, doc)
    if not renames and not drops:
        return doc
    try:
        new = AppMetadata.from_doc(doc)
    except (KeyError, TypeError, AttributeError, ValueError):
        return doc  # malformed: validation reports what is wrong
    problems: dict[str, list[str]] = {}
    rewrites: list[tuple[str, str, str]] = []  # (path, object, source)
    scopes: dict[str, Any] = {}
    for path, obj, source, _ in iter_expressions(new, actions):
        if obj not in old.objects:
            continue
        scope = scopes.setdefault(obj, build_scope(old, types, obj))
        try:
            e = compile_expression(source, scope, functions)
        except ExpressionError:
            continue  # already written against the new names (or broken: validation reports it)
        hits = sorted(k for k in e.deps.fields if k in renames or k in drops)
        for o, f in hits:
            if (o, f) in drops:
                problems.setdefault(path, []).append(f"uses {o}.{f}, which this change deletes; change it first")
            elif not update:
                problems.setdefault(path, []).append(
                    f"uses {o}.{f}, which this change renames to {renames[(o, f)]}; change the expression, "
                    f"or publish with update_dependents to rewrite it")
        if hits and update and not any((o, f) in drops for o, f in hits):
            rewrites.append((path, obj, source))
    out = rewrite_references(old, doc) if update else copy.deepcopy(dict(doc))
    for oname, odoc in out.get("objects", {}).items():
        for fname, fdoc in odoc.get("fields", {}).items():
            if fdoc.get("type") != "rollup" or fdoc.get("object") not in old.objects:
                continue
            for key in ("via", "field"):
                ref = (fdoc["object"], fdoc.get(key))
                where = f"objects.{oname}.fields.{fname}.{key}"
                if ref in drops:
                    problems.setdefault(where, []).append(f"uses {ref[0]}.{ref[1]}, which this change deletes")
                elif ref in renames and not update:
                    problems.setdefault(where, []).append(
                        f"uses {ref[0]}.{ref[1]}, which this change renames to {renames[ref]}; "
                        f"publish with update_dependents to follow the rename")
    for path, obj, source in rewrites:
        try:
            _set(out, path, rename_in_source(source, old, obj, renames))
        except ValueError as exc:
            problems.setdefault(path, []).append(str(exc))
    if problems:
        raise MetadataError(problems, message=_summary(problems))
    return out


def rewrite_references(old: AppMetadata, doc: Mapping[str, Any]) -> dict[str, Any]:
    """``doc`` with references by name to renamed fields following the rename: roll-ups,
    validation targets, sections, dependent choices, title, search and sort fields and
    indexes. (Expressions are rewritten by :func:`check_dependents`.)"""
    out = copy.deepcopy(dict(doc))
    renames, _ = field_changes(old, doc)
    if not renames:
        return out

    def new(obj: str, name: Any) -> Any:
        return renames.get((obj, name), name) if isinstance(name, str) else name

    for oname, odoc in out.get("objects", {}).items():
        if not isinstance(odoc, dict):
            continue
        for fdoc in (odoc.get("fields") or {}).values():
            if not isinstance(fdoc, dict):
                continue
            if fdoc.get("type") == "rollup":
                for key in ("via", "field"):
                    if key in fdoc:
                        fdoc[key] = new(fdoc.get("object"), fdoc[key])
            if isinstance(fdoc.get("depends_on"), dict):
                fdoc["depends_on"]["field"] = new(oname, fdoc["depends_on"].get("field"))
        for rule in (odoc.get("validations") or {}).values():
            if isinstance(rule, dict) and "field" in rule:
                rule["field"] = new(oname, rule["field"])
        for sec in (odoc.get("sections") or {}).values():
            if isinstance(sec, dict) and isinstance(sec.get("fields"), list):
                sec["fields"] = [new(oname, f) for f in sec["fields"]]
        for idx in (odoc.get("indexes") or {}).values():
            if isinstance(idx, dict) and isinstance(idx.get("fields"), list):
                idx["fields"] = [new(oname, f) for f in idx["fields"]]
        if "title_field" in odoc:
            odoc["title_field"] = new(oname, odoc["title_field"])
        if isinstance(odoc.get("search_fields"), list):
            odoc["search_fields"] = [new(oname, f) for f in odoc["search_fields"]]
        if isinstance(odoc.get("default_sort"), list):
            odoc["default_sort"] = [
                ("-" if isinstance(s, str) and s.startswith("-") else "") + new(oname, s.lstrip("-"))
                if isinstance(s, str) else s for s in odoc["default_sort"]]
    return out


def _summary(problems: Mapping[str, list[str]]) -> str:
    n = len(problems)
    return f"{n} expression{'s' if n != 1 else ''} still use{'s' if n == 1 else ''} a renamed or deleted field: " \
           + ", ".join(sorted(problems))


def _set(doc: dict[str, Any], path: str, value: str) -> None:
    """Put ``value`` at a metadata path; its numeric parts index lists
    (``approvals.p.on_approved.0.set.note``, ``workflows.w.transitions.2.condition``)."""
    parts = path.split(".")
    cur: Any = doc
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    cur[parts[-1]] = value


def rename_in_source(source: str, old: AppMetadata, obj: str, renames: Mapping[Key, str]) -> str:
    """``source`` with every use of a renamed field spelled with its new name."""
    lines = source.split("\n")
    edits: list[tuple[int, int, int, str]] = []  # (line, start col, end col, text), 0-based

    def at(node: Mapping[str, Any], text: str, offset: int = 0) -> tuple[int, int]:
        line, col = node["pos"][0] - 1, node["pos"][1] - 1
        found = lines[line].find(text, col)
        if found < 0 or (offset == 0 and found != col):
            raise ValueError("could not rewrite this expression automatically; please change it by hand")
        return line, found

    def walk(node: Any) -> None:
        if isinstance(node, list):
            for n in node:
                walk(n)
            return
        if not isinstance(node, dict):
            return
        kind = node.get("t")
        if kind == "field":
            path = node["path"]
            line, start = at(node, ".".join(path))
            cur, col = obj, start
            for seg in path:
                new = renames.get((cur, seg))
                if new:
                    edits.append((line, col, col + len(seg), new))
                f = old.objects[cur].fields.get(seg) if cur in old.objects else None
                col += len(seg) + 1
                cur = f.prop("target") if f is not None and f.type == "lookup" else cur
        elif kind == "old" and (obj, node["field"]) in renames:
            line, start = at(node, f"old.{node['field']}")
            edits.append((line, start + 4, start + 4 + len(node["field"]), renames[(obj, node["field"])]))
        elif kind == "changed" and (obj, node["field"]) in renames:
            for quote in ('"', "'"):
                try:
                    line, start = at(node, f"{quote}{node['field']}{quote}", offset=1)
                except ValueError:
                    continue
                edits.append((line, start + 1, start + 1 + len(node["field"]), renames[(obj, node["field"])]))
                break
        for key, value in node.items():
            if key not in ("pos", "path"):
                walk(value)

    walk(parse(source))
    for line, start, end, text in sorted(edits, reverse=True):
        lines[line] = lines[line][:start] + text + lines[line][end:]
    return "\n".join(lines)
