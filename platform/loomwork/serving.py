"""The development server (``loomwork serve``, ``loomwork demo``): Werkzeug's, with the
errors it answers before the app sees a request in the API's format.

Python's HTTP server refuses some requests itself: a request line over 64 KiB (414),
header lines too long or too many (431), a malformed request line (400). It answers
them as HTML; under the API this handler answers them as ``application/problem+json``,
as the app answers everything else there (the app refuses long query strings itself
below that size, :data:`loomwork.inputs.MAX_QUERY_BYTES`).
"""
from __future__ import annotations

from http import HTTPStatus
from urllib.parse import urlsplit

from werkzeug.serving import WSGIRequestHandler

from loomwork.runtime.tenancy import json_dumps

from .api.errors import is_api_path, problem_document

_NO_BODY = (HTTPStatus.NO_CONTENT, HTTPStatus.RESET_CONTENT, HTTPStatus.NOT_MODIFIED)


class RequestHandler(WSGIRequestHandler):
    """Werkzeug's request handler; its own errors under the API are problem documents."""

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if not is_api_path(self._target_path()):
            super().send_error(code, message, explain)
            return
        short, long = self.responses.get(code, ("Error", ""))
        detail = explain or long or short
        if code == HTTPStatus.REQUEST_URI_TOO_LONG:
            detail = "the request line is longer than 65536 bytes; send a shorter query string"
        self.log_error("code %d, message %s", code, message or short)
        self.send_response(code, message)
        self.send_header("Connection", "close")
        body = b""
        if code >= 200 and code not in _NO_BODY:
            body = json_dumps(problem_document(code, short, detail)).encode()
            self.send_header("Content-Type", "application/problem+json")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _target_path(self) -> str:
        """The path the request line names; read from the raw line, as a refused request
        has none parsed (and one connection serves many requests)."""
        parts = (getattr(self, "raw_requestline", b"") or b"").split(b" ", 2)
        if len(parts) < 2:
            return ""
        try:
            return urlsplit(parts[1].decode("latin-1")).path
        except ValueError:
            return ""
