"""The REST API under ``/api/v1``: thin views that parse, call a runtime service and
serialise. Errors become ``application/problem+json`` in :mod:`.errors`."""
from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.after_request
def _no_store(response):
    """API answers hold tenant data: no shared or browser cache keeps them unless a view
    says otherwise (a record's GET allows revalidation with its ETag)."""
    response.headers.setdefault("Cache-Control", "no-store")
    return response


from . import approvals, auth, errors, meta, openapi, records, scripts, views  # noqa: E402,F401  (routes register on import)
