"""Hook specifications: the ways a plugin extends Loomwork.

Core features use these same hooks (see :data:`loomwork.plugins.DEFAULT_PLUGINS`).
Every hook has a typed signature and a docstring; a test fails when one lacks it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from flask import Flask

    from loomwork.metadata.packages import Template
    from loomwork.runtime.approval_actions import ActionKind
    from loomwork.runtime.expr import Function
    from loomwork.runtime.fieldtypes import FieldType
    from loomwork.runtime.jobs import Notifier
    from loomwork.runtime.pipeline import Participant
    from loomwork.runtime.services import Services
    from loomwork.runtime.widgets import Widget

hookspec = pluggy.HookspecMarker("loomwork")


@hookspec
def loomwork_field_types() -> list[FieldType]:
    """Return field type instances to register.

    A type's ``name`` is what metadata writes in ``type:``; a later plugin may not
    reuse a name already registered (start-up fails with a clear message).
    """


@hookspec
def loomwork_expression_functions() -> list[Function]:
    """Return functions for the expression language (formulas, rules, conditions).

    A function declares its parameter type classes and a Python implementation; give it
    ``sql`` too and it works in list filters on formula fields. Names must be unique.
    """


@hookspec
def loomwork_widgets() -> list[Widget]:
    """Return form widgets to register (see :class:`loomwork.runtime.widgets.Widget`).

    A widget's ``name`` is what a form layout writes in ``widget:``; it fits the field
    types (and computed result types) it names, and a field type's own default widget
    (``FieldType.widget``) always fits it. Pages draw it with its ``template`` (a Jinja
    template the plugin makes findable, for instance with a blueprint registered in
    ``loomwork_app_created``) or as the built-in control ``renders_as``. A name
    registered twice fails start-up.
    """


@hookspec
def loomwork_approval_actions() -> list[ActionKind]:
    """Return approval action kinds to register (see
    :class:`loomwork.runtime.approval_actions.ActionKind`).

    A kind's ``name`` is the action's key in a process (``{"tag": {...}}``). When a
    process is published its body is checked against the kind's ``schema`` (JSON
    Schema) and ``check``, and the expressions ``expressions`` names are compiled;
    on approval (or rejection, recall, an action node) ``run`` does it inside the
    decision's transaction. A name registered twice fails start-up.
    """


@hookspec
def loomwork_write_participants(services: Services) -> list[Participant]:
    """Return participants of the record write pipeline.

    A participant has a ``name``, a ``stage`` (one of
    :data:`loomwork.runtime.pipeline.STAGES`), the ``operations`` it takes part in
    (``create``, ``update``, ``delete``, ``restore``) and is called with each
    :class:`~loomwork.runtime.pipeline.WriteBatch` of those operations; it may record
    errors, change values, raise, or write in the batch's transaction. Within a stage,
    built-ins run first, then plugins in registration order. ``services`` are the
    process's runtime services (for participants that call back into them).
    ``loomwork debug pipeline OBJECT`` lists what runs.
    """


@hookspec
def loomwork_templates() -> list[Template]:
    """Return industry templates: packages installable by name (``loomwork package
    install NAME``), listed by ``loomwork package list``. Each is a
    :class:`loomwork.metadata.packages.Template`; ``Template.at(folder)`` reads its
    name, title and version from the folder's manifest. A name registered twice is an
    error when the templates are read.
    """


@hookspec
def loomwork_register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``loomwork`` command line."""


@hookspec
def loomwork_app_created(app: Flask) -> None:
    """Called once ``create_app`` has built the app: register blueprints or hooks."""


@hookspec
def loomwork_notifiers(settings: Any) -> list[Notifier]:
    """Notifiers to deliver notifications (objects with ``send(ctx, user, note)``; see
    :class:`loomwork.runtime.jobs.Notifier`). ``settings`` are the instance settings:
    return none when yours are not configured (the built-in email notifier,
    :mod:`loomwork.plugins.email_notifier`, is offered only when ``smtp_host`` is set)."""

