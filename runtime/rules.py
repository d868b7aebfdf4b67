"""Every expression of an object, checked and compiled once per metadata version.

An object's formulas, expression defaults, validation rules, field and section
conditions, dependent choices and the roll-ups it feeds are compiled here into an
:class:`ObjectRules`; the record service applies them on every write (so the API,
forms, bulk writes, imports and script hooks all obey them) and publishing checks
them (:func:`check_app`), reporting each problem at its metadata path with the line
and column inside the expression.
"""
from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from loomwork.metadata.errors import MetadataError
from loomwork.metadata.model import (
    AppMetadata,
    ApprovalDef,
    FieldDef,
    ObjectDef,
    ValidationDef,
    label_text,
)

from .approval_actions import ActionKind, builtin_actions
from .expr import Expression, ExpressionError, FieldInfo, Function, Scope, compile_expression
from .fieldtypes import FieldType


@dataclass(frozen=True)
class Rollup:
    """A roll-up field of ``parent`` summarising ``child`` records that point at it through ``via``."""

    parent: str
    field: str
    child: str
    via: str
    function: str
    source: str | None
    filter: Expression | None


@dataclass
class ObjectRules:
    defaults: list[tuple[str, Expression]] = field(default_factory=list)
    validations: list[tuple[ValidationDef, Expression]] = field(default_factory=list)
    #: field -> conditions that must all hold for it to show (its own and its section's).
    visible: dict[str, list[Expression]] = field(default_factory=dict)
    #: field -> conditions of which any makes it required / read-only.
    required: dict[str, list[Expression]] = field(default_factory=dict)
    read_only: dict[str, list[Expression]] = field(default_factory=dict)
    #: dependent choice field -> its controlling field.
    dependent: dict[str, str] = field(default_factory=dict)
    #: In dependency order: a formula comes after the formulas it reads.
    stored_formulas: list[tuple[str, Expression]] = field(default_factory=list)
    virtual_formulas: list[tuple[str, Expression]] = field(default_factory=list)
    #: Roll-ups this object feeds, as the child.
    feeds: list[Rollup] = field(default_factory=list)
    #: Dotted lookup paths the write-time expressions read (fetched before evaluating).
    paths: set[str] = field(default_factory=set)

    @functools.cached_property
    def condition_fields(self) -> tuple[str, ...]:
        """Fields with a visibility, required or read-only condition."""
        return tuple(dict.fromkeys([*self.visible, *self.required, *self.read_only]))

    @functools.cached_property
    def on_create(self) -> tuple[tuple[ValidationDef, Expression], ...]:
        """Active validation rules that apply when creating."""
        return tuple((v, e) for v, e in self.validations if v.applies(True))

    @functools.cached_property
    def on_update(self) -> tuple[tuple[ValidationDef, Expression], ...]:
        return tuple((v, e) for v, e in self.validations if v.applies(False))

    @functools.cached_property
    def formulas(self) -> dict[str, Expression]:
        return dict(self.stored_formulas + self.virtual_formulas)



def field_info(f: FieldDef, ftype: FieldType | None) -> FieldInfo:
    options: tuple[str, ...] = ()
    if ftype is not None and ftype.has_options:
        options = tuple(o["value"] for o in f.prop("options", ()))
    expr_type = ftype.expression_type(f) if ftype is not None else None
    return FieldInfo(f.name, expr_type, f.type, options, ftype.reference_target(f) if ftype is not None else None)


def build_scope(meta: AppMetadata, types: Mapping[str, FieldType], object_name: str, *,
                allow_old: bool = True) -> Scope:
    objects = {name: {f.name: field_info(f, types.get(f.type)) for f in obj.fields.values()}
               for name, obj in meta.objects.items()}
    return Scope(object_name, objects, allow_old=allow_old)


def with_rollup_sources(meta: AppMetadata) -> Iterator[tuple[ObjectDef, FieldDef, FieldDef | None]]:
    """Each roll-up field with the field it summarises (None for count)."""
    for obj, f in meta.iter_fields():
        if f.type != "rollup":
            continue
        child = meta.objects.get(f.prop("object"))
        source = child.fields.get(f.prop("field") or "") if child else None
        yield obj, f, source


class _Compiler:
    """Compiles every expression of an app, collecting errors by metadata path."""

    def __init__(self, meta: AppMetadata, types: Mapping[str, FieldType], functions: Mapping[str, Function]):
        self.meta, self.types, self.functions = meta, types, functions
        self.errors: list[tuple[str, str]] = []
        self._scopes: dict[tuple[str, bool], Scope] = {}

    def scope(self, obj: str, allow_old: bool) -> Scope:
        key = (obj, allow_old)
        if key not in self._scopes:
            self._scopes[key] = build_scope(self.meta, self.types, obj, allow_old=allow_old)
        return self._scopes[key]

    def compile(self, source: str, obj: str, path: str, *, expect: str | None = None,
                allow_old: bool = True) -> Expression | None:
        try:
            return compile_expression(source, self.scope(obj, allow_old), self.functions, expect)
        except ExpressionError as exc:
            self.errors.append((path, exc.message))
            return None

    def object_rules(self, obj: ObjectDef) -> ObjectRules:
        rules = ObjectRules()
        base = f"objects.{obj.name}"
        section_of: dict[str, Any] = {}
        for sec in obj.sections.values():
            for fname in sec.fields:
                section_of[fname] = sec
        for f in obj.fields.values():
            fpath = f"{base}.fields.{f.name}"
            if f.default_expr:
                e = self.compile(f.default_expr, obj.name, f"{fpath}.default_expr", allow_old=False,
                                 expect=self._expected(f))
                if e:
                    rules.defaults.append((f.name, e))
            owners = [(f, fpath)]
            if f.name in section_of:
                owners.append((section_of[f.name], f"{base}.sections.{section_of[f.name].name}"))
            for owner, opath in owners:
                for key, bucket in (("visible_if", rules.visible), ("required_if", rules.required),
                                    ("read_only_if", rules.read_only)):
                    source = getattr(owner, key)
                    if source:
                        e = self.compile(source, obj.name, f"{opath}.{key}", expect="boolean")
                        if e:
                            bucket.setdefault(f.name, []).append(e)
            ftype = self.types.get(f.type)
            dep = f.prop("depends_on") if ftype is not None and ftype.has_options else None
            if dep:
                rules.dependent[f.name] = dep["field"]
        for v in obj.validations.values():
            e = self.compile(v.condition, obj.name, f"{base}.validations.{v.name}.condition", expect="boolean")
            if e:
                rules.validations.append((v, e))
        self._formulas(obj, rules)
        for e in self._write_expressions(rules):
            rules.paths.update(p for p in e.deps.paths if "." in p)
        return rules

    @staticmethod
    def _write_expressions(rules: ObjectRules) -> Iterator[Expression]:
        yield from (e for _, e in rules.defaults)
        yield from (e for _, e in rules.validations)
        for bucket in (rules.visible, rules.required, rules.read_only):
            for exprs in bucket.values():
                yield from exprs
        yield from (e for _, e in rules.virtual_formulas)

    def _expected(self, f: FieldDef) -> str | None:
        ftype = self.types.get(f.type)
        return ftype.expression_type(f) if ftype is not None else None

    def _formulas(self, obj: ObjectDef, rules: ObjectRules) -> None:
        compiled: dict[str, Expression] = {}
        for f in obj.fields.values():
            if f.type != "formula":
                continue
            e = self.compile(f.prop("expression"), obj.name, f"objects.{obj.name}.fields.{f.name}.expression",
                             expect=f.prop("result_type"), allow_old=False)
            if e:
                compiled[f.name] = e
        for name in self._order(obj, compiled):
            f = obj.fields[name]
            e = compiled[name]
            if f.prop("stored"):
                reason = self._not_storable(obj, name, compiled, set())
                if reason:
                    self.errors.append((f"objects.{obj.name}.fields.{name}.stored", reason))
                    continue
                rules.stored_formulas.append((name, e))
            else:
                rules.virtual_formulas.append((name, e))

    def _order(self, obj: ObjectDef, compiled: Mapping[str, Expression]) -> list[str]:
        """Formulas in dependency order; a cycle is an error (its formulas are left out)."""
        order: list[str] = []
        state: dict[str, int] = {}

        def visit(name: str, trail: list[str]) -> bool:
            if state.get(name) == 2:
                return True
            if state.get(name) == 1:
                state[name] = 3
                ring = [*trail[trail.index(name):], name]
                self.errors.append((f"objects.{obj.name}.fields.{name}.expression",
                                    f"formulas refer to each other in a cycle: {' -> '.join(ring)}"))
                return False
            if state.get(name) == 3:  # already part of a reported cycle
                return False
            state[name] = 1
            for dep_obj, dep in compiled[name].deps.fields:
                if dep_obj == obj.name and dep in compiled and not visit(dep, [*trail, name]):
                    state[name] = 3
                    return False
            state[name] = 2
            order.append(name)
            return True

        for name in compiled:
            visit(name, [])
        return order

    def _not_storable(self, obj: ObjectDef, name: str, compiled: Mapping[str, Expression],
                      seen: set[str]) -> str | None:
        """Why a stored formula could go stale (lookups, the clock, the user), or None."""
        seen.add(name)
        e = compiled[name]
        if any("." in p for p in e.deps.paths):
            return "a stored formula may use only this record's fields; make it virtual to follow lookups"
        if not e.deps.deterministic:
            return "a stored formula cannot use today(), now() or $user; make it virtual"
        for dep_obj, dep in e.deps.fields:
            if dep_obj == obj.name and dep in obj.fields and obj.fields[dep].type == "rollup":
                # Roll-ups move by direct updates; nothing would recompute the formula.
                return f"a stored formula cannot use the roll-up {dep}; make it virtual"
        for dep_obj, dep in e.deps.fields:
            if dep_obj == obj.name and dep in compiled and dep not in seen:
                reason = self._not_storable(obj, dep, compiled, seen)
                if reason:
                    return f"it uses {dep}, and {reason[0].lower()}{reason[1:]}"
        return None

    def rollups(self) -> list[Rollup]:
        out = []
        for obj, f, _source in with_rollup_sources(self.meta):
            path = f"objects.{obj.name}.fields.{f.name}.filter"
            flt = None
            if f.prop("filter"):
                flt = self.compile(f.prop("filter"), f.prop("object"), path, expect="boolean", allow_old=False)
                child = self.meta.objects[f.prop("object")]
                computed = [d for o, d in (flt.deps.fields if flt else ()) if o == child.name
                            and d in child.fields and (child.fields[d].type == "rollup" or (
                                child.fields[d].type == "formula" and not child.fields[d].prop("stored")))]
                if flt is not None and (any("." in p for p in flt.deps.paths) or not flt.deps.deterministic
                                        or computed):
                    self.errors.append((path, "a roll-up filter may use only the summarised record's own "
                                              "stored fields (no lookups, clock, user, virtual formulas or "
                                              "roll-ups)"))
                    continue
            out.append(Rollup(obj.name, f.name, f.prop("object"), f.prop("via"), f.prop("function"),
                              f.prop("field"), flt))
        return out


def compile_app_rules(meta: AppMetadata, types: Mapping[str, FieldType], functions: Mapping[str, Function],
                      actions: Mapping[str, ActionKind] | None = None
                      ) -> tuple[dict[str, ObjectRules], list[tuple[str, str]]]:
    """Rules per object, and the errors found (empty for a published version).
    ``actions`` are the registered approval action kinds (default: the built-ins),
    which say where their bodies hold expressions."""
    c = _Compiler(meta, types, functions)
    out = {name: c.object_rules(obj) for name, obj in meta.objects.items()}
    for r in c.rollups():
        out[r.child].feeds.append(r)
    # Approval and workflow expressions are compiled where they run; here they are checked.
    for proc in [*meta.approvals.values(), *meta.workflows.values()]:
        if proc.object in meta.objects:
            expressions = _approval_expressions(proc, actions) if isinstance(proc, ApprovalDef) \
                else _workflow_expressions(proc)
            for path, obj, source, allow_old in expressions:
                c.compile(source, obj, path, allow_old=allow_old, expect="boolean" if path.endswith("condition")
                          else None)
    return out, c.errors


def check_app(meta: AppMetadata, types: Mapping[str, FieldType], functions: Mapping[str, Function],
              actions: Mapping[str, ActionKind] | None = None) -> list[tuple[str, str]]:
    """Every expression problem of a metadata document, as ``(path, message)``."""
    return compile_app_rules(meta, types, functions, actions)[1]


def where_used(meta: AppMetadata, types: Mapping[str, FieldType], functions: Mapping[str, Function],
               object_name: str, field_name: str,
               actions: Mapping[str, ActionKind] | None = None) -> list[dict[str, str]]:
    """Every expression (and roll-up) that reads ``object_name.field_name``."""
    c = _Compiler(meta, types, functions)
    found = []
    for path, obj, source, allow_old in iter_expressions(meta, actions):
        e = c.compile(source, obj, path, allow_old=allow_old)
        if e is not None and (object_name, field_name) in e.deps.fields:
            found.append({"path": path, "expression": source})
    for obj, f, _ in with_rollup_sources(meta):
        if f.prop("object") == object_name and field_name in (f.prop("via"), f.prop("field")):
            found.append({"path": f"objects.{obj.name}.fields.{f.name}",
                          "expression": f"{f.prop('function')}({object_name}.{f.prop('field') or '*'})"})
    return found


def iter_expressions(meta: AppMetadata, actions: Mapping[str, ActionKind] | None = None
                     ) -> Iterator[tuple[str, str, str, bool]]:
    """(metadata path, object the expression runs on, source, may use old) for each
    expression; approval actions' by their kinds in ``actions`` (default: the built-ins)."""
    for obj in meta.objects.values():
        base = f"objects.{obj.name}"
        for f in obj.fields.values():
            if f.default_expr:
                yield f"{base}.fields.{f.name}.default_expr", obj.name, f.default_expr, False
            for key in ("visible_if", "required_if", "read_only_if"):
                if getattr(f, key):
                    yield f"{base}.fields.{f.name}.{key}", obj.name, getattr(f, key), True
            if f.type == "formula" and f.prop("expression"):
                yield f"{base}.fields.{f.name}.expression", obj.name, f.prop("expression"), False
            if f.type == "rollup" and f.prop("filter"):
                yield f"{base}.fields.{f.name}.filter", f.prop("object"), f.prop("filter"), False
        for sec in obj.sections.values():
            for key in ("visible_if", "required_if", "read_only_if"):
                if getattr(sec, key):
                    yield f"{base}.sections.{sec.name}.{key}", obj.name, getattr(sec, key), True
        for v in obj.validations.values():
            yield f"{base}.validations.{v.name}.condition", obj.name, v.condition, True
    for proc in meta.approvals.values():
        yield from _approval_expressions(proc, actions)
    for wf in meta.workflows.values():
        yield from _workflow_expressions(wf)


def _workflow_expressions(wf: Any) -> Iterator[tuple[str, str, str, bool]]:
    for i, t in enumerate(wf.transitions):
        if t.get("condition"):
            yield f"workflows.{wf.name}.transitions.{i}.condition", wf.object, t["condition"], True


def _approval_expressions(proc: Any, actions: Mapping[str, ActionKind] | None
                          ) -> Iterator[tuple[str, str, str, bool]]:
    doc, base, on = proc.doc, f"approvals.{proc.name}", proc.object
    kinds = builtin_actions() if actions is None else actions
    if (doc.get("trigger") or {}).get("condition"):
        yield f"{base}.trigger.condition", on, doc["trigger"]["condition"], True
    if doc.get("entry_condition"):
        yield f"{base}.entry_condition", on, doc["entry_condition"], False
    for i, node in enumerate(doc.get("nodes", ())):
        for j, branch in enumerate(node.get("branches", ())):
            yield f"{base}.nodes.{i}.branches.{j}.condition", on, branch["condition"], False
        yield from _action_expressions(node.get("actions", ()), f"{base}.nodes.{i}.actions", on, kinds)
    for key in ("on_approved", "on_rejected", "on_recalled"):
        yield from _action_expressions(doc.get(key, ()), f"{base}.{key}", on, kinds)


def _action_expressions(actions: Any, base: str, on: str,
                        kinds: Mapping[str, ActionKind]) -> Iterator[tuple[str, str, str, bool]]:
    """The expressions each action's kind finds in its body (evaluated on the record)."""
    for j, action in enumerate(actions or ()):
        for name, body in action.items():
            kind = kinds.get(name)
            for sub, source in (kind.expressions(body) if kind is not None else ()):
                yield f"{base}.{j}.{name}.{sub}", on, source, False


def rules_document(obj: Any, locale: str = "en") -> dict[str, Any]:
    """What a form needs to apply the object's rules live: typed trees per field."""
    rules: ObjectRules = obj.rules
    fields: dict[str, dict[str, Any]] = {}
    for key, bucket in (("visible_if", rules.visible), ("required_if", rules.required),
                        ("read_only_if", rules.read_only)):
        for name, exprs in bucket.items():
            fields.setdefault(name, {})[key] = [e.tree for e in exprs]
    for name, controller in rules.dependent.items():
        dep = obj.fields[name].defn.prop("depends_on")
        fields.setdefault(name, {})["depends_on"] = {
            "field": controller, "options": {k: list(v) for k, v in dep["options"].items()}}
    for name, e in rules.defaults:
        fields.setdefault(name, {})["default_expr"] = e.tree
    for name, e in [*rules.stored_formulas, *rules.virtual_formulas]:
        fields.setdefault(name, {})["formula"] = e.tree
    return {
        "object": obj.name,
        "fields": fields,
        "validations": [{"name": v.name, "field": v.field, "applies_on": v.applies_on,
                         "message": label_text(v.message, locale, v.name), "condition": e.tree}
                        for v, e in rules.validations],
    }


def compile_one(app: Any, object_name: str, source: str, *, allow_old: bool = False) -> Expression:
    """One expression of ``object_name`` compiled against ``app`` (cached per version):
    for definitions kept outside the compiled rules, such as an approval instance's.
    :raises MetadataError: if it does not compile against this version."""
    def build() -> Expression:
        c = _Compiler(app.meta, app.field_types, app.functions)
        e = c.compile(source, object_name, "expression", allow_old=allow_old)
        if e is None:
            raise MetadataError({path: [msg] for path, msg in c.errors})
        return e

    return app.artefact(f"expr:{object_name}:{int(allow_old)}:{source}", build)

