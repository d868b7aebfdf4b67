"""The versioned metadata store: one row per published version of a tenant's metadata.

Each version keeps the whole document (so any two versions diff and any version can
be restored), who published it and why, the element diff against its predecessor,
the plan that was applied, and the *ownership* map: for every object and field, the
package that brought it and whether the tenant has customised it since. Template
upgrades rely on that map to keep tenant changes.

This is the only metadata module that uses SQLAlchemy. Functions take a connection
inside the caller's transaction, so a publish, its DDL and the head bump commit
together.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from .errors import ConflictError, NotFound

store_metadata = sa.MetaData()

#: The largest version number the store holds (its column is a 32-bit integer); a larger
#: one names no version (and would fail a PostgreSQL query as out of range).
MAX_VERSION = 2**31 - 1

meta_version = sa.Table(
    "lw_meta_version", store_metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("created_by", sa.String(200), nullable=False),
    sa.Column("comment", sa.Text, nullable=False, default=""),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("ownership", sa.Text, nullable=False),
    sa.Column("diff", sa.Text, nullable=False),
    sa.Column("plan", sa.Text, nullable=False),
)

#: One row: the published version. Reading it is the per-request cache check; a
#: publish updates it in the same transaction as its DDL (and, on PostgreSQL, the
#: row lock serialises concurrent publishes).
meta_head = sa.Table(
    "lw_meta_head", store_metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.Integer, nullable=False),
)


@dataclass(frozen=True)
class StoredVersion:
    version: int
    created_at: dt.datetime
    created_by: str
    comment: str
    doc: dict[str, Any]
    ownership: dict[str, dict[str, Any]]
    diff: list[dict[str, Any]]
    plan: list[dict[str, Any]]

    def summary(self) -> dict[str, Any]:
        created = self.created_at if self.created_at.tzinfo else self.created_at.replace(tzinfo=dt.UTC)
        return {"version": self.version, "created_at": created.isoformat(), "created_by": self.created_by,
                "comment": self.comment, "changes": len(self.diff)}


def create(conn: sa.Connection) -> None:
    """Create the store's tables in the connection's namespace, at version 0."""
    store_metadata.create_all(conn)
    conn.execute(meta_head.insert().values(id=1, version=0))


_HEAD = sa.select(meta_head.c.version).where(meta_head.c.id == 1)
_HEAD_LOCKED = _HEAD.with_for_update()


def head(conn: sa.Connection, *, lock: bool = False) -> int:
    """The published version. Every request reads it, so the statements are built once."""
    stmt = _HEAD_LOCKED if lock and conn.dialect.name == "postgresql" else _HEAD
    return conn.execute(stmt).scalar_one()


def _utc(value: dt.datetime) -> dt.datetime:
    """SQLite keeps no offset: values are written in UTC and read back marked UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _row(row: Any) -> StoredVersion:
    return StoredVersion(
        version=row.version, created_at=_utc(row.created_at), created_by=row.created_by,
        comment=row.comment, doc=orjson.loads(row.doc), ownership=orjson.loads(row.ownership),
        diff=orjson.loads(row.diff), plan=orjson.loads(row.plan),
    )


def get(conn: sa.Connection, version: int) -> StoredVersion:
    if version == 0:
        return StoredVersion(0, dt.datetime(1970, 1, 1, tzinfo=dt.UTC), "system", "empty",
                             {"objects": {}, "roles": {}, "packages": {}}, {}, [], [])
    row = conn.execute(sa.select(meta_version).where(meta_version.c.version == version)).first() \
        if 0 < version <= MAX_VERSION else None
    if row is None:
        raise NotFound(f"metadata version {version} does not exist")
    return _row(row)


def versions(conn: sa.Connection, limit: int = 100) -> list[StoredVersion]:
    rows = conn.execute(sa.select(meta_version).order_by(meta_version.c.version.desc()).limit(limit))
    return [_row(r) for r in rows]


def history(conn: sa.Connection, after: int, upto: int) -> list[dict[str, Any]]:
    """Who published each version in ``(after, upto]``, when, and its element diff (not
    the documents, which may be large): to say which version changed what."""
    t = meta_version
    rows = conn.execute(sa.select(t.c.version, t.c.created_by, t.c.created_at, t.c.diff)
                        .where(t.c.version > after, t.c.version <= upto).order_by(t.c.version))
    return [{"version": r.version, "by": r.created_by, "at": _utc(r.created_at).isoformat(),
             "diff": orjson.loads(r.diff)} for r in rows]


def save(
    conn: sa.Connection, *, base: int, doc: dict, ownership: dict, diff: list, plan: list,
    actor: str, comment: str, now: dt.datetime,
) -> int:
    """Store a new version on top of ``base`` and move the head to it.

    :raises ConflictError: when someone published since ``base`` was read.
    """
    current = head(conn, lock=True)
    if current != base:
        raise ConflictError(f"metadata changed since version {base} (now {current}); reload and try again")
    version = current + 1
    if now.tzinfo is None:
        raise ValueError("naive datetime; metadata versions are stamped with aware datetimes")
    conn.execute(meta_version.insert().values(
        version=version, created_at=now.astimezone(dt.UTC), created_by=actor, comment=comment or "",
        doc=orjson.dumps(doc).decode(), ownership=orjson.dumps(ownership).decode(),
        diff=orjson.dumps(diff, default=str).decode(), plan=orjson.dumps(plan).decode(),
    ))
    updated = conn.execute(meta_head.update().where(meta_head.c.id == 1, meta_head.c.version == base)
                           .values(version=version))
    if updated.rowcount != 1:
        raise ConflictError("metadata changed concurrently; reload and try again")
    return version
