"""The record page and edit form show what the services allow, with their reasons
(issue 11, defects 3-7): submit only where it can work, the lock said before typing
(and typed values kept), reject back to the submitter from the first step, the path
the approval took, and workflow transitions disabled with their message."""
from __future__ import annotations

import copy
import re

import pytest

from loomwork.runtime.context import Actor, Context


@pytest.fixture
def crm(crm_app, fast_setup, web_as):
    st = crm_app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    users = {u.username: u for u in st.services.users.list(ctx)}
    st.services.users.set_manager(ctx, users["sam"].id, users["admin"].id)
    st.services.users.create(ctx, "sara", "sales-password", roles=("sales",))
    users = {u.username: u for u in st.services.users.list(ctx)}

    def as_(name: str) -> Context:
        return Context(ctx.tenant, users[name].actor())

    return st, as_, web_as


def test_submit_is_offered_only_where_it_can_work(crm):
    st, as_, web = crm
    rec = st.services.records
    small = rec.create(as_("sam"), "quote", {"name": "Small", "list_price": "100", "discount": "10"})
    big = rec.create(as_("sam"), "quote", {"name": "Big", "list_price": "100", "discount": "30"})
    sam = web("sam", "sales-password")
    page = sam.text(f"/app/quote/{small['id']}")
    # The entry condition is false: disabled, with the reason in words, never the internal name.
    assert re.search(r'<button type="button" class="button" disabled[^>]*>Submit for approval: Discount approval',
                     page)
    why = re.search(r'<span id="why-submit-[a-z_]+" class="small muted">([^<]+)</span>', page).group(1)
    assert why == "Discount approval does not apply to this record"  # its title, not its internal name
    page = sam.text(f"/app/quote/{big['id']}")
    assert re.search(r'<button type="submit" class="button primary">Submit for approval: Discount approval', page)
    # Vera only reads: nothing offered that could not work.
    vera = web("vera", "viewer-password")
    page = vera.text(f"/app/quote/{big['id']}")
    assert 'type="submit" class="button primary">Submit for approval' not in page
    # Submitted: no second submit, and in Chinese the reasons are Chinese.
    st.services.approvals.submit(as_("sam"), "quote", big["id"])
    st.services.users.set_locale(as_("admin"), as_("sam").actor.id, "zh-CN", ("en", "zh-CN"))
    sam = web("sam", "sales-password")
    page = sam.text(f"/app/quote/{small['id']}")
    why = re.search(r'<span id="why-submit-[a-z_]+" class="small muted">([^<]+)</span>', page).group(1)
    assert why == "折扣审批不适用于此记录"
    page = sam.text(f"/app/quote/{big['id']}")
    assert "提交审批" not in page.split('class="card approval-panel"')[1].split("</aside>")[0].split("<ol")[0]


def test_a_locked_record_says_so_before_typing_and_keeps_what_was_typed(crm):
    st, as_, web = crm
    rec = st.services.records
    quote = rec.create(as_("sam"), "quote", {"name": "Locked one", "list_price": "100", "discount": "30"})
    sam = web("sam", "sales-password")
    form = sam.text(f"/app/quote/{quote['id']}/edit")
    assert "You cannot change this record now." not in form and ">Save<" in form
    st.services.approvals.submit(as_("sam"), "quote", quote["id"])
    # Opened after submitting: the form says it is locked, cannot be saved.
    form = sam.text(f"/app/quote/{quote['id']}/edit")
    assert "You cannot change this record now." in form and "Locked while it waits for approval (Discount approval)" \
        in form and ">Save<" not in form and "<fieldset class=\"lw-form-body\" disabled" in form
    page = sam.text(f"/app/quote/{quote['id']}")
    assert f"/app/quote/{quote['id']}/edit" not in page and "Locked while it waits for approval" in page
    # Opened before, saved after: refused, and the typed values are still there.
    resp = sam.post(f"/app/quote/{quote['id']}/edit", {"name": "My new name", "list_price": "100",
                                                        "discount": "30", "row_version": str(quote["row_version"])})
    html = resp.get_data(as_text=True)
    assert "Not saved: Locked while it waits for approval" in html and 'value="My new name"' in html
    assert rec.get(as_("sam"), "quote", quote["id"])["name"] == "Locked one"


def test_the_approver_at_the_first_step_can_send_it_back_to_the_submitter(crm):
    st, as_, web = crm
    quote = st.services.records.create(as_("sam"), "quote", {"name": "Q", "list_price": "100", "discount": "30"})
    st.services.approvals.submit(as_("sam"), "quote", quote["id"])
    admin = web("admin", "admin-password")
    page = admin.text(f"/app/quote/{quote['id']}")
    assert '<option value="submitter">back to the submitter</option>' in page
    task = re.search(r'action="/app/approvals/tasks/(\d+)"', page).group(1)
    admin.post(f"/app/approvals/tasks/{task}", {"decision": "reject", "to": "submitter", "comment": "less, please"})
    assert st.services.approvals.for_record(as_("sam"), "quote", quote["id"])[0]["status"] == "returned"


def test_the_panel_shows_the_path_taken_and_who_changed_the_record(crm):
    st, as_, web = crm
    quote = st.services.records.create(as_("sam"), "quote", {"name": "Q", "list_price": "100", "discount": "30"})
    st.services.approvals.submit(as_("sam"), "quote", quote["id"])
    admin = web("admin", "admin-password")
    page = admin.text(f"/app/quote/{quote['id']}")
    steps = re.findall(r'<span class="step-title">([^<]+)</span>', page)
    assert steps == ["Manager"]  # not the branch not taken, not the routing node
    history = page[page.index('class="timeline approval-history"'):]
    history = history[:history.index("</ol>")]
    assert "Submitted" in history and "Routed" not in history
    task = re.search(r'action="/app/approvals/tasks/(\d+)"', page).group(1)
    admin.post(f"/app/approvals/tasks/{task}", {"decision": "approve"})
    page = admin.text(f"/app/quote/{quote['id']}")
    history = page[page.index('class="timeline approval-history"'):]
    history = history[:history.index("</ol>")]
    assert "Step approved" not in history and "Action done" not in history and "Approval complete" in history
    # The on_approved action set approval_status as the system, on the approver's behalf.
    record = st.services.records.get(as_("admin"), "quote", quote["id"])
    assert record["approval_status"] == "approved" and record["updated_by"] == as_("admin").actor.id
    meta = page[page.index('class="muted small record-meta"'):][:600]
    assert "Last modified by admin" in meta
    timeline = page[page.index('id="history-title"'):]
    assert '<span class="history-origin">by the approval</span>' in timeline
    entry = next(e for e in st.services.records.history(as_("admin"), "quote", quote["id"])
                 if e["field"] == "approval_status")
    assert entry["origin"] == "approval" and entry["via"] == "quote_discount"


TICKET = {"fields": {"title": {"type": "text", "required": True},
                     "status": {"type": "choice", "options": [{"value": s} for s in ("new", "open", "closed")]},
                     "resolution": {"type": "text"}}}
WORKFLOW = {"object": "ticket", "field": "status", "initial": "new",
            "states": [{"name": "new"}, {"name": "open"}, {"name": "closed", "final": True, "edit": {"roles": []}}],
            "transitions": [{"name": "open", "from": ["new"], "to": "open"},
                            {"name": "close", "from": ["open"], "to": "closed", "condition": "not is_blank(resolution)",
                             "label": {"en": "Close", "zh-CN": "关闭"},
                             "message": {"en": "Fill in the resolution first", "zh-CN": "请先填写解决方案"}}]}


def test_transitions_are_disabled_with_their_message_and_the_form_offers_only_open_states(crm):
    st, as_, web = crm
    ctx = as_("admin")
    doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
    doc["objects"]["ticket"] = TICKET
    doc["roles"]["sales"]["permissions"]["ticket"] = ["create", "read", "update"]
    doc["workflows"] = {"tickets": WORKFLOW}
    st.services.metadata.publish(ctx, doc, comment="tickets")
    rec = st.services.records
    t = rec.create(as_("sam"), "ticket", {"title": "Printer"})
    t = rec.update(as_("sam"), "ticket", t["id"], {"status": "open"})
    sam = web("sam", "sales-password")
    page = sam.text(f"/app/ticket/{t['id']}")
    assert re.search(r'<button type="button" class="button" disabled[^>]*>Close</button>', page)
    assert "Fill in the resolution first" in page and "is_blank" not in page
    form = sam.text(f"/app/ticket/{t['id']}/edit")
    select = form[form.index('name="status"'):]
    select = select[:select.index("</select>")]
    assert 'value="open"' in select and 'value="new"' not in select and 'value="closed"' not in select
    t = rec.update(as_("sam"), "ticket", t["id"], {"resolution": "toner"})
    form = sam.text(f"/app/ticket/{t['id']}/edit")
    select = form[form.index('name="status"'):]
    assert 'value="closed"' in select[:select.index("</select>")]
    t = rec.update(as_("sam"), "ticket", t["id"], {"status": "closed"})
    page = sam.text(f"/app/ticket/{t['id']}")
    assert f"/app/ticket/{t['id']}/edit" not in page and "In state closed it cannot be changed by you" in page


def test_the_api_answers_what_may_be_done_with_a_record(crm, api_as):
    st, as_, web = crm
    quote = st.services.records.create(as_("sam"), "quote", {"name": "Q", "list_price": "100", "discount": "10"})
    sam = api_as("sam")
    got = sam.get(f"/api/v1/data/quote/{quote['id']}/abilities").get_json()
    assert got["edit"] == {"allowed": True, "reason": None, "fields": None} and got["delete"]["allowed"]
    assert got["submit"] == [{"name": "quote_discount", "label": "Discount approval", "allowed": False, "reason": {
        "code": "not_applicable", "message": "Discount approval does not apply to this record (its entry "
                                            "condition is not met)", "params": {"process": "Discount approval"}}}]
    st.services.records.update(as_("sam"), "quote", quote["id"], {"discount": "30"})
    st.services.approvals.submit(as_("sam"), "quote", quote["id"])
    got = sam.get(f"/api/v1/data/quote/{quote['id']}/abilities").get_json()
    assert not got["edit"]["allowed"] and got["edit"]["reason"]["code"] == "approval_pending"
    assert sam.patch(f"/api/v1/data/quote/{quote['id']}", json={"name": "x"}).status_code == 403
    assert api_as("vera").get(f"/api/v1/data/quote/{quote['id']}/abilities").get_json()["edit"]["reason"][
        "code"] == "no_update"
    assert sam.get("/api/v1/data/quote/999999/abilities").status_code == 404
