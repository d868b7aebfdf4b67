"""The expression language of formulas, defaults, validation rules and conditions.

One source text, parsed once (:mod:`.syntax`), type-checked against the object's
fields (:mod:`.checker`), then run by three back ends that agree on every value,
NULLs included: Python closures (:mod:`.python`), SQLAlchemy expressions
(:mod:`.sql`) and a JavaScript interpreter of the same JSON tree shipped to forms
(``loomwork/web/static/lw-expr.js``). See ``docs/user-guide.md`` for the language.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .checker import Dependencies, check
from .functions import BUILTIN_FUNCTIONS, Function
from .python import Closure, Env, compile_python
from .syntax import EvaluationError, ExpressionError, parse
from .types import FieldInfo, Scope


@dataclass(frozen=True)
class Expression:
    """A checked expression, ready to evaluate."""

    source: str
    #: The typed JSON tree (what the browser and the SQL compiler consume).
    tree: Mapping[str, Any]
    type: str
    deps: Dependencies
    evaluate: Closure

    def __call__(self, env: Env) -> Any:
        """Evaluate; hot loops may call ``self.evaluate`` directly to skip this frame."""
        return self.evaluate(env)


def compile_expression(source: Any, scope: Scope, functions: Mapping[str, Function],
                       expect: str | None = None) -> Expression:
    """Parse, check and compile ``source``. :raises ExpressionError: with line and column."""
    tree, ty, deps = check(parse(source), scope, functions, expect)
    return Expression(source, tree, ty, deps, compile_python(tree, functions))


def builtin_functions() -> dict[str, Function]:
    return {f.name: f for f in BUILTIN_FUNCTIONS}


__all__ = ["BUILTIN_FUNCTIONS", "Env", "EvaluationError", "Expression", "ExpressionError", "FieldInfo",
           "Function", "Scope", "builtin_functions", "compile_expression", "parse"]
