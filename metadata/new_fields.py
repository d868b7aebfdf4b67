"""Fields a publish adds, placed on the form layouts that list fields explicitly.

A generated layout shows every field of its object, but a ``form`` document shows only
the fields it names: a field added later by ``meta apply``, the API or a package
upgrade would be invisible on it. So a publish places each field it adds to an object
on every existing form of that object (decision D52):

* at the end of the section marked ``new_fields: true`` (one per form at most), or
* in a section :data:`SECTION` appended to the form's first tab, created on first
  need and marked, so later fields join it,

unless the form says ``new_fields: none``. A form added in the same publish is taken
as written. The plan names each placement, and warns about fields it leaves off a
layout (:func:`loomwork.metadata.diff.layout_warnings`). Admins move placed fields
wherever they like afterwards: they are no longer new.

Nothing here touches a database; :mod:`loomwork.runtime.publishing` calls
:func:`place_new_fields` before validating a document.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .model import FormDef, ObjectDef

#: The name (first free of ``new_fields``, ``new_fields_2``, ...) and label of the section
#: appended to a form whose sections mark none for new fields.
SECTION = "new_fields"
SECTION_LABEL = {"en": "New fields", "zh-CN": "新字段"}
#: The form-level value that keeps new fields off a layout.
OFF = "none"


def added_fields(old_doc: Mapping[str, Any], new_doc: Mapping[str, Any], object_name: str) -> list[str]:
    """Fields of ``object_name`` that ``new_doc`` adds relative to ``old_doc`` (renamed
    ones are not new), in the object's order; none for an object new in ``new_doc``."""
    old_obj = old_doc.get("objects", {}).get(object_name)
    new_obj = new_doc.get("objects", {}).get(object_name)
    if not isinstance(old_obj, Mapping) or not isinstance(new_obj, Mapping):
        return []
    old_fields = old_obj.get("fields", {})
    return [name for name, fdoc in new_obj.get("fields", {}).items()
            if name not in old_fields and not (isinstance(fdoc, Mapping) and fdoc.get("renamed_from") in old_fields)]


def place_new_fields(old_doc: Mapping[str, Any], new_doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """``new_doc`` with the fields it adds placed on the forms ``old_doc`` already had.

    Returns ``new_doc`` itself when nothing is placed, else a copy. A malformed document
    is returned as it is: validation reports its problems.
    """
    try:
        return _place(old_doc, new_doc)
    except (AttributeError, KeyError, TypeError, ValueError):
        return new_doc


def _place(old_doc: Mapping[str, Any], new_doc: Mapping[str, Any]) -> Mapping[str, Any]:
    old_forms = old_doc.get("forms", {})
    out: dict[str, Any] | None = None
    for fname, form in new_doc.get("forms", {}).items():
        if fname not in old_forms or form.get("new_fields") == OFF:
            continue
        oname = form["object"]
        new = added_fields(old_doc, new_doc, oname)
        if not new:
            continue
        odoc = new_doc["objects"][oname]
        shown = set(FormDef.from_doc(fname, form, ObjectDef.from_doc(oname, odoc)).field_names())
        missing = [f for f in new if f not in shown]
        if not missing:
            continue
        if out is None:
            out = copy.deepcopy(dict(new_doc))
        _section_for_new(out["forms"][fname])["fields"].extend(missing)
    return new_doc if out is None else out


def _section_for_new(form: dict[str, Any]) -> dict[str, Any]:
    """The section of ``form`` marked for new fields, appended to its first tab if none is."""
    for tab in form["tabs"]:
        for sec in tab.get("sections", ()):
            if sec.get("new_fields"):
                return sec
    taken = {sec["name"] for tab in form["tabs"] for sec in tab.get("sections", ())}
    name, n = SECTION, 1
    while name in taken:
        n += 1
        name = f"{SECTION}_{n}"
    sec = {"name": name, "label": dict(SECTION_LABEL), "new_fields": True, "fields": []}
    form["tabs"][0].setdefault("sections", []).append(sec)
    return sec


def new_fields_errors(name: str, form: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A form's ``new_fields`` settings: one marked section at most, one that lists its
    fields, and none on a form that turns new fields off."""
    errors: list[tuple[str, str]] = []
    marked = [(f"forms.{name}.tabs.{ti}.sections.{si}", sec)
              for ti, tab in enumerate(form.get("tabs", ())) for si, sec in enumerate(tab.get("sections", ()))
              if sec.get("new_fields")]
    for path, sec in marked:
        if form.get("new_fields") == OFF:
            errors.append((f"{path}.new_fields", f"form {name} has new_fields: {OFF}, so no section receives "
                                                 f"new fields; remove one of the two"))
        elif not sec.get("fields"):
            errors.append((f"{path}.new_fields", "a section that receives new fields must list its fields"))
    for path, _ in marked[1:]:
        errors.append((f"{path}.new_fields", f"only one section receives new fields; {marked[0][0]} already does"))
    return errors
