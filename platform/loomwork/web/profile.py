"""The pages about the user themselves: Profile (language, time zone, password), and the
browser's time zone, which becomes the user's when they have none.

A user who never chose a language reads the browser's (``Accept-Language``, see
``auth._language``); choosing one here wins from then on. Times are stored in UTC and
shown in the user's zone: the sign-in form sends the browser's
(``Intl.DateTimeFormat().resolvedOptions().timeZone``, filled in by lw-ui.js), stored
when the user has none yet; pages of a session without one send it once more
(:func:`save_time_zone`); Profile changes it.
"""
from __future__ import annotations

from typing import Any

from flask import flash, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import Forbidden

from loomwork.metadata.errors import (
    AuthenticationRequired,
    PermissionDenied,
    TooManyAttempts,
    ValidationError,
)
from loomwork.runtime.context import Context
from loomwork.runtime.timezones import is_time_zone, time_zones

from .. import auth
from ..state import state
from . import bp, i18n
from .common import _, compiled, navigation, signed_in
from .messages import translate_all


def remember_browser_zone(user: Any, zone: str | None) -> None:
    """Right after a sign-in: the browser's zone becomes the user's if they have none
    (a value that is no zone — an old browser, a hand-made post — is not stored)."""
    if user.time_zone is None and is_time_zone(zone):
        st = state()
        ctx = Context(st.platform.tenant(session["tenant"]), user.actor())
        st.services.users.set_time_zone(ctx, user.id, zone, if_unset=True)


@bp.post("/profile/time-zone")
def save_time_zone():
    """The browser's zone for a signed-in user who has none (sent once by lw-ui.js)."""
    try:
        ctx = signed_in()
    except PermissionDenied as exc:  # no CSRF token
        raise Forbidden(exc.message) from None
    zone = request.form.get("time_zone", "")
    if not is_time_zone(zone):
        return {"error": "not a time zone"}, 422
    stored = state().services.users.set_time_zone(ctx, ctx.actor.id, zone, if_unset=True)
    return {"stored": stored}, 200


@bp.route("/profile", methods=["GET", "POST"])
def profile():
    """The user's language, time zone and password."""
    try:
        ctx = signed_in()
    except AuthenticationRequired:
        return redirect(url_for("web.login_form"))
    except PermissionDenied as exc:  # a POST without the form's CSRF token
        raise Forbidden(exc.message) from None
    users = state().services.users
    errors: dict[str, str] = {}
    status, headers = 422, {}
    if request.method == "POST":
        try:
            form = request.form.get("form")
            if form == "language":
                chosen = request.form.get("locale", "")
                users.set_locale(ctx, ctx.actor.id, chosen, i18n.SUPPORTED)
                g.lw_locale = chosen  # the notice is read in the language just chosen
                flash(_("Language saved."), "ok")
                return redirect(url_for("web.profile"))
            if form == "time_zone":
                users.set_time_zone(ctx, ctx.actor.id, request.form.get("time_zone", ""))
                flash(_("Time zone saved."), "ok")
                return redirect(url_for("web.profile"))
            auth.change_password(ctx, request.form.get("old_password", ""), request.form.get("new_password", ""))
            flash(_("Your password has been changed."), "ok")
            return redirect(url_for("web.profile"))
        except ValidationError as exc:
            errors = {k: "; ".join(v) for k, v in translate_all(exc.errors).items()}
        except TooManyAttempts as exc:
            errors = {"old_password": _("Too many wrong passwords; wait a few minutes and try again.")}
            status, headers = exc.status, exc.headers
    user = users.get(ctx, ctx.actor.id)
    return render_template("profile.html", ctx=ctx, nav=navigation(ctx, compiled(ctx)), csrf=auth.csrf_token(),
                           user=user, errors=errors, zones=time_zones(), profile_page=True), \
        status if errors else 200, headers


@bp.get("/password")
def password():
    return redirect(url_for("web.profile"))
