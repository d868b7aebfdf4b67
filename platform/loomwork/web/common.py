"""What every generated page needs: the signed-in context, its locale, translated
strings and the navigation (the objects the user may read, grouped by package)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import g, request

from loomwork.metadata.model import label_text
from loomwork.runtime.compiled import READ_MAX_AGE, CompiledApp
from loomwork.runtime.context import Context
from loomwork.runtime.participants import MAX_RECORD_ID, written_id

from .. import auth
from ..state import state
from . import i18n


def _(message: str, **values: Any) -> str:
    """``message`` in the current request's language (Babel finds the literal here)."""
    return i18n.gettext(locale(), message, **values)


def locale() -> str:
    return g.get("lw_locale") or "en"


def zone() -> str:
    """The time zone the page shows times in: the signed-in user's, else UTC."""
    return i18n.page_zone()


def digits(text: str) -> bool:
    """Whether ``text`` is a plain number: ASCII digits only (``str.isdigit`` also
    takes "²", which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def parse_id(raw: Any, bound: int = MAX_RECORD_ID) -> int | None:
    """``raw`` (a URL segment, a form or query value) as an id, or None: written plainly,
    within ``bound`` (:func:`loomwork.runtime.participants.written_id`): a record's by
    default, ``systables.MAX_ID`` for a user or a task."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = str(raw)
    return written_id(raw, bound)


def local_path(raw: str | None) -> str | None:
    """``raw`` if it is a path on this site, else None: where a page may send the
    browser back to (never another host, however the URL is disguised)."""
    if not raw or not raw.startswith("/") or any(c < " " or c in "\\\x7f" for c in raw):
        return None
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc or raw.startswith("//"):
        return None
    return raw


def set_locale(ctx: Context | None) -> None:
    """Signed-in users read their language (the chosen one, else the browser's) in their
    time zone; visitors the browser's language (or ``?lang=``) in UTC."""
    chosen = ctx.locale if ctx is not None else (request.args.get("lang") or
                                                 i18n.negotiate(request.headers.get("Accept-Language", "")))
    g.lw_locale = chosen if chosen in i18n.SUPPORTED else "en"
    g.lw_zone = ctx.time_zone if ctx is not None and ctx.time_zone else "UTC"


def signed_in() -> Context:
    """The caller's context with the page locale set. :raises AuthenticationRequired:"""
    ctx = auth.current_context()
    set_locale(ctx)
    return ctx


def compiled(ctx: Context) -> CompiledApp:
    app = state().services.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
    g.lw_version = app.version
    return app


@dataclass(frozen=True)
class NavGroup:
    label: str
    objects: list[dict[str, str]]


def object_label(app: CompiledApp, name: str, *, plural: bool = False) -> str:
    defn = app.object(name).defn
    return label_text((defn.plural_label or defn.label) if plural else defn.label, locale(),
                      name.replace("_", " ").capitalize())


def navigation(ctx: Context, app: CompiledApp) -> list[NavGroup]:
    """Readable objects grouped by the package that brought them; the tenant's own last."""
    groups: dict[str | None, list[dict[str, str]]] = {}
    for name in state().services.permissions.readable_objects(ctx, app):
        owner = app.ownership.get(f"objects.{name}", {}).get("package")
        groups.setdefault(owner, []).append({"name": name, "label": object_label(app, name, plural=True)})
    out = []
    for package in sorted(groups, key=lambda p: (p is None, p or "")):
        manifest = app.meta.packages.get(package, {}) if package else {}
        title = label_text(manifest.get("title") or manifest.get("label"), locale(), package) if package else _("My objects")
        out.append(NavGroup(title, sorted(groups[package], key=lambda o: o["label"])))
    return out
