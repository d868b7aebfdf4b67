"""What one app instance holds: settings, plugins, runtime services and the platform."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pluggy
from flask import current_app

from loomwork.runtime.services import Services
from loomwork.runtime.tenancy import Platform

from .config import Settings

if TYPE_CHECKING:
    from .auth import LoginThrottle


@dataclass
class AppState:
    settings: Settings
    plugins: pluggy.PluginManager
    services: Services
    platform: Platform
    login_throttle: LoginThrottle


def state() -> AppState:
    return current_app.extensions["loomwork"]
