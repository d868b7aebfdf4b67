"""The built-in form widgets, registered through ``loomwork_widgets`` like any plugin's
(see :mod:`loomwork.runtime.widgets`; pages draw them with ``web/templates/_widgets.html``)."""
from __future__ import annotations

from loomwork.runtime import hookimpl
from loomwork.runtime.widgets import BUILTIN_WIDGETS, Widget


@hookimpl
def loomwork_widgets() -> list[Widget]:
    return list(BUILTIN_WIDGETS)
