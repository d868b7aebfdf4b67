"""Background jobs in a database table, and the notifications they send.

Work that must happen later (an approval's reminder and deadline) or outside a user's
transaction (sending an email) is a row of ``lw_job``, written in the same transaction
as the change that asks for it, so it exists exactly when that change committed.
``loomwork worker`` claims due jobs (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so
several workers share the queue; SQLite's write lock serialises claims) and runs each
in its own transaction. A claimed job carries a lease: if the worker dies mid-job, the
lease runs out and another worker takes it again. Handlers are idempotent (a deadline
job looks whether its task is still open before acting).

Long work (recomputing a column over a whole table) is a *stepped* job: each step is its
own transaction that renews the lease and saves the job's progress (its payload) together
with the step's writes, so a job interrupted anywhere goes on from its last committed step,
and of two workers holding a claim only the lease's holder makes progress. A caller that
must do such work now adds the job already claimed (:meth:`JobService.start`) in its own
transaction and runs it (:meth:`JobService.run`) after the commit; if the caller dies
first, the lease runs out and a worker takes it (decision D69).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa

from . import systables
from .context import Actor, Context

log = logging.getLogger(__name__)

#: How long a claimed job is the claimer's before another worker may retry it.
LEASE = dt.timedelta(minutes=5)
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class Notification:
    """A message to one user: what happened, and where to look."""

    user_id: int
    subject: str
    body: str
    link: str | None = None


class Notifier(Protocol):
    """Delivers notifications (the in-app inbox needs none: it reads the tasks). Plugins
    add notifiers through the ``loomwork_notifiers`` hook."""

    def send(self, ctx: Context, user: Mapping[str, Any], note: Notification) -> None: ...


Handler = Callable[[Context, sa.Connection, Mapping[str, Any]], None]
#: One step of a stepped job: given the saved state, do a step in ``conn`` and return the
#: state to save and whether the job is finished.
Step = Callable[[Context, sa.Connection, Mapping[str, Any]], tuple[Mapping[str, Any], bool]]


class JobService:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {"notify": self._notify}
        #: Stepped jobs by kind (see the module's docstring).
        self.steps: dict[str, Step] = {}
        self.notifiers: list[Notifier] = []

    # -- queueing -----------------------------------------------------------------------------
    @staticmethod
    def enqueue(conn: sa.Connection, kind: str, run_at: dt.datetime, payload: Mapping[str, Any]) -> int:
        """Add a job in the caller's transaction (it exists if and when that commits)."""
        j = systables.jobs
        return conn.execute(j.insert().values(kind=kind, run_at=run_at, payload=json.dumps(dict(payload)),
                                              status="queued", attempts=0, created_at=run_at)).inserted_primary_key[0]

    @staticmethod
    def start(conn: sa.Connection, kind: str, now: dt.datetime, payload: Mapping[str, Any]) -> int:
        """Add a job already claimed by the caller, in the caller's transaction; the caller
        runs it (:meth:`run`) once that commits. Should the caller never get there, the
        lease runs out and a worker takes the job."""
        j = systables.jobs
        return conn.execute(j.insert().values(
            kind=kind, run_at=now, payload=json.dumps(dict(payload)), status="running", attempts=1,
            locked_until=now + LEASE, created_at=now)).inserted_primary_key[0]

    def run(self, ctx: Context, job_id: int, *, reraise: bool = False) -> dict[str, Any]:
        """Run job ``job_id``, which this caller started (``taken`` if the lease passed to
        a worker meanwhile). A failure is recorded and retried like any job's;
        ``reraise`` raises it to the caller too."""
        j = systables.jobs
        with ctx.tenant.read() as conn:
            job = conn.execute(sa.select(j).where(j.c.id == job_id)).first()
        if job is None:
            raise LookupError(f"no job {job_id}")
        return self._run(ctx, job, ctx.now(), attempt=job.attempts, reraise=reraise)

    def notify(self, conn: sa.Connection, note: Notification, at: dt.datetime) -> None:
        """Queue a notification (sent by the worker, after this transaction commits)."""
        if self.notifiers:
            self.enqueue(conn, "notify", at, {"user_id": note.user_id, "subject": note.subject, "body": note.body,
                                              "link": note.link})

    # -- running ------------------------------------------------------------------------------
    def run_due(self, ctx: Context, limit: int = 10) -> list[dict[str, Any]]:
        """Claim and run the jobs that are due by ``ctx``'s clock; returns what happened to each."""
        now = ctx.now()
        done = []
        for job in self._claim(ctx, now, limit):
            done.append(self._run(ctx, job, now))
        return done

    def _claim(self, ctx: Context, now: dt.datetime, limit: int) -> list[Any]:
        j = systables.jobs
        due = sa.or_(sa.and_(j.c.status == "queued", j.c.run_at <= now),
                     sa.and_(j.c.status == "running", j.c.locked_until < now))
        with ctx.tenant.write() as conn:
            stmt = sa.select(j).where(due).order_by(j.c.run_at, j.c.id).limit(limit)
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update(skip_locked=True)
            jobs = conn.execute(stmt).all()
            if jobs:
                conn.execute(j.update().where(j.c.id.in_([r.id for r in jobs])).values(
                    status="running", locked_until=now + LEASE, attempts=j.c.attempts + 1))
        return jobs

    def _run(self, ctx: Context, job: Any, now: dt.datetime, *, attempt: int | None = None,
             reraise: bool = False) -> dict[str, Any]:
        """Run a claimed job; ``attempt`` is the attempt its claim counted (by default that
        of a claim by :meth:`_claim`, which read the row before counting)."""
        j = systables.jobs
        attempt = job.attempts + 1 if attempt is None else attempt
        # The job is ours only while its claim holds (a lease that ran out while earlier
        # jobs of the batch ran lets another worker take it).
        ours = (j.c.id == job.id, j.c.status == "running", j.c.attempts == attempt)
        try:
            if job.kind in self.steps:
                return self._run_steps(ctx, job, ours)
            handler = self.handlers.get(job.kind)
            with ctx.tenant.write() as conn:
                if conn.execute(j.update().where(*ours).values(locked_until=ctx.now() + LEASE)).rowcount != 1:
                    raise _Lost(job.id)
            if handler is None:
                raise LookupError(f"no handler for jobs of kind {job.kind!r}")
            with ctx.tenant.write() as conn, ctx.tenant.joined(conn):
                handler(ctx.as_actor(Actor.system()), conn, json.loads(job.payload))
                if conn.execute(j.update().where(*ours).values(status="done", finished_at=now,
                                                               locked_until=None)).rowcount != 1:
                    raise _Lost(job.id)  # someone else has it now: undo what this run wrote
            return {"job": job.id, "kind": job.kind, "status": "done"}
        except _Lost:
            return {"job": job.id, "kind": job.kind, "status": "taken"}
        except Exception as exc:  # recorded on the job and retried; never lost, never crashing the worker
            log.warning("job %s (%s) failed: %s", job.id, job.kind, exc)
            final = attempt >= MAX_ATTEMPTS
            with ctx.tenant.write() as conn:
                conn.execute(j.update().where(*ours).values(
                    status="failed" if final else "queued", last_error=f"{type(exc).__name__}: {exc}"[:2000],
                    run_at=now + dt.timedelta(minutes=2 ** attempt), locked_until=None))
            if reraise:
                raise
            return {"job": job.id, "kind": job.kind, "status": "failed" if final else "retry", "error": str(exc)}

    def _run_steps(self, ctx: Context, job: Any, ours: tuple[Any, ...]) -> dict[str, Any]:
        """Run a stepped job to its end from its saved state, a transaction per step."""
        j = systables.jobs
        step = self.steps[job.kind]
        system = ctx.as_actor(Actor.system())
        state: Mapping[str, Any] = json.loads(job.payload)
        finished = False
        while not finished:
            with ctx.tenant.write() as conn, ctx.tenant.joined(conn):
                # Renewing the lease first also locks the job's row (PostgreSQL): one
                # holder steps at a time, and a holder whose claim lapsed stops here.
                if conn.execute(j.update().where(*ours).values(locked_until=ctx.now() + LEASE)).rowcount != 1:
                    raise _Lost(job.id)
                state, finished = step(system, conn, state)
                done = {"status": "done", "finished_at": ctx.now(), "locked_until": None} if finished else {}
                conn.execute(j.update().where(*ours).values(payload=json.dumps(dict(state)), **done))
        return {"job": job.id, "kind": job.kind, "status": "done", "result": dict(state)}

    def _notify(self, ctx: Context, conn: sa.Connection, payload: Mapping[str, Any]) -> None:
        u = systables.users
        user = conn.execute(sa.select(u.c.id, u.c.username, u.c.email, u.c.full_name, u.c.locale)
                            .where(u.c.id == payload["user_id"])).mappings().first()
        if user is None:
            return  # the user is gone: nobody to tell
        note = Notification(payload["user_id"], payload["subject"], payload["body"], payload.get("link"))
        for notifier in self.notifiers:
            notifier.send(ctx, dict(user), note)


class _Lost(Exception):
    """A job's lease passed to another worker while this one ran it."""

