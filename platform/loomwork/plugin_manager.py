"""The plugin manager, created per app (never a module global)."""
from __future__ import annotations

import importlib
from collections.abc import Iterable

import pluggy

from loomwork.metadata.errors import LoomworkError
from loomwork.metadata.packages import Template
from loomwork.plugins import DEFAULT_PLUGINS
from loomwork.runtime.approval_actions import ActionKind
from loomwork.runtime.compiled import Runtime
from loomwork.runtime.expr import Function
from loomwork.runtime.fieldtypes import FieldType
from loomwork.runtime.pipeline import Participant
from loomwork.runtime.services import Services
from loomwork.runtime.widgets import Widget

from . import hookspecs


def make_plugin_manager(extra: Iterable[object] = (), *, entry_points: bool = True) -> pluggy.PluginManager:
    """Register the built-in plugins, then ``extra`` ones, then installed ``loomwork`` entry points."""
    pm = pluggy.PluginManager("loomwork")
    pm.add_hookspecs(hookspecs)
    for name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(name), name)
    for plugin in extra:
        pm.register(importlib.import_module(plugin) if isinstance(plugin, str) else plugin)
    if entry_points:
        pm.load_setuptools_entrypoints("loomwork")
    pm.check_pending()
    return pm


def _by_name(results: list[list], kind: str) -> dict:
    """Plugin-provided items by ``name``; a name registered twice is an error."""
    out: dict = {}
    # pluggy calls the last-registered first; reverse so built-ins claim their names.
    for items in reversed(results):
        for item in items:
            if item.name in out:
                raise LoomworkError(f"{kind} {item.name!r} is registered twice")
            out[item.name] = item
    return out


def field_types(pm: pluggy.PluginManager) -> dict[str, FieldType]:
    """Every registered field type by name; a name registered twice is an error."""
    return _by_name(pm.hook.loomwork_field_types(), "field type")


def expression_functions(pm: pluggy.PluginManager) -> dict[str, Function]:
    """Every registered expression function by name; a name registered twice is an error."""
    return _by_name(pm.hook.loomwork_expression_functions(), "expression function")


def approval_actions(pm: pluggy.PluginManager) -> dict[str, ActionKind]:
    """Every registered approval action kind by name; a name registered twice is an error."""
    return _by_name(pm.hook.loomwork_approval_actions(), "approval action")


def widgets(pm: pluggy.PluginManager) -> dict[str, Widget]:
    """Every registered form widget by name; a name registered twice is an error."""
    return _by_name(pm.hook.loomwork_widgets(), "widget")


def templates(pm: pluggy.PluginManager) -> dict[str, Template]:
    """Every registered template (installable package) by name; a name registered
    twice is an error. Manifests are read each time (installing reads the rest)."""
    return _by_name(pm.hook.loomwork_templates(), "template")


def make_runtime(pm: pluggy.PluginManager) -> Runtime:
    """The runtime with every plugin's field types, expression functions, approval
    action kinds and form widgets."""
    return Runtime(field_types(pm), expression_functions(pm), approval_actions=approval_actions(pm),
                   widgets=widgets(pm))


def write_participants(pm: pluggy.PluginManager, services: Services) -> list[Participant]:
    """Every plugin's write participants, built-ins first (pluggy calls the last
    registered first)."""
    return [p for found in reversed(pm.hook.loomwork_write_participants(services=services)) for p in found or ()]


def make_services(pm: pluggy.PluginManager, runtime: Runtime | None = None) -> Services:
    """The runtime services, their write pipeline built from the plugins' participants."""
    return Services(runtime or make_runtime(pm), participants=lambda s: write_participants(pm, s))
