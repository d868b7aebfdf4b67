"""The Python back end: a typed tree compiled to nested closures (no ``eval``).

Each node becomes a function of the evaluation :class:`Env`; the work of deciding
what a node means (text ``+`` or number ``+``, which function, which path) is done
once here, so evaluating a rule is a handful of Python calls. NULL is ``None`` and
follows SQL's three-valued logic, so this back end agrees with the SQL one.
"""
from __future__ import annotations

import datetime as dt
import math
import operator
from collections.abc import Callable, Mapping
from decimal import Decimal, DivisionByZero, InvalidOperation
from typing import Any

from ..context import utcnow
from .functions import MAX_TEXT_RESULT, Function
from .syntax import EvaluationError

#: Largest magnitude of a number result; beyond it an evaluation fails rather than
#: giving values SQL would refuse (PostgreSQL raises on overflow).
MAX_NUMBER = 1e300
#: Largest exponent ``**`` accepts.
MAX_EXPONENT = 1000


class Env:
    """What an expression sees: the record, its previous values, lookups, user and clock.

    ``paths`` holds values behind lookups (``"account.industry"``) fetched before
    evaluation; a path missing from it reads as NULL.
    """

    __slots__ = ("rec", "old", "paths", "user_id", "user_role", "now", "today")

    def __init__(self, rec: Mapping[str, Any], old: Mapping[str, Any] | None = None, *,
                 paths: Mapping[str, Any] | None = None, user_id: int | None = None,
                 user_role: str | None = None, now: dt.datetime | None = None) -> None:
        self.rec = rec
        self.old = old
        self.paths = paths or {}
        self.user_id = user_id
        self.user_role = user_role
        self.now = now or utcnow()
        self.today = self.now.astimezone(dt.UTC).date()


Closure = Callable[[Env], Any]


def _dec(x: Any) -> Decimal:
    if isinstance(x, Decimal):
        return x
    if isinstance(x, float):
        return Decimal(repr(x))
    return Decimal(x)


_DECIMAL_LIMIT = Decimal("1e18")


def _checked(value: Any) -> Any:
    t = type(value)
    if t is float:
        if not -MAX_NUMBER <= value <= MAX_NUMBER:  # also false for NaN
            raise EvaluationError("number out of range")
    elif t is int:
        if not -(2**63) < value < 2**63:
            raise EvaluationError("number out of range")
    elif t is Decimal:
        if not value.is_finite() or not -_DECIMAL_LIMIT < value < _DECIMAL_LIMIT:
            raise EvaluationError("number out of range")
    return value


def _as_decimal(closure: Closure) -> Closure:
    return lambda env: None if (v := closure(env)) is None else _dec(v)


def decimal_compare(*types: str) -> bool:
    """Whether numbers and decimals meet (then both sides are compared as decimals)."""
    return "decimal" in types and "number" in types


def _arith(op: str, ty: str) -> Callable[[Any, Any], Any]:
    if ty == "text":
        if op == "+":
            def concat(a: Any, b: Any) -> Any:
                if len(a) + len(b) > MAX_TEXT_RESULT:
                    raise EvaluationError(f"text longer than {MAX_TEXT_RESULT} characters")
                return a + b
            return concat

        def repeat(a: Any, b: Any) -> Any:
            n = max(int(b), 0)
            if not a:
                return ""
            if len(a) * n > MAX_TEXT_RESULT:
                raise EvaluationError(f"repeating text beyond {MAX_TEXT_RESULT} characters")
            return a * n
        return repeat
    if op == "**":
        def power(a: Any, b: Any) -> Any:
            if abs(b) > MAX_EXPONENT:
                raise EvaluationError(f"exponent beyond {MAX_EXPONENT}")
            try:
                return _checked(math.pow(float(a), float(b)))
            except (OverflowError, ValueError):
                raise EvaluationError("number out of range") from None
        return power
    if ty == "decimal":
        fn = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op]

        def dec(a: Any, b: Any) -> Any:
            try:
                return _checked(fn(_dec(a), _dec(b)))
            except (DivisionByZero, InvalidOperation, ZeroDivisionError):
                if op == "/":
                    return None  # x / 0 is empty, as in SQL (SQLite) and the other back ends
                raise EvaluationError("number out of range") from None
        return dec
    fn = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op]

    def num(a: Any, b: Any) -> Any:
        try:
            return _checked(fn(a, b))
        except ZeroDivisionError:
            return None
        except OverflowError:
            raise EvaluationError("number out of range") from None
    return num


_CMP: Mapping[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


class PythonCompiler:
    def __init__(self, functions: Mapping[str, Function]) -> None:
        self.functions = functions

    def compile(self, node: Mapping[str, Any]) -> Closure:
        return getattr(self, f"_{node['t']}")(node)

    def _lit(self, node: Mapping[str, Any]) -> Closure:
        v = node["v"]
        return lambda env: v

    def _field(self, node: Mapping[str, Any]) -> Closure:
        path = node["path"]
        if len(path) == 1:
            name = path[0]
            return lambda env: env.rec.get(name)
        dotted = ".".join(path)
        return lambda env: env.paths.get(dotted)

    def _old(self, node: Mapping[str, Any]) -> Closure:
        name = node["field"]
        # On create there is no previous record: old.x is NULL.
        return lambda env: env.old.get(name) if env.old is not None else None

    def _changed(self, node: Mapping[str, Any]) -> Closure:
        name = node["field"]

        def changed(env: Env) -> bool:
            if env.old is None:  # a create "changes" every field it sets
                return env.rec.get(name) is not None
            return env.rec.get(name) != env.old.get(name)
        return changed

    def _var(self, node: Mapping[str, Any]) -> Closure:
        if node["name"] == "user.id":
            return lambda env: env.user_id
        return lambda env: env.user_role

    def _neg(self, node: Mapping[str, Any]) -> Closure:
        a = self.compile(node["a"])

        def neg(env: Env) -> Any:
            v = a(env)
            return None if v is None else -v
        return neg

    def _not(self, node: Mapping[str, Any]) -> Closure:
        a = self.compile(node["a"])

        def not_(env: Env) -> Any:
            v = a(env)
            return None if v is None else not v
        return not_

    def _and(self, node: Mapping[str, Any]) -> Closure:
        args = [self.compile(a) for a in node["args"]]

        def and_(env: Env) -> Any:
            unknown = False
            for arg in args:
                v = arg(env)
                if v is False:
                    return False
                if v is None:
                    unknown = True
            return None if unknown else True
        return and_

    def _or(self, node: Mapping[str, Any]) -> Closure:
        args = [self.compile(a) for a in node["args"]]

        def or_(env: Env) -> Any:
            unknown = False
            for arg in args:
                v = arg(env)
                if v is True:
                    return True
                if v is None:
                    unknown = True
            return None if unknown else False
        return or_

    def _arith(self, node: Mapping[str, Any]) -> Closure:
        na, nb = node["a"], node["b"]
        if node["ty"] == "decimal" and node["op"] != "**":
            # Literals become decimals once, not at every evaluation.
            na, nb = ({**n, "v": _dec(n["v"])} if n["t"] == "lit" and n["v"] is not None else n for n in (na, nb))
        a, b = self.compile(na), self.compile(nb)
        fn = _arith(node["op"], node["ty"])

        def arith(env: Env) -> Any:
            x = a(env)
            if x is None:
                return None
            y = b(env)
            if y is None:
                return None
            return fn(x, y)
        return arith

    def _cmp(self, node: Mapping[str, Any]) -> Closure:
        na, nb = node["a"], node["b"]
        mixed = {na["ty"], nb["ty"]} == {"number", "decimal"}
        if mixed and (na["t"] == "lit" or nb["t"] == "lit"):
            # A decimal compares exactly with an int or a Decimal: convert the literal
            # once (0.1 as written, not as the nearest binary float) and compare plainly.
            na, nb = ({**n, "v": _dec(n["v"])} if n["t"] == "lit" else n for n in (na, nb))
            mixed = False
        a, b = self.compile(na), self.compile(nb)
        fn = _CMP[node["op"]]

        def cmp(env: Env) -> Any:
            x = a(env)
            if x is None:
                return None
            y = b(env)
            if y is None:
                return None
            if mixed:
                x, y = _dec(x), _dec(y)
            return fn(x, y)
        return cmp

    def _in(self, node: Mapping[str, Any]) -> Closure:
        a = self.compile(node["a"])
        decimal = node["a"]["ty"] == "decimal"
        items = frozenset(_dec(i["v"]) if decimal else i["v"] for i in node["items"])
        neg = node["neg"]

        def in_(env: Env) -> Any:
            x = a(env)
            if x is None:
                return None
            return (x in items) != neg
        return in_

    def _if(self, node: Mapping[str, Any]) -> Closure:
        c, a, b = self.compile(node["c"]), self.compile(node["a"]), self.compile(node["b"])
        if node["ty"] == "decimal":  # a number branch gives a decimal too
            a, b = (_as_decimal(x) if n["ty"] == "number" else x for x, n in ((a, node["a"]), (b, node["b"])))
        return lambda env: a(env) if c(env) is True else b(env)

    def _call(self, node: Mapping[str, Any]) -> Closure:
        fn = self.functions[node["fn"]]
        if fn.name == "today":
            return lambda env: env.today
        if fn.name == "now":
            return lambda env: env.now
        args = [self.compile(a) for a in node["args"]]
        impl = fn.python
        if fn.literal_args and all(a["t"] == "lit" for a in node["args"]) and fn.name in ("date", "datetime"):
            value = impl(*(a["v"] for a in node["args"]))
            return lambda env: value
        if fn.name == "case":
            return self._case(node, args)
        if node["ty"] == "decimal" and fn.returns in ("unify", "case"):
            # A decimal result may mix in number arguments: give one type back.
            inner = self._plain_call(fn, args)

            def as_decimal(env: Env) -> Any:
                v = inner(env)
                return None if v is None else _dec(v)
            return as_decimal
        return self._plain_call(fn, args)

    def _case(self, node: Mapping[str, Any], args: list[Closure]) -> Closure:
        """``case``: only the subject and the chosen result are evaluated; with literal
        match values (the usual form) the choice is one dictionary lookup."""
        nodes = node["args"]
        subject, default = args[0], args[-1]
        decimal = node["ty"] == "decimal"

        def result(closure: Closure) -> Closure:
            return _as_decimal(closure) if decimal else closure

        pairs = [(nodes[i], result(args[i + 1])) for i in range(1, len(nodes) - 1, 2)]
        default = result(default)
        mixed = decimal_compare(nodes[0]["ty"], *(m["ty"] for m, _ in pairs))
        if nodes[0]["ty"] != "list" and all(m["t"] == "lit" for m, _ in pairs):
            table: dict[Any, Closure] = {}
            for m, r in pairs:
                if m["v"] is not None:
                    table.setdefault(_dec(m["v"]) if nodes[0]["ty"] == "decimal" else m["v"], r)

            def lookup(env: Env) -> Any:
                x = subject(env)
                return table.get(x, default)(env) if x is not None else default(env)
            return lookup
        matches = [(self.compile(m), r) for m, r in pairs]

        def scan(env: Env) -> Any:
            x = subject(env)
            if x is not None:
                if mixed:
                    x = _dec(x)
                for m, r in matches:
                    v = m(env)
                    if v is not None and (_dec(v) if mixed else v) == x:
                        return r(env)
            return default(env)
        return scan

    @staticmethod
    def _plain_call(fn: Function, args: list[Closure]) -> Closure:
        impl = fn.python
        name = fn.name
        # Only numbers can leave their range; text, booleans and dates need no check.
        check = _checked if fn.returns in ("number", "decimal", "arg0", "unify", "case") else None

        def guarded(*values: Any) -> Any:
            try:
                result = impl(*values)
            except EvaluationError:
                raise
            except (TypeError, ValueError, ArithmeticError, OverflowError) as exc:
                raise EvaluationError(f"{name}(): {exc}") from None
            return check(result) if check is not None else result

        if fn.null_aware:
            return lambda env: guarded(*[a(env) for a in args])
        if len(args) == 1:
            (a0,) = args

            def call1(env: Env) -> Any:
                v = a0(env)
                return None if v is None else guarded(v)
            return call1

        def call(env: Env) -> Any:
            values = []
            for a in args:
                v = a(env)
                if v is None:
                    return None
                values.append(v)
            return guarded(*values)
        return call


def compile_python(tree: Mapping[str, Any], functions: Mapping[str, Function]) -> Closure:
    """A closure evaluating the typed ``tree`` against an :class:`Env`."""
    return PythonCompiler(functions).compile(tree)
