"""Form widgets as a registry filled through ``loomwork_widgets``: a plugin's widget is
checked against the fields a form puts it on, drawn on the edit page (its own template,
or a built-in control), and what it posts is saved — on SQLite and PostgreSQL."""
from __future__ import annotations

import re
import secrets

import pytest
from flask import Blueprint

from loomwork.app import create_app
from loomwork.metadata.errors import LoomworkError, MetadataError
from loomwork.plugin_manager import make_plugin_manager
from loomwork.runtime import hookimpl
from loomwork.runtime.compiled import Runtime
from loomwork.runtime.context import Actor, Context
from loomwork.runtime.fieldtypes import IntegerType
from loomwork.runtime.widgets import Widget

STARS = """<fieldset class="stars" id="{{ f.id }}" aria-labelledby="{{ f.id }}-label">
{%- for n in range(1, 6) %}<label><input type="radio" name="{{ f.name }}" value="{{ n }}"
{%- if f.value|string == n|string %} checked{% endif %}{% if f.read_only %} disabled{% endif %}> {{ n }}★</label>
{%- endfor %}</fieldset>"""

REVIEW = {"fields": {"title": {"type": "text", "required": True}, "rating": {"type": "integer"},
                     "score": {"type": "integer"}}}
FORM = {"object": "review", "tabs": [{"name": "main", "sections": [{"name": "s", "fields": [
    "title", {"field": "rating", "widget": "stars"}, {"field": "score", "widget": "slider"}]}]}]}


class WidgetPlugin:
    """Stars (its own template) for integers, and a slider drawn as the number control."""

    def __init__(self, folder) -> None:
        (folder / "stars_widget.html").write_text(STARS, encoding="utf-8")
        self.folder = folder

    @hookimpl
    def loomwork_widgets(self):
        return [Widget("stars", {"integer"}, template="stars_widget.html", grouped=True),
                Widget("slider", {"integer", "decimal"}, renders_as="number")]

    @hookimpl
    def loomwork_app_created(self, app):
        app.register_blueprint(Blueprint("stars_widget", __name__, template_folder=str(self.folder)))


def make_app(url, tmp_path, *plugins):
    app = create_app({"database_url": url, "namespace": f"lwt{secrets.token_hex(4)}", "secret_key": "x",
                      "instance_dir": str(tmp_path / "inst"), "secure_cookies": False},
                     plugin_manager=make_plugin_manager(list(plugins), entry_points=False))
    app.config["TESTING"] = True
    return app


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@pytest.fixture
def review_app(lw_database_url, tmp_path, lw_cheap_passwords):
    folder = tmp_path / "templates"
    folder.mkdir()
    app = make_app(lw_database_url, tmp_path, WidgetPlugin(folder))
    st = app.extensions["loomwork"]
    ctx = Context(st.platform.create_tenant("main"), Actor.system())
    st.services.users.create(ctx, "admin", "admin-password", roles=("admin",))
    yield app, st, ctx
    st.platform.drop_all()
    st.platform.dispose()


def test_a_plugin_widget_is_published_drawn_and_saves(review_app):
    app, st, ctx = review_app
    with pytest.raises(MetadataError) as bad:
        st.services.metadata.publish(ctx, {"objects": {"review": REVIEW}, "forms": {"review_main": {
            **FORM, "tabs": [{"name": "main", "sections": [{"name": "s", "fields": [
                {"field": "title", "widget": "stars"}]}]}]}}})
    assert bad.value.errors == {"forms.review_main.tabs.0.sections.0.fields.0.widget": [
        "widget 'stars' does not fit a text field; use one of readonly, text, textarea"]}
    st.services.metadata.publish(ctx, {"objects": {"review": REVIEW}, "forms": {"review_main": FORM}})

    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    assert client.post("/login", data={"username": "admin", "password": "admin-password",
                                       "csrf_token": csrf_of(page)}).status_code == 302
    html = client.get("/app/review/new").get_data(as_text=True)
    stars = re.search(r'<fieldset class="stars" id="f-rating".*?</fieldset>', html, re.S).group(0)
    assert stars.count('type="radio" name="rating"') == 5
    assert '<span class="lw-label" id="f-rating-label">' in html  # grouped: labelled by a heading
    assert re.search(r'<input type="number" step="1" inputmode="numeric" id="f-score" name="score"', html)
    resp = client.post("/app/review/new", data={"csrf_token": csrf_of(html), "title": "Great", "rating": "4",
                                                 "score": "7"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    record_id = int(resp.headers["Location"].rstrip("/").rsplit("/", 1)[-1])
    saved = st.services.records.get(ctx, "review", record_id)
    assert (saved["rating"], saved["score"]) == (4, 7)
    edit = client.get(f"/app/review/{record_id}/edit").get_data(as_text=True)
    assert 'name="rating" value="4" checked' in edit


def test_widgets_nobody_registers_are_refused(tmp_path):
    url = f"sqlite:///{tmp_path / 'instance'}"
    runtime = Runtime({"integer": IntegerType()})
    with pytest.raises(MetadataError) as bad:
        runtime.validate({"objects": {"review": {"fields": {"rating": {"type": "integer"}}}}, "forms": {"f": {
            "object": "review", "tabs": [{"name": "t", "sections": [{"name": "s", "fields": [
                {"field": "rating", "widget": "stars"}]}]}]}}})
    assert bad.value.errors == {"forms.f.tabs.0.sections.0.fields.0.widget": [
        "unknown widget 'stars'; an integer field takes one of number, readonly"]}

    class Dial:
        @hookimpl
        def loomwork_widgets(self):
            return [Widget("dial", {"integer"})]  # no template, and no control of that name

    with pytest.raises(LoomworkError, match="widget 'dial' has no template"):
        make_app(url, tmp_path, Dial())

    class Twice:
        @hookimpl
        def loomwork_widgets(self):
            return [Widget("text", {"text"})]

    with pytest.raises(LoomworkError, match="widget 'text' is registered twice"):
        make_app(url, tmp_path, Twice())

    class Colour(IntegerType):
        name = "colour"
        widget = "swatch"

    with pytest.raises(LoomworkError, match="field type 'colour' shows as widget 'swatch', which is not registered"):
        Runtime({"colour": Colour()})
