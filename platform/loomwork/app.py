"""The application factory."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from flask import Flask

from loomwork.metadata.errors import LoomworkError
from loomwork.runtime.sandbox.budget import CEILING, Limits
from loomwork.runtime.scripts import SCRIPTS_FLAG, ScriptSettings
from loomwork.runtime.tenancy import Platform
from loomwork.runtime.throttle import AttemptThrottle
from loomwork.runtime.users import SESSION_IDLE

from . import api, inputs, web
from .api import errors
from .config import Settings, load_settings, secret_key
from .plugin_manager import make_plugin_manager, make_services
from .state import AppState

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'",
}


def script_settings(cfg: Settings) -> ScriptSettings:
    """The operator's script limits; the ceiling rises to meet defaults set above it."""
    defaults = Limits(steps=cfg.script_steps, wall_ms=cfg.script_wall_ms, queries=cfg.script_queries,
                      rows_read=cfg.script_rows_read, rows_written=cfg.script_rows_written,
                      memory_mib=cfg.script_memory_mib, output_bytes=cfg.script_output_bytes)
    for name, value in defaults.as_dict().items():
        if value < 1 and name not in ("queries", "rows_read", "rows_written", "output_bytes"):
            raise LoomworkError(f"setting script_{name}: must be at least 1")
    long_running = replace(defaults, wall_ms=cfg.script_long_wall_ms)
    ceiling = Limits(**{k: max(v, getattr(long_running, k)) for k, v in CEILING.as_dict().items()})
    if cfg.script_workers < 1:
        raise LoomworkError("setting script_workers: must be at least 1")
    if not 0 <= cfg.script_tenant_workers <= cfg.script_workers:
        raise LoomworkError(f"setting script_tenant_workers: must be from 0 (all workers but one) to "
                            f"script_workers ({cfg.script_workers})")
    for name in ("script_tenant_queue", "script_wait_ms"):
        if getattr(cfg, name) < 0:
            raise LoomworkError(f"setting {name}: must not be negative")
    return ScriptSettings(workers=cfg.script_workers, max_runs=cfg.script_recycle_runs, defaults=defaults,
                          long_running=long_running, ceiling=ceiling, log_retention_days=cfg.script_log_days,
                          tenant_workers=cfg.script_tenant_workers or None, tenant_queue=cfg.script_tenant_queue,
                          wait_ms=cfg.script_wait_ms)


def create_app(settings: Mapping[str, Any] | None = None, *, plugin_manager: Any = None) -> Flask:
    """Build a Loomwork app: settings, plugins, runtime services, platform and routes.

    :param settings: overrides applied after the file and environment (see :mod:`.config`).
    :param plugin_manager: the plugins to use (the command line passes the one it built
        its commands from); by default one is made from the ``plugins`` setting.
    """
    cfg = load_settings(settings)
    pm = plugin_manager or make_plugin_manager(cfg.plugin_list)
    services = make_services(pm)
    platform = Platform(cfg.database_url, namespace=cfg.namespace)
    services.scripts.enabled = lambda tenant: platform.flag(tenant, SCRIPTS_FLAG)
    services.scripts.settings = script_settings(cfg)
    # Email is a default plugin's notifier (loomwork.plugins.email_notifier), offered
    # when smtp_host is set; built-ins first (pluggy calls the last registered first).
    for found in reversed(pm.hook.loomwork_notifiers(settings=cfg)):
        services.jobs.notifiers.extend(found or ())

    app = Flask("loomwork", template_folder="web/templates", static_folder="web/static",
                root_path=__file__.rsplit("/", 1)[0])
    app.config.update(
        SECRET_KEY=secret_key(cfg),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=cfg.secure_cookies,
        SESSION_COOKIE_NAME="loomwork_session",
        PERMANENT_SESSION_LIFETIME=SESSION_IDLE,  # the cookie lasts as long as its row may
        MAX_CONTENT_LENGTH=cfg.max_body_bytes,
    )
    for name in ("login_attempts", "login_window_seconds"):
        if getattr(cfg, name) < 1:
            raise LoomworkError(f"setting {name}: must be at least 1")
    app.extensions["loomwork"] = AppState(cfg, pm, services, platform,
                                          AttemptThrottle(platform, cfg.login_attempts, cfg.login_window_seconds))
    inputs.install(app)  # before the blueprints: their rules use its converter
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
