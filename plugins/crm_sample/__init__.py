"""The sample CRM package (accounts, contacts, deals, quotes), offered as the template
``crm_sample`` through ``loomwork_templates`` like any plugin's template, and used by
``loomwork demo``."""
from __future__ import annotations

from pathlib import Path

from loomwork.metadata.packages import Template
from loomwork.runtime import hookimpl

PATH = Path(__file__).parent


@hookimpl
def loomwork_templates() -> list[Template]:
    return [Template.at(PATH)]
