"""Typed errors shared by every layer.

They live in the lowest layer so the metadata, the runtime and the shell raise and
catch the same classes; the HTTP mapping happens in one place
(:mod:`loomwork.api.errors`).
"""
from __future__ import annotations

from collections.abc import Mapping


class LoomworkError(Exception):
    """Base of every error Loomwork raises on purpose."""

    status = 400
    title = "Bad request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(LoomworkError):
    """Input failed validation; ``errors`` maps a field path to its messages."""

    status = 422
    title = "Validation failed"

    def __init__(self, errors: Mapping[str, list[str] | str], message: str | None = None):
        self.errors = {k: ([v] if isinstance(v, str) else list(v)) for k, v in errors.items()}
        if message is None:
            first = next(iter(self.errors.items()), ("", [""]))
            message = f"{first[0]}: {first[1][0]}" if first[0] else first[1][0]
            if len(self.errors) > 1:
                message += f" (and {len(self.errors) - 1} more)"
        super().__init__(message)


class MetadataError(ValidationError):
    """A metadata document is invalid; keys are paths like ``objects.deal.fields.amount``."""

    title = "Invalid metadata"


class BadQuery(LoomworkError):
    """A malformed filter, sort, cursor or query parameter."""

    status = 400
    title = "Bad query"


class AuthenticationRequired(LoomworkError):
    status = 401
    title = "Authentication required"


class PermissionDenied(LoomworkError):
    status = 403
    title = "Forbidden"


class NotFound(LoomworkError):
    status = 404
    title = "Not found"


class ConflictError(LoomworkError):
    """A stale ``row_version``, a concurrent publish, or a lookup still in use."""

    status = 409
    title = "Conflict"


class HeavyChangeRefused(LoomworkError):
    """A schema change that would rewrite a populated table inside a request."""

    status = 409
    title = "Heavy schema change refused"


class TooManyAttempts(LoomworkError):
    """Too many password checks for an account or from an address; ``Retry-After`` says
    when the next one will be taken."""

    status = 429
    title = "Too many attempts"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)
        self.headers = {"Retry-After": str(self.retry_after)}
