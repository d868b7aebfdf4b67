"""The application factory."""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from flask import Flask

from loomwork.runtime.scripts import SCRIPTS_FLAG
from loomwork.runtime.services import Services
from loomwork.runtime.tenancy import Platform

from . import api, web
from .api import errors
from .auth import LoginThrottle
from .config import load_settings, secret_key
from .plugin_manager import make_plugin_manager, make_runtime
from .state import AppState

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
}


def create_app(settings: Mapping[str, Any] | None = None) -> Flask:
    """Build a Loomwork app: settings, plugins, runtime services, platform and routes.

    :param settings: overrides applied after the file and environment (see :mod:`.config`).
    """
    cfg = load_settings(settings)
    pm = make_plugin_manager(cfg.plugin_list)
    services = Services(make_runtime(pm))
    platform = Platform(cfg.database_url, namespace=cfg.namespace)
    services.scripts.enabled = lambda tenant: platform.flag(tenant, SCRIPTS_FLAG)

    app = Flask("loomwork", template_folder="web/templates", static_folder="web/static",
                root_path=__file__.rsplit("/", 1)[0])
    app.config.update(
        SECRET_KEY=secret_key(cfg),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg.secure_cookies,
        SESSION_COOKIE_NAME="loomwork_session",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=12),
        MAX_CONTENT_LENGTH=cfg.max_body_bytes,
    )
    app.extensions["loomwork"] = AppState(cfg, pm, services, platform,
                                          LoginThrottle(cfg.login_attempts, cfg.login_window_seconds))
    app.register_blueprint(api.bp)
    app.register_blueprint(web.bp)
    errors.register(app)

    @app.after_request
    def _security_headers(response):
        for key, value in SECURITY_HEADERS.items():
            response.headers.setdefault(key, value)
        if cfg.secure_cookies:  # served over HTTPS: tell browsers to stay there
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
        return response

    pm.hook.loomwork_app_created(app=app)
    return app
