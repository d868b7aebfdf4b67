"""Formula fields in list queries: selected, filtered, sorted and paged in SQL, with the
same values the record service computes in Python."""
from __future__ import annotations

import pytest

from loomwork.metadata.errors import BadQuery
from loomwork.runtime.compiled import Runtime
from loomwork.runtime.expr import BUILTIN_FUNCTIONS, Function
from loomwork.runtime.query import ListRequest, QueryService

DOC = {"objects": {
    "account": {"fields": {
        "name": {"type": "text"},
        "tier": {"type": "choice", "options": [{"value": "gold"}, {"value": "silver"}]},
    }},
    "deal": {"fields": {
        "name": {"type": "text"},
        "account": {"type": "lookup", "target": "account"},
        "amount": {"type": "currency"},
        "qty": {"type": "integer"},
        "net": {"type": "formula", "result_type": "decimal", "expression": "amount * 0.9"},
        "net_stored": {"type": "formula", "result_type": "decimal", "stored": True, "expression": "amount * 0.9"},
        "big": {"type": "formula", "result_type": "boolean", "expression": "net > 100"},
        "label": {"type": "formula", "result_type": "text",
                  "expression": 'concat(upper(name), " / ", coalesce(account.tier, "none"))'},
        "per_unit": {"type": "formula", "result_type": "number", "expression": "amount / qty"},
    }},
}}


@pytest.fixture
def data(lw_publish, rec, lw_ctx):
    lw_publish(DOC)
    gold = rec.create(lw_ctx, "account", {"name": "G", "tier": "gold"})
    rows = [("a", "50", 5, gold["id"]), ("b", "200", 0, None), ("c", None, 2, gold["id"]),
            ("d", "120", 4, None), ("e", "1000", None, gold["id"])]
    return [rec.create(lw_ctx, "deal", {"name": n, "amount": a, "qty": q, "account": acc})
            for n, a, q, acc in rows]


def listing(lw_services, lw_ctx, **kw):
    return lw_services.query.list(lw_ctx, "deal", ListRequest(**kw))


def test_list_values_match_the_record_service(data, lw_services, lw_ctx, rec):
    page = listing(lw_services, lw_ctx, sort=["name"])
    for row in page.data:
        single = rec.get(lw_ctx, "deal", row["id"])
        for f in ("net", "net_stored", "big", "label", "per_unit"):
            assert row[f] == single[f], (f, row, single)
    by_name = {r["name"]: r for r in page.data}
    assert by_name["a"]["label"] == "A / gold" and by_name["b"]["label"] == "B / none"
    assert by_name["b"]["per_unit"] is None  # x / 0 is empty, in SQL as in Python
    assert by_name["c"]["net"] is None and by_name["c"]["big"] is None


def test_filter_sort_and_page_on_virtual_formulas(data, lw_services, lw_ctx):
    page = listing(lw_services, lw_ctx, filter={"field": "big", "op": "eq", "value": True}, sort=["-net"])
    assert [r["name"] for r in page.data] == ["e", "b", "d"]
    page = listing(lw_services, lw_ctx, filter={"field": "label", "op": "starts_with", "value": "A"})
    assert [r["name"] for r in page.data] == ["a"]
    seen, cursor = [], None
    while True:
        page = listing(lw_services, lw_ctx, sort=["net"], limit=2, cursor=cursor, fields=["name", "net"])
        seen += [(r["name"], r["net"]) for r in page.data]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [("a", "45.00"), ("d", "108.00"), ("b", "180.00"), ("e", "900.00"), ("c", None)]
    assert listing(lw_services, lw_ctx, filter={"field": "net_stored", "op": "gt", "value": "100"},
                   count="exact").count == 3


def test_lookup_paths_through_formulas_of_the_target(data, lw_services, lw_ctx, lw_publish):
    doc = {"objects": {**DOC["objects"]}}
    doc["objects"]["account"] = {"fields": {**DOC["objects"]["account"]["fields"],
                                            "shout": {"type": "formula", "result_type": "text",
                                                      "expression": "upper(name)"}}}
    lw_publish(doc)
    page = listing(lw_services, lw_ctx, filter={"field": "account.shout", "op": "eq", "value": "G"}, sort=["name"])
    assert [r["name"] for r in page.data] == ["a", "c", "e"]


def test_a_formula_the_database_cannot_compute(lw_platform, lw_plugin_manager, lw_ctx):
    from loomwork.plugin_manager import field_types
    from loomwork.runtime.services import Services

    shout = Function("shout", ("text",), "text", lambda s: s.upper() + "!")  # no SQL form
    runtime = Runtime(field_types(lw_plugin_manager), {f.name: f for f in (*BUILTIN_FUNCTIONS, shout)})
    services = Services(runtime)
    doc = {"objects": {"note": {"fields": {"body": {"type": "text"}, "loud": {
        "type": "formula", "result_type": "text", "expression": "shout(body)"}}}}}
    services.metadata.publish(lw_ctx, doc)
    services.records.create(lw_ctx, "note", {"body": "hi"})
    query: QueryService = services.query
    page = query.list(lw_ctx, "note", ListRequest(fields=["loud"]))
    assert page.data[0]["loud"] == "HI!"  # computed in Python for the page
    with pytest.raises(BadQuery, match="cannot be computed by the database"):
        query.list(lw_ctx, "note", ListRequest(filter={"field": "loud", "op": "eq", "value": "HI!"}))
    with pytest.raises(BadQuery, match="cannot be computed by the database"):
        query.list(lw_ctx, "note", ListRequest(sort=["loud"]))


def test_a_formula_can_become_stored_and_be_renamed(data, lw_services, lw_ctx, lw_publish, rec):
    import copy

    doc = copy.deepcopy(DOC)
    doc["objects"]["deal"]["fields"]["net"]["stored"] = True
    doc["objects"]["deal"]["fields"]["net"]["indexed"] = True
    lw_publish(doc)  # gains a column, filled after the publish
    assert rec.get(lw_ctx, "deal", data[0]["id"])["net"] == "45.00"
    page = listing(lw_services, lw_ctx, filter={"field": "net", "op": "gte", "value": "100"}, sort=["net"])
    assert [r["name"] for r in page.data] == ["d", "b", "e"]
    renamed = copy.deepcopy(DOC)
    f = renamed["objects"]["deal"]["fields"]
    f["per_item"] = {**f.pop("per_unit"), "renamed_from": "per_unit"}  # virtual: no column to rename
    lw_publish(renamed)
    assert rec.get(lw_ctx, "deal", data[0]["id"])["per_item"] == 10.0


def test_formulas_never_show_objects_the_user_may_not_read(data, lw_services, lw_ctx, lw_publish):
    from loomwork.runtime.context import Actor, Context

    doc = {"objects": DOC["objects"], "roles": {"dealer": {"permissions": {"deal": ["read"]}}}}
    lw_publish(doc)
    dealer = Context(lw_ctx.tenant, Actor(9, "d", frozenset({"dealer"})))
    row = lw_services.records.get(dealer, "deal", data[0]["id"])
    assert row["label"] == "A / none"  # account.tier reads as empty, as a filter on it is refused
    page = lw_services.query.list(dealer, "deal", ListRequest(
        filter={"field": "label", "op": "eq", "value": "A / gold"}))
    assert page.data == []
    assert listing(lw_services, lw_ctx, filter={"field": "label", "op": "eq", "value": "A / gold"}).data


def test_a_formula_failing_on_one_record_is_a_bad_query_not_a_crash(lw_publish, rec, lw_services, lw_ctx):
    lw_publish({"objects": {"n": {"fields": {"x": {"type": "integer"}, "sq": {
        "type": "formula", "result_type": "number", "expression": "x * x * x"}}}}})
    rec.create(lw_ctx, "n", {"x": 2**40})
    try:
        page = lw_services.query.list(lw_ctx, "n", ListRequest(filter={"field": "sq", "op": "gt", "value": 0}))
    except BadQuery as exc:  # PostgreSQL: bigint out of range
        assert "could not be computed" in str(exc)
    else:  # SQLite: integer overflow becomes a REAL
        assert len(page.data) == 1
