"""The built-in participants of the record write pipeline, registered through
``loomwork_write_participants`` like any plugin's (see :mod:`loomwork.runtime.participants`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from loomwork.runtime import hookimpl
from loomwork.runtime.participants import builtin_participants

if TYPE_CHECKING:
    from loomwork.runtime.pipeline import Participant
    from loomwork.runtime.services import Services


@hookimpl
def loomwork_write_participants(services: Services) -> list[Participant]:
    return builtin_participants(services)
