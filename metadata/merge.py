"""Three-way merge of metadata documents, and the base an exported document names.

``loomwork meta export`` writes the version it exported (``base_version``) and a
digest of that version's document (``base_digest``) at the top of the file. When the
file comes back and the tenant has published since, :func:`merge3` merges per element
and property, by name: *base* is the exported version, *yours* the file, *theirs* the
head. A property only one side changed takes that side's value; one both changed the
same way is no conflict; one both changed differently is a :class:`Conflict`. Mappings
(objects, fields, labels, permissions by object) merge key by key, except one both
sides added (which differs: one conflict); lists (a form's tabs, a choice's options)
and scalars are single values. The merged document then
passes every publish check, like any other (decision D58).

Nothing here touches a database; :meth:`loomwork.runtime.publishing.MetadataService.rebase`
reads the versions and :class:`MergeConflict` reports conflicts.
"""
from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .diff import doc_diff
from .errors import ConflictError, ValidationError

#: The top-level keys of an exported document that say what it was exported from.
BASE_VERSION, BASE_DIGEST = "base_version", "base_digest"
_ABSENT: Any = object()


def digest(doc: Mapping[str, Any]) -> str:
    """A short fingerprint of a stored document: tells this tenant's version 7 from
    another tenant's (or installation's) version 7."""
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def export_doc(version: int, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document as ``meta export`` writes it: its base first, then its sections."""
    return {BASE_VERSION: version, BASE_DIGEST: digest(doc), **doc}


def split_export(doc: Mapping[str, Any]) -> tuple[dict[str, Any], int | None, str | None]:
    """``(document, base_version, base_digest)`` of a file written by :func:`export_doc`
    (both None for a file that names no base).

    :raises ValidationError: when the base keys are malformed.
    """
    body = {k: v for k, v in doc.items() if k not in (BASE_VERSION, BASE_DIGEST)}
    version, fingerprint = doc.get(BASE_VERSION), doc.get(BASE_DIGEST)
    if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 0):
        raise ValidationError({BASE_VERSION: ["must be the version number the file was exported from"]})
    if fingerprint is not None and (not isinstance(fingerprint, str) or version is None):
        raise ValidationError({BASE_DIGEST: [f"must be text, next to {BASE_VERSION}, as meta export writes it"]})
    return body, version, fingerprint


@dataclass(frozen=True)
class Conflict:
    """A property both sides changed differently. ``None`` stands for absent (added
    on one side, deleted on the other); ``changed_in`` lists the later versions that
    changed it: ``{"version", "by", "at"}``."""

    path: str
    base: Any
    yours: Any
    theirs: Any
    changed_in: tuple[Mapping[str, Any], ...] = ()

    @property
    def summary(self) -> str:
        def what(value: Any) -> str:
            return "deleted it" if value is None else "added it" if self.base is None else "changed it"
        return f"you {what(self.yours)}, and version {self.changed_in[-1]['version'] if self.changed_in else 'head'} " \
               f"{what(self.theirs)}"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "base": self.base, "yours": self.yours, "theirs": self.theirs,
                "changed_in": [dict(c) for c in self.changed_in], "summary": self.summary}


@dataclass(frozen=True)
class Merge:
    """The merged document, the changes of theirs it took (``doc_diff`` entries: path,
    op, old, new), and the conflicts (when any, ``doc`` is not to be published)."""

    doc: dict[str, Any]
    taken: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)


def merge3(base: Mapping[str, Any], yours: Mapping[str, Any], theirs: Mapping[str, Any]) -> Merge:
    """Merge ``yours`` and ``theirs``, both edited from ``base`` (normalised documents)."""
    taken: list[dict[str, Any]] = []
    conflicts: list[Conflict] = []
    doc = _merge(base, yours, theirs, "", taken, conflicts)
    return Merge(doc if doc is not _ABSENT else {}, taken, conflicts)


def _merge(b: Any, y: Any, t: Any, path: str, taken: list[dict[str, Any]], conflicts: list[Conflict]) -> Any:
    if y == t:
        return y
    if y == b:
        taken.extend(doc_diff(b, t, path) if isinstance(b, Mapping) and isinstance(t, Mapping)
                     else [_change(path, b, t)])
        return t
    if t == b:
        return y
    # Both sides changed it. Mappings merge key by key, but not ones both added: without
    # a base, a key one side left out cannot be told from a key it deleted.
    if isinstance(y, Mapping) and isinstance(t, Mapping) and isinstance(b, Mapping):
        out = {}
        for key in [*y, *(k for k in t if k not in y)]:
            value = _merge(b.get(key, _ABSENT), y.get(key, _ABSENT), t.get(key, _ABSENT),
                           f"{path}.{key}" if path else str(key), taken, conflicts)
            if value is not _ABSENT:
                out[key] = value
        return out
    conflicts.append(Conflict(path, _value(b), _value(y), _value(t)))
    return y


def _value(v: Any) -> Any:
    return None if v is _ABSENT else v


def _change(path: str, old: Any, new: Any) -> dict[str, Any]:
    op = "added" if old is _ABSENT else "removed" if new is _ABSENT else "changed"
    return {"path": path, "op": op, "old": _value(old), "new": _value(new)}


class MergeConflict(ConflictError):
    """A document edited from an older version conflicts with what was published since."""

    title = "Metadata conflict"

    def __init__(self, base: int, head: int, conflicts: list[Conflict]) -> None:
        self.base, self.head, self.conflicts = base, head, conflicts
        n = len(conflicts)
        super().__init__(
            f"metadata changed since version {base} (now {head}): {n} change{'s' if n != 1 else ''} "
            f"conflict{'s' if n == 1 else ''} with yours ({', '.join(c.path for c in conflicts)}); "
            f"merge them by hand, or publish yours as it is with force")

    @property
    def problem_members(self) -> dict[str, Any]:
        """What the API adds to its 409 problem document."""
        return {"base_version": self.base, "head_version": self.head,
                "conflicts": [c.as_dict() for c in self.conflicts]}
