"""The typed, read-only model of a tenant's published metadata.

Documents arrive as plain JSON-like dicts (from YAML packages, the API or the store);
:func:`loomwork.metadata.validation.validate_app` checks them and
:meth:`AppMetadata.from_doc` turns a valid document into frozen dataclasses that the
runtime compiles. Field-type specific settings stay in :attr:`FieldDef.props` because
plugins add field types with properties the core does not know. Form layouts
(:class:`FormDef`) and saved list views (:class:`ViewDef`) refer to objects by name;
:meth:`AppMetadata.forms_for` and :meth:`AppMetadata.views_for` find an object's.
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

#: Columns every object table has (ARCHITECTURE §3). Field names may not reuse them.
SYSTEM_COLUMNS: tuple[str, ...] = (
    "id", "created_at", "created_by", "updated_at", "updated_by",
    "owner_id", "row_version", "deleted_at",
)

#: Keys every field accepts whatever its type; a type adds its own through ``properties``.
COMMON_FIELD_KEYS = frozenset(
    {"type", "label", "help", "required", "unique", "indexed", "read_only", "default", "renamed_from",
     "default_expr", "visible_if", "required_if", "read_only_if"}
)

#: The condition keys a field or a section may carry (expressions).
CONDITION_KEYS = ("visible_if", "required_if", "read_only_if")


class FieldTypeSpec(Protocol):
    """What metadata validation needs to know of a field type.

    The runtime's :class:`loomwork.runtime.fieldtypes.FieldType` implements it; the
    metadata layer never sees storage details.
    """

    name: str
    #: JSON Schema ``properties`` for the settings this type adds (precision, options...).
    properties: Mapping[str, Any]
    #: Settings that must be present.
    required_properties: tuple[str, ...]
    #: Whether a ``unique`` constraint or an index makes sense for this type.
    indexable: bool
    #: The form widget a field of this type gets unless a layout says otherwise (it
    #: always fits the type).
    widget: str
    #: The built-in type whose values this type's are like (its own name for a
    #: built-in; a subclass inherits it): widgets fitting that type fit this one.
    kind: str
    #: Whether lists and ``default_sort`` may sort by the field.
    sortable: bool
    #: Whether the field may be one of an object's ``search_fields``.
    searchable: bool
    #: Whether the field holds ids of another object's records (its ``target``): paths
    #: such as ``account.industry`` go through it.
    references: bool

    def check(self, field: Mapping[str, Any], path: str, app_doc: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Semantic checks beyond the JSON Schema; return ``(path, message)`` pairs."""

    def widget_result_type(self, field: Mapping[str, Any]) -> str | None:
        """What a field document declares it computes (a formula's ``result_type``),
        which picks the widgets it fits; None for a type whose widgets fit it by name."""


def label_text(label: Any, locale: str = "en", fallback: str = "") -> str:
    """Pick a translatable label's text for ``locale`` (then its language, then English)."""
    if label is None:
        return fallback
    if isinstance(label, str):
        return label
    for key in (locale, locale.split("-")[0], "en"):
        if key in label:
            return label[key]
    return next(iter(label.values()), fallback)


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Plain JSON again from :func:`_freeze`'s mappings and tuples."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class FieldDef:
    name: str
    type: str
    label: Any = None
    help: Any = None
    required: bool = False
    unique: bool = False
    indexed: bool = False
    read_only: bool = False
    default: Any = None
    props: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    default_expr: str | None = None
    visible_if: str | None = None
    required_if: str | None = None
    read_only_if: str | None = None

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any]) -> FieldDef:
        return cls(
            default_expr=doc.get("default_expr"),
            visible_if=doc.get("visible_if"),
            required_if=doc.get("required_if"),
            read_only_if=doc.get("read_only_if"),
            name=name,
            type=doc["type"],
            label=_freeze(doc.get("label")),
            help=_freeze(doc.get("help")),
            required=bool(doc.get("required", False)),
            unique=bool(doc.get("unique", False)),
            indexed=bool(doc.get("indexed", False)),
            read_only=bool(doc.get("read_only", False)),
            default=_freeze(doc.get("default")),
            props=_freeze({k: v for k, v in doc.items() if k not in COMMON_FIELD_KEYS}),
        )

    def prop(self, key: str, default: Any = None) -> Any:
        return self.props.get(key, default)

    def title(self, locale: str = "en") -> str:
        return label_text(self.label, locale, self.name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class IndexDef:
    name: str
    fields: tuple[str, ...]
    unique: bool = False


@dataclass(frozen=True)
class ValidationDef:
    """A validation rule: the record is refused with ``message`` when ``condition`` holds."""

    name: str
    condition: str
    message: Any
    field: str | None = None
    active: bool = True
    applies_on: str = "both"  # create, update or both

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any]) -> ValidationDef:
        return cls(name, doc["condition"], _freeze(doc["message"]), doc.get("field"),
                   bool(doc.get("active", True)), doc.get("applies_on", "both"))

    def applies(self, creating: bool) -> bool:
        return self.active and (self.applies_on == "both" or (self.applies_on == "create") == creating)


@dataclass(frozen=True)
class SectionDef:
    """A group of fields; its conditions apply to each field in it."""

    name: str
    label: Any
    fields: tuple[str, ...]
    visible_if: str | None = None
    required_if: str | None = None
    read_only_if: str | None = None

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any]) -> SectionDef:
        return cls(name, _freeze(doc.get("label")), tuple(doc.get("fields", ())),
                   doc.get("visible_if"), doc.get("required_if"), doc.get("read_only_if"))


@dataclass(frozen=True)
class ObjectDef:
    name: str
    label: Any
    plural_label: Any
    fields: Mapping[str, FieldDef]
    indexes: Mapping[str, IndexDef]
    title_field: str | None
    search_fields: tuple[str, ...]
    default_sort: tuple[str, ...]
    validations: Mapping[str, ValidationDef] = field(default_factory=lambda: MappingProxyType({}))
    sections: Mapping[str, SectionDef] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any]) -> ObjectDef:
        fields = {n: FieldDef.from_doc(n, f) for n, f in doc.get("fields", {}).items()}
        indexes = {
            n: IndexDef(n, tuple(i["fields"]), bool(i.get("unique", False)))
            for n, i in doc.get("indexes", {}).items()
        }
        title_field = doc.get("title_field")
        if title_field is None:
            title_field = next((f.name for f in fields.values() if f.type == "text"), None)
        return cls(
            name=name,
            label=_freeze(doc.get("label")),
            plural_label=_freeze(doc.get("plural_label")),
            fields=MappingProxyType(fields),
            indexes=MappingProxyType(indexes),
            title_field=title_field,
            search_fields=tuple(doc.get("search_fields", [title_field] if title_field else [])),
            default_sort=tuple(doc.get("default_sort", ["-created_at"])),
            validations=MappingProxyType({n: ValidationDef.from_doc(n, v)
                                          for n, v in doc.get("validations", {}).items()}),
            sections=MappingProxyType({n: SectionDef.from_doc(n, v) for n, v in doc.get("sections", {}).items()}),
        )

    def title(self, locale: str = "en") -> str:
        return label_text(self.label, locale, self.name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class RoleDef:
    name: str
    label: Any
    permissions: Mapping[str, frozenset[str]]

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any]) -> RoleDef:
        perms = {obj: frozenset(ops) for obj, ops in doc.get("permissions", {}).items()}
        return cls(name=name, label=_freeze(doc.get("label")), permissions=MappingProxyType(perms))

    def allows(self, object_name: str, op: str) -> bool:
        ops = self.permissions.get(object_name)
        if ops is None:
            ops = self.permissions.get("*", frozenset())
        return op in ops


@dataclass(frozen=True)
class FormFieldDef:
    """A field placed in a form section, with optional overrides of how it shows."""

    field: str
    widget: str | None = None  # None: the field type's own widget
    span: int | None = None  # columns taken; None: the widget's default
    label: Any = None
    help: Any = None

    @classmethod
    def from_doc(cls, doc: str | Mapping[str, Any]) -> FormFieldDef:
        if isinstance(doc, str):
            return cls(doc)
        return cls(doc["field"], doc.get("widget"), doc.get("span"), _freeze(doc.get("label")),
                   _freeze(doc.get("help")))


@dataclass(frozen=True)
class FormSectionDef:
    """A section of a form tab.

    When it shows an object-level section (``section``) and lists no fields of its own,
    :attr:`fields` are that section's fields and a missing label is that section's
    label; the object section's conditions apply either way (they live on the object).
    """

    name: str
    label: Any
    fields: tuple[FormFieldDef, ...]
    columns: int = 2
    collapsible: bool = False
    collapsed: bool = False
    section: str | None = None
    #: Fields a later publish adds to the object land here (see :mod:`.new_fields`).
    new_fields: bool = False

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], obj: ObjectDef | None) -> FormSectionDef:
        shared = obj.sections.get(doc["section"]) if obj is not None and doc.get("section") else None
        if doc.get("fields"):
            fields = tuple(FormFieldDef.from_doc(f) for f in doc["fields"])
        else:
            fields = tuple(FormFieldDef(f) for f in (shared.fields if shared else ()))
        label = _freeze(doc["label"]) if "label" in doc else (shared.label if shared else None)
        return cls(doc["name"], label, fields, int(doc.get("columns", 2)), bool(doc.get("collapsible", False)),
                   bool(doc.get("collapsed", False)), doc.get("section"), bool(doc.get("new_fields", False)))


@dataclass(frozen=True)
class RelatedDef:
    """A list of the records of ``object`` whose lookup ``via`` points at the record shown."""

    object: str
    via: str
    label: Any = None
    fields: tuple[str, ...] = ()  # empty: the runtime picks a few summary fields
    sort: tuple[str, ...] = ()  # empty: the child object's default sort
    limit: int = 5

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> RelatedDef:
        return cls(doc["object"], doc["via"], _freeze(doc.get("label")), tuple(doc.get("fields", ())),
                   tuple(doc.get("sort", ())), int(doc.get("limit", 5)))


@dataclass(frozen=True)
class TabDef:
    name: str
    label: Any
    sections: tuple[FormSectionDef, ...] = ()
    related: tuple[RelatedDef, ...] = ()


@dataclass(frozen=True)
class FormDef:
    """A record page / edit form layout of one object (a ``form`` document).

    ``roles`` empty: the layout for everyone without a more specific one.
    ``new_fields``: ``auto`` places fields a later publish adds to the object on this
    layout, ``none`` leaves them off (see :mod:`.new_fields`).
    """

    name: str
    object: str
    label: Any
    tabs: tuple[TabDef, ...]
    description: str | None = None
    roles: tuple[str, ...] = ()
    priority: int = 0
    new_fields: str = "auto"

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any], obj: ObjectDef | None = None) -> FormDef:
        tabs = tuple(
            TabDef(t["name"], _freeze(t.get("label")),
                   tuple(FormSectionDef.from_doc(s, obj) for s in t.get("sections", ())),
                   tuple(RelatedDef.from_doc(r) for r in t.get("related", ())))
            for t in doc["tabs"]
        )
        return cls(name, doc["object"], _freeze(doc.get("label")), tabs, doc.get("description"),
                   tuple(doc.get("roles", ())), int(doc.get("priority", 0)), doc.get("new_fields", "auto"))

    def sections(self) -> Iterator[FormSectionDef]:
        for tab in self.tabs:
            yield from tab.sections

    def field_names(self) -> list[str]:
        """The object's fields this form shows, in order."""
        return [f.field for sec in self.sections() for f in sec.fields]

    def where(self, field_name: str) -> tuple[str, str] | None:
        """``(tab, section)`` where this form shows ``field_name``, or None."""
        for tab in self.tabs:
            for sec in tab.sections:
                if any(f.field == field_name for f in sec.fields):
                    return tab.name, sec.name
        return None

    def applies_to(self, roles: Iterable[str]) -> bool:
        """Whether a user with ``roles`` may get this layout (unassigned forms fit everyone)."""
        return not self.roles or not set(self.roles).isdisjoint(roles)

    def choice_key(self) -> tuple[bool, int, str]:
        """Sort key among fitting forms: assigned before unassigned, then priority, then name."""
        return (not self.roles, -self.priority, self.name)

    def title(self, locale: str = "en") -> str:
        return label_text(self.label, locale, self.name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class ViewDef:
    """A saved list view of one object (a ``view`` document).

    ``filter`` is the frozen filter AST (mappings and tuples); hand
    :meth:`filter_ast` to the query engine, which wants plain JSON.
    """

    name: str
    object: str
    label: Any
    columns: tuple[str, ...] = ()
    filter: Any = None
    sort: tuple[str, ...] = ()
    page_size: int = 50
    search: str | None = None
    roles: tuple[str, ...] = ()
    default: bool = False
    description: str | None = None

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any]) -> ViewDef:
        return cls(name, doc["object"], _freeze(doc.get("label")), tuple(doc.get("columns", ())),
                   _freeze(doc.get("filter")), tuple(doc.get("sort", ())), int(doc.get("page_size", 50)),
                   doc.get("search") or None, tuple(doc.get("roles", ())), bool(doc.get("default", False)),
                   doc.get("description"))

    def filter_ast(self) -> dict[str, Any] | None:
        """The filter as plain JSON (a fresh copy the caller may change)."""
        return _thaw(self.filter)

    def visible_to(self, roles: Iterable[str]) -> bool:
        """Whether a user with ``roles`` sees this view (administrators see every view;
        reading the object is checked elsewhere)."""
        roles = set(roles)
        return not self.roles or "admin" in roles or not roles.isdisjoint(self.roles)

    def title(self, locale: str = "en") -> str:
        return label_text(self.label, locale, self.name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class ScriptDef:
    """A sandboxed script (a ``script`` document): a record event hook, an action or a
    scheduled job. ``event``, ``action`` and ``schedule`` say which (one is set)."""

    name: str
    object: str | None
    source: str
    event: str | None = None
    action: bool = False
    schedule: str | None = None
    active: bool = True
    order: int = 0
    run_as: str | None = None
    budget: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    label: Any = None
    roles: tuple[str, ...] = ()

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any]) -> ScriptDef:
        trigger = doc.get("trigger", {})
        return cls(name, doc.get("object"), doc["source"], trigger.get("event"), bool(trigger.get("action")),
                   trigger.get("schedule"), bool(doc.get("active", True)), int(doc.get("order", 0)),
                   doc.get("run_as"), MappingProxyType(dict(doc.get("budget", {}))), _freeze(doc.get("label")),
                   tuple(doc.get("roles", ())))

    def title(self, locale: str = "en") -> str:
        return label_text(self.label, locale, self.name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class ApprovalDef:
    """An approval process (an ``approval`` document). The engine runs instances from a
    snapshot of :attr:`doc`, so an instance keeps the definition it started with."""

    name: str
    object: str
    doc: Mapping[str, Any]
    active: bool = True
    trigger: str = "manual"
    label: Any = None

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any]) -> ApprovalDef:
        return cls(name, doc["object"], _freeze(dict(doc)), bool(doc.get("active", True)),
                   (doc.get("trigger") or {}).get("on", "manual"), _freeze(doc.get("label")))

    def snapshot(self) -> dict[str, Any]:
        """The definition as plain JSON (a fresh copy)."""
        return _thaw(self.doc)

    def title(self, locale: str = "en") -> str:
        return label_text(self.label, locale, self.name.replace("_", " ").capitalize())


@dataclass(frozen=True)
class WorkflowDef:
    """A status workflow (a ``workflow`` document): the states held in ``field`` and the
    transitions between them."""

    name: str
    object: str
    field: str
    initial: str
    states: Mapping[str, Mapping[str, Any]]
    transitions: tuple[Mapping[str, Any], ...]
    label: Any = None

    @classmethod
    def from_doc(cls, name: str, doc: Mapping[str, Any]) -> WorkflowDef:
        states = {s["name"]: _freeze(s) for s in doc["states"]}
        return cls(name, doc["object"], doc["field"], doc.get("initial") or doc["states"][0]["name"],
                   MappingProxyType(states), tuple(_freeze(t) for t in doc.get("transitions", ())),
                   _freeze(doc.get("label")))

    def leading(self, state: Any, to: Any) -> list[Mapping[str, Any]]:
        """The transitions from ``state`` to ``to``."""
        return [t for t in self.transitions if state in t["from"] and t["to"] == to]

    def from_state(self, state: Any) -> list[Mapping[str, Any]]:
        return [t for t in self.transitions if state in t["from"]]


ALL_OPS = frozenset({"create", "read", "update", "delete"})

#: Built-in roles. ``admin`` may do everything; ``user`` is every signed-in user's
#: default and may be narrowed by publishing a ``user`` role document.
BUILTIN_ROLES: Mapping[str, RoleDef] = MappingProxyType({
    "admin": RoleDef("admin", "Administrator", MappingProxyType({"*": ALL_OPS})),
    "user": RoleDef("user", "User", MappingProxyType({"*": ALL_OPS})),
})


@dataclass(frozen=True)
class AppMetadata:
    """A tenant's metadata at one version."""

    version: int
    doc: Mapping[str, Any]
    objects: Mapping[str, ObjectDef]
    roles: Mapping[str, RoleDef]
    packages: Mapping[str, Mapping[str, Any]]
    forms: Mapping[str, FormDef] = field(default_factory=lambda: MappingProxyType({}))
    views: Mapping[str, ViewDef] = field(default_factory=lambda: MappingProxyType({}))
    scripts: Mapping[str, ScriptDef] = field(default_factory=lambda: MappingProxyType({}))
    approvals: Mapping[str, ApprovalDef] = field(default_factory=lambda: MappingProxyType({}))
    workflows: Mapping[str, WorkflowDef] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any], version: int = 0) -> AppMetadata:
        objects = {n: ObjectDef.from_doc(n, o) for n, o in doc.get("objects", {}).items()}
        roles = dict(BUILTIN_ROLES)
        roles.update({n: RoleDef.from_doc(n, r) for n, r in doc.get("roles", {}).items()})
        forms = {n: FormDef.from_doc(n, f, objects.get(f["object"])) for n, f in doc.get("forms", {}).items()}
        views = {n: ViewDef.from_doc(n, v) for n, v in doc.get("views", {}).items()}
        return cls(
            version=version,
            doc=copy.deepcopy(dict(doc)),
            objects=MappingProxyType(objects),
            roles=MappingProxyType(roles),
            packages=_freeze(dict(doc.get("packages", {}))),
            forms=MappingProxyType(forms),
            views=MappingProxyType(views),
            scripts=MappingProxyType({n: ScriptDef.from_doc(n, s) for n, s in doc.get("scripts", {}).items()}),
            approvals=MappingProxyType({n: ApprovalDef.from_doc(n, a) for n, a in doc.get("approvals", {}).items()}),
            workflows=MappingProxyType({n: WorkflowDef.from_doc(n, w) for n, w in doc.get("workflows", {}).items()}),
        )

    def object(self, name: str) -> ObjectDef:
        return self.objects[name]

    def iter_fields(self) -> Iterator[tuple[ObjectDef, FieldDef]]:
        for obj in self.objects.values():
            for f in obj.fields.values():
                yield obj, f

    def forms_for(self, object_name: str) -> list[FormDef]:
        """The forms of an object in the order they are chosen: assigned to roles before
        unassigned, then highest priority, then name."""
        return sorted((f for f in self.forms.values() if f.object == object_name), key=FormDef.choice_key)

    def form_for(self, object_name: str, roles: Iterable[str]) -> FormDef | None:
        """The form a user with ``roles`` gets for ``object_name`` (None: generate one)."""
        roles = frozenset(roles)
        return next((f for f in self.forms_for(object_name) if f.applies_to(roles)), None)

    def scripts_for(self, object_name: str | None, *, event: str | None = None,
                    action: bool = False) -> list[ScriptDef]:
        """Active scripts of an object for ``event`` (or its actions), in running order."""
        return sorted((s for s in self.scripts.values() if s.active and s.object == object_name
                       and (s.event == event if event else s.action == action)),
                      key=lambda s: (s.order, s.name))

    def approvals_for(self, object_name: str, trigger: str | None = None) -> list[ApprovalDef]:
        """Active approval processes of an object (with that trigger), by name."""
        return sorted((a for a in self.approvals.values() if a.active and a.object == object_name
                       and (trigger is None or a.trigger == trigger)), key=lambda a: a.name)

    def workflow_for(self, object_name: str) -> WorkflowDef | None:
        """The object's status workflow (at most one), if any."""
        return next((w for w in self.workflows.values() if w.object == object_name), None)

    def views_for(self, object_name: str) -> list[ViewDef]:
        """The views of an object: the default view first, then by name."""
        return sorted((v for v in self.views.values() if v.object == object_name),
                      key=lambda v: (not v.default, v.name))


class ChangeAwareFieldTypeSpec(FieldTypeSpec, Protocol):
    def heavy_change(self, old: FieldDef, new: FieldDef) -> str | None:
        """Why turning ``old`` into ``new`` would rewrite stored values, or ``None``."""
