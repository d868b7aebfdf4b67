"""Instance settings: declared defaults -> optional TOML file -> ``LOOMWORK_*`` environment
-> an explicit mapping (tests). Validated at start-up with a helpful error.

Settings configure the installation (database, secrets, plugins). What an app *is*
(objects, roles, rules) is metadata, versioned in each tenant's store.
"""
from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from loomwork.metadata.errors import LoomworkError
from loomwork.runtime.sandbox.budget import DEFAULTS as SCRIPT_DEFAULTS
from loomwork.runtime.sandbox.budget import LONG_RUNNING


@dataclass(frozen=True)
class Settings:
    #: ``sqlite:///DIR`` (one file per tenant in DIR) or ``postgresql://...``
    database_url: str = "sqlite:///instance"
    #: PostgreSQL schema prefix: the registry is ``<ns>_platform``, tenants ``<ns>_t_<name>``.
    namespace: str = "lw"
    #: Signs session cookies. Empty: read or create ``secret_key`` in ``instance_dir``.
    secret_key: str = ""
    instance_dir: str = "instance"
    default_tenant: str = "main"
    #: Send cookies only over HTTPS (turn off only for local development).
    secure_cookies: bool = True
    #: Extra plugin modules to register, comma-separated.
    plugins: str = ""
    max_body_bytes: int = 10 * 1024 * 1024
    login_attempts: int = 10
    login_window_seconds: int = 300
    #: Sandbox worker processes per app process, and runs before a worker is replaced.
    script_workers: int = 2
    script_recycle_runs: int = 1000
    #: Tenants share those workers: at most this many run one tenant's scripts at once
    #: (0: all but one, so another tenant's script never waits for them), at most
    #: ``script_tenant_queue`` of a tenant's runs wait for a worker (one more is refused
    #: with 503 at once), and a run waits at most ``script_wait_ms`` (then 503).
    script_tenant_workers: int = 0
    script_tenant_queue: int = 16
    script_wait_ms: int = 30_000
    #: Default limits of one script run (a script may lower them, or raise them up to
    #: the ceiling); ``before_*`` scripts get ``script_wall_ms``, others ``script_long_wall_ms``.
    script_steps: int = SCRIPT_DEFAULTS.steps
    script_wall_ms: int = SCRIPT_DEFAULTS.wall_ms
    script_long_wall_ms: int = LONG_RUNNING.wall_ms
    script_queries: int = SCRIPT_DEFAULTS.queries
    script_rows_read: int = SCRIPT_DEFAULTS.rows_read
    script_rows_written: int = SCRIPT_DEFAULTS.rows_written
    script_memory_mib: int = SCRIPT_DEFAULTS.memory_mib
    script_output_bytes: int = SCRIPT_DEFAULTS.output_bytes
    #: Run-log rows older than this many days are removed.
    script_log_days: int = 30
    #: Email notifications (approvals waiting, decided, overdue): off while smtp_host is empty.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "loomwork@localhost"
    smtp_user: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    #: The address users reach the app at, for links in emails (e.g. https://crm.example.com).
    base_url: str = ""

    @property
    def plugin_list(self) -> list[str]:
        return [p.strip() for p in self.plugins.split(",") if p.strip()]


def _coerce(name: str, kind: type, value: Any) -> Any:
    if kind is bool and isinstance(value, str):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise LoomworkError(f"setting {name}: {value!r} is not true or false")
    if kind is int and not isinstance(value, int):
        try:
            return int(value)
        except ValueError:
            raise LoomworkError(f"setting {name}: {value!r} is not a whole number") from None
    if not isinstance(value, kind):
        raise LoomworkError(f"setting {name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def load_settings(overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    declared = {f.name: f for f in fields(Settings)}
    kinds = {f.name: type(f.default) for f in fields(Settings)}
    values: dict[str, Any] = {}
    config_file = (overrides or {}).get("config_file") or env.get("LOOMWORK_CONFIG")
    if config_file:
        try:
            values.update(tomllib.loads(Path(config_file).read_text(encoding="utf-8")).get("loomwork", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise LoomworkError(f"cannot read settings file {config_file}: {exc}") from None
    for name in declared:
        key = f"LOOMWORK_{name.upper()}"
        if key in env:
            values[name] = env[key]
    values.update({k: v for k, v in (overrides or {}).items() if k != "config_file"})
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise LoomworkError(f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(sorted(declared))}")
    clean = {k: _coerce(k, kinds[k], v) for k, v in values.items()}
    settings = Settings(**clean)
    if not settings.database_url.startswith(("sqlite:///", "postgresql", "postgres://")):
        raise LoomworkError("database_url must be sqlite:///DIR or postgresql://...")
    return settings


def secret_key(settings: Settings) -> str:
    """The configured secret, or one kept in the instance folder (created on first use)."""
    if settings.secret_key:
        return settings.secret_key
    path = Path(settings.instance_dir) / "secret_key"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key
