"""Browser pages of the shell: sign-in, sign-out, password change and the start page.

The generated end-user UI (forms, lists, record pages) comes with the UI issue; this
is the minimum a person needs to sign in and find the API.
"""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for
from werkzeug.exceptions import Forbidden

from loomwork.metadata.errors import (
    AuthenticationRequired,
    LoomworkError,
    PermissionDenied,
    ValidationError,
)
from loomwork.metadata.model import label_text
from loomwork.runtime.compiled import READ_MAX_AGE
from loomwork.runtime.tenancy import TENANT_NAME

from .. import auth
from ..state import state

bp = Blueprint("web", __name__)


def _workspace(raw: str | None) -> str:
    """The tenant a sign-in page is for: ``/login?tenant=acme``, else the default one.

    The page never lists tenants: their names are not for anonymous visitors to collect.
    """
    return raw if raw and TENANT_NAME.match(raw) else state().settings.default_tenant


@bp.get("/login")
def login_form():
    tenant = _workspace(request.args.get("tenant"))
    return render_template("login.html", csrf=auth.csrf_token(), error=None, tenants=[tenant],
                           default_tenant=tenant)


@bp.post("/login")
def login_submit():
    asked = request.form.get("tenant") or None  # a bad name fails like a wrong password
    tenant = _workspace(asked)
    try:
        auth.check_csrf(request.form.get("csrf_token"))
        auth.login(asked, request.form.get("username", ""), request.form.get("password", ""))
    except LoomworkError as exc:
        return render_template("login.html", csrf=auth.csrf_token(), error=exc.message, tenants=[tenant],
                               default_tenant=tenant, username=request.form.get("username", "")), \
            exc.status, getattr(exc, "headers", {})
    return redirect(url_for("web.home"))


@bp.post("/logout")
def logout_submit():
    if session.get("uid"):
        try:
            auth.check_csrf(request.form.get("csrf_token"))
        except PermissionDenied as exc:
            raise Forbidden(exc.message) from None
    auth.logout()
    return redirect(url_for("web.login_form"))


@bp.get("/")
def home():
    try:
        ctx = auth.current_context()
    except AuthenticationRequired:
        return redirect(url_for("web.login_form"))
    st = state()
    app = st.services.runtime.compiled(ctx.tenant, max_age=READ_MAX_AGE)
    objects = [
        {"name": n, "label": label_text(app.object(n).defn.plural_label or app.object(n).defn.label, ctx.locale, n)}
        for n in st.services.permissions.readable_objects(ctx, app)
    ]
    return render_template("home.html", ctx=ctx, objects=objects, csrf=auth.csrf_token(), version=app.version)


@bp.route("/password", methods=["GET", "POST"])
def password():
    try:
        ctx = auth.current_context()
    except AuthenticationRequired:
        return redirect(url_for("web.login_form"))
    except PermissionDenied as exc:  # a POST without the form's CSRF token
        raise Forbidden(exc.message) from None
    message, error = None, None
    if request.method == "POST":
        try:
            state().services.users.set_password(ctx, ctx.actor.id, request.form.get("new_password", ""),
                                                old_password=request.form.get("old_password", ""))
            auth.refresh_session(ctx)
            message = "Your password has been changed."
        except ValidationError as exc:
            error = "; ".join(f"{k.replace('_', ' ')} {', '.join(v)}" for k, v in exc.errors.items())
    return render_template("password.html", ctx=ctx, csrf=auth.csrf_token(), message=message, error=error)
