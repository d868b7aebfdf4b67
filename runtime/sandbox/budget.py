"""What one script run may use, and what it did use.

Limits come from the operator's defaults (:data:`DEFAULTS`, overridable per
installation) and a script's own overrides, which may never pass the operator's
ceiling. Scripts read theirs as ``ctx.budget``.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from loomwork.metadata.errors import LoomworkError

#: The name a limit has in messages, metadata and ``ctx.budget``.
LIMIT_LABELS = {
    "steps": "steps",
    "wall_ms": "wall time (ms)",
    "queries": "queries",
    "rows_read": "rows read",
    "rows_written": "rows written",
    "memory_mib": "memory (MiB)",
    "output_bytes": "output (bytes)",
}


@dataclass(frozen=True)
class Limits:
    steps: int = 1_000_000
    wall_ms: int = 1_000
    queries: int = 100
    rows_read: int = 10_000
    rows_written: int = 1_000
    memory_mib: int = 256
    output_bytes: int = 1024 * 1024

    def capped(self, overrides: Mapping[str, int] | None, ceiling: Limits) -> Limits:
        """These limits with a script's ``overrides``, none above ``ceiling``."""
        if not overrides:
            return self
        known = {f.name for f in fields(self)}
        return replace(self, **{k: min(int(v), getattr(ceiling, k)) for k, v in overrides.items() if k in known})

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


#: Defaults for ``before_*`` scripts (they hold up a user's save).
DEFAULTS = Limits()
#: ``after_*``, action and scheduled scripts may take longer by default.
LONG_RUNNING = replace(DEFAULTS, wall_ms=5_000)
#: The most any script may ask for.
CEILING = Limits(steps=20_000_000, wall_ms=60_000, queries=2_000, rows_read=200_000, rows_written=20_000,
                 memory_mib=512, output_bytes=8 * 1024 * 1024)


class BudgetExceeded(LoomworkError):
    """A run went past one of its limits; the write it was part of is rolled back."""

    status = 422
    title = "Script limit exceeded"

    def __init__(self, limit: str, used: Any, allowed: Any, script: str | None = None) -> None:
        self.limit, self.used, self.allowed, self.script = limit, used, allowed, script
        where = f"script {script!r} " if script else "the script "
        super().__init__(f"{where}went past its {LIMIT_LABELS.get(limit, limit)} limit ({allowed})")


class ScriptFailed(LoomworkError):
    """A script raised an error of its own (not a limit, not ``ctx.error``)."""

    status = 422
    title = "Script failed"

    def __init__(self, message: str, script: str | None = None, line: int | None = None) -> None:
        self.script, self.line = script, line
        where = f"script {script!r}" if script else "the script"
        at = f" at line {line}" if line else ""
        super().__init__(f"{where} failed{at}: {message}")
