"""Browser pages of the shell: sign-in, sign-out, password change and the start page.

The generated end-user UI (forms, lists, record pages) comes with the UI issue; this
is the minimum a person needs to sign in and find the API.
"""
from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, session, url_for

from loomwork.metadata.errors import AuthenticationRequired, LoomworkError, ValidationError
from loomwork.metadata.model import label_text

from .. import auth
from ..state import state

bp = Blueprint("web", __name__)


@bp.get("/login")
def login_form():
    st = state()
    return render_template("login.html", csrf=auth.csrf_token(), error=None,
                           tenants=[t["name"] for t in st.platform.tenants()],
                           default_tenant=st.settings.default_tenant)


@bp.post("/login")
def login_submit():
    st = state()
    tenants = [t["name"] for t in st.platform.tenants()]
    try:
        auth.check_csrf(request.form.get("csrf_token"))
        auth.login(request.form.get("tenant") or None, request.form.get("username", ""),
                   request.form.get("password", ""))
    except (AuthenticationRequired, LoomworkError) as exc:
        return render_template("login.html", csrf=auth.csrf_token(), error=exc.message, tenants=tenants,
                               default_tenant=request.form.get("tenant") or st.settings.default_tenant,
                               username=request.form.get("username", "")), exc.status
    return redirect(url_for("web.home"))


@bp.post("/logout")
def logout_submit():
    auth.check_csrf(request.form.get("csrf_token"))
    auth.logout()
    return redirect(url_for("web.login_form"))


@bp.get("/")
def home():
    try:
        ctx = auth.current_context()
    except AuthenticationRequired:
        return redirect(url_for("web.login_form"))
    st = state()
    app = st.services.runtime.compiled(ctx.tenant)
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
    message, error = None, None
    if request.method == "POST":
        try:
            state().services.users.set_password(ctx, ctx.actor.id, request.form.get("new_password", ""),
                                                old_password=request.form.get("old_password", ""))
            message = "Your password has been changed."
        except ValidationError as exc:
            error = "; ".join(f"{k.replace('_', ' ')} {', '.join(v)}" for k, v in exc.errors.items())
    return render_template("password.html", ctx=ctx, csrf=auth.csrf_token(), message=message, error=error,
                           session_user=session.get("uid"))
