"""The filter AST's rules (``loomwork.metadata.filters``) and their one use: a publish
refuses, with the path of the node, every view filter the query engine would refuse,
so a view that publishes opens."""
from __future__ import annotations

import copy
import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomwork.metadata import filters, validation
from loomwork.metadata.errors import BadQuery, MetadataError
from loomwork.metadata.filters import MAX_CONDITIONS, MAX_DEPTH, MAX_LIST, OPERATOR_NAMES, check
from loomwork.runtime import query
from loomwork.runtime.context import Actor, Context
from loomwork.runtime.views import SavedView

OBJECTS = {
    "account": {"title_field": "name", "search_fields": ["name"], "fields": {
        "name": {"type": "text"},
        "industry": {"type": "choice", "options": [{"value": "retail"}, {"value": "tech"}]}}},
    "deal": {"title_field": "name", "fields": {
        "name": {"type": "text"},
        "qty": {"type": "integer"},
        "amount": {"type": "decimal", "precision": 12, "scale": 2},
        "stage": {"type": "choice", "options": [{"value": "new"}, {"value": "won"}, {"value": "lost"}]},
        "tags": {"type": "multi_choice", "options": [{"value": "a"}, {"value": "b"}]},
        "close_date": {"type": "date"},
        "next_at": {"type": "datetime"},
        "active": {"type": "boolean"},
        "notes": {"type": "long_text"},
        "details": {"type": "json"},
        "account": {"type": "lookup", "target": "account"},
        "double": {"type": "formula", "result_type": "number", "expression": "qty * 2"}}},
}


def doc_with(view: dict) -> dict:
    return {"objects": copy.deepcopy(OBJECTS), "views": {"v": {"object": "deal", "label": "V", **view}}}


def refusal(runtime, view: dict) -> dict[str, list[str]] | None:
    """What publishing ``view`` would say (None: it publishes)."""
    try:
        runtime.validate(doc_with(view))
    except MetadataError as exc:
        return exc.errors
    return None


def nest(depth: int) -> dict:
    node = {"field": "qty", "op": "gt", "value": 1}
    for _ in range(depth):
        node = {"not": node}
    return node


# -- the rules themselves ---------------------------------------------------------------

def test_one_definition_of_the_limits():
    """Metadata validation and the query engine restate none of the rules."""
    for module in (validation, query):
        for name in ("MAX_FILTER_DEPTH", "MAX_FILTER_CONDITIONS", "MAX_DEPTH", "MAX_CONDITIONS", "MAX_LIST",
                     "MAX_PATH_HOPS", "VARIABLES", "OPERATORS"):
            assert getattr(module, name, filters) in (filters, getattr(filters, name, None)), (module, name)


def test_every_field_type_takes_only_filter_operators(lw_runtime):
    for name, ftype in lw_runtime.field_types.items():
        assert ftype.filter_ops <= set(OPERATOR_NAMES), name


@pytest.mark.parametrize(("node", "path", "message"), [
    (nest(MAX_DEPTH + 1), "f" + ".not" * MAX_DEPTH, f"nested deeper than {MAX_DEPTH} levels"),
    ({"and": [{"field": "qty", "op": "equals", "value": 1}]}, "f.and.0.op", "unknown operator 'equals'"),
    ({"or": [{"field": "qty", "op": "in", "value": list(range(MAX_LIST + 1))}]}, "f.or.0.value",
     f"1 to {MAX_LIST} values"),
    ({"field": "qty", "op": "between", "value": [1]}, "f.value", "between needs [low, high]"),
    ({"field": "qty", "op": "is_null", "value": "yes"}, "f.value", "is_null needs true or false"),
    ({"field": "qty", "op": "lt", "value": None}, "f.value", "use is_null"),
    ({"field": "name", "op": "icontains", "value": 3}, "f.value", "needs a non-empty text"),
    ({"field": "a.b.c.d.e", "op": "eq", "value": 1}, "f.field", "more than 3 hops"),
    ({"field": "Qty", "op": "eq", "value": 1}, "f.field", "must be a field name or a path"),
    ({"or": [{"field": "qty", "op": "eq", "value": i} for i in range(MAX_CONDITIONS + 1)]}, "f",
     f"more than {MAX_CONDITIONS} conditions"),
    ({"not": {"and": []}}, "f.not.and", "must be a non-empty list"),
    ({"field": "qty", "op": "eq"}, "f.value", "needs a value"),
])
def test_check_names_the_node(node, path, message):
    errors, _found = check(node, "f")
    assert any(p == path and message in m for p, m in errors), errors


def test_check_passes_the_limits_themselves():
    assert check(nest(MAX_DEPTH), "f") == ([], [filters.Condition("f" + ".not" * MAX_DEPTH, "qty", "gt", 1)])
    assert check({"or": [{"field": "qty", "op": "eq", "value": i} for i in range(MAX_CONDITIONS)]})[0] == []


def test_rules_document_and_schema_come_from_the_operators():
    doc = filters.rules_document()
    assert list(doc["operators"]) == list(OPERATOR_NAMES)
    assert (doc["max_depth"], doc["max_conditions"], doc["max_list"]) == (MAX_DEPTH, MAX_CONDITIONS, MAX_LIST)
    schema = filters.json_schema()
    ops = [alt["properties"]["op"]["const"] for alt in schema["oneOf"] if "op" in alt.get("properties", {})]
    assert ops == list(OPERATOR_NAMES)


# -- publishing refuses what would not open ---------------------------------------------

@pytest.mark.parametrize(("view", "path", "message"), [
    # deeper than the engine runs: published before, then failed when opened
    ({"filter": nest(10)}, "views.v.filter" + ".not" * MAX_DEPTH, f"nested deeper than {MAX_DEPTH} levels"),
    ({"filter": {"field": "stage", "op": "equals", "value": "won"}}, "views.v.filter.op",
     "unknown operator 'equals'"),
    ({"filter": {"and": [{"field": "qty", "op": "gt", "value": 1}, {"field": "amount", "op": "eq", "value": "ten"}]}},
     "views.v.filter.and.1", "amount: 'ten' is not valid here"),
    ({"filter": {"field": "stage", "op": "contains", "value": "wo"}}, "views.v.filter",
     "stage: operator 'contains' does not apply to a choice field"),
    ({"filter": {"not": {"field": "stage", "op": "eq", "value": "wno"}}}, "views.v.filter.not", "must be one of"),
    ({"filter": {"field": "close_date", "op": "lt", "value": "$now"}}, "views.v.filter",
     "compare a date field with $today"),
    ({"filter": {"field": "account.industry", "op": "between", "value": ["a", "b"]}}, "views.v.filter",
     "does not apply to a choice field"),
    ({"filter": {"field": "owner_id", "op": "eq", "value": 2**40}}, "views.v.filter", "out of range"),
    ({"filter": {"field": "qty", "op": "in", "value": "1,2"}}, "views.v.filter.value", "needs a list"),
])
def test_publish_refuses_a_view_that_would_not_open(lw_runtime, view, path, message):
    errors = refusal(lw_runtime, view)
    assert errors is not None and path in errors, errors
    assert any(message in m for m in errors[path]), errors[path]


def test_publish_refusal_through_the_metadata_service(lw_services, lw_ctx):
    with pytest.raises(MetadataError) as info:
        lw_services.metadata.publish(lw_ctx, doc_with({"filter": nest(10)}))
    assert "views.v.filter" + ".not" * MAX_DEPTH in info.value.errors
    assert lw_services.metadata.current(lw_ctx).version == 0


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(
    ["won", "wno", "a", "", "ten", "1.5", "2026-01-01", "2026-01-01T00:00:00+00:00", "$now", "$today", "$user.id",
     "$$x", "retail"]))
PATHS = st.sampled_from([*OBJECTS["deal"]["fields"], "account.name", "account.industry", "id", "created_at",
                         "owner_id", "nope", "account.nope"])
CONDITIONS = st.fixed_dictionaries({"field": PATHS, "op": st.sampled_from([*OPERATOR_NAMES, "equals"]),
                                    "value": st.one_of(VALUES, st.lists(VALUES, max_size=3))})
FILTERS = st.recursive(CONDITIONS, lambda inner: st.one_of(
    st.builds(lambda xs: {"and": xs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda xs: {"or": xs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda x: {"not": x}, inner)), max_leaves=5)


def test_what_publishes_opens(lw_services, lw_ctx):
    """Random view filters: either the publish check refuses one (naming a node of the
    filter), or the view's list runs — on both databases, as a user would open it."""
    lw_services.metadata.publish(lw_ctx, {"objects": copy.deepcopy(OBJECTS)})
    runtime = lw_services.runtime
    moment = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    user = Context(lw_ctx.tenant, Actor(5, "ann", frozenset({"admin"})), clock=lambda: moment)
    seen = {"refused": 0, "opened": 0}

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(FILTERS, st.sampled_from([(), ("-qty",), ("stage", "-close_date"), ("account",)]))
    def prop(flt, sort):
        view = {"filter": flt, **({"sort": list(sort)} if sort else {})}
        errors = refusal(runtime, view)
        if errors is not None:
            assert all(p.startswith("views.v") for p in errors), errors
            seen["refused"] += 1
            return
        try:
            lw_services.query.list(user, "deal", SavedView("v", None, view, "package").request(limit=2))
        except BadQuery as exc:
            pytest.fail(f"published, then failed when opened: {exc.message} ({view})")
        seen["opened"] += 1

    prop()
    assert seen["refused"] and seen["opened"], seen
