"""The built-in expression functions, registered through ``loomwork_expression_functions``."""
from __future__ import annotations

from loomwork.runtime import hookimpl
from loomwork.runtime.expr import BUILTIN_FUNCTIONS, Function


@hookimpl
def loomwork_expression_functions() -> list[Function]:
    return list(BUILTIN_FUNCTIONS)
