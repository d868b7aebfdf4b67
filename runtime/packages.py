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


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("-")[0])[:3])


def satisfies(installed: str, spec: str | None) -> bool:
    """``spec`` is empty (any), ``1.2.0`` (exact), or ``>=1.2.0``."""
    if not spec:
        return True
    if spec.startswith(">="):
        return _version_tuple(installed) >= _version_tuple(spec[2:])
    return _version_tuple(installed) == _version_tuple(spec.lstrip("="))


class PackageService:
    def __init__(self, metadata: MetadataService) -> None:
        self.metadata = metadata

    def merged(self, ctx: Context, pkg: Package) -> tuple[dict[str, Any], int]:
        """The tenant document with ``pkg`` merged in, and the version it is based on."""
        current = self.metadata.current(ctx)
        doc = copy.deepcopy(current.doc)
        own = current.ownership
        installed = doc.get("packages", {})
        missing = [d for d in pkg.manifest.get("depends", [])
                   if d["name"] not in installed or not satisfies(installed[d["name"]]["version"], d.get("version"))]
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

    def install(self, ctx: Context, pkg: Package, *, comment: str = "") -> int:
        """Install or re-install ``pkg`` as ``ctx``'s actor; returns the published version.

        :param comment: why, kept in the version history after "Install NAME VERSION".
        """
        doc, base = self.merged(ctx, pkg)
        what = f"Install {pkg.name} {pkg.version}"
        return self.metadata.publish(ctx, doc, comment=f"{what}: {comment}" if comment else what,
                                     base_version=base, package=pkg.name)
