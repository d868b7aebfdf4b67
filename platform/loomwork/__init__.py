"""Loomwork: a metadata-driven low-code platform.

The public facade: :data:`__version__`, :func:`create_app`, :data:`hookimpl` and the
typed errors.
"""
from loomwork.metadata.errors import (
    AuthenticationRequired,
    BadQuery,
    ConflictError,
    HeavyChangeRefused,
    LoomworkError,
    MetadataError,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from loomwork.runtime import hookimpl

__version__ = "0.1.0"


def create_app(settings=None, *, plugin_manager=None):
    """Build the Flask app (see :func:`loomwork.app.create_app`)."""
    from loomwork.app import create_app as _create_app

    return _create_app(settings, plugin_manager=plugin_manager)


__all__ = [
    "__version__", "create_app", "hookimpl", "LoomworkError", "ValidationError", "MetadataError",
    "BadQuery", "AuthenticationRequired", "PermissionDenied", "NotFound", "ConflictError",
    "HeavyChangeRefused",
]
