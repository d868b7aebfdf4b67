"""Metadata compiled for execution, cached per process by (tenant, version).

Compiling turns an :class:`~loomwork.metadata.model.AppMetadata` into SQLAlchemy
tables, marshmallow schemas and per-field dumpers. The published version lives in
the tenant's ``lw_meta_head`` row; :meth:`Runtime.compiled` reads it (one indexed
single-row query) and recompiles only when it moved, so every process picks up a
publish made by any other without a restart.
"""
from __future__ import annotations

import dataclasses
import functools
import operator
import threading
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import marshmallow as ma
import sqlalchemy as sa

from loomwork.metadata import store
from loomwork.metadata.errors import MetadataError, NotFound
from loomwork.metadata.model import SYSTEM_COLUMNS, AppMetadata, FieldDef, ObjectDef
from loomwork.metadata.validation import validate_app

from .approval_actions import ActionKind, builtin_actions, check_kinds
from .expr import Function, builtin_functions
from .fieldtypes import FieldType
from .rules import ObjectRules, check_app, compile_app_rules, with_rollup_sources
from .sandbox.policy import Verdicts, total_errors
from .systables import system_columns
from .tenancy import Tenant
from .widgets import Widget, builtin_widgets, check_widgets


@dataclass(frozen=True)
class CompiledField:
    defn: FieldDef
    ftype: FieldType
    #: None for a virtual formula (computed in SQL when read).
    column: sa.Column | None
    dump: Callable[[Any], Any]

    @property
    def name(self) -> str:
        return self.defn.name


@dataclass(frozen=True)
class Reference:
    """A lookup pointing at an object: used for ``on_delete`` and dotted paths."""

    object: str
    field: str
    on_delete: str


_SYSTEM_OUT = ("id", "created_at", "created_by", "updated_at", "updated_by", "owner_id", "row_version")
_DATETIMES = frozenset({"created_at", "updated_at"})


@dataclass
class CompiledObject:
    defn: ObjectDef
    table: sa.Table
    fields: dict[str, CompiledField]
    schema: ma.Schema
    referenced_by: list[Reference] = field(default_factory=list)
    rules: ObjectRules = field(default_factory=ObjectRules)

    @property
    def name(self) -> str:
        return self.defn.name

    @functools.cached_property
    def has_unique(self) -> bool:
        """Whether a write can violate a unique index (then it runs in a savepoint, so
        the violation can be explained as a field error)."""
        return any(f.defn.unique for f in self.fields.values()) or any(
            i.unique for i in self.defn.indexes.values())

    @functools.cached_property
    def inputs(self) -> dict[str, tuple[str | None, ma.fields.Field, bool]]:
        """Per field a caller may name: (why it is refused or None, its parser, read-only)."""
        out = {}
        for n, f in self.fields.items():
            refusal = ("is computed by the system" if f.ftype.computed
                       else "is numbered by the system" if f.ftype.system_set else None)
            out[n] = (refusal, self.schema.fields[n], f.defn.read_only)
        return out

    @functools.cached_property
    def plainly_required(self) -> tuple[str, ...]:
        """Required fields checked with the input. Fields with a visibility condition are
        checked with the other rules (a field hidden by its condition is never required)."""
        return tuple(n for n, f in self.fields.items()
                     if f.defn.required and not f.ftype.system_set and n not in self.rules.visible)

    @functools.cached_property
    def value_checks(self) -> dict[str, CompiledField]:
        """Fields whose type checks a value against the previous one (inactive options)."""
        return {n: f for n, f in self.fields.items() if type(f.ftype).check_value is not FieldType.check_value}

    @functools.cached_property
    def literal_defaults(self) -> dict[str, Any]:
        """Fields' literal ``default`` values, parsed once."""
        return {n: self.schema.fields[n].deserialize(f.defn.default)
                for n, f in self.fields.items() if f.defn.default is not None}

    @functools.cached_property
    def lookups(self) -> dict[str, str]:
        """Fields holding ids of other records, with the object each points at."""
        return {n: t for n, f in self.fields.items() if (t := f.ftype.reference_target(f.defn)) is not None}

    @functools.cached_property
    def stored_fields(self) -> tuple[str, ...]:
        """Fields with a column (all but virtual formulas)."""
        return tuple(n for n, f in self.fields.items() if f.column is not None)

    @functools.cached_property
    def rollup_zeroes(self) -> tuple[str, ...]:
        """Fields that start at 0 rather than empty (roll-ups counting or summing)."""
        return tuple(n for n, f in self.fields.items() if f.ftype.starts_at_zero(f.defn))

    def column(self, name: str) -> sa.Column:
        return self.table.c[name]

    @functools.cached_property
    def _dump_plan(self) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
        """(column, converter or None for values already JSON-ready), built once."""
        plan: list[tuple[str, Callable[[Any], Any] | None]] = [
            (n, _isoformat if n in _DATETIMES else None) for n in _SYSTEM_OUT]
        plan.extend((name, f.ftype.converter(f.defn)) for name, f in self.fields.items())
        return tuple(plan)

    def dump(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A database row as the API's JSON-ready record (list pages call this per row)."""
        out: dict[str, Any] = {}
        get = row.get
        for name, conv in self._dump_plan:
            value = get(name, _MISSING)
            if value is not _MISSING:
                out[name] = value if conv is None or value is None else conv(value)
        deleted = row.get("deleted_at")
        if deleted is not None:
            out["deleted_at"] = deleted.isoformat()
        return out


_isoformat = operator.methodcaller("isoformat")
_MISSING = object()


class CompiledApp:
    """Everything executable for one (tenant, version). Treat as read-only."""

    def __init__(self, meta: AppMetadata, types: Mapping[str, FieldType],
                 functions: Mapping[str, Function] | None = None, *,
                 actions: Mapping[str, ActionKind] | None = None,
                 widgets: Mapping[str, Widget] | None = None) -> None:
        self.meta = meta
        self.version = meta.version
        self.sa_metadata = sa.MetaData()
        self.objects: dict[str, CompiledObject] = {}
        self.functions = functions if functions is not None else builtin_functions()
        self.field_types = types
        #: Approval action kinds by name (they say where their bodies hold expressions).
        self.approval_actions = actions if actions is not None else builtin_actions()
        #: Form widgets by name (layouts ask them how wide they are).
        self.widgets = widgets if widgets is not None else builtin_widgets()
        self._artefacts: dict[str, Any] = {}
        #: Element path -> {"package", "customized"} (navigation groups objects by package).
        self.ownership: Mapping[str, Mapping[str, Any]] = {}
        self._artefact_lock = threading.RLock()  # builders may need other artefacts
        sources = _rollup_sources(meta, types)
        for obj in meta.objects.values():
            self.objects[obj.name] = compile_object(obj, types, self.sa_metadata, sources)
        rules, errors = compile_app_rules(meta, types, self.functions, self.approval_actions)
        if errors:  # published versions were checked; this is a plugin function gone missing
            raise MetadataError({path: [msg] for path, msg in errors})
        for name, r in rules.items():
            self.objects[name].rules = r
        for obj in self.objects.values():
            for fname, target in obj.lookups.items():
                on_delete = obj.fields[fname].defn.prop("on_delete", "restrict")
                self.objects[target].referenced_by.append(Reference(obj.name, fname, on_delete))

    def object(self, name: str) -> CompiledObject:
        try:
            return self.objects[name]
        except (KeyError, TypeError):
            raise NotFound(f"no object {name!r}") from None

    def artefact(self, key: str, build: Callable[[], Any]) -> Any:
        """A derived artefact (OpenAPI document, ...) built once per version."""
        try:
            return self._artefacts[key]
        except KeyError:
            with self._artefact_lock:
                if key not in self._artefacts:
                    self._artefacts[key] = build()
                return self._artefacts[key]


def _dumper(ftype: FieldType, fdef: FieldDef) -> Callable[[Any], Any]:
    if type(ftype).dump is FieldType.dump:
        return lambda v: v
    return lambda v: ftype.dump(fdef, v)


def _rollup_sources(meta: AppMetadata, types: Mapping[str, FieldType]) -> dict[tuple[str, str], FieldDef]:
    """Roll-up fields with the summarised field's type and scale filled in (their column
    type follows it: a sum of currency is currency)."""
    out = {}
    for obj, f, source in with_rollup_sources(meta):
        props = dict(f.props)
        if source is not None:
            stype = types.get(source.type)
            props["source_type"] = "integer" if stype is not None and stype.value_kind(source) == "integer" else (
                stype.expression_type(source) if stype else "number")
            money = stype.currency(source) if stype else None
            if money and f.prop("function") != "count":  # a sum of amounts is an amount
                props["currency"] = money
            places = stype.places(source) if stype is not None else None
            if "scale" not in props and places is not None:
                props["scale"] = places
        out[(obj.name, f.name)] = dataclasses.replace(f, props=MappingProxyType(props))
    return out


def compile_object(obj: ObjectDef, types: Mapping[str, FieldType], sa_metadata: sa.MetaData,
                   overrides: Mapping[tuple[str, str], FieldDef] | None = None) -> CompiledObject:
    fields: dict[str, CompiledField] = {}
    columns = system_columns()
    ma_fields: dict[str, ma.fields.Field] = {}
    for f in obj.fields.values():
        f = (overrides or {}).get((obj.name, f.name), f)
        ftype = types[f.type]
        col = sa.Column(f.name, ftype.column_type(f), nullable=True) if ftype.has_column(f) else None
        if col is not None:
            columns.append(col)
        fields[f.name] = CompiledField(f, ftype, col, _dumper(ftype, f))
        ma_fields[f.name] = ftype.ma_field(f)
    table = sa.Table(obj.name, sa_metadata, *columns)
    schema_cls = ma.Schema.from_dict(ma_fields, name=f"{obj.name}_input")
    return CompiledObject(obj, table, fields, schema_cls(unknown=ma.RAISE))


#: How stale (seconds) the metadata version may be for a read; see :meth:`Runtime.compiled`.
READ_MAX_AGE = 0.2

#: Checks scripts: ``(sources by name, tenant) -> errors by name`` (see :attr:`Runtime.check_scripts`).
ScriptCheck = Callable[[Mapping[str, str], Hashable], dict[str, list[str]]]


def _scripts_of(doc: Mapping[str, Any]) -> dict[str, str]:
    scripts = doc.get("scripts") if isinstance(doc, Mapping) else None
    if not isinstance(scripts, Mapping):
        return {}
    return {name: s["source"] for name, s in scripts.items()
            if isinstance(s, Mapping) and isinstance(s.get("source"), str)}


class Runtime:
    """The runtime of one process: the registries plugins fill (field types, expression
    functions, approval action kinds, form widgets) and the compiled cache.

    :param approval_actions: action kinds by name; by default the built-ins (an app
        gets them, and plugins', from ``loomwork_approval_actions``).
    :param widgets: form widgets by name; by default the built-ins (an app gets them,
        and plugins', from ``loomwork_widgets``).
    :raises LoomworkError: for an action kind or widget that is not well formed, or a
        field type whose default widget is not registered.
    """

    def __init__(self, field_types: Mapping[str, FieldType], functions: Mapping[str, Function] | None = None, *,
                 approval_actions: Mapping[str, ActionKind] | None = None,
                 widgets: Mapping[str, Widget] | None = None) -> None:
        self.field_types = dict(field_types)
        self.functions = dict(functions) if functions is not None else builtin_functions()
        self.approval_actions = dict(approval_actions) if approval_actions is not None else builtin_actions()
        self.widgets = dict(widgets) if widgets is not None else builtin_widgets()
        check_kinds(self.approval_actions)
        check_widgets(self.widgets, ((t.name, t.widget) for t in self.field_types.values()))
        self._cache: dict[tuple[str, str], CompiledApp] = {}
        self._checked: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        #: How scripts are checked when a document is validated. Compiling here, in
        #: this process, is for a runtime without services; the services compile in a
        #: sandbox worker instead, with a time limit and the tenant's share of the
        #: pool (:meth:`~loomwork.runtime.scripts.ScriptService.check_sources`).
        local = Verdicts()
        self.check_scripts: ScriptCheck = lambda sources, tenant: local.errors(sources)

    def script_errors(self, doc: Mapping[str, Any], tenant: Hashable = None) -> list[tuple[str, str]]:
        """``(path, message)`` of what is wrong with the document's scripts: more source
        than one document may hold, or a script that does not compile."""
        sources = _scripts_of(doc)
        too_much = total_errors(sources)
        if too_much:
            return [("scripts", msg) for msg in too_much]
        return [(f"scripts.{name}.source", msg)
                for name, msgs in self.check_scripts(sources, tenant).items() for msg in msgs]

    def validate(self, doc: Mapping[str, Any], *, expressions: bool = True, tenant: Hashable = None) -> None:
        """Validate a metadata document, its expressions and scripts included.

        :param tenant: whose share of the sandbox pool compiling the scripts takes.
        :raises MetadataError:
        """
        validate_app(doc, self.field_types, widgets=self.widgets, actions=self.approval_actions)
        if not expressions:
            return
        errors = check_app(AppMetadata.from_doc(doc), self.field_types, self.functions, self.approval_actions)
        errors.extend(self.script_errors(doc, tenant))
        if not errors and any("filter" in v or "sort" in v for v in doc.get("views", {}).values()):
            from .query import view_errors  # the query engine builds on this module

            errors.extend(view_errors(self.compile(doc, 0)))
        if errors:
            merged: dict[str, list[str]] = {}
            for path, msg in errors:
                merged.setdefault(path, []).append(msg)
            raise MetadataError(merged)

    def compile(self, doc: Mapping[str, Any], version: int) -> CompiledApp:
        return CompiledApp(AppMetadata.from_doc(doc, version), self.field_types, self.functions,
                           actions=self.approval_actions, widgets=self.widgets)

    def expire(self, tenant: Tenant) -> None:
        """Make the next read check the version again (after a publish in this process)."""
        self._checked.pop(tenant.cache_key, None)

    def cached_version(self, tenant: Tenant) -> int | None:
        """The version this process last compiled for ``tenant`` (no database access)."""
        cached = self._cache.get(tenant.cache_key)
        return cached.version if cached is not None else None

    def compiled(self, tenant: Tenant, conn: sa.Connection | None = None, *,
                 max_age: float = 0.0) -> CompiledApp:
        """The tenant's compiled metadata at its published version.

        :param max_age: reads may pass :data:`READ_MAX_AGE` to reuse a version confirmed
            that recently instead of asking the database again (a read against metadata a
            fraction of a second old is the same as a read that started earlier). Writes
            leave it at 0: they check the version inside their own transaction.
        """
        key = tenant.cache_key
        cached = self._cache.get(key)
        if max_age and cached is not None and time.monotonic() - self._checked.get(key, 0.0) < max_age:
            return cached
        if conn is None:
            with tenant.read() as c:
                return self.compiled(tenant, c)
        version = store.head(conn)
        if cached is not None and cached.version == version:
            self._checked[key] = time.monotonic()
            return cached
        stored = store.get(conn, version)
        try:
            app = self.compile(stored.doc, version)
        except KeyError as exc:  # a field type whose plugin is not installed here
            raise MetadataError({"": [f"field type {exc.args[0]!r} is not installed"]}) from exc
        app.ownership = stored.ownership
        with self._lock:
            current = self._cache.get(tenant.cache_key)
            if current is None or current.version < version:
                self._cache[key] = app
                self._checked[key] = time.monotonic()
        return app


__all__ = ["SYSTEM_COLUMNS", "CompiledApp", "CompiledObject", "CompiledField", "Runtime"]
