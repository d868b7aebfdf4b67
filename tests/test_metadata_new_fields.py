"""Fields a publish adds land on form layouts that list fields explicitly (section marked
``new_fields: true``, else an appended "New fields" section; ``new_fields: none`` opts
out), the plan names each placement and warns about fields left off a layout."""
from __future__ import annotations

import copy

import pytest

from loomwork.metadata.diff import plan
from loomwork.metadata.errors import MetadataError
from loomwork.metadata.model import AppMetadata
from loomwork.metadata.new_fields import SECTION_LABEL, place_new_fields
from loomwork.metadata.packages import load_package
from loomwork.metadata.validation import validate_app
from loomwork.plugins import crm_sample
from loomwork.runtime.forms import layout_for

SAMPLE = load_package(crm_sample.PATH)
PRIORITY = {"type": "choice", "options": [{"value": "high"}, {"value": "low"}]}


def doc_with(*, new_fields=None, marked=None, extra_forms=None):
    """Objects ``deal`` (name, amount, stage; an object section ``money``) and a form
    ``deal_main`` listing name and stage (and showing ``money``)."""
    sections = [{"name": "main", "fields": ["name", "stage"]}, {"name": "more", "section": "money"}]
    if marked is not None:
        sections[marked]["new_fields"] = True
    form = {"object": "deal", "tabs": [{"name": "overview", "sections": sections},
                                       {"name": "other", "sections": [{"name": "notes", "fields": ["notes"]}]}]}
    if new_fields is not None:
        form["new_fields"] = new_fields
    return {"objects": {"deal": {"fields": {"name": {"type": "text"}, "amount": {"type": "integer"},
                                            "stage": {"type": "text"}, "notes": {"type": "long_text"}},
                                 "sections": {"money": {"fields": ["amount"]}}}},
            "forms": {"deal_main": form, **(extra_forms or {})}}


def add(doc, **fields):
    doc = copy.deepcopy(doc)
    doc["objects"]["deal"]["fields"].update(fields)
    return doc


def sections_of(doc, form="deal_main", tab=0):
    return doc["forms"][form]["tabs"][tab]["sections"]


def test_new_fields_land_in_the_marked_section():
    old = doc_with(marked=0)
    new = place_new_fields(old, add(old, priority=PRIORITY, region={"type": "text"}))
    assert sections_of(new)[0]["fields"] == ["name", "stage", "priority", "region"]
    assert len(sections_of(new)) == 2


def test_without_a_marked_section_one_is_appended_and_reused():
    old = doc_with()
    new = place_new_fields(old, add(old, priority=PRIORITY))
    assert sections_of(new)[-1] == {"name": "new_fields", "label": SECTION_LABEL, "new_fields": True,
                                    "fields": ["priority"]}
    assert SECTION_LABEL == {"en": "New fields", "zh-CN": "新字段"}
    later = place_new_fields(new, add(new, region={"type": "text"}))
    assert sections_of(later)[-1]["fields"] == ["priority", "region"]
    assert len(sections_of(later)) == 3


def test_the_appended_section_takes_a_free_name():
    old = doc_with()
    sections_of(old).append({"name": "new_fields", "fields": ["notes"]})
    del old["forms"]["deal_main"]["tabs"][1]
    new = place_new_fields(old, add(old, priority=PRIORITY))
    assert [s["name"] for s in sections_of(new)] == ["main", "more", "new_fields", "new_fields_2"]


def test_what_is_not_placed():
    old = doc_with()
    # Opted out, already placed by the same change, renamed, or a form added with the field.
    assert place_new_fields(doc_with(new_fields="none"), add(doc_with(new_fields="none"), priority=PRIORITY)) \
        == add(doc_with(new_fields="none"), priority=PRIORITY)
    placed = add(old, priority=PRIORITY)
    sections_of(placed)[1]["fields"] = ["amount", "priority"]
    assert place_new_fields(old, placed) is placed
    shared = add(old, priority=PRIORITY)
    shared["objects"]["deal"]["sections"]["money"]["fields"].append("priority")
    assert place_new_fields(old, shared) is shared  # shown through the object section
    renamed = copy.deepcopy(old)
    renamed["objects"]["deal"]["fields"]["title"] = {"type": "text", "renamed_from": "name"}
    del renamed["objects"]["deal"]["fields"]["name"]
    assert place_new_fields(old, renamed) is renamed
    fresh = add(old, priority=PRIORITY)
    fresh["forms"]["deal_quick"] = {"object": "deal", "tabs": [{"name": "t", "sections": [
        {"name": "s", "fields": ["name"]}]}]}
    assert sections_of(place_new_fields(old, fresh), "deal_quick") == [{"name": "s", "fields": ["name"]}]
    assert place_new_fields(old, {"objects": "not a mapping", "forms": old["forms"]}) == {
        "objects": "not a mapping", "forms": old["forms"]}


@pytest.mark.parametrize(("doc", "path", "message"), [
    (doc_with(marked=1), "forms.deal_main.tabs.0.sections.1.new_fields", "must list its fields"),
    (doc_with(marked=0, new_fields="none"), "forms.deal_main.tabs.0.sections.0.new_fields",
     "new_fields: none, so no section receives new fields"),
])
def test_new_fields_settings_are_checked(doc, path, message, lw_runtime):
    with pytest.raises(MetadataError) as info:
        validate_app(doc, lw_runtime.field_types)
    assert any(message in m for m in info.value.errors[path]), info.value.errors


def test_one_marked_section_per_form(lw_runtime):
    doc = doc_with(marked=0)
    doc["forms"]["deal_main"]["tabs"][1]["sections"][0]["new_fields"] = True
    with pytest.raises(MetadataError) as info:
        validate_app(doc, lw_runtime.field_types)
    assert info.value.errors["forms.deal_main.tabs.1.sections.0.new_fields"] == [
        "only one section receives new fields; forms.deal_main.tabs.0.sections.0 already does"]
    bad = doc_with(new_fields="sometimes")
    with pytest.raises(MetadataError) as info:
        validate_app(bad, lw_runtime.field_types)
    assert "forms.deal_main.new_fields" in info.value.errors


def _plan(old, new, types):
    validate_app(old, types)
    validate_app(new, types)
    return plan(AppMetadata.from_doc(old, 1), AppMetadata.from_doc(new, 2), types)


def test_the_plan_names_placements_and_warns_about_fields_left_off(lw_runtime):
    types = lw_runtime.field_types
    old = doc_with(extra_forms={"deal_sales": {"object": "deal", "new_fields": "none", "roles": ["user"],
                                               "tabs": [{"name": "t", "sections": [{"name": "s", "fields": ["name"]}]}]}})
    new = place_new_fields(old, add(old, priority=PRIORITY))
    p = _plan(old, new, types)
    assert [op.description for op in p.operations] == [
        "Add column deal.priority", "Add deal.priority to form deal_main (new section new_fields)"]
    assert p.operations[1].detail == {"name": "deal_main", "op": "add_field", "tab": "overview",
                                      "section": "new_fields"}
    assert p.as_dict()["warnings"] == [{
        "object": "deal", "field": "priority", "forms": ["deal_sales"],
        "message": "deal.priority is not on form deal_sales (new_fields: none), which lists its fields "
                   "explicitly: users who get it do not see it"}]

    # With every layout opted out, the field is on none.
    quiet = copy.deepcopy(old)
    quiet["forms"]["deal_main"]["new_fields"] = "none"
    p = _plan(quiet, place_new_fields(quiet, add(quiet, priority=PRIORITY)), types)
    assert [w["message"] for w in p.warnings] == [
        "deal.priority is on no form layout: forms deal_sales (new_fields: none) and deal_main (new_fields: none) "
        "list their fields explicitly"]
    assert [op.description for op in p.operations] == ["Add column deal.priority"]


def test_fields_that_drop_off_every_layout_are_warned_about(lw_runtime):
    types = lw_runtime.field_types
    old = doc_with()
    new = copy.deepcopy(old)
    new["forms"]["deal_main"]["tabs"][1]["sections"][0]["fields"] = ["name"]
    new["forms"]["deal_main"]["tabs"][0]["sections"][0]["fields"] = ["stage"]
    p = _plan(old, new, types)
    assert [op.description for op in p.operations] == [
        "Remove deal.notes from form deal_main", "Move deal.name on form deal_main to section notes"]
    new["forms"]["deal_main"]["tabs"][0]["sections"][0]["columns"] = 1
    assert [op.description for op in _plan(old, new, types).operations][-1] == "Change tabs of form deal_main"
    assert [w["message"] for w in p.warnings] == [
        "deal.notes is on no form layout any more: form deal_main lists its fields explicitly"]
    # A first form of an object: the fields the generated layout showed and it leaves out.
    bare = {"objects": old["objects"]}
    p = _plan(bare, old, types)
    assert [op.description for op in p.operations] == ["Add form deal_main"]
    assert p.warnings == ()
    less = copy.deepcopy(old)
    del less["forms"]["deal_main"]["tabs"][1]
    assert [w["field"] for w in _plan(bare, less, types).warnings] == ["notes"]


# -- publishing and package upgrades -------------------------------------------------

def _layout_fields(services, ctx, roles=frozenset({"user"})):
    app = services.runtime.compiled(ctx.tenant)
    return [s.field for s in layout_for(app, "deal", roles).slots()]


def test_a_published_field_shows_on_the_explicit_layout(lw_services, lw_ctx):
    meta = lw_services.metadata
    meta.publish(lw_ctx, doc_with())
    assert "priority" not in _layout_fields(lw_services, lw_ctx)
    preview = meta.preview(lw_ctx, add(doc_with(), priority=PRIORITY))
    assert "Add deal.priority to form deal_main (new section new_fields)" in [
        op.description for op in preview.operations]
    assert meta.publish(lw_ctx, add(doc_with(), priority=PRIORITY)) == 2
    stored = meta.current(lw_ctx)
    assert stored.doc["forms"]["deal_main"]["tabs"][0]["sections"][-1]["fields"] == ["priority"]
    assert _layout_fields(lw_services, lw_ctx)[-2:] == ["priority", "notes"]
    app = lw_services.runtime.compiled(lw_ctx.tenant)
    section = layout_for(app, "deal", frozenset({"user"})).tabs[0].sections[-1]
    assert (section.name, section.label) == ("new_fields", SECTION_LABEL)


def _sample(version, **fields):
    pkg = copy.deepcopy(SAMPLE)
    pkg.manifest["version"] = version
    pkg.objects["deal"]["fields"].update(fields)
    return pkg


def test_a_package_upgrade_places_its_new_field_on_every_deal_layout(lw_services, lw_ctx):
    meta, pkgs = lw_services.metadata, lw_services.packages
    pkgs.install(lw_ctx, _sample("1.0.0"))
    doc = copy.deepcopy(meta.current(lw_ctx).doc)
    doc["forms"]["deal_main"]["label"] = "Our deal"  # customised by the tenant
    doc["forms"]["deal_mine"] = {"object": "deal", "roles": ["sales"], "tabs": [  # the tenant's own
        {"name": "t", "sections": [{"name": "s", "fields": ["name", "amount"], "new_fields": True}]}]}
    meta.publish(lw_ctx, doc)
    before = meta.current(lw_ctx)
    assert "priority" not in before.doc["objects"]["deal"]["fields"]

    dry = meta.preview(lw_ctx, pkgs.merged(lw_ctx, _sample("1.1.0", priority=PRIORITY))[0])
    assert {op.description for op in dry.operations} >= {
        "Add column deal.priority", "Add deal.priority to form deal_main (new section new_fields)",
        "Add deal.priority to form deal_mine (section s)"}
    pkgs.install(lw_ctx, _sample("1.1.0", priority=PRIORITY))
    after = meta.current(lw_ctx)
    forms = after.doc["forms"]
    assert forms["deal_main"]["label"] == "Our deal"
    assert forms["deal_main"]["tabs"][0]["sections"][-1]["fields"] == ["priority"]
    assert forms["deal_mine"]["tabs"][0]["sections"][0]["fields"] == ["name", "amount", "priority"]
    assert after.ownership["forms.deal_main"] == {"package": "crm_sample", "customized": True}
    assert after.ownership["forms.deal_mine"] == {"package": None, "customized": False}
    assert "priority" in _layout_fields(lw_services, lw_ctx) and \
        "priority" in _layout_fields(lw_services, lw_ctx, frozenset({"sales"}))
