"""``/api/v1/auth``: browser sessions, the current user, passwords and API tokens."""
from __future__ import annotations

from loomwork.metadata.errors import ValidationError

from .. import auth
from ..state import state
from . import bp
from .jsonio import body, respond


def _text(data: dict, key: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError({key: ["is required and must be a text"]})
    return value


@bp.post("/auth/login")
def login():
    data = body()
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["send {username, password[, tenant]}"]})
    user = auth.login(_text(data, "tenant", required=False), _text(data, "username"), _text(data, "password"))
    return respond({"user": user.as_dict(), "csrf_token": auth.csrf_token()})


@bp.post("/auth/logout")
def logout():
    auth.logout()
    return respond(None, 204)


@bp.get("/auth/me")
def me():
    ctx = auth.current_context()
    user = state().services.users.get(ctx, ctx.actor.id)
    return respond({"user": user.as_dict(), "tenant": ctx.tenant.name})


@bp.post("/auth/password")
def change_password():
    ctx = auth.current_context()
    data = body()
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["send {old_password, new_password}"]})
    state().services.users.set_password(ctx, ctx.actor.id, _text(data, "new_password"),
                                        old_password=_text(data, "old_password"))
    return respond(None, 204)


@bp.post("/auth/tokens")
def create_token():
    """Create an API token for the signed-in user; the token is shown only in this response."""
    ctx = auth.current_context()
    data = body()
    if not isinstance(data, dict):
        raise ValidationError({"_schema": ["send {name}"]})
    token = state().services.users.create_token(ctx, ctx.actor.id, _text(data, "name"))
    return respond({"token": token}, 201)
