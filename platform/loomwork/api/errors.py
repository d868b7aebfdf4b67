"""Every error of the API as RFC 9457 ``application/problem+json``, mapped in one place."""
from __future__ import annotations

import logging

from flask import current_app, request
from werkzeug.exceptions import HTTPException, InternalServerError, NotFound

from loomwork.metadata.errors import LoomworkError, ValidationError

from . import bp
from .jsonio import respond

log = logging.getLogger("loomwork.api")


def problem_document(status: int, title: str, detail: str, **extra) -> dict:
    """The RFC 9457 document of an error (also what the development server answers for
    the errors it raises itself, :mod:`loomwork.serving`)."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


def problem(status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra) -> object:
    doc = problem_document(status, title, detail, **extra)
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="loomwork"')
    return respond(doc, status, headers or None, mimetype="application/problem+json")


def loomwork_error(exc: LoomworkError):
    extra = {"errors": exc.errors} if isinstance(exc, ValidationError) else {}
    # Members an error adds to its problem document (a metadata conflict's three-way report).
    extra.update(getattr(exc, "problem_members", None) or {})
    return problem(exc.status, exc.title, exc.message, getattr(exc, "headers", None), **extra)


def _detail(exc: HTTPException) -> str:
    """Say what went wrong in words that help an API client (Werkzeug's texts are for pages)."""
    code = exc.code or 500
    if code == 404:
        if exc.description != NotFound.description:  # raised with its own words (an id out of range)
            return exc.description
        return (f"no API endpoint {request.path}; the endpoints are listed in "
                f"{bp.url_prefix}/openapi.json")
    if code == 405:
        allowed = sorted(m for m in getattr(exc, "valid_methods", None) or () if m not in ("HEAD", "OPTIONS"))
        return (f"{request.method} is not allowed on {request.path}"
                + (f"; use {', '.join(allowed)}" if allowed else ""))
    if code == 413:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return f"the request body is larger than {limit} bytes" if limit else "the request body is too large"
    return exc.description or exc.name


def http_error(exc: HTTPException):
    # Keep the exception's own headers (Allow on 405, Retry-After, ...) but not its HTML content type.
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return problem(exc.code or 500, exc.name, _detail(exc), headers)


def unexpected_error(exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return problem(500, "Internal server error", "something went wrong on our side; it has been logged")


def register(app) -> None:
    """API paths answer problem documents even for routing errors (404, 405, 413, 414)."""
    app.register_error_handler(LoomworkError, loomwork_error)

    def any_http(exc: HTTPException):
        if is_api_path(request.path):
            return http_error(exc)
        return exc

    app.register_error_handler(HTTPException, any_http)

    def any_error(exc: Exception):
        if isinstance(exc, HTTPException):
            return any_http(exc)
        if is_api_path(request.path):
            return unexpected_error(exc)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return InternalServerError(original_exception=exc)  # pages get Flask's HTML error

    app.register_error_handler(Exception, any_error)


def is_api_path(path: str) -> bool:
    """Whether ``path`` is under the API (which answers problem documents)."""
    return path == bp.url_prefix or path.startswith(bp.url_prefix + "/")
