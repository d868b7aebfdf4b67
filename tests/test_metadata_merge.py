"""metadata.merge: the three-way merge of a document edited from an older version with
the head, and the base an exported document names."""
from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loomwork.metadata.errors import ValidationError
from loomwork.metadata.merge import (
    BASE_DIGEST,
    BASE_VERSION,
    digest,
    export_doc,
    merge3,
    split_export,
)

BASE = {"objects": {"deal": {"label": "Deal", "fields": {
    "name": {"type": "text", "label": {"en": "Name", "zh-CN": "名称"}},
    "amount": {"type": "decimal", "precision": 12, "scale": 2, "label": "Amount"},
    "stage": {"type": "choice", "options": [{"value": "open"}, {"value": "won"}]},
}}}, "roles": {"auditor": {"permissions": {"deal": ["read"]}}, "sales": {"permissions": {"deal": ["read"]}}}}


def edit(doc, fn):
    doc = copy.deepcopy(doc)
    fn(doc)
    return doc


def deal(doc):
    return doc["objects"]["deal"]["fields"]


def test_changes_on_both_sides_that_do_not_overlap_are_kept():
    yours = edit(BASE, lambda d: (deal(d).__setitem__("priority", {"type": "text"}),
                                  deal(d)["amount"].__setitem__("label", "Value"),
                                  d["roles"].pop("auditor")))
    theirs = edit(BASE, lambda d: (deal(d).__setitem__("region", {"type": "text"}),
                                   deal(d)["name"]["label"].__setitem__("zh-CN", "名字"),
                                   deal(d)["amount"].__setitem__("precision", 14)))
    m = merge3(BASE, yours, theirs)
    assert m.conflicts == []
    assert list(deal(m.doc)) == ["name", "amount", "stage", "priority", "region"]
    assert deal(m.doc)["amount"] == {"type": "decimal", "precision": 14, "scale": 2, "label": "Value"}
    assert deal(m.doc)["name"]["label"] == {"en": "Name", "zh-CN": "名字"}
    assert "auditor" not in m.doc["roles"]
    assert m.taken == [
        {"path": "objects.deal.fields.name.label.zh-CN", "op": "changed", "old": "名称", "new": "名字"},
        {"path": "objects.deal.fields.amount.precision", "op": "changed", "old": 12, "new": 14},
        {"path": "objects.deal.fields.region", "op": "added", "old": None, "new": {"type": "text"}},
    ]


def test_the_same_change_on_both_sides_is_no_conflict():
    both = edit(BASE, lambda d: deal(d)["amount"].__setitem__("label", "Value"))
    m = merge3(BASE, both, copy.deepcopy(both))
    assert (m.doc, m.taken, m.conflicts) == (both, [], [])


def test_different_changes_of_one_property_conflict():
    yours = edit(BASE, lambda d: deal(d)["amount"].__setitem__("label", "Deal value"))
    theirs = edit(BASE, lambda d: (deal(d)["amount"].__setitem__("label", "Value"),
                                   deal(d)["stage"]["options"].append({"value": "lost"})))
    m = merge3(BASE, yours, theirs)
    assert [(c.path, c.base, c.yours, c.theirs) for c in m.conflicts] == [
        ("objects.deal.fields.amount.label", "Amount", "Deal value", "Value")]
    assert m.conflicts[0].summary == "you changed it, and version head changed it"


def test_deleted_on_one_side_and_changed_on_the_other_conflicts():
    yours = edit(BASE, lambda d: deal(d).pop("stage"))
    theirs = edit(BASE, lambda d: deal(d)["stage"]["options"].append({"value": "lost"}))
    (c,) = merge3(BASE, yours, theirs).conflicts
    assert (c.path, c.yours, c.theirs["options"][-1]) == ("objects.deal.fields.stage", None, {"value": "lost"})
    assert c.summary.startswith("you deleted it")
    # Lists are single values: two different edits of the options conflict as a whole.
    yours = edit(BASE, lambda d: deal(d)["stage"]["options"].append({"value": "won_back"}))
    assert [c.path for c in merge3(BASE, yours, theirs).conflicts] == ["objects.deal.fields.stage.options"]


def test_an_element_both_added_differently_is_one_conflict():
    yours = edit(BASE, lambda d: deal(d).__setitem__("region", {"type": "text", "label": "Region"}))
    theirs = edit(BASE, lambda d: deal(d).__setitem__("region", {"type": "text", "max_length": 50}))
    (c,) = merge3(BASE, yours, theirs).conflicts
    assert (c.path, c.base) == ("objects.deal.fields.region", None)
    assert c.summary == "you added it, and version head added it"


DOCS = st.recursive(st.integers(0, 3) | st.sampled_from(["a", "b"]),
                    lambda kids: st.dictionaries(st.sampled_from(["x", "y", "z"]), kids, max_size=3),
                    max_leaves=8)


@settings(max_examples=200, deadline=None, database=None)
@given(st.dictionaries(st.sampled_from(["p", "q"]), DOCS, max_size=2),
       st.dictionaries(st.sampled_from(["p", "q"]), DOCS, max_size=2))
def test_one_sided_edits_merge_to_that_side(base, other):
    assert merge3(base, other, copy.deepcopy(base)).doc == other
    m = merge3(base, copy.deepcopy(base), other)
    assert m.doc == other and m.conflicts == []
    assert (m.taken == []) == (base == other)
    assert merge3(base, other, copy.deepcopy(other)).doc == other


def test_exports_name_their_base():
    exported = export_doc(7, BASE)
    assert list(exported)[:2] == [BASE_VERSION, BASE_DIGEST]
    assert exported[BASE_VERSION] == 7 and exported[BASE_DIGEST] == digest(BASE)
    assert digest(edit(BASE, lambda d: d["roles"].pop("sales"))) != digest(BASE)
    assert digest(dict(reversed(list(BASE.items())))) == digest(BASE)  # key order does not matter
    assert split_export(exported) == (BASE, 7, digest(BASE))
    assert split_export(BASE) == (BASE, None, None)
    for bad, key in [({BASE_VERSION: "7"}, BASE_VERSION), ({BASE_VERSION: -1}, BASE_VERSION),
                     ({BASE_VERSION: True}, BASE_VERSION), ({BASE_DIGEST: "abc"}, BASE_DIGEST),
                     ({BASE_VERSION: 1, BASE_DIGEST: 5}, BASE_DIGEST)]:
        with pytest.raises(ValidationError) as info:
            split_export({**BASE, **bad})
        assert key in info.value.errors
