"""Tenants as database namespaces, and the platform registry that lists them.

* SQLite (the embedded default): the platform URL names a *directory*
  (``sqlite:///instance``); the registry is ``platform.db`` in it and each tenant is
  ``tenants/<name>.db``, in WAL mode.
* PostgreSQL: one database; the registry lives in schema ``<ns>_platform`` and each
  tenant in schema ``<ns>_t_<name>``. Tenant tables are declared without a schema
  and mapped with ``schema_translate_map``, so one connection pool serves every tenant
  and no statement can name another tenant's tables.

Users, roles, metadata, data and history all live in the tenant's namespace.
"""
from __future__ import annotations

import contextvars
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from loomwork.metadata import store
from loomwork.metadata.errors import ConflictError, LoomworkError, NotFound

from . import systables
from .context import utcnow
from .expr.sqlite_functions import register as register_expression_functions
from .sqltypes import UTCDateTime

TENANT_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def json_dumps(value: Any) -> str:
    return orjson.dumps(value, default=_json_default).decode()


registry_metadata = sa.MetaData()
tenant_registry = sa.Table(
    "lw_tenant", registry_metadata,
    sa.Column("name", sa.String(40), primary_key=True),
    sa.Column("title", sa.String(200), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
#: Operator switches per tenant (a table of its own, so older registries gain it).
tenant_flags = sa.Table(
    "lw_tenant_flag", registry_metadata,
    sa.Column("tenant", sa.String(40), primary_key=True),
    sa.Column("flag", sa.String(40), primary_key=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
)
#: Password checks counted per account and per address (runtime/throttle.py). In the
#: registry, not a tenant, because an address's count spans every tenant and a sign-in
#: to a workspace that does not exist is counted too. ``tenant`` is '' for addresses.
attempts = sa.Table(
    "lw_attempt", registry_metadata,
    sa.Column("kind", sa.String(10), primary_key=True),
    sa.Column("tenant", sa.String(64), primary_key=True),
    sa.Column("subject", sa.String(200), primary_key=True),
    sa.Column("window_start", UTCDateTime, nullable=False, index=True),
    sa.Column("checks", sa.Integer, nullable=False),
)
#: How long a flag read from the registry is trusted by other processes.
FLAG_TTL_S = 5.0
#: The write a thread's tenant access joins (see :meth:`Tenant.joined`).
_joined: contextvars.ContextVar[tuple[tuple[str, str], sa.Connection] | None] = contextvars.ContextVar(
    "lw_joined_write", default=None)


@dataclass(frozen=True)
class Tenant:
    """One tenant's namespace. ``engine`` already maps unqualified tables into it."""

    name: str
    engine: sa.Engine
    schema: str | None
    platform_key: str

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def cache_key(self) -> tuple[str, str]:
        return (self.platform_key, self.name)

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        """A write transaction. On SQLite it takes the write lock at BEGIN
        (``BEGIN IMMEDIATE``), so two writers queue instead of deadlocking on upgrade.

        Inside :meth:`joined` (an ``after_save`` script's calls) it is a savepoint of
        the enclosing write instead: one transaction, committed or rolled back whole.
        """
        outer = _joined.get()
        if outer is not None and outer[0] == self.cache_key:
            with outer[1].begin_nested():
                yield outer[1]
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(lw_immediate=True)
            with conn.begin():
                yield conn

    @contextmanager
    def joined(self, conn: sa.Connection) -> Iterator[None]:
        """Make this thread's reads and writes of the tenant use ``conn`` (an open write
        transaction) until the block ends: they see its changes and share its fate."""
        token = _joined.set((self.cache_key, conn))
        try:
            yield
        finally:
            _joined.reset(token)

    @property
    def in_transaction(self) -> bool:
        """Whether this thread is inside :meth:`joined` for this tenant."""
        return self.joined_connection is not None

    @property
    def joined_connection(self) -> sa.Connection | None:
        """The write this thread's access joins (inside :meth:`joined`), else None."""
        outer = _joined.get()
        return outer[1] if outer is not None and outer[0] == self.cache_key else None

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read: on PostgreSQL a READ COMMITTED transaction; on SQLite autocommit
        statements (each sees a committed snapshot), so reads never take a lock.
        Inside :meth:`joined`, the enclosing write's connection."""
        outer = _joined.get()
        if outer is not None and outer[0] == self.cache_key:
            yield outer[1]
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(lw_read=True)
            with conn.begin():
                yield conn


def _sqlite_engine(path: Path) -> sa.Engine:
    engine = sa.create_engine(
        f"sqlite:///{path}", json_serializer=json_dumps,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=8, max_overflow=8,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN, not the driver.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
                       "busy_timeout=30000", "cache_size=-65536", "temp_store=MEMORY",
                       # Read pages through a memory map: a cold page costs no read() call.
                       "mmap_size=1073741824"):
            cur.execute(f"PRAGMA {pragma}")
        cur.close()
        # Functions the expression language's SQL back end needs (runtime/expr/sql.py).
        register_expression_functions(dbapi_conn)

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        options = conn.get_execution_options()
        if options.get("lw_read"):
            # Reads run statement by statement (each its own WAL snapshot), like
            # PostgreSQL's READ COMMITTED, and save a BEGIN/COMMIT round trip.
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("lw_immediate") else "BEGIN")

    return engine


def normalise_url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class Platform:
    """The registry of tenants of one installation and the engines that reach them."""

    def __init__(self, url: str, *, namespace: str = "lw") -> None:
        self.url = normalise_url(url)
        self.namespace = namespace
        self._lock = threading.Lock()
        self._tenants: dict[str, Tenant] = {}
        self._flags: dict[tuple[str, str], tuple[bool, float]] = {}
        if self.url.startswith("sqlite"):
            self.kind = "sqlite"
            raw = self.url.split(":///", 1)[1] if ":///" in self.url else ""
            if not raw:
                raise LoomworkError("a SQLite platform URL names a directory: sqlite:///instance")
            self.root = Path(raw)
            (self.root / "tenants").mkdir(parents=True, exist_ok=True)
            self.registry_engine = _sqlite_engine(self.root / "platform.db")
            self.registry_schema = None
        elif self.url.startswith("postgresql"):
            self.kind = "postgresql"
            self.root = None
            self.engine = sa.create_engine(self.url, json_serializer=json_dumps, pool_size=10,
                                           max_overflow=10, pool_pre_ping=True)
            self.registry_schema = f"{namespace}_platform"
            self.registry_engine = self.engine.execution_options(
                schema_translate_map={None: self.registry_schema})
        else:
            raise LoomworkError(f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite:///DIR or postgresql://")
        self.key = f"{self.url}#{namespace}"
        self._ensure_registry()

    def _ensure_registry(self) -> None:
        with self.registry_engine.begin() as conn:
            if self.registry_schema:
                conn.execute(sa.schema.CreateSchema(self.registry_schema, if_not_exists=True))
            registry_metadata.create_all(conn)

    @contextmanager
    def registry_write(self) -> Iterator[sa.Connection]:
        """A write transaction on the registry (on SQLite the write lock is taken at BEGIN,
        as :meth:`Tenant.write` does, so writers queue instead of failing busy)."""
        with self.registry_engine.connect() as conn:
            conn = conn.execution_options(lw_immediate=True)
            with conn.begin():
                yield conn

    def _schema(self, name: str) -> str:
        return f"{self.namespace}_t_{name}"

    def _open(self, name: str) -> Tenant:
        if self.kind == "sqlite":
            engine = _sqlite_engine(self.root / "tenants" / f"{name}.db")
            return Tenant(name, engine, None, self.key)
        schema = self._schema(name)
        return Tenant(name, self.engine.execution_options(schema_translate_map={None: schema}), schema, self.key)

    # -- registry ---------------------------------------------------------
    def tenants(self) -> list[dict[str, Any]]:
        with self.registry_engine.connect() as conn:
            rows = conn.execute(sa.select(tenant_registry).order_by(tenant_registry.c.name))
            return [dict(r._mapping) for r in rows]

    def exists(self, name: str) -> bool:
        with self.registry_engine.connect() as conn:
            return conn.execute(sa.select(tenant_registry.c.name)
                                .where(tenant_registry.c.name == name)).first() is not None

    def tenant(self, name: str) -> Tenant:
        """The tenant called ``name``. :raises NotFound: if it is not registered."""
        found = self._tenants.get(name)
        if found is not None:
            return found
        if not isinstance(name, str) or not TENANT_NAME.match(name) or not self.exists(name):
            raise NotFound(f"no tenant {name!r}")
        with self._lock:
            found = self._tenants.get(name)
            if found is None:
                found = self._open(name)
                with found.write() as conn:  # system tables added since the tenant was created
                    systables.create(conn, utcnow())
                self._tenants[name] = found
            return found

    def flag(self, tenant: str, flag: str) -> bool:
        """An operator switch of ``tenant`` (off unless set), read at most every few seconds."""
        key = (tenant, flag)
        now = time.monotonic()
        cached = self._flags.get(key)
        if cached is not None and now - cached[1] < FLAG_TTL_S:
            return cached[0]
        t = tenant_flags
        with self.registry_engine.connect() as conn:
            value = bool(conn.execute(sa.select(t.c.enabled).where(t.c.tenant == tenant, t.c.flag == flag))
                         .scalar_one_or_none())
        self._flags[key] = (value, now)
        return value

    def set_flag(self, tenant: str, flag: str, enabled: bool) -> None:
        if not self.exists(tenant):
            raise NotFound(f"no tenant {tenant!r}")
        t = tenant_flags
        with self.registry_engine.begin() as conn:
            conn.execute(t.delete().where(t.c.tenant == tenant, t.c.flag == flag))
            conn.execute(t.insert().values(tenant=tenant, flag=flag, enabled=enabled))
        self._flags[(tenant, flag)] = (enabled, time.monotonic())

    def create_tenant(self, name: str, title: str | None = None) -> Tenant:
        """Create a tenant's namespace with its system tables, at metadata version 0."""
        if not TENANT_NAME.match(name or ""):
            raise LoomworkError("tenant names are 1-40 lower-case letters, digits or _, starting with a letter")
        if self.exists(name):
            raise ConflictError(f"tenant {name!r} already exists")
        tenant = self._open(name)
        with tenant.write() as conn:
            if tenant.schema:
                conn.execute(sa.schema.CreateSchema(tenant.schema))
            systables.create(conn, utcnow())
            store.create(conn)
        with self.registry_engine.begin() as conn:
            conn.execute(tenant_registry.insert().values(
                name=name, title=title or name, created_at=utcnow()))
        with self._lock:
            self._tenants[name] = tenant
        return tenant

    def drop_tenant(self, name: str) -> None:
        """Remove a tenant and all its data (used by tests and the CLI)."""
        tenant = self.tenant(name)
        with self.registry_engine.begin() as conn:
            conn.execute(tenant_registry.delete().where(tenant_registry.c.name == name))
            conn.execute(tenant_flags.delete().where(tenant_flags.c.tenant == name))
            conn.execute(attempts.delete().where(attempts.c.tenant == name))
        with self._lock:
            self._tenants.pop(name, None)
        if tenant.schema:
            with self.engine.begin() as conn:
                conn.execute(sa.schema.DropSchema(tenant.schema, cascade=True))
        else:
            tenant.engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                path = self.root / "tenants" / f"{name}.db{suffix}"
                if path.exists():
                    os.remove(path)

    def drop_all(self) -> None:
        """Drop every tenant and the registry (tests only)."""
        for t in self.tenants():
            self.drop_tenant(t["name"])
        if self.registry_schema:
            with self.engine.begin() as conn:
                conn.execute(sa.schema.DropSchema(self.registry_schema, cascade=True))

    def dispose(self) -> None:
        for t in self._tenants.values():
            t.engine.dispose()
        self.registry_engine.dispose()
