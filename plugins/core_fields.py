"""The built-in field types, registered through ``loomwork_field_types``."""
from __future__ import annotations

from loomwork.runtime import hookimpl
from loomwork.runtime.fieldtypes import BUILTIN_TYPES, FieldType


@hookimpl
def loomwork_field_types() -> list[FieldType]:
    return [cls() for cls in BUILTIN_TYPES]
