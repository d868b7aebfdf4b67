"""``/api/v1/views/<object>``: saved list views; ``/api/v1/meta/objects/<object>/layout``:
the form layout the caller gets. Both are what the generated pages use, for API clients."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from loomwork.metadata.errors import ValidationError
from loomwork.runtime.views import SavedView

from ..auth import current_context
from ..state import state
from . import bp
from .jsonio import body, respond


def _doc(view: SavedView) -> dict:
    return {"key": view.key, "label": view.label, "source": view.source, "owner_id": view.owner_id,
            "definition": view.definition}


def _definition() -> tuple[dict, bool]:
    data = body(floats="float")
    if not isinstance(data, dict):
        raise ValidationError({"view": ["send a JSON object with the view's definition"]})
    shared = data.pop("shared", False)
    if not isinstance(shared, bool):
        raise ValidationError({"shared": ["must be true or false"]})
    return data, shared


@bp.get("/views/<object_name>")
def list_views(object_name: str):
    ctx = current_context()
    return respond({"data": [_doc(v) for v in state().services.views.list(ctx, object_name)]})


@bp.post("/views/<object_name>")
def create_view(object_name: str):
    ctx = current_context()
    definition, shared = _definition()
    view = state().services.views.save(ctx, object_name, definition, shared=shared)
    return respond(_doc(view), 201)


@bp.put("/views/<object_name>/<key>")
def replace_view(object_name: str, key: str):
    ctx = current_context()
    definition, shared = _definition()
    return respond(_doc(state().services.views.save(ctx, object_name, definition, shared=shared, key=key)))


@bp.delete("/views/<object_name>/<key>")
def delete_view(object_name: str, key: str):
    ctx = current_context()
    state().services.views.delete(ctx, object_name, key)
    return "", 204


@bp.get("/meta/objects/<object_name>/layout")
def object_layout(object_name: str):
    """The layout the caller's roles get (a form document's, or the generated one)."""
    return respond(_plain(state().services.metadata.layout(current_context(), object_name)))


def _plain(value):
    """A layout (dataclasses over frozen metadata) as JSON-ready dicts and lists."""
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
