"""How pages draw form widgets.

The registered widgets (``loomwork_widgets``, held by the runtime) say which fields
they fit; pages draw each with the control of ``templates/_widgets.html`` named by
``Widget.control``, or with the widget's own ``template``. Templates look a widget up
with the ``lw_widget(name)`` global.
"""
from __future__ import annotations

from collections.abc import Mapping

from flask import Flask

from loomwork.metadata.errors import LoomworkError
from loomwork.runtime.widgets import Widget

#: The controls ``_widgets.html`` draws (a built-in widget of each name is drawn by it).
CONTROLS = frozenset({
    "text", "textarea", "email", "phone", "url", "number", "decimal", "currency", "percent", "checkbox", "toggle",
    "date", "datetime", "time", "select", "radio", "multiselect", "checkboxes", "lookup", "json", "readonly",
})


def check_drawable(widgets: Mapping[str, Widget]) -> None:
    """:raises LoomworkError: for a widget pages could not draw (no template, and no
    control of its name or of its ``renders_as``)."""
    for name, w in widgets.items():
        if not w.template and w.control not in CONTROLS:
            raise LoomworkError(f"widget {name!r} has no template and its control {w.control!r} is not one pages "
                                f"draw; give it template= or renders_as= one of {', '.join(sorted(CONTROLS))}")


def install(app: Flask, widgets: Mapping[str, Widget]) -> None:
    """Check the app's widgets and let its templates look them up (``lw_widget``)."""
    check_drawable(widgets)
    app.jinja_env.globals["lw_widget"] = widgets.get
