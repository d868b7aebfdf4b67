"""System tables inside every tenant's namespace (all named ``lw_*``)."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from .sqltypes import UTCDateTime

system_metadata = sa.MetaData()
#: The largest id a system table's row can have (their ids are 32-bit integers).
MAX_ID = 2**31 - 1


def is_row_id(value: Any) -> bool:
    """Is ``value`` (a JSON value, say) an integer that can be a system row's id? A query
    comparing an id column with one beyond :data:`MAX_ID` fails on PostgreSQL."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID

users = sa.Table(
    "lw_user", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(150), nullable=False, unique=True),
    sa.Column("email", sa.String(320)),
    sa.Column("full_name", sa.String(200), nullable=False, default=""),
    sa.Column("password_hash", sa.String(300)),
    sa.Column("roles", sa.String(1000), nullable=False, default="user"),
    sa.Column("locale", sa.String(10), nullable=False, default="en"),
    sa.Column("active", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("last_login_at", UTCDateTime),
    #: For approvals by manager chain (added to older tenants by :func:`upgrade`).
    sa.Column("manager_id", sa.Integer),
    #: The IANA time zone pages show times in (None: not known yet; the browser's is
    #: stored at the next sign-in). Added to older tenants by :func:`upgrade`.
    sa.Column("time_zone", sa.String(64)),
    #: Whether the user (or an administrator) chose ``locale``; until then pages follow
    #: the browser's language. NULL in older tenants: chosen unless it is the default.
    sa.Column("locale_chosen", sa.Boolean),
)

tokens = sa.Table(
    "lw_token", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("lw_user.id"), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
)

#: Browser sessions: the cookie carries a random secret, this row its digest. Signing
#: out, a password change and deactivation delete rows, so a kept cookie stops working.
sessions = sa.Table(
    "lw_session", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("lw_user.id"), nullable=False, index=True),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    #: Moves on as the session is used (an idle session ends): see users.SESSION_IDLE.
    sa.Column("expires_at", UTCDateTime, nullable=False, index=True),
)

#: Field-level change history, written in the same transaction as the change.
history = sa.Table(
    "lw_history", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("object", sa.String(63), nullable=False),
    sa.Column("record_id", sa.BigInteger, nullable=False),
    sa.Column("action", sa.String(10), nullable=False),
    sa.Column("field", sa.String(63)),
    sa.Column("old", sa.Text),
    sa.Column("new", sa.Text),
    sa.Column("changed_by", sa.Integer),
    sa.Column("changed_at", UTCDateTime, nullable=False),
    #: How the change came (a write origin: user, api, import, script, approval, derived...).
    sa.Column("origin", sa.String(12)),
    #: The script, process or import behind it, if any.
    sa.Column("via", sa.String(80)),
    sa.Index("ix_lw_history_record", "object", "record_id", "id"),
)

#: Autonumber counters; a row per (object, field, prefix) so patterns with dates restart.
autonumbers = sa.Table(
    "lw_autonumber", system_metadata,
    sa.Column("object", sa.String(63), primary_key=True),
    sa.Column("field", sa.String(63), primary_key=True),
    sa.Column("prefix", sa.String(80), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

#: Columns and tables hidden by a drop; their data stays until purged.
dropped = sa.Table(
    "lw_dropped", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("object", sa.String(63), nullable=False),
    sa.Column("field", sa.String(63)),
    sa.Column("type", sa.String(63)),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("dropped_at", UTCDateTime, nullable=False),
)


#: List views users saved from a list page: personal, or shared by an admin. Views
#: shipped in packages are metadata (``views``); these are data, so saving one does not
#: publish a metadata version (decision D31).
saved_views = sa.Table(
    "lw_view", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("object", sa.String(63), nullable=False),
    sa.Column("owner_id", sa.Integer, nullable=False),
    sa.Column("shared", sa.Boolean, nullable=False, default=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Index("ix_lw_view_object", "object", "owner_id"),
)


#: One row per script run: who, what, how long, what it used and how it ended.
script_runs = sa.Table(
    "lw_script_run", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("script", sa.String(63), nullable=False),
    sa.Column("object", sa.String(63)),
    sa.Column("record_id", sa.BigInteger),
    sa.Column("trigger", sa.String(20), nullable=False),
    sa.Column("actor", sa.Integer),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("used", sa.Text, nullable=False),
    sa.Column("log", sa.Text),
    sa.Column("dry_run", sa.Boolean, nullable=False, default=False),
    sa.Index("ix_lw_script_run_script", "script", "id"),
    sa.Index("ix_lw_script_run_started", "started_at"),
)


#: When each scheduled script last ran (claimed by compare-and-set: one worker runs it).
schedules = sa.Table(
    "lw_schedule", system_metadata,
    sa.Column("script", sa.String(63), primary_key=True),
    sa.Column("last_run_at", UTCDateTime, nullable=False),
)


#: A user's approvals go to a delegate between two times (while away).
delegations = sa.Table(
    "lw_delegation", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("user_id", sa.Integer, nullable=False, index=True),
    sa.Column("delegate_id", sa.Integer, nullable=False),
    sa.Column("starts_at", UTCDateTime, nullable=False),
    sa.Column("ends_at", UTCDateTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
)

#: The states of an approval instance that still hold its record (at most one per record).
APPROVAL_OPEN = ("pending", "returned")

#: One run of an approval process over a record, with the definition it started with.
approval_instances = sa.Table(
    "lw_approval_instance", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("process", sa.String(63), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("definition", sa.Text, nullable=False),
    sa.Column("object", sa.String(63), nullable=False),
    sa.Column("record_id", sa.BigInteger, nullable=False),
    #: pending, returned (sent back to the submitter), approved, rejected, recalled
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("node", sa.String(63)),
    #: Entries of the current node (each entry is a new round of its tasks).
    sa.Column("round", sa.Integer, nullable=False, default=0),
    sa.Column("resume_node", sa.String(63)),
    sa.Column("chosen", sa.Text),
    sa.Column("locked", sa.Boolean, nullable=False, default=False),
    sa.Column("submitter", sa.Integer),
    sa.Column("submitted_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("row_version", sa.Integer, nullable=False, default=1),
    sa.Index("ix_lw_approval_instance_record", "object", "record_id", "status"),
)
#: At most one open instance per record: of simultaneous submissions of one record the
#: first to commit wins, the others meet this index (decision D67).
approval_open_index = sa.Index(
    "ux_lw_approval_instance_open", approval_instances.c.object, approval_instances.c.record_id, unique=True,
    sqlite_where=approval_instances.c.status.in_(APPROVAL_OPEN),
    postgresql_where=approval_instances.c.status.in_(APPROVAL_OPEN))

#: One person's part in a node: decide (``approve``) or be told (``cc``).
approval_tasks = sa.Table(
    "lw_approval_task", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("instance_id", sa.Integer, nullable=False, index=True),
    sa.Column("node", sa.String(63), nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(8), nullable=False),
    #: waiting (its turn has not come), pending, approved, rejected, cancelled, transferred, cc
    sa.Column("status", sa.String(12), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False, default=0),
    #: The person the process named, and the one who holds the task (a delegate, a transferee).
    sa.Column("approver", sa.Integer, nullable=False),
    sa.Column("assignee", sa.Integer, nullable=False),
    sa.Column("delegated", sa.Boolean, nullable=False, default=False),
    sa.Column("added_by", sa.Integer),
    #: A task waiting for another (an added signer before it) names it here.
    sa.Column("after_task", sa.Integer),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("due_at", UTCDateTime),
    sa.Column("reminded_at", UTCDateTime),
    sa.Column("decided_at", UTCDateTime),
    sa.Column("comment", sa.Text),
    sa.Index("ix_lw_approval_task_inbox", "assignee", "status"),
)

#: Everything that happened to an instance, in order: the history users read.
approval_events = sa.Table(
    "lw_approval_event", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("instance_id", sa.Integer, nullable=False, index=True),
    sa.Column("task_id", sa.Integer),
    sa.Column("node", sa.String(63)),
    sa.Column("action", sa.String(20), nullable=False),
    sa.Column("actor", sa.Integer),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("detail", sa.Text),
)

#: Work for ``loomwork worker``: due at ``run_at``, leased while it runs (see runtime/jobs.py).
jobs = sa.Table(
    "lw_job", system_metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("run_at", UTCDateTime, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    #: queued, running, done, failed
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Index("ix_lw_job_due", "status", "run_at"),
)

#: Columns added to system tables after they first shipped: (table, column).
ADDED_COLUMNS = ((users, "manager_id"), (history, "origin"), (history, "via"), (users, "time_zone"),
                 (users, "locale_chosen"))


def _close_duplicate_approvals(conn: sa.Connection, now: dt.datetime) -> None:
    """Before :data:`approval_open_index` exists, simultaneous submissions could open
    several instances of one record: the first stays open, the later ones are closed as
    recalled (their open tasks cancelled, the history saying why), so the index fits.
    No ``on_recalled`` action runs: nobody recalled them, they never should have started."""
    i, t, e = approval_instances, approval_tasks, approval_events
    open_ = i.c.status.in_(APPROVAL_OPEN)
    doubled = conn.execute(sa.select(i.c.object, i.c.record_id, sa.func.min(i.c.id)).where(open_)
                           .group_by(i.c.object, i.c.record_id).having(sa.func.count() > 1)).all()
    for object_name, record_id, kept in doubled:
        extra = conn.execute(sa.select(i.c.id).where(open_, i.c.object == object_name, i.c.record_id == record_id,
                                                     i.c.id != kept)).scalars().all()
        conn.execute(t.update().where(t.c.instance_id.in_(extra), t.c.status.in_(("pending", "waiting")))
                     .values(status="cancelled"))
        conn.execute(i.update().where(i.c.id.in_(extra)).values(
            status="recalled", node=None, finished_at=now, row_version=i.c.row_version + 1))
        conn.execute(e.insert(), [{"instance_id": x, "action": "recalled", "at": now,
                                   "comment": f"closed by an upgrade: approval {kept} of this record was open too",
                                   "detail": json.dumps({"duplicate_of": kept})} for x in extra])


#: Indexes added to system tables after they first shipped, each with what makes a
#: tenant's existing rows fit it (or None).
ADDED_INDEXES = ((approval_open_index, _close_duplicate_approvals),)


def create(conn: sa.Connection, now: dt.datetime) -> None:
    """Create the system tables that are missing (new ones appear in existing tenants too)
    and add the columns and indexes that came later (``now`` stamps what that changes)."""
    system_metadata.create_all(conn)
    upgrade(conn, now)


def upgrade(conn: sa.Connection, now: dt.datetime) -> None:
    """Add :data:`ADDED_COLUMNS` (nullable: no rewrite) and :data:`ADDED_INDEXES` a
    tenant's tables lack."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    # The tenant's schema on PostgreSQL (the inspector does not apply schema_translate_map).
    schema = (conn.get_execution_options().get("schema_translate_map") or {}).get(None)
    inspector = sa.inspect(conn)
    ops = None
    for table, name in ADDED_COLUMNS:
        have = {c["name"] for c in inspector.get_columns(table.name, schema=schema)}
        if name not in have:
            ops = ops or Operations(MigrationContext.configure(connection=conn))
            ops.add_column(table.name, sa.Column(name, table.c[name].type, nullable=True), schema=schema)
    for index, fit in ADDED_INDEXES:
        if index.name not in {x["name"] for x in inspector.get_indexes(index.table.name, schema=schema)}:
            if fit is not None:
                fit(conn, now)
            index.create(conn)


def system_columns() -> list[sa.Column]:
    """The columns every object table starts with (ARCHITECTURE §3)."""
    return [
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.Integer),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("updated_by", sa.Integer),
        sa.Column("owner_id", sa.Integer),
        sa.Column("row_version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("deleted_at", UTCDateTime),
    ]
