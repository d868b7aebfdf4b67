"""Type checking: annotate every node of a parsed expression with its type ``ty``.

Checking happens when metadata is published, so an admin learns about ``amout`` or
``stage == "wonn"`` with a line and column before any record is saved. The checker
also records what the expression depends on (field paths, ``old``, ``changed``), for
the "where used" query and for fetching lookup values before evaluation.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .functions import Function
from .syntax import ExpressionError
from .types import NUMERIC, SYSTEM_FIELDS, TEXTUAL, FieldInfo, Scope, family, unify

#: Most lookup hops in a path (``account.owner.email`` is two).
MAX_HOPS = 3


@dataclass
class Dependencies:
    """What an expression reads."""

    #: Dotted paths (``amount``, ``account.industry``) as written.
    paths: set[str] = field(default_factory=set)
    #: Every (object, field) read, hops included: ``account.industry`` on deal reads
    #: (deal, account) and (account, industry).
    fields: set[tuple[str, str]] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    uses_old: bool = False
    deterministic: bool = True


class Checker:
    def __init__(self, scope: Scope, functions: Mapping[str, Function]) -> None:
        self.scope = scope
        self.functions = functions
        self.deps = Dependencies()

    def error(self, node: Mapping[str, Any], message: str) -> ExpressionError:
        line, col = node.get("pos", (None, None))
        return ExpressionError(message, line, col)

    def check(self, node: dict[str, Any]) -> str:
        ty = getattr(self, f"_{node['t']}")(node)
        node["ty"] = ty
        return ty

    # -- leaves -----------------------------------------------------------
    def _lit(self, node: dict[str, Any]) -> str:
        v = node["v"]
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "boolean"
        if isinstance(v, (int, float)):
            return "number"
        return "text"

    def _field_info(self, node: Mapping[str, Any], object_name: str, name: str, path: str) -> FieldInfo:
        fields = self.scope.fields(object_name)
        info = fields.get(name) or SYSTEM_FIELDS.get(name)
        if info is None:
            where = "" if object_name == self.scope.object else f" of {object_name}"
            raise self.error(node, f"unknown field {path!r}{where}")
        if info.type is None:
            raise self.error(node, f"{path} is a {info.field_type} field, which expressions cannot use")
        return info

    def _field(self, node: dict[str, Any]) -> str:
        path = node["path"]
        dotted = ".".join(path)
        if len(path) - 1 > MAX_HOPS:
            raise self.error(node, f"{dotted!r} has more than {MAX_HOPS} lookup hops")
        obj = self.scope.object
        for hop in path[:-1]:
            info = self.scope.fields(obj).get(hop)
            if info is None or info.target is None:
                raise self.error(node, f"{hop!r} in {dotted!r} is not a lookup field of {obj}")
            self.deps.fields.add((obj, hop))
            obj = info.target
        info = self._field_info(node, obj, path[-1], dotted)
        self.deps.fields.add((obj, path[-1]))
        self.deps.paths.add(dotted)
        if info.options:
            node["options"] = list(info.options)
        return info.type  # type: ignore[return-value]

    def _old(self, node: dict[str, Any]) -> str:
        if not self.scope.allow_old:
            raise self.error(node, "old values are not available here")
        info = self._field_info(node, self.scope.object, node["field"], node["field"])
        self.deps.uses_old = True
        self.deps.fields.add((self.scope.object, node["field"]))
        return info.type  # type: ignore[return-value]

    def _changed(self, node: dict[str, Any]) -> str:
        if not self.scope.allow_old:
            raise self.error(node, "changed() is not available here")
        info = self._field_info(node, self.scope.object, node["field"], node["field"])
        node["fty"] = info.type  # how the browser compares old and new values
        self.deps.uses_old = True
        self.deps.fields.add((self.scope.object, node["field"]))
        self.deps.paths.add(node["field"])
        return "boolean"

    def _var(self, node: dict[str, Any]) -> str:
        self.deps.deterministic = False
        return "number" if node["name"] == "user.id" else "text"

    # -- operators --------------------------------------------------------
    def _neg(self, node: dict[str, Any]) -> str:
        ty = self.check(node["a"])
        if ty not in NUMERIC and ty != "null":
            raise self.error(node, f"'-' needs a number, not {ty}")
        return "number" if ty == "null" else ty

    def _not(self, node: dict[str, Any]) -> str:
        self._boolean(node["a"], "not")
        return "boolean"

    def _boolean(self, node: dict[str, Any], what: str) -> None:
        ty = self.check(node)
        if ty not in ("boolean", "null"):
            raise self.error(node, f"{what} needs a true/false condition, not {ty} "
                                   f"(compare it, or test it with is_blank())")

    def _and(self, node: dict[str, Any]) -> str:
        for arg in node["args"]:
            self._boolean(arg, node["t"])
        return "boolean"

    _or = _and

    def _arith(self, node: dict[str, Any]) -> str:
        op = node["op"]
        a, b = self.check(node["a"]), self.check(node["b"])
        if "null" in (a, b):
            raise self.error(node, f"'{op}' with None is always empty; use coalesce() for a default")
        if op == "+" and a in TEXTUAL and b in TEXTUAL:
            return "text"
        if op == "*" and a in TEXTUAL and b == "number":
            return "text"
        if a in NUMERIC and b in NUMERIC:
            if op == "**":
                return "number"
            if op == "/" and a == b == "number":
                return "number"
            return "decimal" if "decimal" in (a, b) else "number"
        if a in ("date", "datetime") or b in ("date", "datetime"):
            raise self.error(node, f"'{op}' does not apply to dates; use add_days(), add_months() or date_diff()")
        raise self.error(node, f"'{op}' does not apply to {a} and {b}")

    def _cmp(self, node: dict[str, Any]) -> str:
        op = node["op"]
        a, b = self.check(node["a"]), self.check(node["b"])
        if "null" in (a, b):
            raise self.error(node, "comparing with None is never true; use is_blank(x)")
        if family(a) != family(b):
            raise self.error(node, f"cannot compare {a} with {b}")
        if a in ("boolean", "list") and op not in ("==", "!="):
            raise self.error(node, f"'{op}' does not apply to {a} values")
        for side, other in ((node["a"], node["b"]), (node["b"], node["a"])):
            if side.get("options") and other["t"] == "lit" and other["v"] not in side["options"]:
                raise self.error(other, f"{other['v']!r} is not an option of {'.'.join(side['path'])} "
                                        f"(options: {', '.join(side['options'])})")
        return "boolean"

    def _in(self, node: dict[str, Any]) -> str:
        a = self.check(node["a"])
        if a == "null":
            raise self.error(node, "None in [...] is never true; use is_blank(x)")
        if a == "list":
            raise self.error(node, "to test a multi-choice value use contains(field, \"value\")")
        for item in node["items"]:
            ty = self.check(item)
            if ty == "null":
                raise self.error(item, "None in a list never matches; use is_blank(x)")
            if family(ty) != family(a):
                raise self.error(item, f"cannot compare {a} with {ty}")
            if node["a"].get("options") and item["v"] not in node["a"]["options"]:
                raise self.error(item, f"{item['v']!r} is not an option of {'.'.join(node['a']['path'])}")
        return "boolean"

    def _if(self, node: dict[str, Any]) -> str:
        self._boolean(node["c"], "if")
        a, b = self.check(node["a"]), self.check(node["b"])
        ty = unify([a, b])
        if ty is None:
            raise self.error(node, f"both results must have one type, not {a} and {b}")
        return ty

    def _call(self, node: dict[str, Any]) -> str:
        fn = self.functions.get(node["fn"])
        if fn is None:
            known = ", ".join(sorted(self.functions))
            raise self.error(node, f"unknown function {node['fn']}() (known: {known})")
        self.deps.functions.add(fn.name)
        if not fn.deterministic:
            self.deps.deterministic = False
        types = [self.check(a) for a in node["args"]]
        for i in fn.literal_args:
            if i < len(node["args"]):
                arg = node["args"][i]
                if arg["t"] != "lit" or not isinstance(arg["v"], str):
                    raise self.error(arg, f"argument {i + 1} of {fn.name}() must be literal text")
        if fn.returns == "case":
            return self._case(node, fn, types)
        try:
            ty = fn.result_type(types)
            for i in fn.literal_args:
                if i < len(node["args"]):
                    _check_literal(fn, node["args"][i]["v"], i)
        except (ValueError, OverflowError) as exc:
            raise self.error(node, str(exc)) from None
        return "number" if ty == "null" and fn.returns == "arg0" else ty

    def _case(self, node: dict[str, Any], fn: Function, types: list[str]) -> str:
        try:
            fn.result_type(types)
        except ValueError as exc:
            raise self.error(node, str(exc)) from None
        if len(types) % 2:
            raise self.error(node, "case() takes a value, then pairs of match and result, then a default")
        subject, matches, results = types[0], types[1:-1:2], [*types[2:-1:2], types[-1]]
        for i, m in enumerate(matches):
            if m != "null" and subject != "null" and family(m) != family(subject):
                raise self.error(node["args"][1 + 2 * i], f"cannot compare {subject} with {m}")
        ty = unify(results)
        if ty is None:
            raise self.error(node, f"the results of case() must have one type, not {', '.join(results)}")
        return ty


def _check_literal(fn: Function, value: str, index: int) -> None:
    if fn.name == "regex_match":
        from .functions import compile_regex
        compile_regex(value)
    else:  # a literal argument is evaluated now, so a bad date fails at publish
        fn.python(value)


def check(tree: Mapping[str, Any], scope: Scope, functions: Mapping[str, Function],
          expect: str | None = None) -> tuple[dict[str, Any], str, Dependencies]:
    """Type-check a parsed tree; return (typed tree, result type, dependencies).

    :param expect: ``boolean`` for conditions, or a result type a formula declared.
    """
    typed = copy.deepcopy(dict(tree))
    checker = Checker(scope, functions)
    ty = checker.check(typed)
    if expect is not None and ty != "null" and not _assignable(ty, expect):
        what = "a true/false condition" if expect == "boolean" else f"a {expect} value"
        raise checker.error(typed, f"must give {what}, but gives {ty}")
    return typed, ty, checker.deps


def _assignable(ty: str, expect: str) -> bool:
    if ty == expect:
        return True
    if expect in NUMERIC and ty in NUMERIC:
        return True
    return expect == "text" and ty in TEXTUAL or expect == "choice" and ty == "text"
