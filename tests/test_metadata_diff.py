"""metadata.diff: the element diff people read and the typed plan the database gets."""
from __future__ import annotations

import copy

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomwork.metadata.diff import FAST, HEAVY, INSTANT, desired_indexes, doc_diff, index_name, plan
from loomwork.metadata.model import AppMetadata
from loomwork.metadata.validation import validate_app
from loomwork.plugin_manager import field_types, make_plugin_manager
from loomwork.testing import with_fields

TYPES = field_types(make_plugin_manager(entry_points=False))

BASE = {"objects": {"deal": {"fields": {
    "name": {"type": "text", "label": "Name"},
    "amount": {"type": "decimal", "precision": 12, "scale": 2},
    "stage": {"type": "choice", "options": [{"value": "open"}, {"value": "won"}]},
}}}}


def make_plan(old, new, old_version=4):
    validate_app(old, TYPES)
    validate_app(new, TYPES)
    return plan(AppMetadata.from_doc(old, old_version), AppMetadata.from_doc(new, old_version + 1), TYPES)


def changed(**edits):
    """BASE with ``deal.fields.<name>`` replaced/added (``None`` removes it)."""
    return with_fields(BASE, **edits)


def kinds(p):
    return [(op.kind, op.change, op.object, op.field) for op in p.operations]


# -- doc_diff ------------------------------------------------------------------

def test_doc_diff_lists_each_change_with_path():
    old = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": True}
    new = {"a": 2, "b": {"c": [1, 2, 3], "d": "x", "e": None}, "new": {"k": 1}}
    assert doc_diff(old, new) == [
        {"path": "a", "op": "changed", "old": 1, "new": 2},
        {"path": "b.c", "op": "changed", "old": [1, 2], "new": [1, 2, 3]},
        {"path": "b.e", "op": "added", "old": None, "new": None},
        {"path": "gone", "op": "removed", "old": True, "new": None},
        {"path": "new", "op": "added", "old": None, "new": {"k": 1}},
    ]
    assert doc_diff(old, copy.deepcopy(old)) == []
    assert doc_diff({"x": {"y": 1}}, {"x": 5}) == [{"path": "x", "op": "changed", "old": {"y": 1}, "new": 5}]


# -- plan classes ----------------------------------------------------------------

def test_no_change_is_an_empty_instant_plan():
    p = make_plan(BASE, copy.deepcopy(BASE))
    assert not p
    assert p.operations == ()
    assert p.change == INSTANT
    assert p.as_dict() == {"old_version": 4, "change": "instant", "operations": [], "warnings": []}


def test_add_field_is_fast():
    p = make_plan(BASE, changed(notes={"type": "long_text"}))
    assert kinds(p) == [("add_field", FAST, "deal", "notes")]
    assert p.change == FAST
    assert p.operations[0].detail == {"type": "long_text", "table": "deal"}


def test_label_change_is_instant():
    p = make_plan(BASE, changed(name={"type": "text", "label": {"en": "Title", "zh-CN": "标题"}}))
    assert kinds(p) == [("change_field", INSTANT, "deal", "name")]
    assert p.change == INSTANT


def test_object_settings_and_roles_are_instant():
    new = copy.deepcopy(BASE)
    new["objects"]["deal"]["label"] = "Opportunity"
    new["roles"] = {"sales": {"permissions": {"deal": ["read"]}}}
    p = make_plan(BASE, new)
    assert kinds(p) == [("change_object", INSTANT, "deal", None), ("change_role", INSTANT, "*", None)]
    assert [op.description for op in p.operations] == ["Change label of deal", "Add role sales"]
    assert p.operations[0].detail["changes"] == [{"path": "label", "op": "added", "old": None, "new": "Opportunity"}]


def test_plan_lines_name_what_changes():
    old = copy.deepcopy(BASE)
    old["objects"]["deal"]["validations"] = {
        "positive": {"condition": "amount < 0", "message": "Must be positive"},
        "old_rule": {"condition": "false", "message": "x"}}
    old["roles"] = {"auditor": {"permissions": {"deal": ["read"]}},
                    "sales": {"permissions": {"deal": ["read"]}, "label": "Sales"}}
    old["packages"] = {"crm": {"name": "crm", "version": "1.0.0", "title": "CRM"}}
    old["scripts"] = {"shout": {"object": "deal", "trigger": {"event": "before_save"}, "source": "pass"}}
    new = copy.deepcopy(old)
    deal = new["objects"]["deal"]
    deal["plural_label"] = "Deals"
    deal["fields"]["amount"]["label"] = {"en": "Value", "zh-CN": "金额"}
    deal["fields"]["stage"]["options"].append({"value": "lost"})
    deal["fields"]["stage"]["help"] = "Where it is"
    deal["fields"]["name"]["required"] = True
    deal["fields"]["name"]["label"] = "Title"
    deal["validations"]["won_needs_amount"] = {"condition": 'stage == "won" and is_blank(amount)',
                                               "message": "A won deal needs its amount"}
    deal["validations"]["positive"]["message"] = "Use a positive amount"
    del deal["validations"]["old_rule"]
    del new["roles"]["auditor"]
    new["roles"]["sales"]["permissions"]["deal"] = ["read", "update"]
    new["roles"]["viewer"] = {"permissions": {"deal": ["read"]}}
    new["packages"]["crm"]["version"] = "1.1.0"
    new["packages"]["extra"] = {"name": "extra", "version": "0.1.0", "title": "Extra"}
    new["scripts"]["shout"]["source"] = "record['name'] = record['name'].upper()"
    assert [op.description for op in make_plan(old, new).operations] == [
        "Make deal.name required (checked: no empty values)",
        "Change label of deal.name",
        "Change label of deal.amount",
        "Change help and options of deal.stage",
        "Change plural_label of deal",
        "Change message of validation rule deal.positive",
        "Delete validation rule deal.old_rule",
        "Add validation rule deal.won_needs_amount",
        "Delete role auditor",
        "Change permissions of role sales on deal",
        "Add role viewer",
        "Change package crm from version 1.0.0 to 1.1.0",
        "Install package extra 0.1.0",
        "Change source of script shout",
    ]


def test_type_change_is_heavy():
    p = make_plan(BASE, changed(name={"type": "integer"}))
    assert kinds(p) == [("change_field", HEAVY, "deal", "name")]
    assert p.change == HEAVY
    assert p.operations[0].detail["old_type"] == "text"
    assert p.operations[0].detail["new_type"] == "integer"


def test_precision_or_scale_change_is_heavy():
    p = make_plan(BASE, changed(amount={"type": "decimal", "precision": 12, "scale": 4}))
    assert kinds(p) == [("change_field", HEAVY, "deal", "amount")]
    assert "precision or scale" in p.operations[0].description


def test_making_required_is_a_checked_instant_change():
    p = make_plan(BASE, changed(name={"type": "text", "label": "Name", "required": True}))
    assert kinds(p) == [("require_field", INSTANT, "deal", "name")]


def test_unique_adds_a_partial_unique_index():
    p = make_plan(BASE, changed(name={"type": "text", "label": "Name", "unique": True}))
    assert kinds(p) == [("change_field", INSTANT, "deal", "name"), ("add_index", FAST, "deal", None)]
    assert p.operations[1].detail == {"name": "ux_deal_name", "table": "deal", "columns": ["name"],
                                      "unique": True, "live_only": True}


def test_drop_field_is_instant_and_keeps_data():
    p = make_plan(BASE, changed(stage=None))
    assert kinds(p) == [("drop_field", INSTANT, "deal", "stage")]
    assert "data is kept" in p.operations[0].description


def test_rename_field_needs_a_hint():
    hinted = changed(name=None, title={"type": "text", "label": "Name", "renamed_from": "name"})
    assert kinds(make_plan(BASE, hinted)) == [("rename_field", FAST, "deal", "title")]
    unhinted = changed(name=None, title={"type": "text", "label": "Name"})
    assert kinds(make_plan(BASE, unhinted)) == [("drop_field", INSTANT, "deal", "name"),
                                                ("add_field", FAST, "deal", "title")]


def test_rename_object_moves_its_indexes():
    new = {"objects": {"opportunity": {**copy.deepcopy(BASE["objects"]["deal"]), "renamed_from": "deal"}}}
    p = make_plan(BASE, new)
    assert kinds(p) == [("drop_index", FAST, "opportunity", None), ("rename_object", FAST, "opportunity", None),
                        ("add_index", FAST, "opportunity", None)]
    assert p.operations[0].detail == {"name": "ix_deal_sort", "table": "deal"}
    assert p.operations[1].detail == {"old": "deal"}
    assert p.operations[2].detail["name"] == "ix_opportunity_sort"


def test_lookup_target_change_is_heavy_but_renaming_the_target_is_not():
    old = {"objects": {"account": {"fields": {"n": {"type": "text"}}}, "contact": {"fields": {}},
                       "deal": {"fields": {"account": {"type": "lookup", "target": "account"}}}}}
    new = copy.deepcopy(old)
    new["objects"]["deal"]["fields"]["account"]["target"] = "contact"
    p = make_plan(old, new)
    assert kinds(p) == [("change_field", HEAVY, "deal", "account")]
    renamed = copy.deepcopy(old)
    renamed["objects"]["client"] = {**renamed["objects"].pop("account"), "renamed_from": "account"}
    renamed["objects"]["deal"]["fields"]["account"]["target"] = "client"
    p = make_plan(old, renamed)
    assert p.change == FAST
    assert [op.kind for op in p.operations if op.object == "deal"] == []


def test_create_and_drop_object():
    p = make_plan({}, BASE, old_version=0)
    assert kinds(p) == [("create_object", FAST, "deal", None), ("add_index", FAST, "deal", None)]
    assert p.operations[0].detail["fields"] == [{"name": "name", "type": "text"},
                                                {"name": "amount", "type": "decimal"},
                                                {"name": "stage", "type": "choice"}]
    p = make_plan(BASE, {"objects": {}})
    assert kinds(p) == [("drop_object", INSTANT, "deal", None)]


def test_desired_indexes():
    meta = AppMetadata.from_doc({"objects": {
        "account": {"fields": {"name": {"type": "text"}}},
        "deal": {"default_sort": ["-amount"], "fields": {
            "code": {"type": "text", "unique": True},
            "account": {"type": "lookup", "target": "account"},
            "amount": {"type": "integer", "indexed": True},
            "stage": {"type": "text"},
        }, "indexes": {"stage_amount": {"fields": ["stage", "amount"]},
                       "code_stage": {"fields": ["code", "stage"], "unique": True}}},
    }})
    idx = desired_indexes(meta.object("deal"))
    assert {n: (s.columns, s.unique, s.live_only) for n, s in idx.items()} == {
        "ix_deal_sort": (("amount", "id"), False, False),
        "ux_deal_code": (("code",), True, True),
        "ix_deal_account": (("account",), False, False),
        "ix_deal_amount": (("amount",), False, False),
        "ix_deal_stage_amount": (("stage", "amount", "id"), False, False),
        "ux_deal_code_stage": (("code", "stage"), True, True),
    }
    assert desired_indexes(meta.object("account"))["ix_account_sort"].columns == ("created_at", "id")


def test_index_names_fit_postgres():
    long = index_name("ix", "o" * 63, "f" * 63)
    assert len(long) == 63
    assert long != index_name("ix", "o" * 63, "f" * 62 + "g")
    assert index_name("ix", "deal", "stage") == "ix_deal_stage"


# -- properties ------------------------------------------------------------------

NAMES = [f"f{i}" for i in range(8)]
SIMPLE_TYPES = ["text", "integer", "date", "boolean", "email", "long_text"]


@st.composite
def field_changes(draw):
    existing = draw(st.dictionaries(st.sampled_from(NAMES), st.sampled_from(SIMPLE_TYPES), max_size=6))
    names = sorted(existing)
    removed = draw(st.sets(st.sampled_from(names))) if names else set()
    kept = [n for n in names if n not in removed]
    relabelled = draw(st.sets(st.sampled_from(kept))) if kept else set()
    free = [n for n in (f"g{i}" for i in range(6))]
    added = draw(st.dictionaries(st.sampled_from(free), st.sampled_from(SIMPLE_TYPES), max_size=4))
    return existing, removed, relabelled, added


def _doc(fields):
    return {"objects": {"thing": {"fields": fields}}, "roles": {}, "packages": {}}


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(field_changes())
def test_plan_matches_changes_and_is_idempotent(case):
    existing, removed, relabelled, added = case
    old = _doc({n: {"type": t, "label": f"{n} label"} for n, t in existing.items()})
    new = copy.deepcopy(old)
    fields = new["objects"]["thing"]["fields"]
    for n in removed:
        del fields[n]
    for n in relabelled:
        fields[n]["label"] = {"en": f"{n} relabelled", "zh-CN": "新"}
    for n, t in added.items():
        fields[n] = {"type": t}
    p = make_plan(old, new)
    got = sorted(kinds(p))
    want = sorted([("drop_field", INSTANT, "thing", n) for n in removed]
                  + [("change_field", INSTANT, "thing", n) for n in relabelled]
                  + [("add_field", FAST, "thing", n) for n in added])
    assert got == want
    assert p.change == (FAST if added else INSTANT)
    # Once applied, the new state needs nothing more.
    assert not make_plan(new, copy.deepcopy(new))
    # The element diff is empty exactly when nothing changed.
    assert (doc_diff(old, new) == []) == (old == new) == (not (removed or relabelled or added))
    changed_paths = {d["path"].split(".")[3] for d in doc_diff(old, new)}
    assert changed_paths == set(removed) | set(relabelled) | set(added)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, database=None)
@given(JSON, JSON)
def test_doc_diff_is_empty_iff_equal(a, b):
    assert (doc_diff(a, b) == []) == (a == b)
    assert doc_diff(a, copy.deepcopy(a)) == []


@settings(max_examples=100, deadline=None, database=None)
@given(st.dictionaries(st.text(alphabet="abc", max_size=2), JSON, max_size=4),
       st.dictionaries(st.text(alphabet="abc", max_size=2), JSON, max_size=4))
def test_doc_diff_of_mappings_is_empty_iff_equal(a, b):
    diff = doc_diff(a, b)
    assert (diff == []) == (a == b)
    for d in diff:
        assert d["op"] in ("added", "removed", "changed")
