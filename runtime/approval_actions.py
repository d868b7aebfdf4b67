"""Approval action kinds: what an action node, ``on_approved``, ``on_rejected`` and
``on_recalled`` can do.

An action in a process is a one-key mapping: the key names its kind (``set``,
``lock``, ``notify``, ``create``, ``script``, or one a plugin registers through
``loomwork_approval_actions``) and the value is its body. A kind says what its body
may be (a JSON Schema, checked at publish with the path of the mistake), what else it
checks at publish (the fields, objects, scripts and people it names), which
expressions its body holds (compiled with the tenant's other expressions at publish)
and how it runs. The built-ins below are registered like a plugin's, by
:mod:`loomwork.plugins.core_approval_actions`; the engine
(:class:`~loomwork.runtime.approvals.ApprovalService`) finds a kind by name in the
runtime's registry and hands it an :class:`ActionRun`.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from loomwork.metadata.errors import LoomworkError

from . import systables
from .context import Context
from .pipeline import Origin

if TYPE_CHECKING:
    from loomwork.metadata.validation import ProcessCheck

    from .compiled import CompiledApp

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_EXPRESSION = {"$ref": "https://loomwork.dev/schemas/common.json#/$defs/expression"}
_NAME_SCHEMA = {"$ref": "https://loomwork.dev/schemas/common.json#/$defs/name"}
#: Who an action tells: the same specs as a node's approvers (users, roles, record
#: fields, manager chains).
PEOPLE_SCHEMA = {"$ref": "https://loomwork.dev/schemas/approval.json#/$defs/approvers"}


class ActionKind:
    """Base class of approval action kinds; subclasses set :attr:`name` and
    :attr:`schema` and implement :meth:`run`.

    ``name`` is the action's key in a process (``{"set": {...}}``); a later plugin may
    not reuse a name already registered.
    """

    name: ClassVar[str]
    #: JSON Schema (draft 2020-12) of the body; it may ``$ref`` the common definitions
    #: (``https://loomwork.dev/schemas/common.json#/$defs/expression``, ``.../name``).
    schema: ClassVar[Mapping[str, Any]] = {}
    #: One line for people reading ``loomwork`` listings and the docs.
    description: ClassVar[str] = ""

    def check(self, body: Any, path: str, process: ProcessCheck) -> list[tuple[str, str]]:
        """Publish checks beyond the schema, as ``(path, message)`` pairs; ``path`` is the
        body's (``approvals.p.on_approved.0.set``). ``process`` knows the tenant's
        document, the process, its object's fields and checks people specs."""
        return []

    def expressions(self, body: Any) -> Iterable[tuple[str, str]]:
        """The expressions in ``body`` as ``(path below the body, source)``: they are
        compiled against the process's object at publish (errors name
        ``<body path>.<path>``) and evaluated with :meth:`ActionRun.value`."""
        return ()

    def run(self, action: ActionRun) -> Mapping[str, Any] | None:
        """Do the action, inside the decision's transaction (a failure rolls the decision
        back). Returns details for the instance's history (JSON), or None."""
        raise NotImplementedError


@dataclass(frozen=True)
class ActionRun:
    """One action being run: what it runs on, and what it may call.

    :ivar body: the action's body as the instance's definition holds it.
    :ivar ctx: the context of whoever's decision ran the action (an approver, the
        submitter who recalled): read the time with ``ctx.now()``.
    :ivar system: the system actor's context, which the engine writes with.
    :ivar conn: the decision's transaction; writes through the services join it.
    :ivar app: the compiled metadata of the tenant's current version.
    :ivar instance: the approval instance (``id``, ``process``, ``object``,
        ``record_id``, ``node``, ``round``, ``submitter``, ``status``).
    :ivar record: the record as it is now, formulas included.
    :ivar origin: the origin of writes to the record: ``Origin.approval(object, id,
        process=..., on_behalf_of=<the deciding user>)``, which the approval lock lets
        through and history records as the decider's change. Pass it to
        ``records.update``/``records.create``.
    :ivar records: the record service; ``scripts``, ``jobs`` and ``users`` the other
        services the engine uses.
    """

    body: Any
    ctx: Context
    system: Context
    conn: sa.Connection
    app: CompiledApp
    instance: Any
    record: Mapping[str, Any]
    origin: Origin
    records: Any
    scripts: Any
    jobs: Any
    users: Any
    #: The approval engine, for the helpers below.
    engine: Any

    def value(self, source: str) -> Any:
        """Evaluate expression ``source`` on :attr:`record`, as JSON (dates as ISO
        text, decimals as text). :raises ValidationError: when it cannot be evaluated."""
        return jsonable(self.engine._value(self.ctx, self.conn, self.app, self.instance.object, source,
                                           self.record))

    def people(self, specs: Iterable[Mapping[str, Any]]) -> list[int]:
        """The ids of the active users named by approver specs, each once."""
        return self.engine._resolve(self.ctx, self.conn, self.app, self.instance, specs, self.record)

    def inform(self, people: Sequence[int], message: str | None = None) -> list[int]:
        """Give ``people`` a CC task of the instance (their inbox) and a notification,
        and record a ``notify`` entry with ``message`` in its history. Returns the tasks' ids."""
        inst = self.instance
        ids = self.engine._create_tasks(self.ctx, self.conn, inst, inst.node or "end", inst.round, people,
                                        kind="cc")
        self.engine._event(self.conn, inst.id, "notify", None, self.ctx.now(), message,
                           detail={"to": list(people), "tasks": ids})
        return ids


def jsonable(value: Any) -> Any:
    """An evaluated value as JSON the record service accepts."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    return value


class SetAction(ActionKind):
    """``set: {field: expression}``: update the record's fields."""

    name = "set"
    description = "Update fields of the record: field name to an expression."
    schema = {"type": "object", "maxProperties": 50, "additionalProperties": _EXPRESSION}

    def check(self, body, path, process):
        return [(f"{path}.{f}", f"{process.object} has no field {f!r}") for f in body if f not in process.fields]

    def expressions(self, body):
        return list(body.items())

    def run(self, action):
        values = {f: action.value(src) for f, src in action.body.items()}
        action.records.update(action.system, action.instance.object, action.instance.record_id, values,
                              origin=action.origin)
        return None


class LockAction(ActionKind):
    """``lock: true`` locks the record (as while pending) after the instance ends;
    ``lock: false`` unlocks it, and earlier instances' locks of the record too."""

    name = "lock"
    description = "true: lock the record (as while pending); false: unlock it."
    schema = {"type": "boolean"}

    def run(self, action):
        i, inst = systables.approval_instances, action.instance
        action.conn.execute(i.update().where(i.c.id == inst.id).values(locked=bool(action.body)))
        if not action.body:  # unlock: also earlier instances' locks of this record
            action.conn.execute(i.update().where(i.c.object == inst.object, i.c.record_id == inst.record_id)
                                .values(locked=False))
        return None


class NotifyAction(ActionKind):
    """``notify: {to: [people], message: ...}``: a CC task and a notification each."""

    name = "notify"
    description = "Tell people (a CC task in their inbox, and a notification)."
    schema = {"type": "object", "required": ["to"], "additionalProperties": False,
              "properties": {"to": PEOPLE_SCHEMA, "message": {"type": "string", "maxLength": 2000}}}

    def check(self, body, path, process):
        return process.people(body["to"], f"{path}.to")

    def run(self, action):
        action.inform(action.people(action.body["to"]), action.body.get("message"))
        return None


class CreateAction(ActionKind):
    """``create: {object: name, values: {field: expression}}``: create a record of any
    object, its values computed on the process's record."""

    name = "create"
    description = "Create a record of an object, its values computed from the record."
    schema = {"type": "object", "required": ["object", "values"], "additionalProperties": False,
              "properties": {"object": _NAME_SCHEMA,
                             "values": {"type": "object", "maxProperties": 100,
                                        "additionalProperties": _EXPRESSION}}}

    def check(self, body, path, process):
        if body["object"] not in process.objects:
            return [(f"{path}.object", f"unknown object {body['object']!r}")]
        fields = process.objects[body["object"]].get("fields", {})
        return [(f"{path}.values.{f}", f"{body['object']} has no field {f!r}") for f in body["values"]
                if f not in fields]

    def expressions(self, body):
        return [(f"values.{f}", src) for f, src in body["values"].items()]

    def run(self, action):
        values = {f: action.value(src) for f, src in action.body["values"].items()}
        action.records.create(action.system, action.body["object"], values, origin=action.origin)
        return None


class ScriptAction(ActionKind):
    """``script: name``: run an action script of the process's object on the record."""

    name = "script"
    description = "Run an action script of the same object on the record."
    schema = _NAME_SCHEMA

    def check(self, body, path, process):
        s = process.scripts.get(body)
        if s is None or not (s.get("trigger") or {}).get("action") or s.get("object") != process.object:
            return [(path, f"no action script {body!r} of {process.object}")]
        return []

    def run(self, action):
        o = action.origin
        # The action script's writes to this record are the process's too.
        action.scripts.run_action(action.system, action.instance.object, action.instance.record_id, action.body,
                                  origin=Origin("script", action.body, o.record, o.on_behalf_of))
        return None


BUILTIN_ACTIONS: tuple[type[ActionKind], ...] = (SetAction, LockAction, NotifyAction, CreateAction, ScriptAction)


def builtin_actions() -> dict[str, ActionKind]:
    """The built-in kinds by name (a runtime made without a plugin manager uses them)."""
    return {cls.name: cls() for cls in BUILTIN_ACTIONS}


def check_kinds(kinds: Mapping[str, ActionKind]) -> None:
    """:raises LoomworkError: for a kind whose name is not a metadata name (it is a key
    in process documents) or whose schema is not a JSON Schema object."""
    for name, kind in kinds.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise LoomworkError(f"approval action {name!r}: its name must match {_NAME.pattern}")
        if not isinstance(kind.schema, Mapping):
            raise LoomworkError(f"approval action {name!r}: its schema must be a JSON Schema object")
