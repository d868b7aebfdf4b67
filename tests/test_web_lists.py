"""The list page's filter chips and lookup data, server side (Flask's test client):
lookups read as their records' titles, within the user's permissions, and a filter
the builder cannot show never breaks the page."""
from __future__ import annotations

import json
import re
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest

from loomwork.runtime.context import Actor, Context

pytestmark = pytest.mark.usefixtures("fast_setup")


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def signed_in(app, username: str, password: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    resp = client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_of(page)})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    return client


def chips(html: str) -> list[str]:
    return [unescape(t) for t in re.findall(r'<span class="filter-chip-text">([^<]*)</span>', html)]


def page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="lw-list-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


@pytest.fixture
def crm(crm_app):
    st = crm_app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    rec = st.services.records
    acme = rec.create(ctx, "account", {"name": "Acme Corp", "industry": "manufacturing"})
    globex = rec.create(ctx, "account", {"name": "Globex"})
    for name, acc, stage in (("Pilot", acme, "won"), ("Renewal", globex, "proposal"), ("Expansion", acme, "won")):
        rec.create(ctx, "deal", {"name": name, "account": acc["id"], "stage": stage, "amount": "100"})
    return {"app": crm_app, "acme": acme, "globex": globex}


def test_chips_name_lookups_by_title(crm):
    web = signed_in(crm["app"], "admin", "admin-password")
    acme, globex = crm["acme"]["id"], crm["globex"]["id"]
    flt = {"and": [{"field": "account", "op": "in", "value": [acme, globex]},
                   {"field": "stage", "op": "eq", "value": "won"}, {"field": "amount", "op": "is_null", "value": False}]}
    html = web.get(f"/app/deal?filter={json.dumps(flt)}").get_data(as_text=True)
    assert chips(html) == ["Account is any of Acme Corp, Globex", "Stage is Closed won", "Amount is not empty"]
    data = page_data(html)
    assert data["titles"] == {"account": {str(acme): "Acme Corp", str(globex): "Globex"}}
    assert data["fields"]["account"]["lookup"] == {"object": "account", "title_field": "name"}
    # Each chip's link drops its condition and keeps the rest.
    links = [unescape(u) for u in re.findall(r'class="filter-chip-remove" href="([^"]+)"', html)]
    rest = json.loads(parse_qs(urlsplit(links[0]).query)["filter"][0])
    assert rest == {"and": flt["and"][1:]}
    last = json.loads(parse_qs(urlsplit(links[2]).query)["filter"][0])
    assert last == {"and": flt["and"][:2]}
    # The compact form (?account=12) reads the same.
    assert chips(web.get(f"/app/deal?account={acme}").get_data(as_text=True)) == ["Account is Acme Corp"]
    # Dropping the one condition of a view's list leaves no filter, not the view's own.
    single = web.get(f"/app/deal?view=open_deals&filter={json.dumps(flt['and'][1])}").get_data(as_text=True)
    link = unescape(re.search(r'class="filter-chip-remove" href="([^"]+)"', single).group(1))
    assert parse_qs(urlsplit(link).query)["filter"] == ["null"]
    assert chips(web.get(link).get_data(as_text=True)) == []


def test_chips_in_chinese(crm):
    st = crm["app"].extensions["loomwork"]
    st.services.users.create(Context(st.platform.tenant("main"), Actor.system()), "li", "li-password",
                             roles=("sales",), locale="zh-CN")
    web = signed_in(crm["app"], "li", "li-password")
    html = web.get(f"/app/deal?account={crm['acme']['id']}").get_data(as_text=True)
    assert chips(html) == ["客户 等于 Acme Corp"]


def test_a_target_the_user_may_not_read_shows_its_id(crm):
    app = crm["app"]
    st = app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    doc = st.services.metadata.current(ctx).doc
    doc["roles"]["dealer"] = {"label": {"en": "Deal reader"}, "permissions": {"deal": ["read"]}}
    st.services.metadata.publish(ctx, doc)
    st.services.users.create(ctx, "dan", "dealer-password", roles=("dealer",))
    web = signed_in(app, "dan", "dealer-password")
    acme = crm["acme"]["id"]
    html = web.get(f"/app/deal?account={acme}").get_data(as_text=True)
    assert chips(html) == [f"Account is #{acme}"]
    data = page_data(html)
    assert "lookup" not in data["fields"]["account"] and data["titles"] == {}
    assert "Acme Corp" not in html


@pytest.mark.parametrize("flt", [
    {"field": "nope", "op": "eq", "value": [1]},
    {"field": "stage", "op": "eq", "value": {"a": 1}},
    {"field": "account.nope.x", "op": "in", "value": "x"},
    {"not": {"field": "stage", "op": "eq", "value": "won"}},
])
def test_a_filter_the_builder_cannot_show_never_breaks_the_page(crm, flt):
    web = signed_in(crm["app"], "admin", "admin-password")
    resp = web.get(f"/app/deal?filter={json.dumps(flt)}")
    assert resp.status_code in (200, 400), resp.get_data(as_text=True)[:500]
    assert chips(resp.get_data(as_text=True))
