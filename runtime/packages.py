"""Install a package into a tenant: merge its elements, then publish like any change.

An element (object, field, role, form or view) the tenant customised since the
package last installed it is kept as the tenant has it; fields the tenant added stay.
(Full three-way template upgrades build on the same ownership map.)
"""
from __future__ import annotations

import copy
import re
from typing import Any

from loomwork.metadata.errors import ConflictError, ValidationError
from loomwork.metadata.packages import Package

from .context import Context
from .publishing import MetadataService

#: A package version: semantic versioning's MAJOR.MINOR.PATCH with an optional
#: pre-release (``1.4.0-rc.2``), as the manifest schema allows.
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?$")


def version_key(text: str) -> tuple:
    """A sort key giving semantic versioning's precedence (semver.org §11): numbers
    compare as numbers; a pre-release comes before its release; pre-release parts
    compare numerically when numeric, else as text, numeric before text, and a longer
    list after its own prefix (``1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0``).

    (Not :mod:`packaging.version`: PEP 440 cannot read every pre-release semantic
    versioning allows, such as ``1.0.0-x.7.z``, and orders some differently.)

    :raises ValueError: for a text that is not such a version.
    """
    m = _SEMVER.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a version like 1.2.0 or 1.2.0-rc.1")
    release = tuple(int(g) for g in m.group(1, 2, 3))
    if m.group(4) is None:
        return (release, 1, ())
    parts = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in m.group(4).split("."))
    return (release, 0, parts)


def satisfies(installed: str, spec: str | None) -> bool:
    """``spec`` is empty (any), ``1.2.0`` or ``=1.2.0`` (exact), or ``>=1.2.0``.

    :raises ValueError: if ``spec`` or ``installed`` is not of that form.
    """
    if not spec:
        return True
    if spec.startswith(">="):
        return version_key(installed) >= version_key(spec[2:].strip())
    return version_key(installed) == version_key(spec.removeprefix("=").strip())


class DowngradeRefused(ConflictError):
    """Installing a version older than the one the tenant has."""

    def __init__(self, name: str, installed: str, offered: str) -> None:
        super().__init__(f"{name} {installed} is installed; {offered} is older, and installing it would downgrade "
                         f"the package (allow the downgrade to install it anyway)")
        self.package, self.installed, self.offered = name, installed, offered


class PackageService:
    def __init__(self, metadata: MetadataService) -> None:
        self.metadata = metadata

    def merged(self, ctx: Context, pkg: Package, *, allow_downgrade: bool = False) -> tuple[dict[str, Any], int]:
        """The tenant document with ``pkg`` merged in, and the version it is based on.

        :raises DowngradeRefused: when the tenant has a newer version of ``pkg``, unless
            ``allow_downgrade``.
        :raises ValidationError: when a dependency is missing or too old.
        """
        current = self.metadata.current(ctx)
        doc = copy.deepcopy(current.doc)
        own = current.ownership
        installed = doc.get("packages", {})
        have = installed.get(pkg.name, {}).get("version")
        if have is not None and not allow_downgrade and version_key(pkg.version) < version_key(have):
            raise DowngradeRefused(pkg.name, have, pkg.version)
        missing = []
        for d in pkg.manifest.get("depends", []):
            try:
                if d["name"] not in installed or not satisfies(installed[d["name"]]["version"], d.get("version")):
                    missing.append(d)
            except ValueError as exc:
                raise ValidationError({"package.depends": [f"{d['name']}: {exc}"]}) from None
        if missing:
            need = ", ".join(f"{d['name']} {d.get('version', '')}".strip() for d in missing)
            raise ValidationError({"package.depends": [f"install {need} first"]})

        def mine(path: str) -> bool | None:
            """True if owned by this package and not customised; None if absent."""
            o = own.get(path)
            if o is None:
                return None
            if o.get("package") not in (pkg.name,):
                raise ConflictError(f"{path} already exists in this tenant and does not belong to {pkg.name}")
            return not o.get("customized")

        objects = doc.setdefault("objects", {})
        for name, odoc in pkg.objects.items():
            path = f"objects.{name}"
            state = mine(path) if name in objects else None
            if name not in objects:
                objects[name] = copy.deepcopy(odoc)
                continue
            target = objects[name]
            if state:
                keep = target.get("fields", {})
                target.clear()
                target.update({k: copy.deepcopy(v) for k, v in odoc.items() if k != "fields"})
                target["fields"] = keep
            fields = target.setdefault("fields", {})
            for fname, fdoc in odoc.get("fields", {}).items():
                fpath = f"{path}.fields.{fname}"
                if fname not in fields or own.get(fpath, {}).get("package") == pkg.name and \
                        not own.get(fpath, {}).get("customized"):
                    if fname in fields and own.get(fpath) is None:
                        raise ConflictError(f"{fpath} already exists in this tenant")
                    fields[fname] = copy.deepcopy(fdoc)
        # Roles, forms and views are whole elements: the package's version replaces its
        # own uncustomised one; a customised one stays as the tenant has it.
        for section in ("roles", "forms", "views", "scripts", "approvals", "workflows"):
            have = doc.setdefault(section, {})
            for name, edoc in getattr(pkg, section).items():
                if name not in have or mine(f"{section}.{name}"):
                    have[name] = copy.deepcopy(edoc)
        doc.setdefault("packages", {})[pkg.name] = dict(pkg.manifest)
        return doc, current.version

    def install(self, ctx: Context, pkg: Package, *, comment: str = "", allow_downgrade: bool = False) -> int:
        """Install, re-install or upgrade ``pkg`` as ``ctx``'s actor; returns the published version.

        :param comment: why, kept in the version history after "Install NAME VERSION".
        :param allow_downgrade: install even when the tenant has a newer version.
        :raises DowngradeRefused: see :meth:`merged`.
        """
        doc, base = self.merged(ctx, pkg, allow_downgrade=allow_downgrade)
        what = f"Install {pkg.name} {pkg.version}"
        return self.metadata.publish(ctx, doc, comment=f"{what}: {comment}" if comment else what,
                                     base_version=base, package=pkg.name)
