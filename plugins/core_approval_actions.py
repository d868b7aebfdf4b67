"""The built-in approval action kinds (``set``, ``lock``, ``notify``, ``create``,
``script``), registered through ``loomwork_approval_actions`` like any plugin's (see
:mod:`loomwork.runtime.approval_actions`)."""
from __future__ import annotations

from loomwork.runtime import hookimpl
from loomwork.runtime.approval_actions import BUILTIN_ACTIONS, ActionKind


@hookimpl
def loomwork_approval_actions() -> list[ActionKind]:
    return [cls() for cls in BUILTIN_ACTIONS]
