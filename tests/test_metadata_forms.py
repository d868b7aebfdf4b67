"""Form layouts and saved list views as metadata: schema, semantic checks with paths,
the typed model, package loading, ownership through re-installs and instant plans."""
from __future__ import annotations

import copy
import textwrap

import pytest

from loomwork.metadata.diff import INSTANT, plan
from loomwork.metadata.errors import ConflictError, MetadataError
from loomwork.metadata.filters import MAX_CONDITIONS as MAX_FILTER_CONDITIONS
from loomwork.metadata.filters import MAX_DEPTH as MAX_FILTER_DEPTH
from loomwork.metadata.model import AppMetadata, FormDef, ViewDef
from loomwork.metadata.packages import Package, load_package
from loomwork.metadata.validation import (
    layout_dependents,
    schema_errors,
    validate_app,
)
from loomwork.plugins import crm_sample
from loomwork.runtime.widgets import builtin_widgets

SAMPLE = load_package(crm_sample.PATH)
WIDGETS = builtin_widgets()


@pytest.fixture(scope="module")
def types(lw_runtime):
    return lw_runtime.field_types


def crm_doc() -> dict:
    """The sample CRM as one app document (objects, roles, forms and views)."""
    return copy.deepcopy({"objects": SAMPLE.objects, "roles": SAMPLE.roles,
                          "forms": SAMPLE.forms, "views": SAMPLE.views})


def errors_of(doc, types) -> dict[str, list[str]]:
    with pytest.raises(MetadataError) as info:
        validate_app(doc, types, widgets=WIDGETS)
    return info.value.errors


def deal_fields(doc) -> list:
    """The fields of the deal form's first section (to edit in place)."""
    return doc["forms"]["deal_main"]["tabs"][0]["sections"][0]["fields"]


# -- the sample and the model -------------------------------------------------------

def test_sample_package_has_forms_and_views_that_validate(types):
    assert set(SAMPLE.forms) == {"deal_main", "account_main"}
    assert set(SAMPLE.views) == {"open_deals", "won_deals"}
    assert "kind" not in SAMPLE.forms["deal_main"] and "name" not in SAMPLE.views["open_deals"]
    validate_app(crm_doc(), types)


def test_model_builds_forms_and_views():
    doc = crm_doc()
    doc["objects"]["deal"]["sections"] = {"money": {"label": "Money", "fields": ["amount", "probability"]}}
    doc["forms"]["deal_sales"] = {"object": "deal", "roles": ["sales"], "priority": 5, "tabs": [
        {"name": "main", "sections": [{"name": "money", "section": "money", "columns": 1}]}]}
    doc["forms"]["deal_boss"] = {"object": "deal", "roles": ["viewer"], "priority": 9,
                                 "tabs": [{"name": "main", "sections": [{"name": "n", "fields": ["name"]}]}]}
    meta = AppMetadata.from_doc(doc)

    main = meta.forms["deal_main"]
    assert isinstance(main, FormDef) and main.object == "deal" and main.roles == () and main.priority == 0
    overview = main.tabs[0]
    assert (overview.name, overview.label["zh-CN"]) == ("overview", "概览")
    first, notes = overview.sections
    assert (first.name, first.columns, first.collapsible) == ("main", 2, False)
    assert first.fields[4].field == "stage" and first.fields[4].widget == "select"
    assert first.fields[0].widget is None
    assert (notes.columns, notes.collapsible, notes.collapsed) == (1, True, False)
    assert main.field_names()[:4] == ["number", "name", "account", "contact"]
    # A section showing an object section takes its fields and label.
    money = meta.forms["deal_sales"].tabs[0].sections[0]
    assert money.section == "money" and money.label == "Money"
    assert [f.field for f in money.fields] == ["amount", "probability"]

    account = meta.forms["account_main"].tabs[0].related
    assert [(r.object, r.via, r.limit) for r in account] == [("deal", "account", 10), ("contact", "account", 5)]
    assert account[0].sort == ("-amount",)

    # Assigned forms first, then priority, then name; unassigned ones fit everyone.
    assert [f.name for f in meta.forms_for("deal")] == ["deal_boss", "deal_sales", "deal_main"]
    assert meta.form_for("deal", {"sales"}).name == "deal_sales"
    assert meta.form_for("deal", {"sales", "viewer"}).name == "deal_boss"
    assert meta.form_for("deal", {"user"}).name == "deal_main"
    assert meta.form_for("contact", {"user"}) is None
    assert meta.forms_for("contact") == []

    views = meta.views_for("deal")
    assert [v.name for v in views] == ["open_deals", "won_deals"]  # the default first
    open_deals = views[0]
    assert isinstance(open_deals, ViewDef) and open_deals.default and open_deals.page_size == 50
    assert open_deals.columns[:2] == ("number", "name") and open_deals.sort == ("-amount",)
    ast = meta.views["won_deals"].filter_ast()
    assert ast == SAMPLE.views["won_deals"]["filter"] and isinstance(ast["and"], list)
    ast["and"].clear()  # a copy: the model is not changed
    assert len(meta.views["won_deals"].filter_ast()["and"]) == 2
    assert open_deals.visible_to({"user"})
    restricted = ViewDef("v", "deal", None, roles=("sales",))
    assert restricted.visible_to({"sales"}) and restricted.visible_to({"admin"})
    assert not restricted.visible_to({"viewer"})
    assert AppMetadata.from_doc({}).forms == {} and AppMetadata.from_doc({}).views == {}


# -- JSON Schema ------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "doc", "path", "message"), [
    ("form", {"object": "deal"}, "", "tabs is required"),
    ("form", {"object": "deal", "tabs": []}, "tabs", "must have at least 1 entries"),
    ("form", {"object": "deal", "tabs": [{"name": "t", "colour": 1}]}, "tabs.0", "unknown property 'colour'"),
    ("form", {"object": "deal", "tabs": [{"name": "t", "sections": [{"name": "s", "columns": 4}]}]},
     "tabs.0.sections.0.columns", "must be one of 1, 2, 3"),
    ("form", {"object": "deal", "tabs": [{"name": "t", "sections": [
        {"name": "s", "fields": [{"field": "stage", "widget": "Slider"}]}]}]},
     "tabs.0.sections.0.fields.0.widget", "must match"),
    ("form", {"object": "deal", "tabs": [{"name": "t", "sections": [{"name": "s", "fields": ["Amount"]}]}]},
     "tabs.0.sections.0.fields.0", "must match"),
    ("form", {"object": "deal", "priority": 1001, "tabs": [{"name": "t"}]}, "priority", "must be <= 1000"),
    ("form", {"object": "deal", "roles": ["a", "a"], "tabs": [{"name": "t"}]}, "roles", "must not repeat"),
    ("form", {"object": "deal", "tabs": [{"name": "t", "related": [{"object": "deal", "via": "x", "limit": 51}]}]},
     "tabs.0.related.0.limit", "must be <= 50"),
    ("view", {}, "", "object is required"),
    ("view", {"object": "deal", "columns": []}, "columns", "must have at least 1 entries"),
    ("view", {"object": "deal", "columns": ["a.b.c.d"]}, "columns.0", "must match"),
    ("view", {"object": "deal", "page_size": 201}, "page_size", "must be <= 200"),
    ("view", {"object": "deal", "sort": ["--amount"]}, "sort.0", "must match"),
    ("view", {"object": "deal", "filter": []}, "filter", "must be of type object"),
    ("view", {"object": "deal", "search": "x" * 201}, "search", "must be at most 200 characters"),
    ("view", {"object": "deal", "shared": True}, "", "unknown property 'shared'"),
])
def test_schema_errors(kind, doc, path, message):
    errors = schema_errors(kind, doc)
    assert any(p == path and message in m for p, m in errors), errors


def test_schema_errors_in_an_app_document_name_the_element(types):
    doc = crm_doc()
    doc["views"]["open_deals"]["page_size"] = 0
    doc["forms"]["Bad"] = doc["forms"].pop("account_main")
    errs = errors_of(doc, types)
    assert errs["views.open_deals.page_size"] == ["must be >= 1"]
    assert "forms.Bad" in errs


# -- semantic checks ----------------------------------------------------------------

def _view(**body):
    return lambda d: d["views"].update(v={"object": "deal", **body})


def _deep_filter(depth):
    node = {"field": "stage", "op": "eq", "value": "won"}
    for _ in range(depth):
        node = {"not": node}
    return node


SEMANTIC = [
    # forms
    (lambda d: d["forms"]["deal_main"].update(object="dael"), "forms.deal_main.object", "unknown object 'dael'"),
    (lambda d: deal_fields(d).__setitem__(2, "amout"),
     "forms.deal_main.tabs.0.sections.0.fields.2", "unknown field 'amout' of deal"),
    (lambda d: deal_fields(d).__setitem__(3, {"field": "stag"}),
     "forms.deal_main.tabs.0.sections.0.fields.3.field", "unknown field 'stag' of deal"),
    (lambda d: deal_fields(d).append("created_at"),
     "forms.deal_main.tabs.0.sections.0.fields.12", "unknown field 'created_at' of deal"),
    (lambda d: d["forms"]["deal_main"]["tabs"][0]["sections"][1]["fields"].append("amount"),
     "forms.deal_main.tabs.0.sections.1.fields.3",
     "'amount' is already in the form at forms.deal_main.tabs.0.sections.0.fields.6"),
    (lambda d: deal_fields(d).__setitem__(4, {"field": "stage", "widget": "date"}),
     "forms.deal_main.tabs.0.sections.0.fields.4.widget",
     "widget 'date' does not fit a choice field; use one of radio, readonly, select"),
    (lambda d: deal_fields(d).__setitem__(7, {"field": "weighted_amount", "widget": "checkbox"}),
     "forms.deal_main.tabs.0.sections.0.fields.7.widget", "does not fit a formula field"),
    (lambda d: d["forms"]["deal_main"]["tabs"][0]["sections"][1]["fields"].__setitem__(
        1, {"field": "tags", "widget": "select"}),
     "forms.deal_main.tabs.0.sections.1.fields.1.widget", "use one of checkboxes, multiselect, readonly"),
    (lambda d: deal_fields(d).__setitem__(3, {"field": "stage", "widget": "slider"}),
     "forms.deal_main.tabs.0.sections.0.fields.3.widget",
     "unknown widget 'slider'; a choice field takes one of radio, readonly, select"),
    (lambda d: d["forms"]["deal_main"]["tabs"][0]["sections"][1].update(section="money"),
     "forms.deal_main.tabs.0.sections.1.section", "unknown section 'money' of deal"),
    (lambda d: d["forms"]["deal_main"]["tabs"][0]["sections"][1].pop("fields"),
     "forms.deal_main.tabs.0.sections.1", "needs fields, or a section of the object to show"),
    (lambda d: d["forms"]["deal_main"]["tabs"][0]["sections"][1].update(fields=[]),
     "forms.deal_main.tabs.0.sections.1", "needs fields, or a section of the object to show"),
    (lambda d: d["forms"]["deal_main"]["tabs"][0]["sections"][1].update(name="main"),
     "forms.deal_main.tabs.0.sections.1.name", "section 'main' is already in the form"),
    (lambda d: d["forms"]["deal_main"]["tabs"].append({"name": "overview"}),
     "forms.deal_main.tabs.1.name", "tab 'overview' is already in the form"),
    (lambda d: d["forms"]["deal_main"].update(roles=["sales", "boss"]),
     "forms.deal_main.roles.1", "unknown role 'boss'"),
    (lambda d: d["forms"]["account_main"]["tabs"][0]["related"][0].update(object="invoice"),
     "forms.account_main.tabs.0.related.0.object", "unknown object 'invoice'"),
    (lambda d: d["forms"]["account_main"]["tabs"][0]["related"][0].update(via="contact"),
     "forms.account_main.tabs.0.related.0.via", "must be a lookup field of deal pointing at account"),
    (lambda d: d["forms"]["account_main"]["tabs"][0]["related"][0].update(via="stage"),
     "forms.account_main.tabs.0.related.0.via", "must be a lookup field of deal pointing at account"),
    (lambda d: d["forms"]["account_main"]["tabs"][0]["related"][0].update(via="acount"),
     "forms.account_main.tabs.0.related.0.via", "unknown field 'acount' of deal"),
    (lambda d: d["forms"]["account_main"]["tabs"][0]["related"][1]["fields"].append("mail"),
     "forms.account_main.tabs.0.related.1.fields.4", "unknown field 'mail' of contact"),
    (lambda d: d["forms"]["account_main"]["tabs"][0]["related"][0].update(sort=["-notes"]),
     "forms.account_main.tabs.0.related.0.sort.0", "a long_text field cannot be sorted"),
    (lambda d: d["forms"]["account_main"]["tabs"][0]["related"][0].update(sort=["amount", "-amount"]),
     "forms.account_main.tabs.0.related.0.sort.1", "'amount' is already in the sort"),
    (lambda d: d["forms"].update(lw_form=d["forms"]["deal_main"]), "forms.lw_form", "must not start with 'lw_'"),
    (lambda d: d["forms"]["deal_main"].update(name="other"), "forms.deal_main.name", "must be 'deal_main'"),
    # views
    (_view(columns=["name"], roles=["nobody"]), "views.v.roles.0", "unknown role 'nobody'"),
    (lambda d: d["views"]["open_deals"].update(object="deals"), "views.open_deals.object",
     "unknown object 'deals'"),
    (lambda d: d["views"]["open_deals"]["columns"].append("amout"), "views.open_deals.columns.7",
     "unknown field 'amout' of deal"),
    (_view(columns=["stage.name"]), "views.v.columns.0", "'stage' in 'stage.name' is not a lookup field of deal"),
    (_view(columns=["account.industy"]), "views.v.columns.0",
     "unknown field 'industy' of account (in 'account.industy')"),
    (_view(columns=["deleted_at"]), "views.v.columns.0", "unknown field 'deleted_at' of deal"),
    (_view(sort=["-details"]), "views.v.sort.0", "a json field cannot be sorted"),
    (_view(sort=["account.name", "-account.name"]), "views.v.sort.1", "'account.name' is already in the sort"),
    (_view(sort=["contact.account.nme"]), "views.v.sort.0", "unknown field 'nme' of account"),
    (_view(filter={"field": "stge", "op": "eq", "value": "won"}), "views.v.filter.field",
     "unknown field 'stge' of deal"),
    (_view(filter={"or": [{"field": "stage", "op": "eq", "value": "won"},
                          {"not": {"field": "account.indstry", "op": "eq", "value": "x"}}]}),
     "views.v.filter.or.1.not.field", "unknown field 'indstry' of account"),
    (_view(filter={"and": []}), "views.v.filter.and", "must be a non-empty list of conditions"),
    (_view(filter={"and": [{"field": "stage"}]}), "views.v.filter.and.0", "must be {and: [...]}"),
    (_view(filter={"field": "stage", "op": "eq", "value": 1, "x": 2}), "views.v.filter", "must be {and: [...]}"),
    (_view(filter={"field": "Stage", "op": "eq"}), "views.v.filter.field", "must be a field name or a path"),
    (_view(filter={"field": "stage", "op": 3, "value": 1}), "views.v.filter.op", "unknown operator 3; known: eq, ne"),
    (_view(filter={"field": "stage", "op": "equals", "value": "won"}), "views.v.filter.op",
     "unknown operator 'equals'"),
    (_view(filter={"field": "stage", "op": "in", "value": "won"}), "views.v.filter.value",
     "in needs a list of 1 to 500 values"),
    (_view(filter={"field": "contact.account.region.parent.name", "op": "eq", "value": "x"}),
     "views.v.filter.field", "more than 3 hops"),
    (_view(filter=_deep_filter(MAX_FILTER_DEPTH + 1)), "views.v.filter" + ".not" * MAX_FILTER_DEPTH,
     f"nested deeper than {MAX_FILTER_DEPTH} levels"),
    (_view(filter={"or": [{"field": "stage", "op": "eq", "value": str(i)}
                          for i in range(MAX_FILTER_CONDITIONS + 1)]}),
     "views.v.filter", f"has more than {MAX_FILTER_CONDITIONS} conditions"),
    (_view(default=True), "views.v.default", "view 'open_deals' is already the default view of deal"),
]


@pytest.mark.parametrize(("edit", "path", "message"), SEMANTIC)
def test_semantic_errors_name_the_path(types, edit, path, message):
    doc = crm_doc()
    edit(doc)
    errs = errors_of(doc, types)
    assert path in errs, errs
    assert any(message in m for m in errs[path]), errs[path]


def test_valid_paths_filters_and_widgets(types):
    doc = crm_doc()
    doc["views"]["v"] = {"object": "deal", "columns": ["id", "created_at", "account.owner_id", "contact.account.name"],
                         "sort": ["-updated_at", "contact.account.name"], "roles": ["sales", "admin"],
                         "filter": {"and": [{"field": "owner_id", "op": "eq", "value": "$user.id"},
                                            {"field": "stage", "op": "is_null", "value": False},
                                            {"not": {"or": [{"field": "account.industry", "op": "in",
                                                             "value": ["retail"]}]}}]}}
    doc["views"]["nested"] = {"object": "deal", "filter": _deep_filter(MAX_FILTER_DEPTH)}
    deal_fields(doc)[:] = [{"field": "name", "widget": "textarea", "span": 2}, {"field": "amount", "widget": "number"},
                           {"field": "probability", "widget": "decimal"}, {"field": "account", "widget": "readonly"},
                           {"field": "close_date", "widget": "date", "label": {"en": "Close", "zh-CN": "成交"},
                            "help": "When we expect to close"}]
    validate_app(doc, types, widgets=WIDGETS)


# -- packages -------------------------------------------------------------------------

def test_package_files_hold_forms_and_views(tmp_path):
    root = tmp_path / "kit"
    root.mkdir()
    (root / "package.yaml").write_text("name: kit\nversion: 1.0.0\ntitle: Kit\n", encoding="utf-8")
    (root / "layouts.yaml").write_text(textwrap.dedent("""\
        kind: form
        name: deal_main
        object: deal
        tabs: [{name: main, sections: [{name: s, fields: [name]}]}]
        ---
        kind: view
        name: all_deals
        object: deal
        columns: [name]
        """), encoding="utf-8")
    pkg = load_package(root)
    assert pkg.forms == {"deal_main": {"object": "deal", "tabs": [{"name": "main", "sections": [
        {"name": "s", "fields": ["name"]}]}]}}
    assert pkg.views == {"all_deals": {"object": "deal", "columns": ["name"]}}

    (root / "bad.yaml").write_text("kind: view\nname: bad\nobject: deal\npage_size: 0\n---\n"
                                   "kind: form\nname: other\nobject: deal\ntabs: []\n", encoding="utf-8")
    with pytest.raises(MetadataError) as info:
        load_package(root)
    assert info.value.errors == {"bad.yaml: views.bad.page_size": ["must be >= 1"],
                                 "bad.yaml#2: forms.other.tabs": ["must have at least 1 entries"]}


def _sample(version="1.0.0", **changes) -> Package:
    pkg = copy.deepcopy(SAMPLE)
    pkg.manifest["version"] = version
    for key, value in changes.items():
        section, name, prop = key.split("__")
        getattr(pkg, section)[name][prop] = value
    return pkg


def test_install_owns_forms_and_views_and_keeps_customisations(lw_services, lw_ctx):
    meta, pkgs = lw_services.metadata, lw_services.packages
    assert pkgs.install(lw_ctx, _sample()) == 1
    current = meta.current(lw_ctx)
    assert current.doc["forms"] == SAMPLE.forms and current.doc["views"] == SAMPLE.views
    own = current.ownership
    for path in ("forms.deal_main", "forms.account_main", "views.open_deals", "views.won_deals"):
        assert own[path] == {"package": "crm_sample", "customized": False}

    # The tenant relabels the deal form and adds a view of its own.
    doc = copy.deepcopy(current.doc)
    doc["forms"]["deal_main"]["label"] = "My deal"
    doc["views"]["big_deals"] = {"object": "deal", "columns": ["name", "amount"],
                                 "filter": {"field": "amount", "op": "gte", "value": "100000"}}
    assert meta.publish(lw_ctx, doc) == 2
    own = meta.current(lw_ctx).ownership
    assert own["forms.deal_main"] == {"package": "crm_sample", "customized": True}
    assert own["forms.account_main"] == {"package": "crm_sample", "customized": False}
    assert own["views.big_deals"] == {"package": None, "customized": False}

    # An upgrade replaces what the tenant left alone and keeps the customised form.
    upgraded = _sample("1.1.0", forms__deal_main__label="Opportunity", forms__account_main__priority=3,
                       views__open_deals__page_size=25)
    assert pkgs.install(lw_ctx, upgraded) == 3
    stored = meta.current(lw_ctx)
    assert stored.doc["forms"]["deal_main"]["label"] == "My deal"
    assert stored.doc["forms"]["account_main"]["priority"] == 3
    assert stored.doc["views"]["open_deals"]["page_size"] == 25
    assert "big_deals" in stored.doc["views"]
    assert stored.ownership["forms.deal_main"] == {"package": "crm_sample", "customized": True}
    assert stored.ownership["views.open_deals"] == {"package": "crm_sample", "customized": False}
    assert [(op["kind"], op["change"], op["description"]) for op in stored.plan] == [
        ("change_package", INSTANT, "Change package crm_sample from version 1.0.0 to 1.1.0"),
        ("change_form", INSTANT, "Change priority of form account_main"),
        ("change_view", INSTANT, "Change page_size of view open_deals"),
    ]
    assert pkgs.install(lw_ctx, upgraded) == 3  # nothing changed


def test_package_cannot_take_over_a_tenant_form(lw_services, lw_ctx):
    meta = lw_services.metadata
    doc = {"objects": copy.deepcopy(SAMPLE.objects), "roles": copy.deepcopy(SAMPLE.roles)}
    meta.publish(lw_ctx, doc)
    doc = copy.deepcopy(meta.current(lw_ctx).doc)
    doc["forms"]["deal_main"] = {"object": "deal", "tabs": [{"name": "t", "sections": [{"name": "s",
                                                                                       "fields": ["name"]}]}]}
    meta.publish(lw_ctx, doc)
    with pytest.raises(ConflictError, match="already exists"):
        lw_services.packages.install(lw_ctx, _sample())


# -- plans and publishing -------------------------------------------------------------

def test_form_and_view_changes_are_instant_and_named(types):
    old = crm_doc()
    new = copy.deepcopy(old)
    new["forms"]["deal_main"]["label"] = "Opportunity"
    new["forms"]["deal_sales"] = copy.deepcopy(new["forms"]["deal_main"])
    del new["forms"]["account_main"]
    new["views"]["open_deals"]["columns"].append("tags")
    validate_app(new, types)
    p = plan(AppMetadata.from_doc(old, 1), AppMetadata.from_doc(new, 2), types)
    assert [(op.kind, op.change, op.object, op.description) for op in p.operations] == [
        ("change_form", INSTANT, "deal", "Change label of form deal_main"),
        ("change_form", INSTANT, "account", "Delete form account_main"),
        ("change_form", INSTANT, "deal", "Add form deal_sales"),
        ("change_view", INSTANT, "deal", "Change columns of view open_deals"),
    ]
    assert p.change == INSTANT
    assert p.operations[0].detail == {"name": "deal_main", "op": "change", "changes": [
        {"path": "label", "op": "changed", "old": {"en": "Deal", "zh-CN": "商机"}, "new": "Opportunity"}]}
    assert p.operations[3].detail["changes"][0]["path"] == "columns"
    assert not plan(AppMetadata.from_doc(old, 1), AppMetadata.from_doc(copy.deepcopy(old), 2), types)


SMALL = {
    "objects": {
        "account": {"fields": {"name": {"type": "text"}, "industry": {"type": "text"}}},
        "deal": {"fields": {"name": {"type": "text"}, "amount": {"type": "integer"},
                            "account": {"type": "lookup", "target": "account"}}},
    },
    "forms": {"deal_main": {"object": "deal", "tabs": [{"name": "t", "sections": [
        {"name": "s", "fields": ["name", {"field": "amount", "widget": "number"}]}]}]}},
    "views": {"rich": {"object": "deal", "columns": ["name", "account.industry"],
                       "filter": {"not": {"field": "amount", "op": "lt", "value": 10}}}},
}


def test_deleting_a_field_a_form_or_view_uses_names_them(lw_services, lw_ctx):
    meta = lw_services.metadata
    assert meta.publish(lw_ctx, SMALL) == 1
    doc = copy.deepcopy(SMALL)
    del doc["objects"]["deal"]["fields"]["amount"]
    del doc["objects"]["account"]["fields"]["industry"]
    with pytest.raises(MetadataError) as info:
        meta.publish(lw_ctx, doc)
    assert info.value.errors == {
        "forms.deal_main.tabs.0.sections.0.fields.1.field": [
            "uses deal.amount, which this change deletes; change form deal_main first"],
        "views.rich.columns.1": ["uses account.industry, which this change deletes; change view rich first"],
        "views.rich.filter.not.field": ["uses deal.amount, which this change deletes; change view rich first"],
    }
    assert info.value.message.startswith("3 form or view settings still use a renamed or deleted field")
    assert meta.current(lw_ctx).version == 1

    # Once the form and view no longer use them, the fields go.
    doc["forms"]["deal_main"]["tabs"][0]["sections"][0]["fields"] = ["name"]
    doc["views"]["rich"] = {"object": "deal", "columns": ["name", "account.name"]}
    assert meta.publish(lw_ctx, doc) == 2


def test_layout_dependents_for_renames_and_deleted_objects():
    doc = copy.deepcopy(SMALL)
    doc["objects"]["deal"]["fields"]["value"] = {**doc["objects"]["deal"]["fields"].pop("amount"),
                                                 "renamed_from": "amount"}
    assert layout_dependents(SMALL, doc)["views.rich.filter.not.field"] == [
        "uses deal.amount, which this change renames to value; change view rich first"]
    doc = copy.deepcopy(SMALL)
    del doc["objects"]["deal"]
    assert layout_dependents(SMALL, doc) == {
        "forms.deal_main.object": ["uses object deal, which this change deletes; change form deal_main first"],
        "views.rich.object": ["uses object deal, which this change deletes; change view rich first"],
    }
    assert layout_dependents(SMALL, {"objects": "junk"}) == {}  # validation reports malformed documents
    assert layout_dependents(SMALL, SMALL) == {}
