"""Load a package: a folder of YAML files plus a ``package.yaml`` manifest.

Every file other than the manifest holds one or more YAML documents, each with a
``kind`` (``object``, ``role``, ``form`` or ``view``) and a ``name``. Errors name the
file and the path inside the document. Cross-references (a form's fields, a view's
filter) are checked when the package is installed, against the tenant's metadata.

A :class:`Template` is a package a plugin offers by name through the
``loomwork_templates`` hook (an industry template, such as the sample CRM), so it
installs as ``loomwork package install crm_sample`` without knowing its folder.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import MetadataError
from .validation import schema_errors, validate_manifest

MAX_FILE_BYTES = 1_000_000
#: Document kind -> the section of the app document (and the :class:`Package` attribute) it goes to.
KINDS = {"object": "objects", "role": "roles", "form": "forms", "view": "views", "script": "scripts",
         "approval": "approvals", "workflow": "workflows"}


@dataclass
class Package:
    manifest: dict[str, Any]
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    roles: dict[str, dict[str, Any]] = field(default_factory=dict)
    forms: dict[str, dict[str, Any]] = field(default_factory=dict)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    scripts: dict[str, dict[str, Any]] = field(default_factory=dict)
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def version(self) -> str:
        return self.manifest["version"]


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # libyaml when present
    """PyYAML's safe loader, but a key repeated in one mapping is an error rather than
    the last one silently winning (two fields of the same name would lose one)."""


def _mapping_without_repeats(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # ``<<: *base`` keys may be overridden on purpose
        key = loader.construct_object(key_node, deep=True)
        try:
            repeated = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key; the constructor below reports it
            continue
        if repeated:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                key_node.start_mark)
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_repeats)


def _read_yaml(path: Path, rel: str) -> list[Any]:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise MetadataError({rel: [f"file is larger than {MAX_FILE_BYTES} bytes"]})
    try:
        text = path.read_text(encoding="utf-8")
        return [d for d in yaml.load_all(text, Loader=_StrictLoader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise MetadataError({rel: [f"invalid YAML{where}: {getattr(exc, 'problem', exc)}"]}) from None
    except UnicodeDecodeError:
        raise MetadataError({rel: ["is not UTF-8 text"]}) from None


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The checked manifest (``package.yaml``) of a package folder.
    :raises MetadataError: when it is missing or invalid."""
    root = Path(folder)
    manifest_path = root / "package.yaml"
    if not manifest_path.is_file():
        raise MetadataError({str(root): ["is not a package: package.yaml is missing"]})
    docs = _read_yaml(manifest_path, "package.yaml")
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise MetadataError({"package.yaml": ["must hold exactly one mapping"]})
    validate_manifest(docs[0], "package.yaml")
    return docs[0]


def load_package(folder: str | Path) -> Package:
    """Read a package folder. :raises MetadataError: on any problem, naming the file."""
    root = Path(folder)
    manifest_path = root / "package.yaml"
    pkg = Package(read_manifest(root))
    files = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p != manifest_path)
    errors: dict[str, list[str]] = {}
    first_seen: dict[tuple[str, str], str] = {}
    for path in files:
        rel = str(path.relative_to(root))
        for i, doc in enumerate(_read_yaml(path, rel)):
            where = f"{rel}#{i + 1}" if i else rel
            if not isinstance(doc, dict) or doc.get("kind") not in KINDS or not isinstance(doc.get("name"), str):
                errors.setdefault(where, []).append("each document needs kind (object, role, form or view) and name")
                continue
            kind, name = doc["kind"], doc["name"]
            section = getattr(pkg, KINDS[kind])
            if name in section:
                errors.setdefault(where, []).append(
                    f"{kind} {name!r} is defined twice (first in {first_seen[(kind, name)]})")
                continue
            first_seen[(kind, name)] = where
            body = {k: v for k, v in doc.items() if k not in ("kind", "name")}
            for path_, msg in schema_errors(kind, body, f"{KINDS[kind]}.{name}"):
                errors.setdefault(f"{where}: {path_}", []).append(msg)
            section[name] = body
    if errors:
        raise MetadataError(errors)
    return pkg


@dataclass(frozen=True)
class Template:
    """A package a plugin offers by name (``loomwork_templates``): what ``loomwork
    package list`` shows, read from its manifest; the rest is read when it installs.

    :param name: the manifest's ``name``, by which it installs.
    :param title: the manifest's translatable ``title``.
    :param path: the package folder.
    """

    name: str
    version: str
    title: Any
    path: Path
    description: str = ""

    @classmethod
    def at(cls, folder: str | Path) -> Template:
        """The template of the package in ``folder``. :raises MetadataError: for a
        missing or invalid manifest (naming the folder)."""
        try:
            manifest = read_manifest(folder)
        except MetadataError as exc:
            raise MetadataError({f"{folder}: {k}" if k != str(folder) else k: v for k, v in exc.errors.items()}) \
                from None
        return cls(manifest["name"], manifest["version"], manifest["title"], Path(folder),
                   manifest.get("description", ""))

    def load(self) -> Package:
        """The whole package. :raises MetadataError: on any problem, naming the file."""
        return load_package(self.path)
