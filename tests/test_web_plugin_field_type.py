"""A plugin's field type built on a built-in one behaves like it everywhere.

``ColorType(TextType)``, registered through ``loomwork_field_types``, is a text that
must look like ``#rrggbb``. Pages and the API ask field types what they can do (their
kind, options, order...) instead of comparing names, so a colour is created through the
API and the form page, shown on the record and list pages, filtered, searched and
sorted in the list, bulk-edited, offered text's widgets and described in OpenAPI as a
text is — on SQLite and PostgreSQL.
"""
from __future__ import annotations

import json
import re
import secrets
from html import unescape

import pytest
from marshmallow import fields as mf
from marshmallow import validate as mv

from loomwork.app import create_app
from loomwork.metadata.errors import MetadataError
from loomwork.plugin_manager import make_plugin_manager
from loomwork.runtime import hookimpl
from loomwork.runtime.context import Actor, Context
from loomwork.runtime.fieldtypes import TEXT_OPS, TextType


class ColorType(TextType):
    """A colour written ``#rrggbb``."""

    name = "color"
    properties = {}

    def ma_field(self, field):
        return mf.String(validate=mv.Regexp(r"^#[0-9a-f]{6}$", error="is not a colour like #ff0000"),
                         allow_none=True)


class ColorPlugin:
    @hookimpl
    def loomwork_field_types(self):
        return [ColorType()]


CAR = {"label": {"en": "Car"}, "title_field": "name", "search_fields": ["name", "paint"],
       "default_sort": ["paint"],
       "fields": {"name": {"type": "text", "required": True, "label": {"en": "Name"}},
                  "paint": {"type": "color", "label": {"en": "Paint"}}}}


def _form(widget: str) -> dict:
    return {"object": "car", "tabs": [{"name": "main", "sections": [{"name": "s", "fields": [
        "name", {"field": "paint", "widget": widget}]}]}]}


@pytest.fixture
def cars(lw_database_url, tmp_path, lw_cheap_passwords):
    app = create_app({"database_url": lw_database_url, "namespace": f"lwt{secrets.token_hex(4)}",
                      "secret_key": "x", "instance_dir": str(tmp_path / "inst"), "secure_cookies": False},
                     plugin_manager=make_plugin_manager([ColorPlugin()], entry_points=False))
    app.config["TESTING"] = True
    st = app.extensions["loomwork"]
    ctx = Context(st.platform.create_tenant("main"), Actor.system())
    admin = st.services.users.create(ctx, "admin", "admin-password", roles=("admin",))
    st.services.metadata.publish(ctx, {"objects": {"car": CAR}})
    yield app, st, ctx, st.services.users.create_token(ctx, admin.id, "test")
    st.platform.drop_all()
    st.platform.dispose()


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def signed_in(app):
    web = app.test_client()
    page = web.get("/login").get_data(as_text=True)
    resp = web.post("/login", data={"username": "admin", "password": "admin-password", "csrf_token": csrf_of(page)})
    assert resp.status_code == 302
    return web


def names_in(html: str) -> list[str]:
    """The first cell (the title) of each row of a list page."""
    return [unescape(n) for n in re.findall(r'<a class="row-link" href="[^"]+">([^<]*)</a>', html)]


def list_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="lw-list-data">(.*?)</script>', html, re.S)
                      .group(1))


def test_a_colour_is_created_shown_and_refused_as_text_is(cars):
    app, st, ctx, token = cars
    api = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    created = api.post("/api/v1/data/car", json={"name": "Mini", "paint": "#ff0000"}, headers=auth)
    assert created.status_code == 201, created.get_data(as_text=True)
    assert created.get_json()["paint"] == "#ff0000"
    bad = api.post("/api/v1/data/car", json={"name": "Odd", "paint": "red"}, headers=auth)
    assert bad.status_code == 422 and "paint" in bad.get_json()["errors"]

    web = signed_in(app)
    form = web.get("/app/car/new").get_data(as_text=True)
    # Drawn and described to the page's script as a text (its kind), with text's control.
    assert re.search(r'data-field="paint" data-kind="text" data-widget="text"', form)
    assert re.search(r'<input type="text" id="f-paint" name="paint"', form)
    data = json.loads(re.search(r'id="lw-form-data">(.*?)</script>', form, re.S).group(1))
    assert data["fields"]["paint"]["kind"] == data["fields"]["name"]["kind"] == "text"
    resp = web.post("/app/car/new", data={"csrf_token": csrf_of(form), "name": "Beetle", "paint": " #00aa00 "})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    rid = int(resp.headers["Location"].rstrip("/").rsplit("/", 1)[-1])
    assert st.services.records.get(ctx, "car", rid)["paint"] == "#00aa00"  # trimmed, as a text is
    refused = web.post("/app/car/new", data={"csrf_token": csrf_of(form), "name": "Odd", "paint": "green"})
    assert refused.status_code == 422
    assert "is not a colour like #ff0000" in refused.get_data(as_text=True)
    assert 'value="green"' in refused.get_data(as_text=True)  # what was typed stays

    page = web.get(f"/app/car/{rid}").get_data(as_text=True)
    assert "#00aa00" in page
    edit = web.get(f"/app/car/{rid}/edit").get_data(as_text=True)
    assert re.search(r'<input type="text" id="f-paint" name="paint"[^>]*value="#00aa00"', edit)


def test_a_colour_is_listed_filtered_searched_sorted_and_bulk_edited_as_text_is(cars):
    app, st, ctx, _token = cars
    rec = st.services.records
    ids = {name: rec.create(ctx, "car", {"name": name, "paint": paint})["id"]
           for name, paint in (("Mini", "#ff0000"), ("Beetle", "#00aa00"), ("Zed", "#0000ff"))}
    web = signed_in(app)

    listed = web.get("/app/car?columns=name,paint").get_data(as_text=True)
    assert names_in(listed) == ["Zed", "Beetle", "Mini"]  # the object's default sort: by paint
    assert "#00aa00" in listed
    # Sortable from the header, as a text column is (sorted by it now: the link reverses it).
    assert re.search(r'<a class="sort-link" href="[^"]*sort=-paint[^"]*">Paint', unescape(listed))
    desc = web.get("/app/car?columns=name,paint&sort=-paint").get_data(as_text=True)
    assert names_in(desc) == ["Mini", "Beetle", "Zed"]

    # The filter builder offers text's operators; the compact form and search filter.
    fields = list_data(listed)["fields"]
    assert fields["paint"] == {"label": "Paint", "kind": "text", "ops": sorted(TEXT_OPS)}
    assert fields["paint"]["ops"] == fields["name"]["ops"]
    assert names_in(web.get("/app/car?paint__icontains=AA").get_data(as_text=True)) == ["Beetle"]
    flt = json.dumps({"field": "paint", "op": "starts_with", "value": "#00"})
    assert names_in(web.get("/app/car", query_string={"filter": flt}).get_data(as_text=True)) == ["Zed", "Beetle"]
    assert names_in(web.get("/app/car?q=0000f").get_data(as_text=True)) == ["Zed"]

    # The bulk bar sets it with text's control.
    assert '<option value="paint" data-kind="text">Paint</option>' in listed
    resp = web.post("/app/car/bulk", data={"csrf_token": csrf_of(listed), "action": "update", "field": "paint",
                                           "value": "#123456", "ids": [ids["Mini"], ids["Zed"]]})
    assert resp.status_code == 302
    assert [rec.get(ctx, "car", ids[n])["paint"] for n in ("Mini", "Beetle", "Zed")] == ["#123456", "#00aa00",
                                                                                       "#123456"]


def test_a_colour_is_documented_and_laid_out_as_text_is(cars):
    app, st, ctx, token = cars
    spec = app.test_client().get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {token}"}).get_json()
    props = spec["components"]["schemas"]["Car"]["properties"]
    paint, name = props["paint"], props["name"]
    assert paint["type"] == name["type"] and paint["x-filter-ops"] == name["x-filter-ops"] == sorted(TEXT_OPS)
    assert "readOnly" not in paint and "x-options" not in paint and "x-lookup" not in paint

    # A layout may show it with any of text's widgets, and with nothing else.
    st.services.metadata.publish(ctx, {"objects": {"car": CAR}, "forms": {"car_main": _form("textarea")}})
    form = signed_in(app).get("/app/car/new").get_data(as_text=True)
    assert re.search(r'<textarea id="f-paint" name="paint"', form)
    with pytest.raises(MetadataError) as refused:
        st.services.metadata.publish(ctx, {"objects": {"car": CAR}, "forms": {"car_main": _form("checkbox")}})
    assert refused.value.errors == {"forms.car_main.tabs.0.sections.0.fields.1.widget": [
        "widget 'checkbox' does not fit a color field; use one of readonly, text, textarea"]}
