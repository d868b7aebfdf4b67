"""The filter AST's rules, in one place.

One JSON filter AST serves the API, saved views, the list page and (later) row
permissions (ARCHITECTURE §5)::

    {"and": [{"field": "stage", "op": "eq", "value": "won"},
             {"or": [{"field": "amount", "op": "gte", "value": "1000"},
                     {"not": {"field": "account.industry", "op": "in", "value": ["retail"]}}]}]}

This module says what such a tree may look like: its node shapes, the operators
and the operand each takes, the variables, and the caps on depth, size and values.
Everything that accepts or describes a filter asks here — publish checks
(:mod:`loomwork.metadata.validation`), the query engine
(:mod:`loomwork.runtime.query`, which adds what only compiled metadata knows: field
types, value parsing, permissions), the OpenAPI document and the list page's filter
builder (served :func:`rules_document`) — so a filter that passes one passes all.

It lives in the metadata layer because metadata may not import the runtime, while
the runtime, the API and the pages may import metadata.
"""
from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

#: Levels of ``and``/``or``/``not`` above the deepest condition.
MAX_DEPTH = 6
#: Conditions (``{field, op, value}`` nodes) in one filter.
MAX_CONDITIONS = 50
#: Values in one ``in``/``nin`` list.
MAX_LIST = 500
#: Lookups a path may go through (``contact.account.region.name`` has three).
MAX_PATH_HOPS = 3
#: Characters of a path.
MAX_PATH_LENGTH = 200
#: Characters of one text operand.
MAX_TEXT = 1000

#: ``$user.id`` (empty for the system actor), ``$now`` and ``$today`` (UTC); ``$$x``
#: is the literal text ``$x``.
VARIABLES = ("$user.id", "$now", "$today")

_NAME = r"[a-z][a-z0-9_]{0,62}"
#: A field name or a dotted path through lookups.
PATH = re.compile(rf"{_NAME}(\.{_NAME}){{0,{MAX_PATH_HOPS}}}")


@dataclass(frozen=True)
class Operator:
    """A filter operator and the operand it takes.

    ``operand`` is ``value`` (one value; ``null`` only where ``nullable``), ``list``
    (1 to :data:`MAX_LIST` values), ``range`` (``[low, high]``, inclusive, neither
    null) or ``flag`` (``true`` or ``false``).
    """

    name: str
    operand: str
    #: Whether ``null`` is a valid operand (``eq null`` means "is empty").
    nullable: bool = False
    #: Whether the operand must be a non-empty text (for whichever field type).
    text: bool = False
    doc: str = ""


_OPERATORS = (
    Operator("eq", "value", nullable=True, doc="equals (null: is empty)"),
    Operator("ne", "value", nullable=True, doc="differs, or is empty (null: is not empty)"),
    Operator("lt", "value", doc="less than"),
    Operator("lte", "value", doc="at most"),
    Operator("gt", "value", doc="greater than"),
    Operator("gte", "value", doc="at least"),
    Operator("in", "list", doc="one of the values (null in the list: or empty)"),
    Operator("nin", "list", doc="none of the values, or empty (null in the list: and not empty)"),
    Operator("contains", "value", text=True, doc="contains the text, case-sensitive (a multi-choice: holds the option)"),
    Operator("icontains", "value", text=True, doc="contains the text, any case"),
    Operator("starts_with", "value", text=True, doc="starts with the text, case-sensitive"),
    Operator("is_null", "flag", doc="is empty (true) or not (false)"),
    Operator("between", "range", doc="between low and high, inclusive"),
)
#: Every operator by name, in the order they are documented.
OPERATORS: Mapping[str, Operator] = {op.name: op for op in _OPERATORS}
OPERATOR_NAMES: tuple[str, ...] = tuple(OPERATORS)
#: The boolean nodes, each with the operand it takes.
GROUPS = ("and", "or", "not")

_SHAPE = "must be {and: [...]}, {or: [...]}, {not: {...}} or {field, op, value}"


def show(raw: Any) -> str:
    """A value quoted for a message, cut to a readable length."""
    text = repr(raw)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True)
class Condition:
    """One ``{field, op, value}`` node of a well-formed filter, with where it sits."""

    #: Where the node is (``filter.and.1``); its parts are ``<path>.field`` and so on.
    path: str
    field: str
    op: str
    value: Any


def operand_problem(op: Operator, value: Any) -> str | None:
    """Why ``value`` cannot be the operand of ``op`` (its shape, not its field's type)."""
    if op.operand == "flag":
        return None if isinstance(value, bool) else f"{op.name} needs true or false"
    if op.operand == "list":
        if not isinstance(value, list) or not value or len(value) > MAX_LIST:
            return f"{op.name} needs a list of 1 to {MAX_LIST} values"
        return next((p for p in map(_scalar_problem, value) if p), None)
    if op.operand == "range":
        if not isinstance(value, list) or len(value) != 2:
            return f"{op.name} needs [low, high]"
        if value[0] is None or value[1] is None:
            return f"{op.name} needs two values, not null"
        return next((p for p in map(_scalar_problem, value) if p), None)
    if value is None:
        if op.nullable:
            return None
        return f"{op.name} needs a value; use is_null to find empty values"
    problem = _scalar_problem(value)
    if problem is None and op.text and (not isinstance(value, str) or not value):
        return f"{op.name} needs a non-empty text"
    return problem


def _scalar_problem(value: Any) -> str | None:
    if isinstance(value, (list, dict)):
        return f"{show(value)} is not valid here (a single value is expected)"
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return f"a text value may have at most {MAX_TEXT} characters"
    return None


_PATH_SHAPE = f"must be a field name or a path through at most {MAX_PATH_HOPS} lookups (account.industry)"


def path_problem(path: Any) -> str | None:
    """Why ``path`` cannot name a field (its shape, not whether the field exists)."""
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
        return _PATH_SHAPE
    if path.count(".") > MAX_PATH_HOPS:
        return f"path {path!r} has more than {MAX_PATH_HOPS} hops"
    if not PATH.fullmatch(path):
        return f"{_PATH_SHAPE}, not {show(path)}"
    return None


#: The value of a condition written without one.
_MISSING = object()


def check(node: Any, path: str = "filter") -> tuple[list[tuple[str, str]], list[Condition]]:
    """Check a filter AST against every rule here, without recursion (it comes from users).

    :param path: what to call the root in messages (``views.open_deals.filter``).
    :returns: ``(errors, conditions)``: problems as ``(path, message)`` pairs, naming
        the node (``filter.and.1.op``); and every condition found, also in a filter
        with problems (its other parts can still be checked).
    """
    errors: list[tuple[str, str]] = []
    found: list[Condition] = []
    stack: list[tuple[Any, str, int]] = [(node, path, 0)]
    while stack:
        n, p, depth = stack.pop()
        if not isinstance(n, Mapping) or not n:
            errors.append((p, _SHAPE))
            continue
        keys = set(n)
        if len(keys) == 1 and next(iter(keys)) in GROUPS:
            (kind, items), = n.items()
            if depth + 1 > MAX_DEPTH:
                errors.append((p, f"the filter is nested deeper than {MAX_DEPTH} levels"))
                continue
            if kind == "not":
                stack.append((items, f"{p}.not", depth + 1))
            elif not isinstance(items, list) or not items:
                errors.append((f"{p}.{kind}", "must be a non-empty list of conditions"))
            else:
                stack.extend((x, f"{p}.{kind}.{i}", depth + 1) for i, x in reversed(list(enumerate(items))))
        elif keys == {"field", "op", "value"}:
            found.append(Condition(p, n["field"], n["op"], n["value"]))
        elif keys == {"field", "op"}:
            found.append(Condition(p, n["field"], n["op"], _MISSING))
        else:
            errors.append((p, f"{_SHAPE}, not an object with keys {sorted(map(str, keys))}"))
    if len(found) > MAX_CONDITIONS:
        errors.append((path, f"has more than {MAX_CONDITIONS} conditions"))
    for c in found:
        problem = path_problem(c.field)
        if problem:
            errors.append((f"{c.path}.field", problem))
        op = OPERATORS.get(c.op) if isinstance(c.op, str) else None
        if op is None:
            errors.append((f"{c.path}.op", f"unknown operator {show(c.op)}; known: {', '.join(OPERATOR_NAMES)}"))
            continue
        problem = (f"the condition on {show(c.field)} needs a value" if c.value is _MISSING
                   else operand_problem(op, c.value))
        if problem:
            errors.append((f"{c.path}.value", problem))
    return errors, found


def conditions(node: Any) -> Iterator[Condition]:
    """The conditions of a filter, well-formed or not (for what they name)."""
    yield from check(node)[1]


def rules_document() -> dict[str, Any]:
    """The rules as JSON, for the list page's filter builder and API clients."""
    return {
        "operators": {op.name: {"operand": op.operand, "nullable": op.nullable, "text": op.text}
                      for op in _OPERATORS},
        "variables": list(VARIABLES),
        "max_depth": MAX_DEPTH, "max_conditions": MAX_CONDITIONS, "max_list": MAX_LIST,
        "max_path_hops": MAX_PATH_HOPS, "max_text": MAX_TEXT,
    }


def json_schema() -> dict[str, Any]:
    """The filter AST as a JSON Schema (for the OpenAPI document). The semantic caps
    (depth, number of conditions) cannot be said in JSON Schema; they are in
    ``description`` and ``x-`` keys."""
    scalar: dict[str, Any] = {"type": ["string", "number", "boolean"], "maxLength": MAX_TEXT}
    nullable = {"type": ["string", "number", "boolean", "null"], "maxLength": MAX_TEXT}
    listed = {"type": "array", "minItems": 1, "maxItems": MAX_LIST, "items": nullable}
    ranged = {"type": "array", "minItems": 2, "maxItems": 2, "items": scalar}
    operand = {"value": scalar, "list": listed, "range": ranged, "flag": {"type": "boolean"}}
    conditions = []
    for op in _OPERATORS:
        value = nullable if op.nullable else dict(operand[op.operand])
        if op.text:
            value = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT}
        conditions.append({
            "type": "object", "additionalProperties": False, "required": ["field", "op", "value"],
            "description": op.doc,
            "properties": {"field": {"type": "string", "pattern": f"^{PATH.pattern}$",
                                     "maxLength": MAX_PATH_LENGTH},
                           "op": {"const": op.name}, "value": value}})
    node = {"$ref": "#/components/schemas/Filter"}
    return {
        "description": (f"A filter AST: {{and: [...]}}, {{or: [...]}}, {{not: node}} or {{field, op, value}}. "
                        f"At most {MAX_DEPTH} levels of and/or/not and {MAX_CONDITIONS} conditions; paths go "
                        f"through at most {MAX_PATH_HOPS} lookups. Variables: {', '.join(VARIABLES)} "
                        f"(write $$x for a literal $x)."),
        "x-max-depth": MAX_DEPTH, "x-max-conditions": MAX_CONDITIONS,
        "oneOf": [
            {"type": "object", "additionalProperties": False, "required": ["and"],
             "properties": {"and": {"type": "array", "minItems": 1, "items": node}}},
            {"type": "object", "additionalProperties": False, "required": ["or"],
             "properties": {"or": {"type": "array", "minItems": 1, "items": node}}},
            {"type": "object", "additionalProperties": False, "required": ["not"], "properties": {"not": node}},
            *conditions,
        ],
    }


__all__ = ["MAX_DEPTH", "MAX_CONDITIONS", "MAX_LIST", "MAX_PATH_HOPS", "MAX_PATH_LENGTH", "MAX_TEXT",
           "VARIABLES", "PATH", "Operator", "OPERATORS", "OPERATOR_NAMES", "Condition", "check", "conditions",
           "operand_problem", "path_problem", "rules_document", "json_schema", "show"]
