"""The end-user UI: sign-in, profile, and pages generated from metadata.

Server-rendered Jinja pages with small JavaScript modules on top (ARCHITECTURE §9):
:mod:`.lists` (list views), :mod:`.records` (record pages and forms), :mod:`.recycle`
(deleting and the recycle bin), :mod:`.profile` (the user's own settings). This module
holds the blueprint, sign-in, the start page and the error pages.
"""
from __future__ import annotations

from flask import (
    Blueprint,
    current_app,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.exceptions import Forbidden

from loomwork.metadata.errors import (
    AuthenticationRequired,
    LoomworkError,
    NotFound,
    PermissionDenied,
)
from loomwork.metadata.model import label_text
from loomwork.runtime.tenancy import TENANT_NAME

from .. import auth
from ..state import state
from . import i18n, widgets
from .common import _, compiled, local_path, locale, navigation, object_label, set_locale, signed_in
from .present import choice_css, format_plain
from .titles import Titles

bp = Blueprint("web", __name__)


@bp.record_once
def _setup(setup_state) -> None:
    i18n.install(setup_state.app.jinja_env)
    widgets.install(setup_state.app, setup_state.app.extensions["loomwork"].services.runtime.widgets)


@bp.app_context_processor
def _page_globals():
    return {"locales": i18n.SUPPORTED, "messages_js": i18n.js_messages, "lang": locale(),
            "ctx_version": g.get("lw_version", 0)}


@bp.app_template_filter("label")
def _label_filter(label) -> str:
    """A translatable metadata label in the page's language."""
    return label_text(label, locale(), "")


@bp.get("/ui/choices.css")
def choice_styles():
    """Colours of choice options as classes (the CSP allows no inline styles), per version."""
    ctx = signed_in()
    app = compiled(ctx)
    css = app.artefact("choices.css", lambda: choice_css(app))
    resp = current_app.response_class(css, mimetype="text/css")
    resp.headers["Cache-Control"] = "private, max-age=86400"  # the URL carries the version
    return resp


@bp.errorhandler(LoomworkError)
def _page_error(exc: LoomworkError):
    """Pages answer errors as pages: sign-in for a lost session, else an error page."""
    if isinstance(exc, AuthenticationRequired):
        return redirect(url_for("web.login_form", next=request.full_path.rstrip("?")))
    try:
        ctx = auth.current_context()
        set_locale(ctx)
        nav = navigation(ctx, compiled(ctx))
    except LoomworkError:
        ctx, nav = None, []
        set_locale(None)
    title = (_("Not found") if isinstance(exc, NotFound) else _("Not allowed") if isinstance(exc, PermissionDenied)
             else _("Something is not right"))
    return render_template("error.html", ctx=ctx, nav=nav, csrf=auth.csrf_token(), title=title,
                           message=exc.message), exc.status


#: Remembers the workspace of the last sign-in in this browser (a name the visitor typed
#: themself, so it tells them nothing new), for the next sign-in form.
WORKSPACE_COOKIE = "loomwork_workspace"
WORKSPACE_COOKIE_DAYS = 365


def _workspace(raw: str | None) -> str:
    """The workspace (tenant) a sign-in form starts with: ``/login?tenant=acme``, else the
    one this browser last signed in to, else the default one.

    The page never lists tenants, and shows a name without checking that it exists:
    their names are not for anonymous visitors to collect.
    """
    for candidate in (raw, request.cookies.get(WORKSPACE_COOKIE)):
        if candidate and TENANT_NAME.match(candidate):
            return candidate
    return state().settings.default_tenant


def _next_url(raw: str | None) -> str:
    """Where to go after signing in: a path on this site only (never another host)."""
    return local_path(raw) or url_for("web.home")


@bp.get("/login")
def login_form():
    set_locale(None)
    tenant = _workspace(request.args.get("tenant"))
    return render_template("login.html", csrf=auth.csrf_token(), error=None, tenant=tenant,
                           next=request.args.get("next", ""))


@bp.post("/login")
def login_submit():
    set_locale(None)
    # An unknown or malformed workspace fails exactly like a wrong password (auth.login).
    typed = request.form.get("tenant", "").strip()
    asked = typed.lower() or None  # tenant names are lower case; forgive the capitals
    try:
        auth.check_csrf(request.form.get("csrf_token"))
        user = auth.login(asked, request.form.get("username", ""), request.form.get("password", ""))
    except LoomworkError as exc:
        message = (_("Wrong workspace, username or password.") if isinstance(exc, AuthenticationRequired)
                   else _("Too many failed sign-ins; wait a few minutes and try again.")
                   if exc.status == 429 else _("Your session expired; please try again."))
        # What was typed stays in the form (bounded), so a mistyped workspace can be fixed.
        return render_template("login.html", csrf=auth.csrf_token(), error=message,
                               tenant=(typed or _workspace(None))[:64], username=request.form.get("username", ""),
                               next=request.form.get("next", "")), exc.status, getattr(exc, "headers", {})
    profile.remember_browser_zone(user, request.form.get("time_zone"))
    resp = redirect(_next_url(request.form.get("next")))
    resp.set_cookie(WORKSPACE_COOKIE, session["tenant"], max_age=WORKSPACE_COOKIE_DAYS * 86400, httponly=True,
                    samesite="Lax", secure=current_app.config["SESSION_COOKIE_SECURE"])
    return resp


@bp.post("/logout")
def logout_submit():
    if session.get("sid"):
        try:
            auth.check_csrf(request.form.get("csrf_token"))
        except PermissionDenied as exc:
            raise Forbidden(exc.message) from None
    auth.logout()
    return redirect(url_for("web.login_form"))


@bp.get("/")
def home():
    try:
        ctx = signed_in()
    except AuthenticationRequired:
        return redirect(url_for("web.login_form"))
    app = compiled(ctx)
    recent = state().services.records.recent(ctx)
    titles = Titles(ctx, app)
    for name, rid, _when in recent:
        titles.want(name, [rid])
    titles.fetch()
    loc = locale()
    recent_view = [{"object": object_label(app, name), "title": titles.title(name, rid),
                    "link": titles.link(name, rid), "when": format_plain("datetime", when.isoformat(), loc)}
                   for name, rid, when in recent if name in app.objects]
    return render_template("home.html", ctx=ctx, nav=navigation(ctx, app), csrf=auth.csrf_token(),
                           version=app.version, recent=recent_view, home=True)


from . import approvals, lists, profile, records, recycle  # noqa: E402,F401  (routes register on import)
