"""Publish metadata: validate, plan, apply DDL and store the version, in one transaction.

This is the only way metadata changes. Saving a draft elsewhere never runs DDL;
:meth:`MetadataService.preview` shows the plan an admin is about to apply, and
:meth:`MetadataService.rebase` brings a document edited from an older version onto the
current one (a three-way merge, or a conflict report) before it is published.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

from loomwork.metadata import store
from loomwork.metadata.diff import Plan, doc_diff, plan
from loomwork.metadata.errors import ConflictError, NotFound, PermissionDenied
from loomwork.metadata.merge import Conflict, MergeConflict, digest, merge3
from loomwork.metadata.model import AppMetadata
from loomwork.metadata.new_fields import place_new_fields
from loomwork.metadata.validation import check_layout_dependents

from . import recompute
from .compiled import READ_MAX_AGE, CompiledApp, Runtime
from .context import Context
from .dependencies import check_dependents
from .forms import Layout, layout_for
from .jobs import JobService
from .permissions import Permissions
from .rules import rules_document, where_used
from .schema_sync import SchemaSync

log = logging.getLogger(__name__)

RETRIES = 3
#: The sections every stored document has (empty when unused).
SECTIONS = ("objects", "roles", "forms", "views", "scripts", "approvals", "workflows", "packages")


def _normalise(doc: Mapping[str, Any]) -> dict[str, Any]:
    """A copy with every section present and without the ``kind``/``name`` keys that
    package files carry (they repeat the document's place), so the same metadata
    always compares equal. ``renamed_from`` hints stay."""
    out = copy.deepcopy(dict(doc))
    for section in SECTIONS:
        out.setdefault(section, {})
    for section in ("objects", "roles", "forms", "views", "scripts", "approvals", "workflows"):
        for edoc in out[section].values():
            edoc.pop("name", None)
            edoc.pop("kind", None)
    return out


def _strip_hints(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise and remove one-shot ``renamed_from`` hints: they describe a change, not a state."""
    out = _normalise(doc)
    for odoc in out["objects"].values():
        odoc.pop("renamed_from", None)
        for fdoc in odoc.get("fields", {}).values():
            fdoc.pop("renamed_from", None)
    return out


def _elements(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Ownable elements by path: objects (without their fields), fields, roles, forms and views."""
    out: dict[str, Any] = {}
    for oname, odoc in doc.get("objects", {}).items():
        out[f"objects.{oname}"] = {k: v for k, v in odoc.items() if k not in ("fields", "renamed_from")}
        for fname, fdoc in odoc.get("fields", {}).items():
            out[f"objects.{oname}.fields.{fname}"] = {k: v for k, v in fdoc.items() if k != "renamed_from"}
    for section in ("roles", "forms", "views", "scripts", "approvals", "workflows"):
        for name, edoc in doc.get(section, {}).items():
            out[f"{section}.{name}"] = edoc
    return out


def _renames(doc: Mapping[str, Any]) -> dict[str, str]:
    """New element path -> old element path, from ``renamed_from`` hints."""
    out = {}
    for oname, odoc in doc.get("objects", {}).items():
        src_obj = odoc.get("renamed_from", oname)
        if src_obj != oname:
            out[f"objects.{oname}"] = f"objects.{src_obj}"
        for fname, fdoc in odoc.get("fields", {}).items():
            src = fdoc.get("renamed_from", fname)
            if src != fname or src_obj != oname:
                out[f"objects.{oname}.fields.{fname}"] = f"objects.{src_obj}.fields.{src}"
    return out


def ownership(old_doc: Mapping[str, Any], old_own: Mapping[str, Any], new_doc: Mapping[str, Any],
              package: str | None) -> dict[str, dict[str, Any]]:
    """Who owns each element of ``new_doc`` and whether the tenant customised it.

    A package install owns what it brings, uncustomised. A tenant's own publish
    keeps owners and marks a package's element customised when it changes it;
    elements the tenant adds belong to no package, and stay the tenant's when a
    package install changes them (it places the package's new fields on the tenant's
    forms, see :mod:`loomwork.metadata.new_fields`).
    """
    old_el, new_el = _elements(old_doc), _elements(new_doc)
    renames = _renames(new_doc)
    out = {}
    for path, value in new_el.items():
        source = renames.get(path, path)
        prev = old_own.get(source)
        changed = old_el.get(source) != value or source != path
        if package is not None and (prev is None or prev.get("package") == package) and (changed or prev is None):
            # What the tenant customised stays customised: an install keeps such elements
            # as the tenant has them, and changes them only by placing new fields.
            out[path] = {"package": package, "customized": bool(prev and prev.get("customized"))}
        elif prev is None:
            out[path] = {"package": None, "customized": False}
        else:
            out[path] = {"package": prev.get("package"),
                         "customized": bool(prev.get("customized")) or (changed and prev.get("package") is not None)}
    return out


@dataclass(frozen=True)
class Rebased:
    """A document edited from version ``base``, brought onto version ``head``; ``taken``
    lists the changes published in between that it now includes."""

    base: int
    head: int
    doc: dict[str, Any]
    taken: list[dict[str, Any]]

    @property
    def merged(self) -> bool:
        return self.base != self.head

    def as_dict(self) -> dict[str, Any]:
        return {"base_version": self.base, "head_version": self.head, "taken": self.taken}


def _changed_in(conflict: Conflict, history: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    """The versions of ``history`` whose diff touches the conflict's path."""
    p = conflict.path
    return tuple({"version": h["version"], "by": h["by"], "at": h["at"]} for h in history
                 if any(d["path"] == p or p.startswith(d["path"] + ".") or d["path"].startswith(p + ".")
                        for d in h["diff"]))


class MetadataService:
    """Read, preview, publish and roll back a tenant's metadata.

    The whole document is for administrators (D15); everybody reads the objects they
    may read, one by one, with their rules and form layout. An object they may not read
    is a :class:`PermissionDenied` naming the permission (D16), an unknown one NotFound.
    """

    def __init__(self, runtime: Runtime, permissions: Permissions | None = None,
                 jobs: JobService | None = None) -> None:
        self.runtime = runtime
        self.permissions = permissions or Permissions()
        self.jobs = jobs or JobService()
        self.jobs.steps[recompute.JOB] = lambda ctx, conn, state: recompute.step(ctx, conn, self.runtime, state)

    @staticmethod
    def _require_admin(ctx: Context) -> None:
        if not ctx.actor.is_admin:
            raise PermissionDenied("only administrators may change metadata")

    def current(self, ctx: Context) -> store.StoredVersion:
        with ctx.tenant.read() as conn:
            return store.get(conn, store.head(conn))

    def version(self, ctx: Context, version: int) -> store.StoredVersion:
        with ctx.tenant.read() as conn:
            return store.get(conn, version)

    def versions(self, ctx: Context, limit: int = 100) -> list[store.StoredVersion]:
        with ctx.tenant.read() as conn:
            return store.versions(conn, limit)

    def readable_objects(self, ctx: Context) -> tuple[int, dict[str, Any]]:
        """``(version, {name: document})`` of the objects ``ctx``'s actor may read."""
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn, max_age=READ_MAX_AGE)
            readable = set(self.permissions.readable_objects(ctx, app))
            return app.version, {n: o for n, o in app.meta.doc["objects"].items() if n in readable}

    def object_doc(self, ctx: Context, object_name: str) -> tuple[int, dict[str, Any]]:
        """``(version, document)`` of one object. :raises NotFound: for an unknown object.
        :raises PermissionDenied: when the actor may not read its records (D16)."""
        app = self._readable(ctx, object_name)
        return app.version, app.meta.doc["objects"][object_name]

    def object_rules(self, ctx: Context, object_name: str) -> dict[str, Any]:
        """The object's rules as typed expression trees, for forms (see :func:`.rules.rules_document`)."""
        app = self._readable(ctx, object_name)
        return {"version": app.version, **rules_document(app.object(object_name), ctx.locale)}

    def layout(self, ctx: Context, object_name: str) -> Layout:
        """The form layout the actor's roles get for the object (a form's, or the generated one)."""
        return layout_for(self._readable(ctx, object_name), object_name, ctx.actor.roles)

    def _readable(self, ctx: Context, object_name: str) -> CompiledApp:
        app = self.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
        self.permissions.check(ctx, app, object_name, "read")
        return app

    def where_used(self, ctx: Context, object_name: str, field_name: str) -> list[dict[str, str]]:
        """Every expression and roll-up of the published metadata that reads the field."""
        self._require_admin(ctx)
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn)
        obj = app.object(object_name)
        if field_name not in obj.fields:
            raise NotFound(f"no field {field_name!r} on {object_name}")
        return where_used(app.meta, self.runtime.field_types, self.runtime.functions, object_name, field_name,
                          actions=self.runtime.approval_actions)

    def recompute(self, ctx: Context, object_name: str, field_name: str | None = None) -> Mapping[str, int]:
        """Compute stored formulas and roll-ups of an object again (all, or one field), as
        a recompute job run now; return the rows touched per formula pass and roll-up.
        An error is raised after it is recorded on the job, which a worker resumes."""
        self._require_admin(ctx)
        with ctx.tenant.read() as conn:
            app = self.runtime.compiled(ctx.tenant, conn)
        obj = app.object(object_name)
        names = [field_name] if field_name else list(obj.fields)
        targets = []
        for name in names:
            f = obj.fields.get(name)
            if f is None:
                raise NotFound(f"no field {name!r} on {object_name}")
            if f.column is not None and f.defn.type in ("formula", "rollup"):
                targets.append(recompute.Target(object_name, name, f.defn.type))
            elif field_name:
                raise ConflictError(f"{object_name}.{name} is not a stored formula or roll-up")
        if not targets:
            return {}
        with ctx.tenant.write() as conn:
            job = self.jobs.start(conn, recompute.JOB, ctx.now(), recompute.plan(app, targets))
        outcome = self.jobs.run(ctx, job, reraise=True)
        if outcome["status"] != "done":  # a worker took it over meanwhile (it was leased past its time)
            raise ConflictError(f"recompute job {job} is being run by a worker; it goes on there")
        return outcome["result"]["rows"]

    def diff(self, ctx: Context, a: int, b: int) -> list[dict[str, Any]]:
        with ctx.tenant.read() as conn:
            # Normalised: a version stored before a section existed lacks it, which is no change.
            return doc_diff(_normalise(store.get(conn, a).doc), _normalise(store.get(conn, b).doc))

    def rebase(self, ctx: Context, doc: Mapping[str, Any], base_version: int,
               base_digest: str | None = None) -> Rebased:
        """``doc``, edited from ``base_version``, merged with what was published since
        (a three-way merge per element and property, see :mod:`loomwork.metadata.merge`).

        :param base_digest: the fingerprint ``meta export`` wrote of the base version;
            when given it must match this tenant's version.
        :raises MergeConflict: naming each property both sides changed differently, with
            the versions that changed it.
        :raises ConflictError: when ``base_digest`` shows the document comes from another
            tenant or installation.
        :raises NotFound: for a version this tenant does not have.
        """
        self._require_admin(ctx)
        if not isinstance(doc, Mapping):
            self.runtime.validate(doc)  # raises the usual "must be an object"
        with ctx.tenant.read() as conn:
            head = store.get(conn, store.head(conn))
            base = head if base_version == head.version else store.get(conn, base_version)
            if base_digest is not None and digest(base.doc) != base_digest:
                raise ConflictError(
                    f"the document was exported from version {base_version} of another tenant or installation, "
                    f"not from this tenant's: publish it as it is with force (replacing this tenant's metadata), "
                    f"or export this tenant's metadata and edit that")
            if base.version == head.version:
                return Rebased(base.version, head.version, dict(doc), [])
            try:
                yours = _normalise(doc)
            except (AttributeError, TypeError):
                self.runtime.validate(doc)  # names what is malformed
                raise
            merged = merge3(_normalise(base.doc), yours, _normalise(head.doc))
            if merged.conflicts:
                later = store.history(conn, base.version, head.version)
                raise MergeConflict(base.version, head.version,
                                    [replace(c, changed_in=_changed_in(c, later)) for c in merged.conflicts])
        return Rebased(base.version, head.version, merged.doc, merged.taken)

    def _plan(self, conn: sa.Connection, doc: Mapping[str, Any], *, lock: bool = False,
              update_dependents: bool = False) -> tuple[store.StoredVersion, Plan, AppMetadata, Mapping[str, Any]]:
        """Check ``doc`` against the head version; return (head, plan, new metadata, the
        document to store: with dependents rewritten when ``update_dependents``)."""
        if not isinstance(doc, Mapping):
            self.runtime.validate(doc)  # raises the usual "must be an object"
        # A publish locks the head row first (PostgreSQL; SQLite's write lock does the
        # same), so concurrent publishes queue instead of running DDL side by side.
        current = store.get(conn, store.head(conn, lock=lock))
        current_meta = AppMetadata.from_doc(current.doc, current.version)
        # Uses of renamed or deleted fields first: they explain what validation would
        # only call unknown names.
        doc = check_dependents(current_meta, doc, self.runtime.field_types, self.runtime.functions,
                               update=update_dependents, actions=self.runtime.approval_actions)
        check_layout_dependents(current.doc, doc)
        doc = place_new_fields(current.doc, doc)
        self.runtime.validate(doc)
        doc = _normalise(doc)
        new_meta = AppMetadata.from_doc(doc, current.version + 1)
        return current, plan(current_meta, new_meta, self.runtime.field_types), new_meta, doc

    def preview(self, ctx: Context, doc: Mapping[str, Any], *, update_dependents: bool = False) -> Plan:
        """The plan publishing ``doc`` would apply, after the same checks (nothing is changed).

        :raises MetadataError: if ``doc`` is invalid.
        :raises HeavyChangeRefused: if the plan cannot run here.
        """
        self._require_admin(ctx)
        self._check_scripts_first(ctx, doc)
        with ctx.tenant.read() as conn:
            _, the_plan, new_meta, doc = self._plan(conn, doc, update_dependents=update_dependents)
            compiled = self.runtime.compile(_strip_hints(doc), new_meta.version)
            SchemaSync(conn, ctx.tenant.schema).check(the_plan, compiled)
            return the_plan

    def publish(self, ctx: Context, doc: Mapping[str, Any], *, comment: str = "",
                base_version: int | None = None, package: str | None = None,
                update_dependents: bool = False) -> int:
        """Validate ``doc``, apply its plan and store it as the next version, atomically;
        then compute stored formulas and roll-ups that are new or changed (in batches).

        :param base_version: the version the caller edited; a publish in between is a conflict.
        :param package: set when a package install publishes, to record ownership.
        :param update_dependents: rewrite expressions that use a renamed field instead of
            refusing the rename.
        :returns: the new version number (the current one if nothing changed).
        """
        self._require_admin(ctx)
        self._check_scripts_first(ctx, doc)
        for attempt in range(RETRIES):
            try:
                version, job = self._publish_once(ctx, doc, comment, base_version, package, update_dependents)
                self.runtime.expire(ctx.tenant)
                break
            except sa.exc.OperationalError as exc:
                # PostgreSQL lock_timeout (55P03): someone held the table; try again shortly.
                if getattr(exc.orig, "sqlstate", None) != "55P03" or attempt == RETRIES - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))
        else:
            raise AssertionError("unreachable")
        if job is not None:
            # The publish has committed, with its recompute job: a failure here is
            # recorded on the job (and logged), which a worker resumes from its last
            # batch; it is not a failed publish.
            outcome = self.jobs.run(ctx, job)
            if outcome["status"] not in ("done", "taken"):
                log.error("recomputing after publishing version %s stopped (job %s, to be resumed): %s",
                          version, job, outcome.get("error"))
        return version

    def _check_scripts_first(self, ctx: Context, doc: Any) -> None:
        """Compile the document's scripts (in a sandbox worker, in the tenant's share of
        the pool) before a transaction opens: the verdicts are remembered, so the
        validation inside the transaction finds them and does not hold it for that."""
        self.runtime.script_errors(doc, ctx.tenant.cache_key)

    def _publish_once(self, ctx, doc, comment, base_version, package,
                      update_dependents) -> tuple[int, int | None]:
        """Publish in one transaction; return the version and the recompute job it started
        (None when no stored formula or roll-up needs computing)."""
        with ctx.tenant.write() as conn:
            current, the_plan, new_meta, doc = self._plan(conn, doc, lock=True, update_dependents=update_dependents)
            if base_version is not None and base_version != current.version:
                raise ConflictError(
                    f"metadata changed since version {base_version} (now {current.version}); reload and try again")
            clean = _strip_hints(doc)
            changes = doc_diff(_normalise(current.doc), clean)
            if not changes and not the_plan:
                return current.version, None
            compiled = self.runtime.compile(clean, new_meta.version)
            now = ctx.now()
            SchemaSync(conn, ctx.tenant.schema).apply(the_plan, compiled, new_meta.version, now)
            targets = recompute.changed_targets(AppMetadata.from_doc(current.doc, current.version), compiled)
            version = store.save(
                conn, base=current.version, doc=clean,
                ownership=ownership(current.doc, current.ownership, _normalise(doc), package),
                diff=changes, plan=[op.as_dict() for op in the_plan.operations],
                actor=ctx.actor.username, comment=comment, now=now,
            )
            # The job exists exactly when the version does (an outbox, D47).
            job = self.jobs.start(conn, recompute.JOB, now, recompute.plan(compiled, targets)) if targets else None
            return version, job

    def rollback_doc(self, ctx: Context, to_version: int) -> dict[str, Any]:
        """The document of ``to_version`` with rename hints that undo later renames.

        Without the hints, rolling back a rename would hide the renamed column and add
        an empty one under the old name.
        """
        with ctx.tenant.read() as conn:
            head = store.head(conn)
            doc = copy.deepcopy(store.get(conn, to_version).doc)
            later = [store.get(conn, v) for v in range(to_version + 1, head + 1)]
        obj_now = {o: o for o in doc.get("objects", {})}
        field_now = {(o, f): f for o, odoc in doc.get("objects", {}).items() for f in odoc.get("fields", {})}
        for stored in later:
            for op in stored.plan:
                if op["kind"] == "rename_object":
                    for o, cur in obj_now.items():
                        if cur == op["detail"]["old"]:
                            obj_now[o] = op["object"]
                elif op["kind"] == "rename_field":
                    for (o, f), cur in field_now.items():
                        if obj_now[o] == op["object"] and cur == op["detail"]["old"]:
                            field_now[(o, f)] = op["field"]
        for o, cur in obj_now.items():
            if cur != o:
                doc["objects"][o]["renamed_from"] = cur
        for (o, f), cur in field_now.items():
            if cur != f:
                doc["objects"][o]["fields"][f]["renamed_from"] = cur
        return doc

    def rollback(self, ctx: Context, to_version: int, *, comment: str = "") -> int:
        """Publish the document of an earlier version as a new version (a plan like any other)."""
        doc = self.rollback_doc(ctx, to_version)
        return self.publish(ctx, doc, comment=comment or f"Roll back to version {to_version}")

    def preview_rollback(self, ctx: Context, to_version: int) -> Plan:
        return self.preview(ctx, self.rollback_doc(ctx, to_version))
