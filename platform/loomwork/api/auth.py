"""``/api/v1/auth``: browser sessions, the current user, passwords and API tokens."""
from __future__ import annotations

from typing import Any

from flask import request, session

from loomwork.metadata.errors import ValidationError

from .. import auth
from ..state import state
from . import bp
from .jsonio import body, respond


def json_object(data: Any, allowed: tuple[str, ...], shape: str) -> dict:
    """``data`` as an object with only ``allowed`` keys. :raises ValidationError:"""
    if not isinstance(data, dict):
        raise ValidationError({"_schema": [f"send a JSON object: {shape}"]})
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValidationError({k: ["unknown field"] for k in unknown},
                              f"unknown field(s) {', '.join(unknown)}; send {shape}")
    return data


def _text(data: dict, key: str, required: bool = True, max_length: int = 1000) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError({key: ["is required and must be a text"]})
    if len(value) > max_length:
        raise ValidationError({key: [f"must be at most {max_length} characters"]})
    return value


def _session_auth() -> bool:
    """Is this request authenticated by the browser session (not a bearer token)?"""
    return not request.headers.get("Authorization") and bool(session.get("sid"))


@bp.post("/auth/login")
def login():
    """Start a browser session: ``{username, password[, tenant]}``. Returns the CSRF token that
    unsafe requests made with the session cookie must send as ``X-CSRF-Token``."""
    data = json_object(body(), ("username", "password", "tenant"), "{username, password[, tenant]}")
    tenant = _text(data, "tenant", required=False, max_length=64)
    username = _text(data, "username", max_length=200)
    password = _text(data, "password")
    user = auth.login(tenant, username, password)
    return respond({"user": user.as_dict(), "tenant": session["tenant"], "csrf_token": auth.csrf_token()})


@bp.post("/auth/logout")
def logout():
    """End the browser session, in every process and for every copy of its cookie. A
    signed-in session must send its CSRF token (so another site cannot sign people out);
    without a session this does nothing."""
    if session.get("sid"):
        auth.check_csrf(request.headers.get("X-CSRF-Token"))
    auth.logout()
    return respond(None, 204)


@bp.get("/auth/me")
def me():
    ctx = auth.current_context()
    user = state().services.users.get(ctx, ctx.actor.id)
    doc = {"user": user.as_dict(), "tenant": ctx.tenant.name}
    if _session_auth():
        doc["csrf_token"] = auth.csrf_token()
    return respond(doc)


@bp.post("/auth/password")
def change_password():
    """Change your own password: ``{old_password, new_password}``. Your other sessions end
    (this one stays); API tokens keep working. Wrong old passwords count as failed sign-ins."""
    ctx = auth.current_context()
    data = json_object(body(), ("old_password", "new_password"), "{old_password, new_password}")
    old, new = _text(data, "old_password"), _text(data, "new_password")
    try:
        auth.change_password(ctx, old, new)
    except ValidationError as exc:  # the service names the new password "password"
        if "password" not in exc.errors:
            raise
        errors = {("new_password" if k == "password" else k): v for k, v in exc.errors.items()}
        raise ValidationError(errors) from None
    return respond(None, 204)


@bp.post("/auth/tokens")
def create_token():
    """Create an API token for the signed-in user; the token is shown only in this response."""
    ctx = auth.current_context()
    data = json_object(body(), ("name",), "{name}")
    token = state().services.users.create_token(ctx, ctx.actor.id, _text(data, "name", max_length=200))
    return respond({"token": token}, 201)


@bp.get("/auth/tokens")
def list_tokens():
    """My API tokens, without their secrets (``hint``: the last characters), revoked ones too."""
    ctx = auth.current_context()
    return respond({"data": state().services.users.list_tokens(ctx, ctx.actor.id)})


@bp.delete("/auth/tokens/<id:token_id>")
def revoke_token(token_id: int):
    """Revoke one of my tokens (administrators: anyone's); it stops working at once here and
    within the token cache's seconds in other processes."""
    state().services.users.revoke_token(auth.current_context(), token_id)
    return respond(None, 204)


@bp.get("/users/<id:user_id>/tokens")
def user_tokens(user_id: int):
    """A user's API tokens: my own, or anyone's as an administrator."""
    ctx = auth.current_context()
    users = state().services.users
    if ctx.actor.is_admin:
        users.get(ctx, user_id)  # 404 for no such user rather than an empty list
    return respond({"data": users.list_tokens(ctx, user_id)})
