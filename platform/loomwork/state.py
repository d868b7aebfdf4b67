"""What one app instance holds: settings, plugins, runtime services and the platform."""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import pluggy
from flask import current_app

from loomwork.runtime.context import utcnow
from loomwork.runtime.services import Services
from loomwork.runtime.tenancy import Platform
from loomwork.runtime.throttle import AttemptThrottle

from .config import Settings


@dataclass
class AppState:
    settings: Settings
    plugins: pluggy.PluginManager
    services: Services
    platform: Platform
    #: Password checks (sign-in, old passwords), counted in the platform's registry.
    login_throttle: AttemptThrottle
    #: The clock of the contexts requests run in (a test moves a ``Clock`` here).
    clock: Callable[[], dt.datetime] = utcnow


def state() -> AppState:
    return current_app.extensions["loomwork"]
