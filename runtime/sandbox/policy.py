"""Compile a tenant script: size and depth caps, RestrictedPython, and our own rules.

The host compiles when a script is saved (to report errors with line numbers) and the
worker compiles again before it runs one (code objects never cross the pipe); both
use :func:`compile_script`, so they agree on what is allowed.

What our transformer adds to RestrictedPython's:

- refused outright: ``import``/``from … import``, classes, ``global``/``nonlocal``,
  ``yield`` (no generators whose finalisers could run code), ``with``, bare
  ``except:`` (a script must not swallow the host's stop signal), ``try/except*``,
  and the names in :data:`DENIED_NAMES` (``type``, ``getattr``, ``format``…);
- step ticks: ``_tick_()`` at the top of every ``while`` body, function body and
  lambda, and every ``for``/comprehension item passes ``_getiter_`` (which ticks);
- size checks: ``*``, ``**`` and ``<<`` go through ``_binop_`` so ``"x" * 10**9``
  or ``10**10**10`` fail before they allocate;
- text without addresses: ``%`` goes through ``_binop_`` too, and every f-string value
  through ``_shown_value_`` (see :mod:`.shown`), so neither shows where an object lives;
- every ``except`` handler first calls ``_caught_(error)``, which re-raises memory
  and recursion errors as fatal, so a script cannot catch its way past a limit;
- f-string format specs must be short literals (no ``{x:>999999999}``).
"""
from __future__ import annotations

import ast
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import CodeType

from RestrictedPython import RestrictingNodeTransformer

MAX_SOURCE_BYTES = 64 * 1024
MAX_AST_DEPTH = 64
MAX_AST_NODES = 50_000
#: The scripts of one metadata document together (what one publish or plan checks):
#: eight scripts of the largest size. Compiling is CPU work (up to ~0.6 s for a
#: script at the caps), so a request must not bring an unbounded amount of it.
MAX_TOTAL_SOURCE_BYTES = 8 * MAX_SOURCE_BYTES
#: Time a worker may spend compiling one script, apart from the run's own wall time.
#: A script within the caps compiles in well under a second; this is the backstop
#: for one that does not, and it never eats into a run's budget.
COMPILE_WALL_MS = 5_000

#: Builtins and names a script may not mention at all (even to shadow them).
DENIED_NAMES = frozenset({
    "type", "getattr", "setattr", "delattr", "hasattr", "vars", "dir", "format", "globals", "locals",
    "eval", "exec", "compile", "open", "input", "breakpoint", "help", "memoryview", "object", "super",
    "classmethod", "staticmethod", "property", "id", "exit", "quit", "copyright", "credits", "license",
    "BaseException", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "__import__", "__builtins__",
    "printed",
})

_FORMAT_SPEC = re.compile(r"^(?:.?[<>^=])?[+\- ]?#?0?(?:[0-9]{1,3})?[,_]?(?:\.[0-9]{1,2})?[bcdeEfFgGnosxX%]?$")


@dataclass(frozen=True)
class Compiled:
    code: CodeType
    digest: str


class ScriptCompileError(Exception):
    """The script is not allowed or not valid Python; ``errors`` are "Line N: …" texts."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def digest(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()


def _size(source: str) -> int:
    # surrogatepass: a lone surrogate is counted here and refused by the parser.
    return len(source.encode("utf-8", "surrogatepass"))


def _call(name: str, *args: ast.expr) -> ast.Call:
    return ast.Call(func=ast.Name(name, ast.Load()), args=list(args), keywords=[])


def _tick_stmt(node: ast.AST) -> ast.Expr:
    stmt = ast.Expr(_call("_tick_"))
    ast.copy_location(stmt, node)
    ast.fix_missing_locations(stmt)
    return stmt


class ScriptPolicy(RestrictingNodeTransformer):
    """RestrictedPython's transformer with Loomwork's rules (see the module docstring)."""

    def _refuse(self, node: ast.AST, what: str) -> None:
        self.error(node, f"{what} is not allowed in a script")

    def visit_Import(self, node: ast.Import) -> None:
        self._refuse(node, "import (use the helpers the script API offers)")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self._refuse(node, "from … import (use the helpers the script API offers)")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._refuse(node, "a class definition")

    def visit_Global(self, node: ast.Global) -> None:
        self._refuse(node, "global")

    def visit_Nonlocal(self, node: ast.Nonlocal) -> None:
        self._refuse(node, "nonlocal")

    def visit_Yield(self, node: ast.Yield) -> None:
        self._refuse(node, "yield (generators)")

    def visit_YieldFrom(self, node: ast.YieldFrom) -> None:
        self._refuse(node, "yield from (generators)")

    def visit_With(self, node: ast.With) -> None:
        self._refuse(node, "with")

    def visit_Name(self, node: ast.Name):
        if node.id in DENIED_NAMES:
            self.error(node, f'"{node.id}" is not available in a script')
            return node
        return super().visit_Name(node)

    def visit_arg(self, node: ast.arg):
        if node.arg in DENIED_NAMES:
            self.error(node, f'"{node.arg}" is not available in a script')
        return super().visit_arg(node)

    def visit_FunctionDef(self, node: ast.FunctionDef):
        if node.decorator_list:
            self._refuse(node, "a decorator")
        if node.name in DENIED_NAMES:
            self.error(node, f'"{node.name}" is not available in a script')
        node = super().visit_FunctionDef(node)
        node.body.insert(0, _tick_stmt(node))
        return node

    def visit_Lambda(self, node: ast.Lambda):
        node = super().visit_Lambda(node)
        node.body = ast.copy_location(ast.BoolOp(op=ast.Or(), values=[_call("_tick_"), node.body]), node.body)
        ast.fix_missing_locations(node)
        return node

    def visit_While(self, node: ast.While):
        node = super().visit_While(node)
        node.body.insert(0, _tick_stmt(node))
        return node

    def visit_For(self, node: ast.For):
        node = super().visit_For(node)
        node.body.insert(0, _tick_stmt(node))
        return node

    def visit_BinOp(self, node: ast.BinOp):
        node = super().visit_BinOp(node)
        symbol = {ast.Mult: "*", ast.Pow: "**", ast.LShift: "<<", ast.Mod: "%"}.get(type(node.op))
        if symbol is None:
            return node
        call = ast.copy_location(_call("_binop_", ast.Constant(symbol), node.left, node.right), node)
        ast.fix_missing_locations(call)
        return call

    def visit_Try(self, node: ast.Try):
        # A return/break/continue in ``finally`` discards the exception in flight: the
        # stop signal of a limit would vanish.
        for stmt in node.finalbody:
            for inner in ast.walk(stmt):
                if isinstance(inner, (ast.Return, ast.Break, ast.Continue)):
                    what = type(inner).__name__.lower()
                    self.error(inner, f"{what} inside finally: is not allowed in a script (it would hide errors)")
        return super().visit_Try(node)

    def visit_ExceptHandler(self, node: ast.ExceptHandler):
        if node.type is None:
            self.error(node, "a bare except: is not allowed in a script; name the error, as in "
                             "except ValueError:")
            return node
        node = super().visit_ExceptHandler(node)
        if node.name is None:
            node.name = self.gen_tmp_name()
        check = ast.Expr(_call("_caught_", ast.Name(node.name, ast.Load())))
        ast.copy_location(check, node)
        ast.fix_missing_locations(check)
        node.body.insert(0, check)
        return node

    def visit_FormattedValue(self, node: ast.FormattedValue):
        spec = node.format_spec
        if spec is not None:
            parts = spec.values if isinstance(spec, ast.JoinedStr) else [spec]
            literal = all(isinstance(p, ast.Constant) and isinstance(p.value, str) for p in parts)
            text = "".join(p.value for p in parts) if literal else ""
            if not literal or not _FORMAT_SPEC.match(text):
                self.error(node, "an f-string format must be a short literal such as :.2f or :>10")
                return node
        node = super().visit_FormattedValue(node)
        # {value!r} becomes {_shown_value_(value, 'r')}: the text, made without addresses.
        node.value = ast.copy_location(_call("_shown_value_", node.value, ast.Constant(node.conversion)), node.value)
        node.conversion = -1
        ast.fix_missing_locations(node)
        return node


def _shape_errors(tree: ast.AST) -> list[str]:
    """Depth and size caps, walked without recursion (a hostile tree is deep)."""
    stack = [(tree, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if depth > MAX_AST_DEPTH:
            return [f"Line {getattr(node, 'lineno', '?')}: the script is nested too deeply "
                    f"(more than {MAX_AST_DEPTH} levels)"]
        if count > MAX_AST_NODES:
            return [f"the script is too long (more than {MAX_AST_NODES} syntax nodes)"]
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return []


def compile_script(source: str, name: str = "script") -> Compiled:
    """Compile ``source``. :raises ScriptCompileError: with "Line N: …" messages."""
    if not isinstance(source, str):
        raise ScriptCompileError(["the source must be text"])
    if _size(source) > MAX_SOURCE_BYTES:
        raise ScriptCompileError([f"the script is longer than {MAX_SOURCE_BYTES // 1024} KiB"])
    if "\x00" in source:
        raise ScriptCompileError(["the script contains a NUL character"])
    try:
        tree = ast.parse(source, filename=f"<{name}>", mode="exec")
    except SyntaxError as exc:
        raise ScriptCompileError([f"Line {exc.lineno}: {exc.msg}"]) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ScriptCompileError([f"the script cannot be parsed: {type(exc).__name__}"]) from None
    errors = _shape_errors(tree)
    if errors:
        raise ScriptCompileError(errors)
    errors: list[str] = []
    policy = ScriptPolicy(errors, [], {})
    try:
        policy.visit(tree)
    except Exception as exc:  # a refused node left its parent incomplete; the refusal is in errors
        if not errors:
            errors.append(f"the script cannot be compiled: {type(exc).__name__}")
    if errors:
        raise ScriptCompileError(errors)
    try:
        code = compile(tree, filename=f"<{name}>", mode="exec")
    except SyntaxError as exc:  # what only the compiler checks: return outside a function, f(x, x)…
        raise ScriptCompileError([f"Line {exc.lineno}: {exc.msg}"]) from None
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise ScriptCompileError([f"the script cannot be compiled: {type(exc).__name__}"]) from None
    return Compiled(code, digest(source))


# -- checking the scripts of a document (publish, plan) ------------------------------

def total_errors(sources: Mapping[str, str]) -> list[str]:
    """What is wrong with checking ``sources`` at all: more source than one request may
    bring (:data:`MAX_TOTAL_SOURCE_BYTES`)."""
    total = sum(_size(s) for s in sources.values() if isinstance(s, str))
    if total > MAX_TOTAL_SOURCE_BYTES:
        return [f"the scripts come to {total // 1024} KiB together; one document may hold at most "
                f"{MAX_TOTAL_SOURCE_BYTES // 1024} KiB of scripts"]
    return []


def compile_errors(name: str, source: str) -> list[str]:
    """The errors of compiling ``source`` here, in this process (empty: it compiles)."""
    try:
        compile_script(source, name)
    except ScriptCompileError as exc:
        return exc.errors
    return []


class Inconclusive(Exception):
    """Checking a script ended without a verdict (a time limit, a crashed worker): the
    message is reported, but not remembered as the script's verdict."""


class Verdicts:
    """What checking each script source found, remembered by digest (per process, the
    most recent :attr:`size`): a plan, the publish after it and the next publish
    compile an unchanged script once, not three times."""

    size = 2048

    def __init__(self) -> None:
        self._found: OrderedDict[str, tuple[str, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def errors(self, sources: Mapping[str, str],
               check: Callable[[str, str], list[str]] = compile_errors) -> dict[str, list[str]]:
        """The errors of each of ``sources`` (by name; a script without errors is left
        out); ``check(name, source)`` compiles one the verdicts do not know yet, and
        may raise :class:`Inconclusive`."""
        found: dict[str, list[str]] = {}
        for name, source in sources.items():
            key = digest(source)
            with self._lock:
                known = self._found.get(key)
                if known is not None:
                    self._found.move_to_end(key)
            if known is None:
                try:
                    known = tuple(check(name, source))
                except Inconclusive as exc:
                    found[name] = [str(exc)]
                    continue
                with self._lock:
                    self._found[key] = known
                    while len(self._found) > self.size:
                        self._found.popitem(last=False)
            if known:
                found[name] = list(known)
        return found
