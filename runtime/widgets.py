"""Form widgets: the controls a record's edit form shows a field with.

A form layout may pick a widget per field (``{field: stage, widget: radio}``);
otherwise a field gets its type's default (:attr:`FieldType.widget`). A widget says
which fields it fits (by field type, or by what a computed field declares it
computes), whether it takes a whole row of a multi-column section, and how pages draw
it: the built-ins are controls of the web shell's ``_widgets.html``; a plugin's widget
gives its own Jinja template, or draws as one of the built-in controls. Widgets are
registered through ``loomwork_widgets``; the built-ins below are the default plugin
:mod:`loomwork.plugins.core_widgets`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from loomwork.metadata.errors import LoomworkError

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class Widget:
    """A form widget.

    :param name: what a layout writes in ``widget:``.
    :param field_types: the field types it fits.
    :param result_types: what computed fields it fits declare they compute (a
        formula's ``result_type``: ``text``, ``number``, ``decimal``, ``boolean``,
        ``date``, ``datetime``).
    :param any_field: fits every field (``readonly``).
    :param wide: its control takes the whole row of a multi-column section.
    :param grouped: its control is a group of inputs (radio buttons, check boxes),
        labelled by a heading rather than a ``<label for>``.
    :param template: a Jinja template drawing the control (a plugin adds its folder to
        the app's loader); it sees ``f``, the field as the page describes it (``id``,
        ``name``, ``value``, ``required``, ``read_only``, ``errors``, ...), and
        ``attrs``, the usual attributes of an input. The element with id ``f.id`` is an
        ``input``, ``select`` or ``textarea`` holding the value, or a ``fieldset`` of
        radio buttons or check boxes (the form's script reads it for live rules); it
        posts the value under ``f.name`` as the field type's own control would.
    :param renders_as: instead, the built-in control it draws with (``text``, ``number``, ...).
    """

    name: str
    field_types: frozenset[str] = frozenset()
    result_types: frozenset[str] = frozenset()
    any_field: bool = False
    wide: bool = False
    grouped: bool = False
    template: str | None = None
    renders_as: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_types", frozenset(self.field_types))
        object.__setattr__(self, "result_types", frozenset(self.result_types))

    @property
    def control(self) -> str:
        """The built-in control drawing this widget (its own name for a built-in)."""
        return self.renders_as or self.name

    def fits(self, field_type: str, result_type: str | None) -> bool:
        return self.any_field or field_type in self.field_types or (
            result_type is not None and result_type in self.result_types)


_NUMERIC = ("decimal", "currency", "percent")

#: The built-in widgets, each drawn by the control of its name in ``_widgets.html``.
#: Computed fields are shown, never edited: by what they compute (a roll-up's numbers
#: and dates, a formula's ``result_type``).
BUILTIN_WIDGETS: tuple[Widget, ...] = (
    Widget("text", {"text", "long_text", "email", "phone", "url", "autonumber"}, {"text"}),
    Widget("textarea", {"text", "long_text"}, {"text"}, wide=True),
    Widget("email", {"email"}),
    Widget("phone", {"phone"}),
    Widget("url", {"url"}),
    Widget("number", {"integer", *_NUMERIC, "rollup"}, {"number", "decimal"}),
    *(Widget(name, {*_NUMERIC, "rollup"}, {"decimal"}) for name in _NUMERIC),
    Widget("checkbox", {"boolean"}, {"boolean"}),
    Widget("toggle", {"boolean"}, {"boolean"}),
    Widget("date", {"date", "rollup"}, {"date"}),
    Widget("datetime", {"datetime", "rollup"}, {"datetime"}),
    Widget("time", {"time"}),
    Widget("select", {"choice"}),
    Widget("radio", {"choice"}, grouped=True),
    Widget("multiselect", {"multi_choice"}, wide=True),
    Widget("checkboxes", {"multi_choice"}, wide=True, grouped=True),
    Widget("lookup", {"lookup"}),
    Widget("json", {"json"}, wide=True),
    Widget("readonly", any_field=True),
)


def builtin_widgets() -> dict[str, Widget]:
    """The built-in widgets by name (a runtime made without a plugin manager uses them)."""
    return {w.name: w for w in BUILTIN_WIDGETS}


def check_widgets(widgets: Mapping[str, Widget], default_widgets: Iterable[tuple[str, str]]) -> None:
    """Refuse a registry pages could not draw from.

    :param default_widgets: ``(field type, its default widget)`` pairs: each must be
        registered.
    :raises LoomworkError: for a malformed widget, one drawn as an unknown control, or
        a field type whose default widget nobody registers.
    """
    for name, w in widgets.items():
        if not _NAME.match(name):
            raise LoomworkError(f"widget {name!r}: its name must match {_NAME.pattern}")
        if w.template and w.renders_as:
            raise LoomworkError(f"widget {name!r}: give a template or renders_as, not both")
        if w.renders_as is not None:
            base = widgets.get(w.renders_as)
            if base is None or base.template or base.renders_as:
                raise LoomworkError(f"widget {name!r} renders as {w.renders_as!r}, which is not a built-in control")
    for type_name, widget in default_widgets:
        if widget not in widgets:
            raise LoomworkError(f"field type {type_name!r} shows as widget {widget!r}, which is not registered")
