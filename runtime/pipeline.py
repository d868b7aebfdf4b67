"""The record write as one explicit pipeline.

Every create, bulk create, update, delete and restore is a :class:`WriteBatch` of
:class:`RecordWrite` items passed through *participants*, each registered for one
:data:`STAGES` stage and a set of operations. The record service builds the batch and
calls :meth:`Pipeline.run`; everything a write means (access, parsing, rules, locks,
the statement itself, history, roll-ups, scripts, approval triggers) is a participant.
The built-ins (:mod:`loomwork.runtime.participants`) register through the
``loomwork_write_participants`` hook like a plugin's, so a plugin's participant (an
audit trail, row-level access, change events) slots in at its stage without touching
the four operations.

Who writes is told by the batch's :class:`Origin` (user, api, import, script,
approval, automation, derived, system), not by ambient flags: a participant that
behaves differently for, say, a script's writes asks ``batch.origin``.
"""
from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import sqlalchemy as sa

from loomwork.metadata.errors import ConflictError, LoomworkError, ValidationError

from .context import Context

if TYPE_CHECKING:
    from .compiled import CompiledApp, CompiledObject

#: The stages of a write, in the order they run. ``prepare`` runs before the write's
#: transaction opens (``before_*`` scripts read in their own short transactions, so a
#: slow script never holds a write lock); the write then re-reads and locks the stored
#: rows (``row_version`` must not have moved) and runs the rest inside one transaction.
#: Defaults come before formulas, and formulas before rules, because a rule may read
#: either; the workflow and approval locks come after the rules so they judge the
#: fields the write really changes (formulas included, unchanged values dropped).
STAGES: tuple[str, ...] = (
    "prepare",            # outside the transaction: early access check, before_* scripts
    "access",             # object permission (row-level access slots in here)
    "parse",              # deserialise and type-check input, literal defaults, required, value checks
    "lookups",            # lookup targets exist and may be read (one query per field and batch)
    "defaults",           # expression defaults, a workflow's initial state, roll-up zeroes
    "formulas",           # stored formulas
    "rules",              # field conditions, dependent choices, validation rules
    "lock",               # workflow transitions and state edit rules, the approval lock
    "autonumber",         # numbers reserved per batch
    "statement",          # INSERT / UPDATE / soft delete / restore, with row_version
    "history",            # field history and audit, marked with the origin
    "derived",            # cascades, roll-ups: derived writes bump row_version and record history
    "after_scripts",      # after_save / after_delete scripts in the write's transaction
    "approval_triggers",  # processes that start on create or on update
    "outbox",             # jobs, notifications, change events committed with the write
)
_STAGE_INDEX = {name: i for i, name in enumerate(STAGES)}
OPERATIONS = frozenset({"create", "update", "delete", "restore"})
#: Origins a write can have (see :class:`Origin`).
ORIGIN_KINDS = frozenset({"user", "api", "import", "script", "approval", "automation", "derived", "system"})
#: A write that triggers writes that trigger writes...: past this depth something loops.
MAX_NESTING = 8

_nesting: contextvars.ContextVar[int] = contextvars.ContextVar("lw_write_nesting", default=0)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who or what asked for a write, and on whose behalf.

    :param kind: one of :data:`ORIGIN_KINDS`.
    :param detail: the script, process or import that wrote (shown in history).
    :param record: the ``(object, id)`` whose approval process is writing (the engine's
        own writes, and those of an action script it runs): the approval lock lets that
        record through, and the write starts no process on it.
    :param on_behalf_of: the user a system write acts for (the approver whose decision
        ran an action): recorded as who changed the record.
    """

    kind: str
    detail: str | None = None
    record: tuple[str, int] | None = None
    on_behalf_of: int | None = None

    USER: ClassVar[Origin]
    API: ClassVar[Origin]
    IMPORT: ClassVar[Origin]
    SYSTEM: ClassVar[Origin]
    DERIVED: ClassVar[Origin]

    def __post_init__(self) -> None:
        if self.kind not in ORIGIN_KINDS:
            raise ValueError(f"unknown write origin {self.kind!r}")

    @classmethod
    def script(cls, name: str) -> Origin:
        return cls("script", name)

    @classmethod
    def approval(cls, object_name: str, record_id: int, *, process: str | None = None,
                 on_behalf_of: int | None = None) -> Origin:
        return cls("approval", process, (object_name, int(record_id)), on_behalf_of)

    def derived(self) -> Origin:
        """The origin of the writes this one causes (roll-ups, cascades): recorded as
        made by the same person."""
        return Origin("derived", None, None, self.on_behalf_of)

    @property
    def runs_scripts(self) -> bool:
        """Whether the write triggers scripts: a script's own writes and derived writes do
        not (a script cannot set off itself or another in a loop)."""
        return self.kind not in ("script", "derived")

    def holds(self, object_name: str, record_id: int) -> bool:
        """Whether this is an approval process writing the record it holds."""
        return self.record == (object_name, record_id)


Origin.USER = Origin("user")
Origin.API = Origin("api")
Origin.IMPORT = Origin("import")
Origin.SYSTEM = Origin("system")
Origin.DERIVED = Origin("derived")


@dataclass(slots=True, eq=False)
class RecordWrite:
    """One record's write as it passes through the stages.

    ``input`` is what the caller sent (create/update); ``values`` the typed column values
    being written (filled by ``parse``, completed by defaults and formulas); ``old`` the
    stored row (update, delete, restore; ``None`` for a create); ``new`` the row as
    written (after ``statement``).
    """

    index: int
    input: Mapping[str, Any] | None = None
    record_id: Any = None
    old: Mapping[str, Any] | None = None
    values: dict[str, Any] = field(default_factory=dict)
    new: dict[str, Any] | None = None
    #: The record as returned to the caller (see :meth:`WriteBatch.result_of`).
    result: dict[str, Any] | None = None
    #: Refused: its errors are in the batch, and later stages pass it by.
    failed: bool = False
    #: Settled without a write (an update that changes nothing, restoring a live record).
    unchanged: bool = False
    #: What participants keep for this record between stages.
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def given(self) -> set[str]:
        """The fields the caller sent (a default never overrides them)."""
        return set(self.input) if isinstance(self.input, Mapping) else set()

    @property
    def changed(self) -> dict[str, Any]:
        """The values that differ from the stored row (all of them for a create)."""
        if self.old is None:
            return self.values
        old = self.old
        return {k: v for k, v in self.values.items() if old.get(k) != v}


@dataclass(slots=True, eq=False)
class WriteBatch:
    """Records of one object written together by one operation, all-or-nothing."""

    ctx: Context
    object_name: str
    operation: str
    origin: Origin
    writes: list[RecordWrite]
    #: Whether errors are keyed by record (``"3.amount"``): a bulk request.
    bulk: bool = False
    #: The ``row_version`` the caller read (update, delete); a moved record is a conflict.
    expected_version: int | None = None
    app: CompiledApp | None = None
    conn: sa.Connection | None = None
    errors: dict[str, list[str]] = field(default_factory=dict)
    #: Set once the ``rules`` stage is over: errors raised, unchanged updates settled.
    settled: bool = False

    @property
    def obj(self) -> CompiledObject:
        assert self.app is not None
        return self.app.object(self.object_name)

    @property
    def active(self) -> list[RecordWrite]:
        """The writes still going: neither refused nor settled (from ``lock`` on, an
        update that changes nothing is settled)."""
        return [w for w in self.writes if not w.failed and not w.unchanged]

    def result_of(self, write: RecordWrite) -> dict[str, Any] | None:
        """The record as the caller gets it (virtual formulas computed), once."""
        if write.result is None:
            row = write.new if write.new is not None else write.old
            if row is None:
                return None
            # Imported here: evaluation needs the compiled app, which imports this module.
            from .evaluation import virtual_values

            write.result = self.obj.dump(virtual_values(self.app, self.obj, dict(row), self.ctx, self.conn))
        return write.result

    def prefix(self, write: RecordWrite) -> str:
        """The error-key prefix of ``write`` (``"3."`` in a bulk request, else empty)."""
        return f"{write.index}." if self.bulk else ""

    def fail(self, write: RecordWrite | None, field_name: str | None, message: str) -> None:
        """Record an error of ``write`` (or of the batch) at ``field_name`` (None: the record)."""
        prefix = self.prefix(write) if write is not None else ""
        key = f"{prefix}{field_name}" if field_name else (prefix.rstrip(".") or "_schema")
        self.errors.setdefault(key, []).append(message)
        if write is not None:
            write.failed = True

    def merge(self, write: RecordWrite, errors: Mapping[str, list[str]]) -> None:
        """Take errors already keyed with this batch's prefixes (from a shared checker)."""
        if errors:
            for key, messages in errors.items():
                self.errors.setdefault(key, []).extend(messages)
            write.failed = True

    def raise_errors(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


@runtime_checkable
class Participant(Protocol):
    """A step of the write pipeline.

    ``name`` is shown by ``loomwork debug pipeline``; ``stage`` is one of :data:`STAGES`;
    ``operations`` the operations it takes part in (a subset of :data:`OPERATIONS`).
    Calling it with the batch does its part: change ``values``, record errors with
    ``batch.fail``, raise a :class:`~loomwork.metadata.errors.LoomworkError`, or write
    in ``batch.conn`` (``None`` in the ``prepare`` stage). A participant may also have
    a ``scope(batch)`` method returning a context manager entered around the write's
    transaction (say, to write a log whether the write commits or not).
    """

    name: str
    stage: str
    operations: frozenset[str]

    def __call__(self, batch: WriteBatch) -> None: ...


@dataclass(frozen=True)
class FunctionParticipant:
    """A participant made of a function (what :func:`participant` returns)."""

    name: str
    stage: str
    operations: frozenset[str]
    run: Callable[[WriteBatch], None]
    doc: str = ""

    def __call__(self, batch: WriteBatch) -> None:
        self.run(batch)


def _summary(doc: str) -> str:
    """A docstring's first paragraph on one line, without reST markup."""
    return " ".join(doc.strip().split("\n\n")[0].split()).replace("``", "")


def participant(stage: str, *operations: str, name: str | None = None
                ) -> Callable[[Callable[[WriteBatch], None]], FunctionParticipant]:
    """Make a function a participant: ``@participant("rules", "create", "update")``."""

    def wrap(fn: Callable[[WriteBatch], None]) -> FunctionParticipant:
        return FunctionParticipant(name or fn.__name__, stage, frozenset(operations or OPERATIONS), fn,
                                   _summary(fn.__doc__ or ""))

    return wrap


class Pipeline:
    """The participants of every operation, in stage order (registration order within a
    stage). Built once per process from the ``loomwork_write_participants`` hook."""

    def __init__(self, participants: Iterable[Participant] = ()) -> None:
        self._all: list[Participant] = []
        self._by_op: dict[str, list[Participant]] = {}
        for p in participants:
            self.add(p)

    def add(self, p: Participant) -> None:
        if p.stage not in _STAGE_INDEX:
            raise LoomworkError(f"write participant {p.name!r}: unknown stage {p.stage!r} "
                                f"(one of {', '.join(STAGES)})")
        unknown = set(p.operations) - OPERATIONS
        if unknown or not p.operations:
            raise LoomworkError(f"write participant {p.name!r}: operations must be some of "
                                f"{', '.join(sorted(OPERATIONS))}")
        if any(q.name == p.name for q in self._all):
            raise LoomworkError(f"write participant {p.name!r} is registered twice")
        self._all.append(p)
        # A stable sort: registration order holds within a stage.
        self._all.sort(key=lambda q: _STAGE_INDEX[q.stage])
        self._by_op = {op: [q for q in self._all if op in q.operations] for op in OPERATIONS}

    def has(self, stage: str, operation: str) -> bool:
        return any(p.stage == stage for p in self._by_op.get(operation, ()))

    def scopes(self, batch: WriteBatch) -> list[Any]:
        """Context managers the participants of ``batch`` put around its transaction."""
        return [p.scope(batch) for p in self._by_op[batch.operation] if hasattr(p, "scope")]

    def participants(self, operation: str | None = None) -> list[Participant]:
        """Every participant of ``operation`` (or of any), in the order they run."""
        return list(self._all if operation is None else self._by_op.get(operation, ()))

    def describe(self, operation: str, app: CompiledApp | None = None,
                 object_name: str | None = None) -> list[tuple[str, str, str, bool | None]]:
        """``(stage, name, summary, applies)`` of each participant of ``operation``, in
        order. ``applies`` says whether it has work for ``object_name`` (a participant
        with an ``applies(app, object_name)`` method can tell; None: it cannot say)."""
        out = []
        for p in self._by_op.get(operation, ()):
            summary = _summary(getattr(p, "doc", "") or type(p).__doc__ or "")
            applies = None
            if app is not None and object_name is not None:
                check = getattr(p, "applies", None)
                applies = bool(check(app, object_name)) if check is not None else None
            out.append((p.stage, p.name, summary, applies))
        return out

    def run_stages(self, batch: WriteBatch, first: str, last: str) -> None:
        """Run the participants of stages ``first`` to ``last`` (inclusive) on ``batch``.

        After ``rules`` the batch's errors are raised (one 422 lists every record's),
        and updates that change nothing settle: they return the stored record and
        meet no lock, statement or trigger.
        """
        lo, hi = _STAGE_INDEX[first], _STAGE_INDEX[last]
        for p in self._by_op[batch.operation]:
            i = _STAGE_INDEX[p.stage]
            if i < lo or i > hi:
                continue
            if i > _STAGE_INDEX["rules"] and not batch.settled:
                self._settle(batch)
            p(batch)
        if hi >= _STAGE_INDEX["rules"] and not batch.settled:
            self._settle(batch)

    @staticmethod
    def _settle(batch: WriteBatch) -> None:
        batch.settled = True
        batch.raise_errors()
        if batch.operation == "update":
            for w in batch.active:
                if not w.changed:
                    w.unchanged = True  # nothing to write: no lock, statement or trigger

    @staticmethod
    @contextlib.contextmanager
    def nested() -> Iterator[int]:
        """Count writes started inside writes (a script's, an approval action's); refuse
        past :data:`MAX_NESTING`, where only a loop of triggers gets."""
        depth = _nesting.get() + 1
        if depth > MAX_NESTING:
            raise ConflictError(f"writes nested {MAX_NESTING} deep: a script, automation or approval "
                                f"action keeps triggering itself")
        token = _nesting.set(depth)
        try:
            yield depth
        finally:
            _nesting.reset(token)
