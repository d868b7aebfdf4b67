"""Why an actor may not do something: one value for the refusal a service raises and
for the disabled button a page shows.

A service that decides (may this user edit, submit, take this transition?) answers
with a :class:`Reason` or None; its write path raises the same reason as an error.
So the page never decides a policy itself, and a button is shown disabled with the
very words the server would refuse with — in the user's language, because pages
translate a reason by its ``code`` (with ``params``) and fall back to ``message``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from loomwork.metadata.errors import LoomworkError, PermissionDenied


@dataclass(frozen=True)
class Reason:
    """A refusal: ``code`` names the rule (stable; pages translate it), ``message`` says
    it in English (the API's words), ``params`` fill the translated text."""

    code: str
    message: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def error(self, kind: type[LoomworkError] = PermissionDenied) -> LoomworkError:
        return kind(self.message)

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "params": dict(self.params)}


@dataclass(frozen=True)
class Ability:
    """Whether something may be done now; when not, why."""

    allowed: bool
    reason: Reason | None = None

    @classmethod
    def yes(cls) -> Ability:
        return cls(True)

    @classmethod
    def no(cls, reason: Reason) -> Ability:
        return cls(False, reason)

    def as_dict(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reason": self.reason.as_dict() if self.reason else None}
