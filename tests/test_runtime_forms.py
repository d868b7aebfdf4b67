"""Layouts per role, generated layouts, condition states of a stored record, saved views."""
from __future__ import annotations

import pytest

from loomwork.metadata.errors import BadQuery, NotFound, PermissionDenied, ValidationError
from loomwork.metadata.packages import load_package
from loomwork.plugins import crm_sample
from loomwork.runtime.context import Context
from loomwork.runtime.forms import choose_form, layout_for
from loomwork.testing import with_fields

SAMPLE_PACKAGE = crm_sample.PATH

FORMS = {
    "everyone": {"object": "deal", "tabs": [{"name": "t"}]},
    "sales_low": {"object": "deal", "roles": ["sales"], "priority": 1, "tabs": [{"name": "t"}]},
    "sales_high": {"object": "deal", "roles": ["sales", "viewer"], "priority": 5, "tabs": [{"name": "t"}]},
    "b_tie": {"object": "deal", "roles": ["viewer"], "priority": 5, "tabs": [{"name": "t"}]},
    "a_tie": {"object": "deal", "roles": ["viewer"], "priority": 5, "tabs": [{"name": "t"}]},
    "other": {"object": "account", "tabs": [{"name": "t"}]},
}


@pytest.mark.parametrize(("roles", "expected"), [
    ({"sales"}, "sales_high"), ({"viewer"}, "a_tie"), ({"user"}, "everyone"), ({"admin"}, "everyone"),
])
def test_the_form_for_roles(roles, expected):
    assert choose_form(FORMS, "deal", frozenset(roles)) == expected


def test_no_form_means_none():
    assert choose_form({"other": FORMS["other"]}, "deal", frozenset({"sales"})) is None


@pytest.fixture
def crm(lw_services, lw_ctx):
    lw_services.packages.install(lw_ctx, load_package(SAMPLE_PACKAGE))
    return lw_services


def test_generated_layout_sections_fields_and_related_lists(crm, lw_ctx):
    app = crm.runtime.compiled(lw_ctx.tenant)
    layout = layout_for(app, "contact", frozenset({"user"}))
    assert layout.name is None
    fields = [s.field for s in layout.slots()]
    assert fields[:2] == ["first_name", "last_name"] and "email" in fields
    widgets = {s.field: s.widget for s in layout.slots()}
    assert widgets["email"] == "email" and widgets["account"] == "lookup" and widgets["birthday"] == "date"
    account = layout_for(app, "account", frozenset({"user"}))
    assert account.name == "account_main"
    assert {(r.object, r.via) for r in account.related} == {("deal", "account"), ("contact", "account")}
    assert layout_for(app, "account", frozenset({"user"})) is account  # cached per version


def test_field_states_follow_conditions(crm, lw_ctx):
    acc = crm.records.create(lw_ctx, "account", {"name": "Acme"})
    lost = crm.records.create(lw_ctx, "deal", {"name": "L", "account": acc["id"], "stage": "lost",
                                               "lost_reason": "price"})
    won = crm.records.create(lw_ctx, "deal", {"name": "W", "account": acc["id"], "stage": "won", "amount": "5"})
    _rec, states = crm.records.for_form(lw_ctx, "deal", lost["id"])
    assert "lost_reason" not in states.hidden and "lost_reason" in states.required
    _rec, states = crm.records.for_form(lw_ctx, "deal", won["id"])
    assert "lost_reason" in states.hidden and "lost_reason" not in states.required
    defaults, states = crm.records.for_form(lw_ctx, "deal", None)
    assert defaults["stage"] == "prospecting" and "lost_reason" in states.hidden


def test_field_states_read_paths_and_read_only(lw_services, lw_ctx, lw_publish):
    lw_services.packages.install(lw_ctx, load_package(SAMPLE_PACKAGE))
    doc = lw_services.metadata.current(lw_ctx).doc
    doc = with_fields(doc, "deal", amount={**doc["objects"]["deal"]["fields"]["amount"],
                                          "read_only_if": 'account.industry == "finance"'})
    lw_services.metadata.publish(lw_ctx, doc)
    acc = lw_services.records.create(lw_ctx, "account", {"name": "Bank", "industry": "finance"})
    deal = lw_services.records.create(lw_ctx, "deal", {"name": "D", "account": acc["id"], "stage": "proposal"})
    sam = lw_services.users.create(lw_ctx, "sam", "sales-password", roles=("sales",))
    as_sam = Context(lw_ctx.tenant, sam.actor())
    _rec, states = lw_services.records.for_form(as_sam, "deal", deal["id"])
    assert "amount" in states.read_only and states.paths == {"account.industry": "finance"}
    _rec, states = lw_services.records.for_form(lw_ctx, "deal", deal["id"])  # administrators are exempt
    assert "amount" not in states.read_only


def test_saved_views_personal_shared_and_checked(crm, lw_ctx):
    views = crm.views
    sam = crm.users.create(lw_ctx, "sam", "sales-password", roles=("sales",))
    vera = crm.users.create(lw_ctx, "vera", "viewer-password", roles=("viewer",))
    admin = crm.users.create(lw_ctx, "ada", "admin-password", roles=("admin",))
    as_sam, as_vera, as_admin = (Context(lw_ctx.tenant, u.actor()) for u in (sam, vera, admin))
    mine = views.save(as_sam, "deal", {"label": "Mine", "columns": ["name", "account.industry"],
                                       "filter": {"field": "stage", "op": "eq", "value": "won"}, "sort": ["-amount"]})
    assert mine.source == "personal" and mine.key.isdigit()
    assert [v.key for v in views.list(as_sam, "deal") if v.source != "package"] == [mine.key]
    assert all(v.source == "package" for v in views.list(as_vera, "deal"))
    req = mine.request(limit=5)
    assert req.filter == {"field": "stage", "op": "eq", "value": "won"} and req.limit == 5 and req.sort == ["-amount"]
    with pytest.raises(PermissionDenied):
        views.save(as_sam, "deal", {"label": "S"}, shared=True)
    shared = views.save(as_admin, "deal", {"label": "Team"}, shared=True)
    assert shared.key in {v.key for v in views.list(as_vera, "deal")}
    with pytest.raises(PermissionDenied):
        views.delete(as_vera, "deal", shared.key)
    with pytest.raises(NotFound):
        views.delete(as_vera, "deal", mine.key)  # someone else's personal view does not exist for her
    with pytest.raises(PermissionDenied):
        views.delete(as_sam, "deal", "open_deals")
    with pytest.raises(ValidationError):
        views.save(as_sam, "deal", {"label": "x", "page_size": 1000})
    with pytest.raises(BadQuery):
        views.save(as_sam, "deal", {"label": "x", "filter": {"field": "nope", "op": "eq", "value": 1}})
    with pytest.raises((BadQuery, ValidationError)):
        views.save(as_sam, "deal", {"label": "x", "columns": ["account.nope"]})
    replaced = views.save(as_sam, "deal", {"label": "Mine 2"}, key=mine.key)
    assert replaced.key == mine.key and views.get(as_sam, "deal", mine.key).label == "Mine 2"
    views.delete(as_sam, "deal", mine.key)
    with pytest.raises(NotFound):
        views.get(as_sam, "deal", mine.key)
    default = views.default(as_sam, "deal")
    assert default is not None and default.key == "open_deals"


def test_objects_a_user_may_not_read_are_refused_by_name(crm, lw_ctx):
    """D16 in the services: metadata, rules, layout and views of an object the actor may
    not read raise PermissionDenied naming it; a view may not show a column of one
    either (finance reads deals and accounts, not contacts)."""
    fiona = Context(lw_ctx.tenant, crm.users.create(lw_ctx, "fiona", None, roles=("finance",)).actor())
    meta, views = crm.metadata, crm.views
    for ask in (meta.object_doc, meta.object_rules, meta.layout, views.list):
        with pytest.raises(PermissionDenied, match="read contact"):
            ask(fiona, "contact")
        with pytest.raises(NotFound):
            ask(fiona, "nope")
    assert meta.object_doc(fiona, "deal")[1]["fields"]["contact"]["target"] == "contact"
    assert "contact" not in meta.readable_objects(fiona)[1]
    with pytest.raises(PermissionDenied, match="read contact"):
        views.save(fiona, "contact", {"label": "x", "page_size": 1000})  # the object first, then the body
    with pytest.raises(PermissionDenied, match="'contact.email' shows contact records"):
        views.save(fiona, "deal", {"label": "x", "columns": ["name", "contact.email"]})
    with pytest.raises(PermissionDenied, match="'contact.nope' shows contact records"):
        views.save(fiona, "deal", {"label": "x", "columns": ["contact.nope"]})  # no probing its fields
    mine = views.save(fiona, "deal", {"label": "Mine", "columns": ["name", "account.industry"]})
    with pytest.raises(PermissionDenied, match="contact"):
        views.save(fiona, "deal", {"label": "Mine", "columns": ["contact.email"]}, key=mine.key)
    assert views.get(fiona, "deal", mine.key).columns == ["name", "account.industry"]
