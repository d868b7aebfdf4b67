"""The record API end to end (``/api/v1/data``) on both databases: the happy paths and,
above all, that bad input of every kind is a 4xx problem document, never a 500."""
from __future__ import annotations

import base64
import json
from urllib.parse import quote

import orjson
import pytest

from loomwork.testing import assert_problem as problem

pytestmark = pytest.mark.usefixtures("fast_setup")


def raw(api, method: str, path: str, data, content_type: str = "application/json", headers=None):
    """Send a raw body (bytes or text), bypassing the test client's JSON encoder."""
    return api.request(method, path, data=data, content_type=content_type, headers=headers)


def count(api, obj: str) -> int:
    resp = api.get(f"/api/v1/data/{obj}?count=exact&limit=1")
    assert resp.status_code == 200, resp.json
    return resp.json["count"]


@pytest.fixture
def acme(api):
    resp = api.post("/api/v1/data/account", json={"name": "Acme", "industry": "software"})
    assert resp.status_code == 201, resp.json
    return resp.json


# -- happy paths ------------------------------------------------------------
def test_create_one_and_many(api, acme):
    assert acme["row_version"] == 1 and acme["active"] is True  # the default applies
    one = api.post("/api/v1/data/deal", json={"name": "Big", "account": acme["id"], "amount": 1234.5})
    assert one.status_code == 201
    assert one.headers["ETag"] == f'"{one.json["id"]}-1"'
    assert one.headers["Location"] == f"/api/v1/data/deal/{one.json['id']}"
    assert one.json["amount"] == "1234.50" and one.json["stage"] == "prospecting"
    assert api.get(one.headers["Location"]).json["name"] == "Big"

    many = api.post("/api/v1/data/deal", json=[
        {"name": "A", "account": acme["id"], "amount": "10"},
        {"name": "B", "account": acme["id"], "stage": "won", "amount": "5", "tags": ["upsell"]},
    ])
    assert many.status_code == 201, many.json
    assert [r["name"] for r in many.json["data"]] == ["A", "B"]
    numbers = {one.json["number"], *(r["number"] for r in many.json["data"])}
    assert len(numbers) == 3 and all(n.startswith("D-") for n in numbers)
    assert count(api, "deal") == 3


def test_bulk_create_is_all_or_nothing_with_indexed_errors(api, acme):
    resp = api.post("/api/v1/data/deal", json=[
        {"name": "fine", "account": acme["id"]},
        {"name": 5, "account": acme["id"]},
        {"account": acme["id"], "bogus": 1},
        "not an object",
        {"name": "x" * 201, "account": 99999},
    ])
    doc = problem(resp, 422)
    errors = doc["errors"]
    assert "1.name" in errors and "2.bogus" in errors and "2.name" in errors and "3" in errors
    assert "4.name" in errors
    assert not any(k.startswith("0.") for k in errors)
    assert count(api, "deal") == 0
    # A unique clash found only when writing still leaves nothing behind.
    clash = api.post("/api/v1/data/account", json=[{"name": "New"}, {"name": "Acme"}])
    assert "1.name" in problem(clash, 422)["errors"]
    assert count(api, "account") == 1


def test_get_etag_and_if_none_match(api, acme):
    path = f"/api/v1/data/account/{acme['id']}"
    got = api.get(path)
    tag = got.headers["ETag"]
    assert got.status_code == 200 and tag == f'"{acme["id"]}-1"'
    assert "no-cache" in got.headers["Cache-Control"]
    for header in (tag, f"W/{tag}", f'"x", {tag}', "*"):
        resp = api.get(path, headers={"If-None-Match": header})
        assert resp.status_code == 304, header
        assert resp.headers["ETag"] == tag and resp.data == b""
    assert api.get(path, headers={"If-None-Match": f'"{acme["id"]}-7"'}).status_code == 200
    assert api.get(path, headers={"If-None-Match": "garbage"}).status_code == 200


def test_patch_with_if_match_and_row_version(api, acme):
    path = f"/api/v1/data/account/{acme['id']}"
    tag = api.get(path).headers["ETag"]
    upd = api.patch(path, json={"employees": 12}, headers={"If-Match": tag})
    assert upd.status_code == 200 and upd.json["row_version"] == 2 and upd.json["employees"] == 12
    assert upd.headers["ETag"] == f'"{acme["id"]}-2"'
    assert "version 2" in problem(api.patch(path, json={"employees": 13}, headers={"If-Match": tag}), 409)["detail"]
    # row_version in the body works like If-Match.
    assert api.patch(path, json={"employees": 14, "row_version": 2}).json["row_version"] == 3
    problem(api.patch(path, json={"employees": 15, "row_version": 2}), 409)
    problem(api.patch(path, json={"employees": 15, "row_version": "3"}), 422)
    # The ETag of another record, a malformed one, and the wildcard.
    problem(api.patch(path, json={"employees": 15}, headers={"If-Match": '"999-3"'}), 409)
    problem(api.patch(path, json={"employees": 15}, headers={"If-Match": "3"}), 400)
    problem(api.patch(path, json={"employees": 15}, headers={"If-Match": '"1-3", "1-4"'}), 400)
    assert api.patch(path, json={"employees": 15}, headers={"If-Match": "*"}).json["row_version"] == 4
    # A change that changes nothing keeps the version.
    assert api.patch(path, json={"employees": 15}).json["row_version"] == 4
    assert api.get(path).json["employees"] == 15


def test_delete_restore_and_history(api, acme):
    deal = api.post("/api/v1/data/deal", json={"name": "D", "account": acme["id"], "amount": "1"}).json
    path = f"/api/v1/data/deal/{deal['id']}"
    api.patch(path, json={"stage": "won"})
    problem(api.delete(path, headers={"If-Match": f'"{deal["id"]}-1"'}), 409)
    resp = api.delete(path, headers={"If-Match": f'"{deal["id"]}-2"'})
    assert resp.status_code == 204 and resp.data == b""
    problem(api.get(path), 404)
    problem(api.patch(path, json={"name": "x"}), 404)
    problem(api.delete(path), 404)
    assert api.get("/api/v1/data/deal").json["data"] == []
    restored = api.post(f"{path}/restore")
    assert restored.status_code == 200 and restored.json["row_version"] == 4
    assert restored.headers["ETag"] == f'"{deal["id"]}-4"'
    assert api.get(path).json["stage"] == "won"
    # Restoring a live record changes nothing.
    assert api.post(f"{path}/restore").json["row_version"] == 4
    history = api.get(f"{path}/history")
    assert history.status_code == 200
    assert [h["action"] for h in history.json["data"]] == ["restore", "delete", "update", "create"]
    change = history.json["data"][2]
    assert (change["field"], change["old"], change["new"]) == ("stage", "prospecting", "won")
    # on_delete restrict: an account with a live deal cannot go.
    problem(api.delete(f"/api/v1/data/account/{acme['id']}"), 409)


@pytest.fixture
def pipeline(api):
    accounts = api.post("/api/v1/data/account", json=[
        {"name": "Acme", "industry": "software"}, {"name": "Globex", "industry": "retail"},
        {"name": "Initech", "industry": "software", "website": "https://initech.example"},
    ]).json["data"]
    ids = {a["name"]: a["id"] for a in accounts}
    rows = [("Alpha", "Acme", "100", "won"), ("Beta", "Acme", "2500", "proposal"),
            ("Gamma", "Globex", "700", "won"), ("Delta", "Initech", None, "lost"),
            ("Epsilon", "Globex", "2500", "qualification"), ("Zeta", "Initech", "50", "won"),
            ("Eta", "Acme", "9000", "negotiation")]
    resp = api.post("/api/v1/data/deal", json=[
        {"name": n, "account": ids[a], "amount": amt, "stage": s, **({"lost_reason": "price"} if s == "lost" else {})}
        for n, a, amt, s in rows])
    assert resp.status_code == 201, resp.json
    return ids


def names(resp) -> list[str]:
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return [r["name"] for r in resp.json["data"]]


def test_list_filters(api, pipeline):
    assert names(api.get("/api/v1/data/deal?stage=won&sort=name")) == ["Alpha", "Gamma", "Zeta"]
    assert names(api.get("/api/v1/data/deal?amount__gte=2500&sort=name")) == ["Beta", "Epsilon", "Eta"]
    assert names(api.get("/api/v1/data/deal?stage__in=lost,qualification&sort=name")) == ["Delta", "Epsilon"]
    assert names(api.get("/api/v1/data/deal?amount__is_null=true")) == ["Delta"]
    assert names(api.get("/api/v1/data/deal?account.industry=software&amount__lt=1000&sort=name")) == ["Alpha", "Zeta"]
    assert names(api.get("/api/v1/data/deal?account.name__icontains=GLOB&sort=name")) == ["Epsilon", "Gamma"]
    assert names(api.get("/api/v1/data/deal?amount__between=100,700&sort=amount")) == ["Alpha", "Gamma"]
    ast = {"or": [{"field": "stage", "op": "eq", "value": "lost"},
                  {"and": [{"field": "account.industry", "op": "eq", "value": "retail"},
                           {"not": {"field": "amount", "op": "lt", "value": 1000}}]}]}
    assert names(api.get(f"/api/v1/data/deal?filter={quote(json.dumps(ast))}&sort=name")) == ["Delta", "Epsilon"]
    # The AST and the compact form are ANDed.
    both = f"/api/v1/data/deal?filter={quote(json.dumps(ast))}&stage=lost"
    assert names(api.get(both)) == ["Delta"]
    # Decimal values in the AST keep every digit (read as Decimal, not float).
    exact = {"field": "amount", "op": "eq", "value": 2500.00}
    assert sorted(names(api.get(f"/api/v1/data/deal?filter={quote(json.dumps(exact))}"))) == ["Beta", "Epsilon"]
    me = {"field": "created_by", "op": "eq", "value": "$user.id"}
    assert len(names(api.get(f"/api/v1/data/deal?filter={quote(json.dumps(me))}"))) == 7


def test_list_sort_fields_search_count(api, pipeline):
    assert names(api.get("/api/v1/data/deal?sort=-amount,name&limit=4")) == ["Delta", "Eta", "Beta", "Epsilon"]
    assert names(api.get("/api/v1/data/deal?sort=amount,-name&limit=3")) == ["Zeta", "Alpha", "Gamma"]
    page = api.get("/api/v1/data/deal?fields=name,amount&sort=name&limit=1").json
    assert page["data"] == [{"id": page["data"][0]["id"], "row_version": 1, "name": "Alpha", "amount": "100.00"}]
    assert "count" not in page
    counted = api.get("/api/v1/data/deal?stage=won&count=exact&limit=1").json
    assert counted["count"] == 3 and counted["count_kind"] == "exact" and len(counted["data"]) == 1
    assert names(api.get("/api/v1/data/account?search=initech")) == ["Initech"]
    assert names(api.get("/api/v1/data/account?search=example")) == ["Initech"]  # the website
    assert names(api.get("/api/v1/data/account?search=%25")) == []  # LIKE wildcards are literal
    assert api.get("/api/v1/data/deal?count=estimate").json["count"] >= 0


def test_cursor_paging_walks_every_record_once(api, pipeline, subtests):
    for sort in ("name", "-amount,name", "stage,-created_at", "-id", "amount"):
        with subtests.test(sort=sort):
            full = names(api.get(f"/api/v1/data/deal?sort={sort}&limit=100"))
            seen, cursor = [], None
            for _ in range(10):
                url = f"/api/v1/data/deal?sort={sort}&limit=2" + (f"&cursor={cursor}" if cursor else "")
                resp = api.get(url)
                seen += names(resp)
                cursor = resp.json["next_cursor"]
                if cursor is None:
                    break
            assert seen == full and len(full) == 7


def test_cursor_is_bound_to_its_query(api, pipeline):
    cursor = api.get("/api/v1/data/deal?sort=name&limit=2").json["next_cursor"]
    assert "sort" in problem(api.get(f"/api/v1/data/deal?sort=-name&limit=2&cursor={cursor}"), 400)["detail"]
    problem(api.get(f"/api/v1/data/deal?sort=name&limit=2&stage=won&cursor={cursor}"), 400)
    forged = base64.urlsafe_b64encode(orjson.dumps({"s": ["name", "id"], "q": "x", "v": [1, 2]})).decode()
    problem(api.get(f"/api/v1/data/deal?sort=name&cursor={forged}"), 400)


# -- bad input ----------------------------------------------------------------
def test_field_values_are_validated_per_field(api, acme):
    cases = [
        ({"name": 5}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "ok", "employees": "12"}, "employees"),
        ({"name": "ok", "employees": 1.5}, "employees"),
        ({"name": "ok", "employees": -1}, "employees"),
        ({"name": "ok", "annual_revenue": "12.345"}, "annual_revenue"),
        ({"name": "ok", "annual_revenue": "abc"}, "annual_revenue"),
        ({"name": "ok", "annual_revenue": "1e400"}, "annual_revenue"),
        ({"name": "ok", "industry": "space"}, "industry"),
        ({"name": "ok", "website": "javascript:alert(1)"}, "website"),
        ({"name": "ok", "active": "yes"}, "active"),
        ({"name": "ok", "bogus": 1}, "bogus"),
        ({"name": "ok", "id": 7}, "id"),
        ({"name": "ok", "created_at": "2020-01-01T00:00:00+00:00"}, "created_at"),
        ({"name": "Acme"}, "name"),  # unique
        ({}, "name"),  # required
    ]
    for data, field in cases:
        doc = problem(api.post("/api/v1/data/account", json=data), 422)
        assert field in doc["errors"], (data, doc)
        assert doc["detail"].startswith(field) or field in doc["detail"], doc
    deal_cases = [
        ({"account": 99999}, "account"),
        ({"account": "1"}, "account"),
        ({"close_date": "2020-13-01"}, "close_date"),
        ({"next_step_at": "2020-01-01T10:00:00"}, "next_step_at"),
        ({"next_step_at": "0001-01-01T00:00:00+14:00"}, "next_step_at"),
        ({"tags": "strategic"}, "tags"),
        ({"tags": ["nope"]}, "tags.0"),
        ({"stage": ["won"]}, "stage"),
        ({"probability": 101}, "probability"),
        ({"details": json.loads("[" * 25 + "]" * 25)}, "details"),
    ]
    for extra, field in deal_cases:
        doc = problem(api.post("/api/v1/data/deal", json={"name": "d", "account": acme["id"], **extra}), 422)
        assert field in doc["errors"], (extra, doc)
    path = f"/api/v1/data/account/{acme['id']}"
    assert "name" in problem(api.patch(path, json={"name": None}), 422)["errors"]
    assert "bogus" in problem(api.patch(path, json={"bogus": 1}), 422)["errors"]
    assert count(api, "account") == 1 and count(api, "deal") == 0


BODY_ENDPOINTS = [
    ("POST", "/api/v1/data/account"),
    ("PATCH", "/api/v1/data/account/1"),
    ("PUT", "/api/v1/meta/objects/deal"),
    ("PUT", "/api/v1/meta/roles/sales"),
    ("DELETE", "/api/v1/meta/objects/contact"),
    ("POST", "/api/v1/meta/plan"),
    ("POST", "/api/v1/meta/publish"),
    ("POST", "/api/v1/meta/rollback"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/password"),
    ("POST", "/api/v1/auth/tokens"),
]

MALFORMED = [
    ("{bad", 400, "not valid JSON"),
    ('{"name": NaN}', 400, "NaN"),
    ('{"name": Infinity}', 400, "Infinity"),
    ('{"n": 1e999}', None, None),  # a decimal that no field can take: 4xx
    ('{"name": 123456789012345678901234567890}', 400, "out of range"),
    ("[" * 70 + "]" * 70, 400, "nested deeper"),
    ("[" * 100_000 + "]" * 100_000, 400, "nested deeper"),
    ('{"name": "a\\u0000b"}', 400, "NUL"),
    ('{"name": "\\ud800"}', 400, "surrogate"),
    (b"\xff\xfe\x00", 400, "not valid JSON"),
    ("", 400, "empty"),
    ("   ", 400, "empty"),
    ('{"a": 1} trailing', 400, "not valid JSON"),
]


def test_malformed_bodies_on_every_endpoint(api, acme, subtests):
    for method, path in BODY_ENDPOINTS:
        for body, status, words in MALFORMED:
            if method == "DELETE" and not str(body).strip():
                continue  # a DELETE may come without a body
            with subtests.test(endpoint=f"{method} {path}", body=str(body)[:30]):
                resp = raw(api, method, path, body)
                if status is None:
                    assert 400 <= resp.status_code < 500, resp.get_data(as_text=True)
                    problem(resp, resp.status_code)
                else:
                    doc = problem(resp, status)
                    assert words in doc["detail"], doc["detail"]


def test_non_object_bodies_on_every_endpoint(api, acme, subtests):
    for method, path in BODY_ENDPOINTS:
        bodies = ["[1, 2]", '"text"', "42", "null", "true"]
        if (method, path) == ("POST", "/api/v1/data/account"):
            bodies.remove("[1, 2]")  # an array is a bulk create there (its rows are then not objects)
        for body in bodies:
            with subtests.test(endpoint=f"{method} {path}", body=body):
                problem(raw(api, method, path, body), 422)
        with subtests.test(endpoint=f"{method} {path}", body="unknown field"):
            if path.startswith("/api/v1/data"):
                continue
            problem(raw(api, method, path, '{"zzz_unknown": 1}'), 422)


def test_wrong_content_type_and_oversized_bodies(api, acme, subtests):
    api.client.application.config["MAX_CONTENT_LENGTH"] = 4096
    for method, path in BODY_ENDPOINTS:
        with subtests.test(endpoint=f"{method} {path}", case="form"):
            doc = problem(raw(api, method, path, "name=x", "application/x-www-form-urlencoded"), 415)
            assert "application/json" in doc["detail"]
        with subtests.test(endpoint=f"{method} {path}", case="text"):
            problem(raw(api, method, path, '{"name": "x"}', "text/plain"), 415)
        with subtests.test(endpoint=f"{method} {path}", case="413"):
            doc = problem(raw(api, method, path, json.dumps({"name": "x" * 5000})), 413)
            assert "4096 bytes" in doc["detail"]
    # Within the limit, text past a field's max_length is a 422 for that field.
    assert "name" in problem(api.post("/api/v1/data/account", json={"name": "y" * 300}), 422)["errors"]


BAD_QUERIES = [
    "filter={bad", "filter=[]", "filter=1", "filter=null", 'filter="x"', "filter=NaN",
    'filter={"field":"name"}', 'filter={"and":{}}', 'filter={"and":[]}', 'filter={"or":[1]}',
    'filter={"not":[]}', 'filter={"field":"name","op":"eq","value":"x","extra":1}',
    'filter={"field":["name"],"op":"eq","value":"x"}', 'filter={"field":"name","op":["eq"],"value":"x"}',
    'filter={"field":"nope","op":"eq","value":1}', 'filter={"field":"name","op":"zz","value":1}',
    'filter={"field":"amount","op":"gte","value":"abc"}', 'filter={"field":"amount","op":"gte","value":[1]}',
    'filter={"field":"amount","op":"gte","value":{"a":1}}', 'filter={"field":"amount","op":"eq","value":1e400}',
    'filter={"field":"id","op":"eq","value":"abc"}', 'filter={"field":"id","op":"eq","value":99999999999999999999}',
    'filter={"field":"created_at","op":"gt","value":"2020-01-01"}',
    'filter={"field":"name","op":"in","value":"x"}', 'filter={"field":"name","op":"in","value":[]}',
    'filter={"field":"name","op":"between","value":[1]}', 'filter={"field":"name","op":"is_null","value":"yes"}',
    'filter={"field":"account.name.x","op":"eq","value":1}', 'filter={"field":"a.b.c.d.e","op":"eq","value":1}',
    'filter={"field":"name","op":"eq","value":"$bogus"}', 'filter={"field":"details","op":"eq","value":5}',
    'filter={"field":"tags","op":"contains","value":"bad"}', 'filter={"field":"stage","op":"contains","value":"w"}',
    "filter=" + '{"not":' * 10 + '{"field":"name","op":"eq","value":"x"}' + "}" * 10,
    "filter=" + "[" * 5000 + "]" * 5000,
    'filter={"or":[' + ",".join(['{"field":"name","op":"eq","value":"x"}'] * 60) + "]}",
    'filter={"field":"name","op":"eq","value":"\\u0000"}',
    "filter={}&filter={}", "sort=name&sort=amount",
    "amount__gte=abc", "amount__bogus=1", "nope=1", "stage__in=", "stage__is_null=maybe", "name__between=a",
    "account.nope=1", "amount__gte=1e400", "amount=NaN", "amount=Infinity", "id=99999999999999999999",
    "id=abc", "created_at__gt=x", "created_at__gt=0001-01-01T00:00:00%2B14:00", "name=%00", "search=%00",
    "account=99999999999999999999999", "lw_secret=1", "deleted_at__is_null=true",
    "sort=nope", "sort=notes", "sort=details", "sort=a,b,c,d,e", "sort=-", "fields=nope", "fields=deleted_at",
    "limit=abc", "limit=0", "limit=-1", "limit=100000", "limit=1.5", "limit=" + "9" * 5000, "limit=",
    "cursor=abc", "cursor=!!!!", "cursor=" + "A" * 5000, "cursor=eyJ2IjpbMV19", "count=bogus",
    "search=" + "x" * 201,
]


def test_malformed_queries_are_400(api, acme, subtests):
    for query in BAD_QUERIES:
        with subtests.test(query=query[:60]):
            problem(api.get(f"/api/v1/data/deal?{quote(query, safe='=&%')}"), 400)


def test_unknown_objects_and_records_are_404(api, acme, subtests):
    for obj in ("nope", "lw_user", "lw_meta_version", "Account", "account%00"):
        with subtests.test(object=obj):
            for method, suffix in (("GET", ""), ("POST", ""), ("GET", "/1"), ("PATCH", "/1"), ("DELETE", "/1"),
                                   ("POST", "/1/restore"), ("GET", "/1/history")):
                kwargs = {"json": {"name": "x"}} if method in ("POST", "PATCH") and not suffix.endswith("restore") else {}
                problem(api.request(method, f"/api/v1/data/{obj}{suffix}", **kwargs), 404)
    for rid in ("abc", "0", "-1", "1.5", "01", "+1", "%201", "1e3", "%D9%A3", "1_0", "99999",
                str(2**63 - 1), str(2**63), str(2**64), "9" * 400):
        with subtests.test(id=rid):
            base = f"/api/v1/data/account/{rid}"
            problem(api.get(base), 404)
            problem(api.patch(base, json={"name": "x"}), 404)
            problem(api.delete(base), 404)
            problem(api.post(f"{base}/restore"), 404)
            problem(api.get(f"{base}/history"), 404)
    assert api.get(f"/api/v1/data/account/{acme['id']}").status_code == 200


def test_wrong_methods_and_unknown_routes(api, subtests):
    for method, path, allowed in [
        ("PUT", "/api/v1/data/account", "GET, POST"), ("DELETE", "/api/v1/data/account", "GET, POST"),
        ("PUT", "/api/v1/data/account/1", "DELETE, GET, PATCH"), ("POST", "/api/v1/data/account/1", None),
        ("GET", "/api/v1/data/account/1/restore", "POST"), ("DELETE", "/api/v1/data/account/1/history", "GET"),
        ("GET", "/api/v1/auth/login", "POST"), ("POST", "/api/v1/openapi.json", "GET"),
        ("POST", "/api/v1/meta/objects", "GET"), ("PATCH", "/api/v1/meta/objects/deal", None),
    ]:
        with subtests.test(method=method, path=path):
            doc = problem(api.request(method, path), 405)
            assert method in doc["detail"]
            if allowed:
                assert allowed in doc["detail"]
            assert "Allow" in api.request(method, path).headers
    for path in ("/api/v1/nope", "/api/v1/", "/api/v1", "/api/v1/data", "/api/v1/data/account/1/nope",
                 "/api/v1/meta/nope", "/api/v1/data/account/1/history/2"):
        with subtests.test(path=path):
            assert "openapi.json" in problem(api.get(path), 404)["detail"]
    # Outside the API, pages keep HTML errors.
    page = api.get("/nope")
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_json_field_round_trips(api, acme):
    details = {"n": [1, None, True, "x"], "nested": {"k": -7}}
    resp = api.post("/api/v1/data/deal", json={"name": "J", "account": acme["id"], "details": details})
    assert resp.status_code == 201, resp.json
    assert api.get(f"/api/v1/data/deal/{resp.json['id']}").json["details"] == details


def test_json_field_keeps_fractional_numbers(api, acme):
    details = {"ratio": 1.5, "list": [0.1, 2.25]}
    resp = api.post("/api/v1/data/deal", json={"name": "J", "account": acme["id"], "details": details})
    assert resp.status_code == 201, resp.json
    assert api.get(f"/api/v1/data/deal/{resp.json['id']}").json["details"] == details


def test_extreme_but_valid_values(api, acme):
    """Edge values that are legal must work on both databases (no overflow, no 500)."""
    big = 2**63 - 1
    for q in (f"account={big}", f"id__lt={big}", "amount__lt=999999999999.99",
              f'filter={quote(json.dumps({"field": "account", "op": "in", "value": [1, big]}))}'):
        assert api.get(f"/api/v1/data/deal?{q}").status_code == 200, q
    resp = api.post("/api/v1/data/account", json={"name": "Big", "employees": big, "annual_revenue": "99999999999999.99"})
    assert resp.status_code == 201, resp.json
    assert resp.json["employees"] == big and resp.json["annual_revenue"] == "99999999999999.99"
    assert "account" in problem(api.post("/api/v1/data/deal", json={"name": "d", "account": big}), 422)["errors"]
    assert api.post("/api/v1/data/account", json={"name": "é中文 🙂", "website": "https://例え.jp"}).status_code == 201


def test_unexpected_errors_are_500_problems_without_internals(api, crm_app, monkeypatch, caplog):
    st = crm_app.extensions["loomwork"]

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(st.services.query, "list", boom)
    resp = api.get("/api/v1/data/account")
    doc = problem(resp, 500)
    assert "secret" not in resp.get_data(as_text=True) and "logged" in doc["detail"]
    assert any("unhandled error on GET /api/v1/data/account" in r.message for r in caplog.records)
    # Pages outside the API answer Flask's HTML error page instead.
    monkeypatch.setattr(st.services.permissions, "readable_objects", boom)
    web = crm_app.test_client()
    csrf = web.get("/login").get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    web.post("/login", data={"username": "admin", "password": "admin-password", "csrf_token": csrf})
    page = web.get("/")
    assert page.status_code == 500 and page.mimetype == "text/html"
    assert "secret" not in page.get_data(as_text=True)


def test_the_recycle_bin_lists_deleted_records_through_the_query_service(crm_app, api, api_as, acme):
    """Issue 11, defect 9: ``GET /data/<object>/deleted`` lists what was deleted, the last
    first, with the list's parameters and permissions; restoring needs delete."""
    from loomwork.runtime.context import Actor, Context

    made = api.post("/api/v1/data/deal", json=[{"name": n, "account": acme["id"], "amount": "1"}
                                                for n in ("Kept", "First gone", "Second gone", "Third gone")]).json
    ids = {d["name"]: d["id"] for d in made["data"]}
    for name in ("First gone", "Second gone", "Third gone"):
        assert api.delete(f"/api/v1/data/deal/{ids[name]}").status_code == 204
    resp = api.get("/api/v1/data/deal/deleted?count=exact")
    assert resp.status_code == 200
    assert [d["name"] for d in resp.json["data"]] == ["Third gone", "Second gone", "First gone"]
    assert resp.json["count"] == 3 and all(d["deleted_at"] for d in resp.json["data"])
    admin_id = api.get("/api/v1/auth/me").json["user"]["id"]
    assert {d["updated_by"] for d in resp.json["data"]} == {admin_id}  # who deleted them
    page = api.get("/api/v1/data/deal/deleted?limit=2&sort=name&fields=name").json
    assert [d["name"] for d in page["data"]] == ["First gone", "Second gone"]
    rest = api.get(f"/api/v1/data/deal/deleted?limit=2&sort=name&fields=name&cursor={page['next_cursor']}").json
    assert [d["name"] for d in rest["data"]] == ["Third gone"] and rest["next_cursor"] is None
    assert [d["name"] for d in api.get("/api/v1/data/deal/deleted?search=second").json["data"]] == ["Second gone"]
    assert [d["name"] for d in api.get("/api/v1/data/deal/deleted?name__starts_with=First").json["data"]] == [
        "First gone"]
    # A cursor of the live list is not one of the bin's.
    live = api.get("/api/v1/data/deal?limit=1&sort=name").json
    problem(api.get(f"/api/v1/data/deal/deleted?limit=1&sort=name&cursor={live['next_cursor']}"), 400)
    assert [d["name"] for d in api.get("/api/v1/data/deal").json["data"]] == ["Kept"]
    # Readers see the bin; restoring is for those who may delete; others are refused.
    vera = api_as("vera")
    assert len(vera.get("/api/v1/data/deal/deleted").json["data"]) == 3
    problem(vera.post(f"/api/v1/data/deal/{ids['First gone']}/restore"), 403)
    st = crm_app.extensions["loomwork"]
    st.services.users.create(Context(st.platform.tenant("main"), Actor.system()), "fay", "finance-password",
                             roles=("finance",))
    problem(api_as("fay").get("/api/v1/data/contact/deleted"), 403)
    problem(api.get("/api/v1/data/nothing/deleted"), 404)
    assert api.post(f"/api/v1/data/deal/{ids['First gone']}/restore").status_code == 200
    assert [d["name"] for d in api.get("/api/v1/data/deal/deleted").json["data"]] == ["Third gone", "Second gone"]
