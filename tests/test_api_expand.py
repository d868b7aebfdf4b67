"""``expand=``: lookups in API answers with their target's title alongside
(``account$title``), for lists and single records, within the caller's permissions and
at one query per target object for a whole page."""
from __future__ import annotations

import re

import jsonschema
import pytest
import sqlalchemy as sa
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from loomwork.runtime.context import Actor, Context
from loomwork.testing import assert_problem as problem

pytestmark = pytest.mark.usefixtures("fast_setup")


@pytest.fixture
def crm(api):
    """Three accounts, two contacts, six deals (every deal of account i, contact on even ones)."""
    accounts = [api.post("/api/v1/data/account", json={"name": n}).json for n in ("Acme", "Globex", "Initech")]
    contacts = [api.post("/api/v1/data/contact", json={"last_name": n, "account": accounts[0]["id"]}).json
                for n in ("Chen", "Wang")]
    deals = []
    for i in range(6):
        body = {"name": f"D{i}", "account": accounts[i % 3]["id"]}
        if i % 2 == 0:
            body["contact"] = contacts[i % 4 // 2]["id"]
        deals.append(api.post("/api/v1/data/deal", json=body).json)
    return {"accounts": accounts, "contacts": contacts, "deals": deals}


#: A system table (``lw_user``, ``lw_meta_head``...), not a query's own alias (``lw_v_deal``, ``lw_j1``).
_SYSTEM_TABLE = re.compile(r"\blw_(?!v_|j[0-9]|sort[0-9])[a-z_]+")


class Statements:
    """Counts the SQL statements the app runs (every engine of the process)."""

    def __init__(self) -> None:
        self.selects: list[str] = []

    def __call__(self, conn, cursor, statement, *args) -> None:
        # Reads of records only: not the system tables a request may also check (the
        # metadata version, the token), whose timing is not this test's subject.
        if statement.lstrip().upper().startswith("SELECT") and not _SYSTEM_TABLE.search(statement):
            self.selects.append(statement)

    def __enter__(self) -> Statements:
        sa.event.listen(sa.engine.Engine, "before_cursor_execute", self)
        return self

    def __exit__(self, *exc) -> None:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", self)


def test_list_gives_titles_next_to_the_ids(api, crm):
    names = {a["id"]: a["name"] for a in crm["accounts"]}
    last = {c["id"]: c["last_name"] for c in crm["contacts"]}
    page = api.get("/api/v1/data/deal?expand=account,contact&sort=name").json["data"]
    assert [d["name"] for d in page] == [f"D{i}" for i in range(6)]
    for d in page:
        assert d["account$title"] == names[d["account"]]
        assert d["contact$title"] == (last[d["contact"]] if d["contact"] is not None else None)
    plain = api.get("/api/v1/data/deal").json["data"]
    assert not any("$title" in key for d in plain for key in d), "no expand, no titles"


def test_one_query_per_expanded_lookup_per_page(api, crm):
    with Statements() as without:
        api.get("/api/v1/data/deal?limit=6")
    with Statements() as one:
        api.get("/api/v1/data/deal?limit=6&expand=account")
    with Statements() as two:
        api.get("/api/v1/data/deal?limit=6&expand=account,contact")
    assert len(one.selects) - len(without.selects) == 1, one.selects
    assert len(two.selects) - len(without.selects) == 2, two.selects
    with Statements() as small:
        api.get("/api/v1/data/deal?limit=2&expand=account")
    assert len(small.selects) == len(one.selects), "the same per page, whatever its size"


def test_get_expands_and_is_never_not_modified(api, crm):
    deal = crm["deals"][0]
    path = f"/api/v1/data/deal/{deal['id']}"
    tag = api.get(path).headers["ETag"]
    assert api.get(path, headers={"If-None-Match": tag}).status_code == 304
    resp = api.get(f"{path}?expand=account,contact", headers={"If-None-Match": tag})
    assert resp.status_code == 200 and resp.headers["ETag"] == tag
    assert resp.json["account$title"] == "Acme" and resp.json["contact$title"] == "Chen"
    # The title follows the target: the record's own ETag does not move.
    api.patch(f"/api/v1/data/account/{deal['account']}", json={"name": "Acme Ltd"})
    assert api.get(f"{path}?expand=account").json["account$title"] == "Acme Ltd"
    assert api.get(path).headers["ETag"] == tag


def test_fields_keep_the_expanded_lookup(api, crm):
    page = api.get("/api/v1/data/deal?fields=name&expand=account&limit=1").json["data"]
    assert set(page[0]) == {"id", "row_version", "name", "account", "account$title"}


@pytest.mark.parametrize(("query", "message"), [
    ("expand=stage", "expand: 'stage' is not a lookup field of deal (its lookups: account, contact)"),
    ("expand=nope", "'nope' is not a lookup field"),
    ("expand=account&expand=contact", "give expand at most once"),
])
def test_bad_expand_is_a_bad_request(api, crm, query, message):
    assert message in problem(api.get(f"/api/v1/data/deal?{query}"), 400)["detail"]
    assert message in problem(api.get(f"/api/v1/data/deal/{crm['deals'][0]['id']}?{query}"), 400)["detail"]


def test_a_target_the_caller_may_not_read_is_not_expanded(crm_app, api, api_as, crm):
    role = {"label": {"en": "Deal reader"}, "permissions": {"deal": ["read"]}}
    assert api.put("/api/v1/meta/roles/dealer", json={"role": role}).status_code == 200
    st = crm_app.extensions["loomwork"]
    st.services.users.create(Context(st.platform.tenant("main"), Actor.system()), "dan", "dealer-password",
                             roles=("dealer",))
    dan = api_as("dan")
    dan.get("/api/v1/data/deal")  # the token's first use is checked (and cached) once
    with Statements() as plain:
        dan.get("/api/v1/data/deal")
    with Statements() as seen:
        page = dan.get("/api/v1/data/deal?expand=account").json["data"]
    assert page and all(d["account$title"] is None and d["account"] for d in page)
    assert len(seen.selects) == len(plain.selects), "no query reads the accounts"
    one = dan.get(f"/api/v1/data/deal/{crm['deals'][0]['id']}?expand=account").json
    assert one["account$title"] is None
    assert dan.get("/api/v1/data/account").status_code == 403


def test_expanded_answers_match_the_openapi_document(api, crm):
    doc = api.get("/api/v1/openapi.json").json
    deal = doc["components"]["schemas"]["Deal"]["properties"]
    assert deal["account$title"]["readOnly"] is True and deal["contact$title"]["type"] == ["string", "null"]
    listing = doc["paths"]["/api/v1/data/deal"]["get"]
    get = doc["paths"]["/api/v1/data/deal/{id}"]["get"]
    assert {"$ref": "#/components/parameters/expand"} in listing["parameters"]
    assert {"$ref": "#/components/parameters/expand"} in get["parameters"]
    registry = Registry().with_resource("urn:openapi", Resource.from_contents(doc, DRAFT202012))
    validator = jsonschema.Draft202012Validator({"$ref": "urn:openapi#/components/schemas/Deal"}, registry=registry)
    for record in api.get("/api/v1/data/deal?expand=account,contact").json["data"]:
        validator.validate(record)
