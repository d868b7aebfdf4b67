"""What metadata validation needs to know of the things plugins register besides field
types (:class:`~loomwork.metadata.model.FieldTypeSpec`): form widgets and approval
action kinds.

The metadata layer never imports the runtime or the plugins: validation receives
the registries as data (``validate_app(doc, types, widgets=..., actions=...)``),
filled by the runtime from the ``loomwork_widgets`` and ``loomwork_approval_actions``
hooks. The runtime's :class:`loomwork.runtime.widgets.Widget` and
:class:`loomwork.runtime.approval_actions.ActionKind` implement these protocols.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .validation import ProcessCheck


class WidgetSpec(Protocol):
    """A form widget as layouts see it: its name and the fields it fits."""

    #: What a form layout writes in ``widget:``.
    name: str

    def fits(self, field_type: str, result_type: str | None) -> bool:
        """Whether a field of type ``field_type`` can be shown with this widget;
        ``result_type`` is what a computed field declares it computes (a formula's
        ``result_type``), else None. (A field type's own default widget always fits.)"""


class ApprovalActionSpec(Protocol):
    """An approval action kind as publish checks see it."""

    #: The action's key in a process (``{"set": {...}}``).
    name: str
    #: JSON Schema of the action's body; it may ``$ref`` the common definitions.
    schema: Mapping[str, Any]

    def check(self, body: Any, path: str, process: ProcessCheck) -> list[tuple[str, str]]:
        """Checks beyond the schema (what the body names must exist), as
        ``(path, message)`` pairs; ``path`` is the body's."""
