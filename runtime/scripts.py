"""Tenant scripts on the host side: when they run, what their ``ctx`` may do, the run log.

Scripts run in sandbox workers (:mod:`loomwork.runtime.sandbox`). This module decides
which scripts a write triggers, sends them the record as JSON, serves their ``ctx``
calls (binding tenant and actor, refusing unknown arguments, checking names against
metadata through the query engine and the record service, metering the budget), and
logs every run.

``before_save`` and ``before_delete`` scripts run before the write's transaction opens
(their reads use their own short transactions), so a slow script never holds a write
lock; the write then checks ``row_version`` again. They shape and check the record:
``record`` changes become part of the write, ``ctx.error`` refuses it, and writing
other records is left to actions. Writes a script makes do not trigger scripts: they
have the origin ``script`` (see :class:`~loomwork.runtime.pipeline.Origin`).
"""
from __future__ import annotations

import atexit
import contextlib
import contextvars
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from croniter import croniter

from loomwork.metadata.errors import (
    ConflictError,
    LoomworkError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from loomwork.metadata.model import SYSTEM_COLUMNS, ScriptDef

from . import systables
from .compiled import READ_MAX_AGE, CompiledApp, Runtime
from .context import Actor, Context
from .permissions import Permissions
from .pipeline import Origin
from .query import MAX_LIMIT, ListRequest, QueryService
from .sandbox.budget import CEILING, DEFAULTS, LONG_RUNNING, BudgetExceeded, Limits, ScriptFailed
from .sandbox.policy import Verdicts, digest
from .sandbox.pool import Pool, Unsendable, WorkerCrashed
from .sandbox.protocol import PlainError, plain, typed

if TYPE_CHECKING:
    from .records import RecordService

log = logging.getLogger(__name__)

#: The operator switch that lets a tenant's scripts run (``loomwork tenant scripts --enable``).
SCRIPTS_FLAG = "scripts"
BEFORE_EVENTS = ("before_save", "before_delete")
#: What each ``ctx`` call accepts; anything else is refused by name.
CALL_ARGS = {
    "query": frozenset({"object", "filter", "fields", "order", "limit"}),
    "get": frozenset({"object", "id"}),
    "create": frozenset({"object", "values"}),
    "update": frozenset({"object", "id", "values"}),
}
MAX_QUERY_LIMIT = MAX_LIMIT
LOG_TEXT_CAP = 8000
#: Runs per page of the run log: by default, and at most.
RUNS_PAGE, MAX_RUNS_PAGE = 50, 500
_TYPED = {"decimal": "decimal", "currency": "decimal", "percent": "decimal", "date": "date", "datetime": "datetime"}

#: Run-log rows waiting for the enclosing write transaction to end.
_pending_logs: contextvars.ContextVar[list[dict[str, Any]] | None] = contextvars.ContextVar(
    "lw_pending_script_logs", default=None)


_POOLS: dict[tuple[Any, ...], Pool] = {}
_POOLS_LOCK = threading.Lock()


@atexit.register
def _close_pools() -> None:
    for pool in _POOLS.values():
        pool.close()


@dataclass(frozen=True)
class ScriptSettings:
    workers: int = 2
    #: A worker is replaced after this many runs (and after any limit or crash).
    max_runs: int = 1000
    defaults: Limits = DEFAULTS
    long_running: Limits = LONG_RUNNING
    ceiling: Limits = CEILING
    #: Run-log rows older than this are removed.
    log_retention_days: int = 30
    #: Workers one tenant's runs may hold at once (None: all but one), runs of one
    #: tenant that may wait for one, and how long a run may wait (see :mod:`.sandbox.quota`).
    tenant_workers: int | None = None
    tenant_queue: int = 16
    wait_ms: int = 30_000


@dataclass
class Meter:
    """The host's share of a run's budget: queries, rows read, rows written (for one
    record of a batch at a time: each record has the whole budget)."""

    limits: Limits
    queries: int = 0
    rows_read: int = 0
    rows_written: int = 0
    item: int = 0
    total: dict[str, int] = field(default_factory=lambda: {"queries": 0, "rows_read": 0, "rows_written": 0})

    def at(self, item: int) -> Meter:
        """Count for record ``item`` of the batch from now on."""
        if item != self.item:
            self.item, self.queries, self.rows_read, self.rows_written = item, 0, 0, 0
        return self

    def add(self, what: str, n: int = 1) -> bool:
        """Count ``n`` more of ``what``; False once past its limit."""
        value = getattr(self, what) + n
        setattr(self, what, value)
        self.total[what] += n
        return value <= getattr(self.limits, what)

    def used(self) -> dict[str, int]:
        return dict(self.total)


@dataclass
class RunOutcome:
    """How one run (or one record of a batch) ended."""

    status: str
    #: What the script changed in ``record`` (before_save and actions).
    record: dict[str, Any] | None = None
    result: Any = None
    errors: list[tuple[str | None, str]] = field(default_factory=list)
    log: str = ""
    message: str | None = None
    line: int | None = None
    limit: str | None = None
    used: dict[str, Any] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)

    def raise_failure(self, script: str) -> None:
        """Raise what a failed run means for the write it belongs to."""
        if self.status == "limit":
            limit = self.limit or "steps"
            raise BudgetExceeded(limit, self.used.get(limit), self.limits.get(limit, "?"), script)
        if self.status == "error":
            raise ScriptFailed(self.message or "error", script, self.line)


class ScriptService:
    def __init__(self, runtime: Runtime, permissions: Permissions, records: RecordService, query: QueryService,
                 settings: ScriptSettings | None = None) -> None:
        self.runtime = runtime
        self.permissions = permissions
        #: What scripts' ``ctx`` calls read and write through.
        self.records, self.query = records, query
        self.settings = settings or ScriptSettings()
        #: Whether a tenant's scripts may run; the shell wires the registry switch in.
        self.enabled: Callable[[str], bool] = lambda tenant: False
        self._pool: Pool | None = None
        self._verdicts = Verdicts()

    # -- plumbing ---------------------------------------------------------------
    @property
    def pool(self) -> Pool:
        """The process's worker pool for these settings, started at the first run
        (workers are stateless, so every service of a process shares them)."""
        if self._pool is None:
            s = self.settings
            key = (s.workers, s.max_runs, s.ceiling.memory_mib, s.wait_ms / 1000, s.tenant_workers, s.tenant_queue)
            with _POOLS_LOCK:
                if key not in _POOLS:
                    _POOLS[key] = Pool(*key)
                self._pool = _POOLS[key]
        return self._pool

    def check_sources(self, sources: Mapping[str, str], tenant: Hashable = None) -> dict[str, list[str]]:
        """The compile errors of ``sources`` by name, compiled in a sandbox worker (within
        the compile time limit, in ``tenant``'s share of the pool), each distinct source
        once per process. What :meth:`Runtime.validate` checks a document's scripts with."""
        return self._verdicts.errors(sources, lambda name, source: self.pool.check(name, source, tenant=tenant))

    def limits_for(self, script: ScriptDef) -> Limits:
        base = self.settings.defaults if script.event in BEFORE_EVENTS else self.settings.long_running
        return base.capped(script.budget, self.settings.ceiling)

    def triggered(self, ctx: Context, app: CompiledApp, object_name: str, event: str) -> list[ScriptDef]:
        """The active ``event`` scripts of an object, if the tenant's scripts may run.
        (Whether a write runs them at all is its origin's business: the pipeline's
        script participants ask :attr:`Origin.runs_scripts`.)"""
        scripts = app.meta.scripts_for(object_name, event=event)
        if not scripts or not self.enabled(ctx.tenant.name):
            return []
        return scripts

    @staticmethod
    def _blank(app: CompiledApp, object_name: str) -> dict[str, Any]:
        """A new record as a script sees it: every field, None where nothing is given, defaults."""
        obj = app.object(object_name)
        return {**dict.fromkeys(obj.fields), **obj.dump(dict(obj.literal_defaults))}

    @staticmethod
    def _types_of(app: CompiledApp, object_name: str) -> dict[str, str]:
        """Fields whose JSON a script gets as Decimal or dates (once per version)."""
        def build() -> dict[str, str]:
            obj = app.object(object_name)
            found = {"created_at": "datetime", "updated_at": "datetime"}
            for name, f in obj.fields.items():
                kind = f.ftype.value_kind(f.defn)
                if kind in _TYPED:
                    found[name] = _TYPED[kind]
            return found

        return app.artefact(f"script-types:{object_name}", build)

    # -- running ------------------------------------------------------------------
    def execute(self, ctx: Context, app: CompiledApp, script: ScriptDef, trigger: str,
                items: Sequence[tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]], *,
                params: Mapping[str, Any] | None = None, dry_run: bool = False,
                record_ids: Sequence[int | None] = (), origin: Origin | None = None) -> list[RunOutcome]:
        """Run ``script`` once per ``(record, old)`` of ``items`` (one round trip) and log it.

        :param origin: the origin of the script's ``ctx`` writes (default: the script's own).
        """
        writes_as = origin or Origin.script(script.name)
        limits = self.limits_for(script)
        meter = Meter(limits)
        now = ctx.now()
        # Records come from the record service or a caller's JSON; the frame encoder turns
        # decimals and dates into text (params are checked here: they come from anyone).
        batch = [{"record": r, "old": o} for r, o in items]
        try:
            extra = plain(dict(params or {}))
        except PlainError as exc:
            raise ValidationError({"params": [f"cannot pass these to a script: {exc}"]}) from None
        request = {
            "name": script.name, "source": script.source, "digest": digest(script.source),
            "limits": limits.as_dict(), "types": self._types_of(app, script.object) if script.object else {},
            "now": now.isoformat(), "today": now.date().isoformat(), "event": trigger, "params": extra,
            # What the script changes in ``record`` is used before a save and by actions.
            "record_writable": trigger in ("before_save", "action"),
            "user": {"id": ctx.actor.id, "username": ctx.actor.username, "roles": sorted(ctx.actor.roles)},
        }
        if len(batch) == 1:
            request.update(batch[0])
        else:
            request["batch"] = batch
        call_ctx = ctx if script.run_as is None else ctx.as_actor(
            Actor(ctx.actor.id, ctx.actor.username, frozenset({script.run_as})))

        host_failure: list[str] = []

        def on_call(name: str, args: dict[str, Any], item: int) -> dict[str, Any]:
            joined = ctx.tenant.joined_connection
            try:
                # Inside a write, each call is a savepoint: a statement that fails (and is
                # reported to the script) must not leave the whole transaction aborted.
                with joined.begin_nested() if joined is not None else contextlib.nullcontext():
                    return self._serve(call_ctx, app, writes_as, trigger, meter.at(item), name, args)
            except _CallRefused as refused:
                return refused.reply
            except Exception:  # a fault of ours or of the database: the run ends, nothing is half-done
                log.exception("script %s: ctx.%s failed on the host", script.name, name)
                host_failure.append(name)
                return {"fatal": "host"}

        started = time.monotonic()
        # A batch has each record's wall time, but never more than the ceiling in all: a
        # bulk write must not hold a worker (and, for after_* scripts, its locks) for hours.
        wall = min(limits.wall_ms * max(len(batch), 1), max(self.settings.ceiling.wall_ms, limits.wall_ms))
        try:
            reply = self.pool.run(request, on_call, wall, script.name, tenant=ctx.tenant.cache_key)
        except Unsendable as exc:  # a value JSON cannot hold, from a Python caller
            raise ValidationError({"_schema": [f"cannot pass this record to a script: {exc}"]}) from None
        except BudgetExceeded as exc:
            self._log(ctx, script, trigger, record_ids, now, started, "limit", exc.message, meter.used(), "",
                      dry_run)
            raise
        except WorkerCrashed as exc:
            log.warning("script %s: worker crashed: %s", script.name, exc)
            message = "the script stopped its sandbox process (a value nested too deeply, or too much memory)"
            self._log(ctx, script, trigger, record_ids, now, started, "error", message, meter.used(), "", dry_run)
            raise ScriptFailed(message, script.name) from None
        if host_failure:
            message = f"ctx.{host_failure[0]} could not be answered (a server error, logged)"
            self._log(ctx, script, trigger, record_ids, now, started, "error", message, meter.used(), "", dry_run)
            raise ScriptFailed(message, script.name)
        replies = reply["items"] if "items" in reply else [reply]
        outcomes = [RunOutcome(
            status=r["status"], record=r.get("record"), result=r.get("result"),
            errors=[(e[0], e[1]) for e in r.get("errors") or ()], log=r.get("log") or "",
            message=r.get("message"), line=r.get("line"), limit=r.get("limit"), limits=limits.as_dict(),
            used={**(r.get("used") or {}), **meter.used(), "wall_ms": reply.get("wall_ms", 0)}) for r in replies]
        worst = next((o for o in outcomes if o.status != "ok"), None) or \
            next((o for o in outcomes if o.errors), outcomes[-1] if outcomes else None)
        if worst is not None:
            status, error = worst.status, worst.message
            if status == "limit":
                error = f"went past its {worst.limit} limit"
            elif status == "ok" and worst.errors:
                status, error = "refused", "; ".join(m for _, m in worst.errors)
            self._log(ctx, script, trigger, record_ids, now, started, status, error,
                      worst.used, "".join(o.log for o in outcomes), dry_run)
        return outcomes

    def _serve(self, ctx: Context, app: CompiledApp, origin: Origin, trigger: str, meter: Meter, name: str,
               args: dict[str, Any]) -> dict[str, Any]:
        """Answer one ``ctx`` call; errors go back to the script as ``ScriptApiError``."""
        allowed = CALL_ARGS.get(name)
        if allowed is None:
            return {"error": f"ctx has no call {name!r}"}
        unknown = sorted(set(args) - allowed)
        if unknown:
            return {"error": f"ctx.{name}: unknown argument(s) {', '.join(unknown)}"}
        object_name = args.get("object")
        if not isinstance(object_name, str) or object_name not in app.objects:
            return {"error": f"ctx.{name}: unknown object {object_name!r}"}
        try:
            if name == "query":
                if not meter.add("queries"):
                    return {"fatal": "queries"}
                limit = args.get("limit", 100)
                if type(limit) is not int or not 1 <= limit <= MAX_QUERY_LIMIT:
                    return {"error": f"ctx.query: limit must be a whole number from 1 to {MAX_QUERY_LIMIT}"}
                order = args.get("order")
                order = [] if order is None else [order] if isinstance(order, str) else order
                fields = args.get("fields")
                if fields is not None and (not isinstance(fields, list) or not all(isinstance(f, str) for f in fields)):
                    return {"error": "ctx.query: fields must be a list of field names"}
                if not isinstance(order, list) or not all(isinstance(o, str) for o in order):
                    return {"error": "ctx.query: order must be a field name or a list of them (-name: descending)"}
                result = self.query.list(ctx, object_name, ListRequest(
                    filter=args.get("filter"), sort=order, fields=fields, limit=limit))
                if not meter.add("rows_read", len(result.data)):
                    return {"fatal": "rows_read"}
                return {"value": result.data, "types": self._types_of(app, object_name)}
            if name == "get":
                if not meter.add("rows_read"):
                    return {"fatal": "rows_read"}
                return {"value": self.records.get(ctx, object_name, args.get("id")),
                        "types": self._types_of(app, object_name)}
            # create / update
            if trigger in BEFORE_EVENTS:
                return {"error": f"ctx.{name} is not available in a {trigger} script: it shapes and checks "
                                 f"its own record; change other records from an after_save script or an action"}
            if not meter.add("rows_written"):
                return {"fatal": "rows_written"}
            values = args.get("values")
            if not isinstance(values, dict):
                return {"error": f"ctx.{name}: values must be a dictionary of field values"}
            if name == "create":
                written = self.records.create(ctx, object_name, values, origin=origin)
            else:
                written = self.records.update(ctx, object_name, args.get("id"), values, origin=origin)
            return {"value": written, "types": self._types_of(app, object_name)}
        except ValidationError as exc:
            # Raised, not returned: the caller's savepoint must roll back what the call did.
            raise _CallRefused({"error": f"ctx.{name}: " + "; ".join(
                f"{k}: {', '.join(v)}" for k, v in exc.errors.items())}) from None
        except LoomworkError as exc:
            raise _CallRefused({"error": f"ctx.{name}: {exc.message}"}) from None

    def _log(self, ctx: Context, script: ScriptDef, trigger: str, record_ids: Sequence[int | None], now: dt.datetime,
             started: float, status: str, error: str | None, used: Mapping[str, Any], text: str,
             dry_run: bool) -> None:
        rid = record_ids[0] if len(record_ids) == 1 else None
        row = dict(script=script.name, object=script.object, record_id=rid, trigger=trigger, actor=ctx.actor.id,
                   started_at=now, duration_ms=int((time.monotonic() - started) * 1000), status=status,
                   error=(error or None) and error[:2000], used=json.dumps({**used, "records": max(len(record_ids), 1)}),
                   log=text[:LOG_TEXT_CAP] or None, dry_run=dry_run)
        pending = _pending_logs.get()
        if pending is not None and ctx.tenant.in_transaction:
            pending.append(row)  # written after the transaction, which may yet roll back
        else:
            self._write_logs(ctx, [row])

    def _write_logs(self, ctx: Context, rows: list[dict[str, Any]]) -> None:
        r = systables.script_runs
        with ctx.tenant.write() as conn:
            conn.execute(r.insert(), rows)
            last = conn.execute(sa.select(sa.func.max(r.c.id))).scalar_one()
            if last // 500 != (last - len(rows)) // 500:  # now and then, not on every run
                cutoff = ctx.now() - dt.timedelta(days=self.settings.log_retention_days)
                conn.execute(r.delete().where(r.c.started_at < cutoff))

    @contextlib.contextmanager
    def logs_after(self, ctx: Context) -> Iterator[None]:
        """Around a write transaction: the run-log rows of scripts run inside it are
        written when it ends, committed or not (a failed run is logged too)."""
        if _pending_logs.get() is not None:
            yield
            return
        pending: list[dict[str, Any]] = []
        token = _pending_logs.set(pending)
        try:
            yield
        finally:
            _pending_logs.reset(token)
            if pending:
                self._write_logs(ctx, pending)

    def after_write(self, ctx: Context, conn: sa.Connection, app: CompiledApp, object_name: str, event: str,
                    items: Sequence[tuple[Mapping[str, Any], Mapping[str, Any] | None]]) -> None:
        """Run the ``after_save``/``after_delete`` scripts inside the write's transaction
        ``conn``: their reads see the write, their writes join it, and a failure or a
        ``ctx.error`` rolls all of it back."""
        scripts = self.triggered(ctx, app, object_name, event)
        if not scripts:
            return
        errors: dict[str, list[str]] = {}
        bulk = len(items) > 1
        with ctx.tenant.joined(conn):
            for script in scripts:
                outcomes = self.execute(ctx, app, script, event, items,
                                        record_ids=[(r or {}).get("id") for r, _ in items])
                for i, outcome in enumerate(outcomes):
                    outcome.raise_failure(script.name)
                    for fname, message in outcome.errors:
                        errors.setdefault(f"{i}." * bulk + (fname or "_schema"), []).append(message)
        if errors:
            raise ValidationError(errors)

    # -- hooks the record service calls ------------------------------------------
    def before_save(self, ctx: Context, object_name: str, rows: Sequence[Mapping[str, Any]],
                    olds: Sequence[Mapping[str, Any] | None], *, bulk: bool = False) -> list[dict[str, Any]]:
        """``rows`` as the ``before_save`` scripts leave them (only what changed is
        added); their ``ctx.error`` calls refuse the write. ``olds`` are the stored
        records of an update (None for a create)."""
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        scripts = self.triggered(ctx, app, object_name, "before_save")
        if not scripts:
            return [dict(r) for r in rows]
        blank = self._blank(app, object_name)
        types = self._types_of(app, object_name)
        current = [{**(old if old is not None else blank), **row} for row, old in zip(rows, olds, strict=True)]
        out = [dict(r) for r in rows]
        errors: dict[str, list[str]] = {}
        for script in scripts:
            outcomes = self.execute(ctx, app, script, "before_save", list(zip(current, olds, strict=True)),
                                    record_ids=[(o or {}).get("id") for o in olds])
            for i, outcome in enumerate(outcomes):
                outcome.raise_failure(script.name)
                prefix = f"{i}." if bulk else ""
                for fname, message in outcome.errors:
                    errors.setdefault(f"{prefix}{fname or '_schema'}", []).append(message)
                changed = outcome.record or {}
                for key, value in changed.items():
                    if key in SYSTEM_COLUMNS or _same(types.get(key), value, current[i].get(key)):
                        continue
                    out[i][key] = value
                    current[i][key] = value
        if errors:
            raise ValidationError(errors)
        return out

    def before_delete(self, ctx: Context, object_name: str, record: Mapping[str, Any]) -> None:
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        errors: dict[str, list[str]] = {}
        for script in self.triggered(ctx, app, object_name, "before_delete"):
            (outcome,) = self.execute(ctx, app, script, "before_delete", [(record, record)],
                                      record_ids=[record.get("id")])
            outcome.raise_failure(script.name)
            for fname, message in outcome.errors:
                errors.setdefault(fname or "_schema", []).append(message)
        if errors:
            raise ValidationError(errors, message="; ".join(m for ms in errors.values() for m in ms))

    # -- actions, dry runs, the run log --------------------------------------------
    def _require_enabled(self, ctx: Context) -> None:
        if not self.enabled(ctx.tenant.name):
            raise ConflictError("scripts are turned off for this tenant; an operator turns them on with "
                                "`loomwork tenant scripts --enable`")

    def actions(self, ctx: Context, object_name: str) -> list[ScriptDef]:
        """The actions of an object the caller may run (buttons on its record page)."""
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        if object_name not in app.objects or not self.enabled(ctx.tenant.name):
            return []
        return [s for s in app.meta.scripts_for(object_name, action=True) if self._may_run(ctx, app, s)]

    def _may_run(self, ctx: Context, app: CompiledApp, script: ScriptDef) -> bool:
        if not self.permissions.allowed(ctx, app, script.object, "update"):
            return False
        return not script.roles or ctx.actor.is_admin or not ctx.actor.roles.isdisjoint(script.roles)

    def run_action(self, ctx: Context, object_name: str, record_id: Any, name: str,
                   params: Mapping[str, Any] | None = None, *, origin: Origin | None = None) -> dict[str, Any]:
        """Run action ``name`` on a record, all-or-nothing: its ``ctx`` writes and its
        changes to ``record`` are saved together or not at all.

        :param origin: the origin of its writes (default: the script's own; an approval
            process running it passes one that holds the record)."""
        origin = origin or Origin.script(name)
        self._require_enabled(ctx)
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        script = app.meta.scripts.get(name)
        if script is None or not script.action or script.object != object_name or not script.active:
            raise NotFound(f"{object_name} has no action {name!r}")
        if not self._may_run(ctx, app, script):
            raise PermissionDenied(f"you may not run {name!r}")
        if params is not None and not isinstance(params, Mapping):
            raise ValidationError({"params": ["must be a JSON object"]})
        record = self.records.get(ctx, object_name, record_id)
        with self.logs_after(ctx), ctx.tenant.write() as conn, ctx.tenant.joined(conn):
            (outcome,) = self.execute(ctx, app, script, "action", [(record, record)], params=params,
                                      record_ids=[record["id"]], origin=origin)
            outcome.raise_failure(script.name)
            if outcome.errors:
                raise ValidationError({f or "_schema": [m] for f, m in outcome.errors})
            changes = {k: v for k, v in (outcome.record or {}).items()
                       if k not in SYSTEM_COLUMNS and v != record.get(k)}
            if changes:
                record = self.records.update(ctx, object_name, record["id"], changes,
                                             expected_version=record["row_version"], origin=origin)
            else:
                record = self.records.get(ctx, object_name, record["id"])
        return {"result": outcome.result, "record": record, "log": outcome.log}

    def dry_run(self, ctx: Context, name: str, record_id: Any = None, *,
                record: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Run script ``name`` against a stored record (or ``record`` as given) and roll
        back whatever it wrote: what it would do, for the designer and for testing.
        Administrators only; logged as a dry run."""
        if not ctx.actor.is_admin:
            raise PermissionDenied("only administrators may dry-run scripts")
        self._require_enabled(ctx)
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        script = app.meta.scripts.get(name)
        if script is None:
            raise NotFound(f"no script {name!r}")
        if record is not None and not isinstance(record, Mapping):
            raise ValidationError({"record": ["must be a JSON object of field values"]})
        current = dict(record or {})
        if record_id is not None:
            if script.object is None:
                raise ValidationError({"record_id": [f"script {name!r} belongs to no object"]})
            current = {**self.records.get(ctx, script.object, record_id), **current}
        elif script.object is not None:
            current = {**self._blank(app, script.object), **current}
        trigger = script.event or ("action" if script.action else "schedule")
        old = current if record_id is not None else None
        outcome: RunOutcome | None = None
        with self.logs_after(ctx):
            try:
                with ctx.tenant.write() as conn, ctx.tenant.joined(conn):
                    (outcome,) = self.execute(ctx, app, script, trigger, [(current, old)], params=params,
                                              dry_run=True, record_ids=[current.get("id")])
                    raise _RolledBack
            except _RolledBack:
                pass  # the point of a dry run: nothing it wrote stays
        assert outcome is not None
        # The worker sends back what the script changed; the record as it left it is both.
        left = None if outcome.record is None else {**plain(current), **outcome.record}
        return {"status": outcome.status, "message": outcome.message, "line": outcome.line, "limit": outcome.limit,
                "record": left, "result": outcome.result,
                "errors": [{"field": f, "message": m} for f, m in outcome.errors], "log": outcome.log,
                "used": outcome.used}

    def runs(self, ctx: Context, *, script: str | None = None, limit: int = RUNS_PAGE,
             before: int | None = None) -> list[dict[str, Any]]:
        """The run log, newest first (administrators only): at most ``limit`` runs (clipped
        to 1..:data:`MAX_RUNS_PAGE`), those with an id below ``before`` if given."""
        if not ctx.actor.is_admin:
            raise PermissionDenied("only administrators may read the script run log")
        r = systables.script_runs
        stmt = sa.select(r).order_by(r.c.id.desc()).limit(max(1, min(int(limit), MAX_RUNS_PAGE)))
        if script:
            stmt = stmt.where(r.c.script == script)
        if before:
            stmt = stmt.where(r.c.id < int(before))
        with ctx.tenant.read() as conn:
            # str(): the keys are SQLAlchemy's quoted names, which JSON encoders refuse.
            return [{**{str(k): v for k, v in row._asdict().items()}, "started_at": row.started_at.isoformat(),
                     "used": json.loads(row.used)} for row in conn.execute(stmt)]


    # -- schedules ----------------------------------------------------------------------
    def run_schedules(self, ctx: Context) -> list[dict[str, Any]]:
        """Run the tenant's scheduled scripts whose time came since their last run.

        ``loomwork worker`` calls this every few seconds. A script's last run time is
        claimed with a compare-and-set before it runs, so of several workers exactly one
        runs it; a worker killed mid-run has claimed it (at most once, never twice).
        A script first seen starts counting from now. Each run is one transaction as
        the system (or the script's ``run_as`` role); a failure is logged and rolls back
        that script's writes only. What is due, and the time the script sees, both come
        from ``ctx``'s clock.
        """
        if not self.enabled(ctx.tenant.name):
            return []
        now = ctx.now()
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        done = []
        for script in sorted((s for s in app.meta.scripts.values() if s.active and s.schedule),
                             key=lambda s: s.name):
            if not self._claim(ctx, script, now):
                continue
            try:
                with self.logs_after(ctx), ctx.tenant.write() as conn, ctx.tenant.joined(conn):
                    (outcome,) = self.execute(ctx, app, script, "schedule", [(None, None)])
                    outcome.raise_failure(script.name)
                    if outcome.errors:
                        raise ValidationError({f or "_schema": [m] for f, m in outcome.errors})
                done.append({"script": script.name, "status": "ok", "result": outcome.result})
            except LoomworkError as exc:
                log.warning("scheduled script %s of %s failed: %s", script.name, ctx.tenant.name, exc.message)
                done.append({"script": script.name, "status": "failed", "error": exc.message})
            except Exception as exc:  # one script's fault must not stop the others (or the worker)
                log.exception("scheduled script %s of %s failed", script.name, ctx.tenant.name)
                done.append({"script": script.name, "status": "failed", "error": f"server error: {type(exc).__name__}"})
        return done

    def _claim(self, ctx: Context, script: ScriptDef, now: dt.datetime) -> bool:
        s = systables.schedules
        with ctx.tenant.write() as conn:
            last = conn.execute(sa.select(s.c.last_run_at).where(s.c.script == script.name)).scalar_one_or_none()
            if last is None:
                conn.execute(s.insert().values(script=script.name, last_run_at=now))
                return False
            if croniter(script.schedule, last).get_next(dt.datetime) > now:
                return False
            claimed = conn.execute(s.update().where(s.c.script == script.name, s.c.last_run_at == last)
                                   .values(last_run_at=now))
            return claimed.rowcount == 1


def _same(kind: str | None, a: Any, b: Any) -> bool:
    """Whether two JSON values of a field are the same value ("2.5" and "2.50" are)."""
    if a == b:
        return True
    if kind is None or a is None or b is None:
        return False
    return typed({"v": a}, {"v": kind})["v"] == typed({"v": b}, {"v": kind})["v"]


class _CallRefused(Exception):
    """A ``ctx`` call the host refused; ``reply`` is the answer the script gets."""

    def __init__(self, reply: dict[str, Any]) -> None:
        super().__init__(reply.get("error"))
        self.reply = reply


class _RolledBack(Exception):
    """Ends a dry run's transaction without committing it."""

