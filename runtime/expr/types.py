"""The expression type system and the scope an expression is checked against.

Types: ``text``, ``number`` (integers and floats), ``decimal`` (exact), ``boolean``,
``date``, ``datetime``, ``choice`` (text limited to a field's options), ``list`` (a
multi-choice value) and ``null`` (the literal ``None``). Every type admits the empty
value, NULL, with SQL's three-valued logic (see ``docs/user-guide.md``).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TYPES = ("text", "number", "decimal", "boolean", "date", "datetime", "choice", "list", "null")

NUMERIC = frozenset({"number", "decimal"})
TEXTUAL = frozenset({"text", "choice"})
TEMPORAL = frozenset({"date", "datetime"})


def family(ty: str) -> str:
    """The comparison family: choice compares as text, decimal as number."""
    if ty in NUMERIC:
        return "numeric"
    if ty in TEXTUAL:
        return "text"
    return ty


def unify(types: list[str]) -> str | None:
    """The common type of alternatives (``if`` branches, ``coalesce``), or ``None``."""
    real = [t for t in types if t != "null"]
    if not real:
        return "null"
    fams = {family(t) for t in real}
    if len(fams) != 1:
        return None
    if fams == {"numeric"}:
        return "decimal" if "decimal" in real else "number"
    if fams == {"text"}:
        return "choice" if all(t == "choice" for t in real) else "text"
    return real[0]


@dataclass(frozen=True)
class FieldInfo:
    """What the checker knows of one field."""

    name: str
    type: str | None  # the expression type; None when expressions cannot use the field
    field_type: str   # the storage type (text, currency, lookup, formula...)
    options: tuple[str, ...] = ()
    target: str | None = None  # a lookup's object


@dataclass(frozen=True)
class Scope:
    """The fields an expression on ``object`` may use, and the objects behind lookups."""

    object: str
    objects: Mapping[str, Mapping[str, FieldInfo]]
    allow_old: bool = True
    #: Where the expression lives, for messages (``objects.deal.validations.big``).
    where: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def fields(self, object_name: str | None = None) -> Mapping[str, FieldInfo]:
        return self.objects[object_name or self.object]


SYSTEM_FIELDS: Mapping[str, FieldInfo] = {
    "id": FieldInfo("id", "number", "system"),
    "created_at": FieldInfo("created_at", "datetime", "system"),
    "updated_at": FieldInfo("updated_at", "datetime", "system"),
    "created_by": FieldInfo("created_by", "number", "system"),
    "updated_by": FieldInfo("updated_by", "number", "system"),
    "owner_id": FieldInfo("owner_id", "number", "system"),
}
