"""Every error of the API as RFC 9457 ``application/problem+json``, mapped in one place."""
from __future__ import annotations

import logging

from flask import request
from werkzeug.exceptions import HTTPException

from loomwork.metadata.errors import LoomworkError, ValidationError

from . import bp
from .jsonio import respond

log = logging.getLogger("loomwork.api")


def problem(status: int, title: str, detail: str, **extra) -> object:
    doc = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    headers = {"WWW-Authenticate": 'Bearer realm="loomwork"'} if status == 401 else None
    return respond(doc, status, headers, mimetype="application/problem+json")


def loomwork_error(exc: LoomworkError):
    extra = {"errors": exc.errors} if isinstance(exc, ValidationError) else {}
    return problem(exc.status, exc.title, exc.message, **extra)


def http_error(exc: HTTPException):
    return problem(exc.code or 500, exc.name, exc.description or exc.name)


def unexpected_error(exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem(500, "Internal server error", "something went wrong on our side; it has been logged")


def register(app) -> None:
    """API paths answer problem documents even for routing errors (404, 405, 413)."""
    app.register_error_handler(LoomworkError, loomwork_error)

    def any_http(exc: HTTPException):
        if request.path.startswith(bp.url_prefix):
            return http_error(exc)
        return exc

    app.register_error_handler(HTTPException, any_http)

    def any_error(exc: Exception):
        if isinstance(exc, HTTPException):
            return any_http(exc)
        return unexpected_error(exc)

    app.register_error_handler(Exception, any_error)
