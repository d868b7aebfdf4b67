"""Parsing: expression source text to the untyped JSON AST.

The language is a subset of Python's expression syntax, so it is parsed with
:mod:`ast` and then walked with a whitelist: any node the walk does not know is an
error, so nothing outside the subset can ever reach a back end. ``$user.id`` is not
Python; ``$`` is swapped for ``_`` (same width, so columns stay right) before
parsing, and only names at those positions may start with ``_``.

The AST is plain JSON (dicts, lists, strings, numbers) because the same tree is
evaluated in Python, compiled to SQL and shipped to the browser. Every node has
``t`` (its kind) and ``pos`` (``[line, column]``, both 1-based); the checker adds
``ty``. Kinds:

``lit`` {v}, ``field`` {path: [names]}, ``old`` {field}, ``var`` {name},
``neg`` {a}, ``not`` {a}, ``arith`` {op: + - * / **, a, b}, ``cmp`` {op: == != < <= > >=, a, b},
``and``/``or`` {args}, ``if`` {c, a, b}, ``in`` {a, items: [lit...], neg},
``call`` {fn, args}, ``changed`` {field}.
"""
from __future__ import annotations

import ast
import warnings
from typing import Any

from loomwork.metadata.errors import LoomworkError

#: Longest accepted source; expressions are rules, not programs.
MAX_SOURCE = 4000
#: Most nodes in one expression. There are no loops, so this also bounds evaluation steps.
MAX_NODES = 500
#: Deepest nesting.
MAX_DEPTH = 40
#: Longest literal list for ``in``.
MAX_LIST = 200
#: Longest text literal.
MAX_TEXT = 1000

VARIABLES = ("user.id", "user.role")


class ExpressionError(LoomworkError):
    """An expression that does not parse, type-check or evaluate; ``line``/``column`` are 1-based."""

    status = 422
    title = "Invalid expression"

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.detail = message
        self.line, self.column = line, column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(f"{where}{message}")


class EvaluationError(ExpressionError):
    """A cap hit while evaluating (text too long for a regex, a huge power...)."""


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_ARITH = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.Pow: "**"}
_CMP = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}


def _mask_dollars(source: str) -> tuple[str, set[tuple[int, int]]]:
    """Replace ``$`` outside string literals by ``_``; return the (line, byte col) marks."""
    out, marks = [], set()
    line, col = 1, 0
    quote: str | None = None  # the open string's delimiter: ', ", ''' or """
    i = 0
    n = len(source)
    while i < n:
        ch = source[i]
        if quote:
            if ch == "\\" and i + 1 < n:
                pair = source[i:i + 2]
                out.append(pair)
                if pair[1] == "\n":  # an escaped line break still ends the line
                    line, col = line + 1, 0
                else:
                    col += len(pair.encode())
                i += 2
                continue
            if source.startswith(quote, i):
                out.append(quote)
                col += len(quote)
                i += len(quote)
                quote = None
                continue
        elif ch in "'\"":
            quote = ch * 3 if source.startswith(ch * 3, i) else ch
            out.append(quote)
            col += len(quote)
            i += len(quote)
            continue
        elif ch == "$":
            marks.add((line, col))
            ch = "_"
        elif ch == "#":
            raise ExpressionError("comments are not allowed", line, len(source[:i].split("\n")[-1]) + 1)
        out.append(ch)
        if ch == "\n":
            line, col = line + 1, 0
        else:
            col += len(ch.encode())
        i += 1
    return "".join(out), marks


class _Parser:
    def __init__(self, source: str) -> None:
        self.lines = source.split("\n")
        self.count = 0

    def pos(self, node: ast.AST) -> list[int]:
        line = getattr(node, "lineno", 1)
        col = getattr(node, "col_offset", 0)
        if line < 1:  # on the parenthesis parse() adds: the start of the text
            return [1, 1]
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        # ast gives UTF-8 byte offsets; users count characters.
        return [line, len(text.encode()[:col].decode(errors="ignore")) + 1]

    def error(self, message: str, node: ast.AST) -> ExpressionError:
        line, col = self.pos(node)
        return ExpressionError(message, line, col)

    def make(self, node: ast.AST, kind: str, **attrs: Any) -> dict[str, Any]:
        self.count += 1
        if self.count > MAX_NODES:
            raise self.error(f"expression is too large (more than {MAX_NODES} parts)", node)
        return {"t": kind, "pos": self.pos(node), **attrs}

    def walk(self, node: ast.AST, depth: int = 0) -> dict[str, Any]:
        if depth > MAX_DEPTH:
            raise self.error(f"expression is nested deeper than {MAX_DEPTH} levels", node)
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self.literal(node)
        if isinstance(node, ast.Name):
            if node.id.startswith("_") or node.id in ("True", "False", "None"):
                raise self.error(f"unknown name {node.id!r}", node)
            if node.id in ("true", "false", "none", "null"):
                hint = {"true": "True", "false": "False"}.get(node.id, "None")
                raise self.error(f"unknown name {node.id!r}; write {hint}", node)
            return self.make(node, "field", path=[node.id])
        if isinstance(node, ast.Attribute):
            return self.attribute(node)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                operand = node.operand
                if isinstance(operand, ast.Constant) and type(operand.value) in (int, float):
                    lit = self.literal(operand)
                    lit["v"] = -lit["v"]
                    lit["pos"] = self.pos(node)
                    return lit
                return self.make(node, "neg", a=self.walk(operand, d))
            if isinstance(node.op, ast.UAdd):
                return self.walk(node.operand, d)
            if isinstance(node.op, ast.Not):
                return self.make(node, "not", a=self.walk(node.operand, d))
            raise self.error("operator not allowed", node)
        if isinstance(node, ast.BinOp):
            op = _ARITH.get(type(node.op))
            if op is None:
                raise self.error(f"operator {_op_text(node.op)} is not allowed", node)
            return self.make(node, "arith", op=op, a=self.walk(node.left, d), b=self.walk(node.right, d))
        if isinstance(node, ast.BoolOp):
            kind = "and" if isinstance(node.op, ast.And) else "or"
            return self.make(node, kind, args=[self.walk(v, d) for v in node.values])
        if isinstance(node, ast.Compare):
            return self.compare(node, d)
        if isinstance(node, ast.IfExp):
            return self.make(node, "if", c=self.walk(node.test, d), a=self.walk(node.body, d),
                             b=self.walk(node.orelse, d))
        if isinstance(node, ast.Call):
            return self.call(node, d)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            raise self.error("a list may only follow 'in' or 'not in'", node)
        raise self.error(f"{_describe(node)} is not allowed in an expression", node)

    def literal(self, node: ast.Constant) -> dict[str, Any]:
        v = node.value
        if v is None or isinstance(v, bool):
            return self.make(node, "lit", v=v)
        if isinstance(v, int):
            if abs(v) >= 2**63:
                raise self.error("number is too large", node)
            return self.make(node, "lit", v=v)
        if isinstance(v, float):
            if v != v or v in (float("inf"), float("-inf")):
                raise self.error("number is too large", node)
            return self.make(node, "lit", v=v)
        if isinstance(v, str):
            if len(v) > MAX_TEXT:
                raise self.error(f"text is longer than {MAX_TEXT} characters", node)
            if "\x00" in v:
                raise self.error("text must not contain NUL characters", node)
            if not _valid_unicode(v):
                raise self.error("text must be valid Unicode (no lone surrogates)", node)
            return self.make(node, "lit", v=v)
        raise self.error(f"{type(v).__name__} literals are not allowed", node)

    def attribute(self, node: ast.Attribute) -> dict[str, Any]:
        parts: list[str] = []
        cur: ast.AST = node
        while isinstance(cur, ast.Attribute):
            parts.append(cur.attr)
            cur = cur.value
        if not isinstance(cur, ast.Name):
            raise self.error("only field paths such as account.owner.email may use '.'", node)
        parts.append(cur.id)
        parts.reverse()
        if parts[0] == "_user":
            if not self.is_variable(cur):
                raise self.error("unknown name '_user'", cur)
            name = ".".join(["user", *parts[1:]])
            if name not in VARIABLES:
                raise self.error(f"unknown variable ${name} (known: {', '.join('$' + v for v in VARIABLES)})", node)
            return self.make(node, "var", name=name)
        if parts[0] == "old":
            if len(parts) != 2:
                raise self.error("old.<field> names a field of this record only", node)
            return self.make(node, "old", field=parts[1])
        for p in parts:
            if p.startswith("_"):
                raise self.error(f"unknown name {p!r}", node)
        return self.make(node, "field", path=parts)

    dollar_marks: set[tuple[int, int]] = set()

    def is_variable(self, node: ast.Name) -> bool:
        return (node.lineno, node.col_offset) in self.dollar_marks

    def compare(self, node: ast.Compare, d: int) -> dict[str, Any]:
        left = self.walk(node.left, d)
        parts = []
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            if left is None:
                raise self.error("'in' cannot be chained with another comparison", node)
            if isinstance(op, (ast.In, ast.NotIn)):
                if not isinstance(right_node, (ast.List, ast.Tuple, ast.Set)):
                    raise self.error("'in' needs a literal list such as ['won', 'lost']", right_node)
                if not right_node.elts or len(right_node.elts) > MAX_LIST:
                    raise self.error(f"the list needs 1 to {MAX_LIST} values", right_node)
                items = [self.walk(e, d) for e in right_node.elts]
                for item in items:
                    if item["t"] != "lit":
                        raise self.error("list items must be literal values", right_node)
                parts.append(self.make(node, "in", a=left, items=items, neg=isinstance(op, ast.NotIn)))
                left = None
                continue
            if isinstance(op, (ast.Is, ast.IsNot)):
                raise self.error("use is_blank(x) to test for an empty value", node)
            right = self.walk(right_node, d)
            parts.append(self.make(node, "cmp", op=_CMP[type(op)], a=left, b=right))
            left = right
        return parts[0] if len(parts) == 1 else self.make(node, "and", args=parts)

    def call(self, node: ast.Call, d: int) -> dict[str, Any]:
        if not isinstance(node.func, ast.Name) or node.func.id.startswith("_"):
            raise self.error("only functions of the library can be called, by name", node)
        if node.keywords:
            raise self.error("functions take positional arguments only", node)
        if any(isinstance(a, ast.Starred) for a in node.args):
            raise self.error("'*' arguments are not allowed", node)
        name = node.func.id
        if name == "changed":
            if len(node.args) != 1 or not isinstance(node.args[0], ast.Constant) or \
                    not isinstance(node.args[0].value, str):
                raise self.error("changed() takes one field name in quotes, for example changed(\"stage\")", node)
            return self.make(node, "changed", field=node.args[0].value)
        return self.make(node, "call", fn=name, args=[self.walk(a, d) for a in node.args])


def _op_text(op: ast.AST) -> str:
    return {ast.Mod: "%", ast.FloorDiv: "//", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
            ast.LShift: "<<", ast.RShift: ">>", ast.MatMult: "@"}.get(type(op), type(op).__name__)


def _describe(node: ast.AST) -> str:
    names = {ast.Lambda: "lambda", ast.Subscript: "indexing with []", ast.ListComp: "a comprehension",
             ast.GeneratorExp: "a comprehension", ast.DictComp: "a comprehension", ast.SetComp: "a comprehension",
             ast.Dict: "a dict", ast.JoinedStr: "an f-string", ast.NamedExpr: "':='", ast.Await: "await",
             ast.Starred: "'*'", ast.Slice: "a slice", ast.Yield: "yield", ast.YieldFrom: "yield"}
    return names.get(type(node), type(node).__name__)


def parse(source: Any) -> dict[str, Any]:
    """Parse expression ``source`` into the untyped JSON AST. :raises ExpressionError:"""
    if not isinstance(source, str):
        raise ExpressionError("an expression must be text")
    if not source.strip():
        raise ExpressionError("the expression is empty", 1, 1)
    if len(source) > MAX_SOURCE:
        raise ExpressionError(f"expression is longer than {MAX_SOURCE} characters", 1, 1)
    if not _valid_unicode(source):
        raise ExpressionError("the expression must be valid Unicode (no lone surrogates)", 1, 1)
    source = source.replace("\r\n", "\n").replace("\r", "\n")
    masked, marks = _mask_dollars(source)
    # Newlines are allowed for readability; parenthesise so Python accepts them.
    try:
        with warnings.catch_warnings():
            # Python warns about odd escapes such as "\d"; the result must not depend on
            # the process's warning filters.
            warnings.simplefilter("ignore")
            tree = ast.parse(f"(\n{masked}\n)", mode="eval")
    except SyntaxError as exc:
        lines = source.split("\n")
        line = (exc.lineno or 2) - 1
        col = exc.offset or 1
        if not 1 <= line <= len(lines):  # reported at the added parenthesis: the end
            line, col = len(lines), len(lines[-1]) + 1
        msg = (exc.msg or "syntax error").replace("invalid syntax", "syntax error").replace(". Perhaps you forgot a comma?", "")
        raise ExpressionError(msg, line, col) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"cannot parse: {exc}", 1, 1) from None
    # Undo the line added by the parenthesis.
    for n in ast.walk(tree):
        if hasattr(n, "lineno"):
            n.lineno -= 1
    parser = _Parser(source)
    parser.dollar_marks = marks
    try:
        return parser.walk(tree.body)
    except RecursionError:
        raise ExpressionError(f"expression is nested deeper than {MAX_DEPTH} levels", 1, 1) from None
