"""Approvals in the generated pages: the record page's panel (submit, steps, decide,
recall), the inbox and batch approve, through Flask's test client on both databases."""
from __future__ import annotations

import copy
import re

import pytest

from loomwork.runtime.context import Actor, Context


@pytest.fixture
def setup(crm_app, web_as):
    st = crm_app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
    doc["approvals"] = {}  # the sample's quote approval; this test brings its own quote
    doc["objects"]["quote"] = {"label": {"en": "Quote", "zh-CN": "报价"},
                               "fields": {"name": {"type": "text", "required": True}, "discount": {"type": "percent"}}}
    doc["roles"]["sales"]["permissions"]["quote"] = ["create", "read", "update"]
    doc["approvals"] = {"discount": {
        "object": "quote", "label": {"en": "Discount approval", "zh-CN": "折扣审批"},
        "nodes": [{"name": "manager", "type": "approval", "label": {"en": "Manager"},
                   "approvers": [{"manager": {"levels": 1}}]},
                  {"name": "finance", "type": "approval", "label": {"en": "Finance"}, "approvers": [{"user": "admin"}]}]}}
    st.services.metadata.publish(ctx, doc, comment="approvals")
    ids = {u.username: u.id for u in st.services.users.list(ctx)}
    st.services.users.set_manager(ctx, ids["sam"], ids["admin"])
    sam_ctx = Context(ctx.tenant, st.services.users.get(ctx, ids["sam"]).actor())
    return st, sam_ctx, web_as("sam", "sales-password"), web_as("admin", "admin-password")


def test_submit_decide_and_recall_from_the_record_page(setup):
    st, sam_ctx, sam, admin = setup
    quote = st.services.records.create(sam_ctx, "quote", {"name": "Bulk order", "discount": "30"})
    page = sam.text(f"/app/quote/{quote['id']}")
    assert "Submit for approval: Discount approval" in page
    resp = sam.post(f"/app/quote/{quote['id']}/approvals", {"process": "discount"})
    assert resp.status_code == 302
    page = sam.text(f"/app/quote/{quote['id']}")
    assert "Submitted for approval." in page and "Waiting for approval" in page
    assert 'class="step step-current"' in page and "Recall" in page and 'name="decision"' not in page
    assert "Locked while it waits for approval" in page and f"/app/quote/{quote['id']}/edit" not in page

    inbox = admin.text("/app/approvals")
    assert "Bulk order" in inbox and "Discount approval" in inbox
    page = admin.text(f"/app/quote/{quote['id']}")
    task = re.search(r'action="/app/approvals/tasks/(\d+)"', page).group(1)
    resp = admin.post(f"/app/approvals/tasks/{task}", {"decision": "approve", "comment": "fine by me"})
    assert resp.status_code == 302
    page = admin.text(f"/app/quote/{quote['id']}")
    assert "Approved." in page and "fine by me" in page and 'class="step step-approved"' in page
    # the second step (finance: admin again) offers sending it back to the first
    assert 'value="manager"' in page
    task = re.search(r'action="/app/approvals/tasks/(\d+)"', page).group(1)
    admin.post(f"/app/approvals/tasks/{task}", {"decision": "reject", "to": "submitter", "comment": "fix"})
    page = sam.text(f"/app/quote/{quote['id']}")
    assert "Sent back to the submitter" in page and "Submit for approval" in page
    sam.post(f"/app/quote/{quote['id']}/approvals", {"process": "discount"})
    inst_id = st.services.approvals.for_record(sam_ctx, "quote", quote["id"])[0]["id"]
    assert sam.post(f"/app/approvals/{inst_id}/recall").status_code == 302
    assert "Approval recalled." in sam.text(f"/app/quote/{quote['id']}")
    # a decision without CSRF is refused
    assert admin.client.post(f"/app/approvals/tasks/{task}", data={"decision": "approve"}).status_code == 403


def test_inbox_tabs_and_batch_approve(setup):
    st, sam_ctx, sam, admin = setup
    ids = []
    for i in range(3):
        q = st.services.records.create(sam_ctx, "quote", {"name": f"Q{i}", "discount": "30"})
        ids.append(st.services.approvals.submit(sam_ctx, "quote", q["id"])["tasks"][0]["id"])
    inbox = admin.text("/app/approvals")
    assert all(f'value="{t}"' in inbox for t in ids)
    resp = admin.post("/app/approvals/batch", {"tasks": [str(t) for t in ids], "comment": "batch"})
    assert resp.status_code == 302
    after = admin.text("/app/approvals")
    assert "3 approved." in after
    assert "Q0" in sam.text("/app/approvals?box=submitted")
    assert "Nothing here." in sam.text("/app/approvals?box=cc")
    assert "Select at least one task first." in admin.text(admin.post("/app/approvals/batch").headers["Location"])


def test_the_submitter_chooses_approvers_on_the_page(setup):
    st, sam_ctx, sam, admin = setup
    ctx = Context(sam_ctx.tenant, Actor.system())
    doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
    doc["approvals"] = {"pick": {"object": "quote", "label": {"en": "Pick a reviewer"}, "nodes": [
        {"name": "review", "type": "approval", "label": {"en": "Review"}, "approvers": [{"chosen_by_submitter": True}]}]}}
    st.services.metadata.publish(ctx, doc, comment="chosen")
    quote = st.services.records.create(sam_ctx, "quote", {"name": "Pick me", "discount": "5"})
    page = sam.text(f"/app/quote/{quote['id']}")
    assert "Approvers for Review" in page and 'name="chosen.review"' in page
    vera = next(u for u in st.services.users.list(ctx) if u.username == "vera")
    sam.post(f"/app/quote/{quote['id']}/approvals", {"process": "pick", "chosen.review": str(vera.id)})
    (inst,) = st.services.approvals.for_record(sam_ctx, "quote", quote["id"])
    assert [t["assignee"] for t in inst["tasks"]] == [vera.id]



def test_hand_over_and_add_a_signer_from_the_page(setup, web_as):
    st, sam_ctx, sam, admin = setup
    ctx = Context(sam_ctx.tenant, Actor.system())
    ids = {u.username: u.id for u in st.services.users.list(ctx)}
    quote = st.services.records.create(sam_ctx, "quote", {"name": "Share me", "discount": "30"})
    st.services.approvals.submit(sam_ctx, "quote", quote["id"])
    page = admin.text(f"/app/quote/{quote['id']}")
    assert "Hand over or add a signer" in page
    task = re.search(r'action="/app/approvals/tasks/(\d+)/share"', page).group(1)
    resp = admin.post(f"/app/approvals/tasks/{task}/share", {"how": "before", "user": str(ids["vera"])})
    assert resp.status_code == 302
    (inst,) = st.services.approvals.for_record(sam_ctx, "quote", quote["id"])
    assert {t["assignee"]: t["status"] for t in inst["tasks"]} == {ids["admin"]: "waiting", ids["vera"]: "pending"}
    vera = web_as("vera", "viewer-password")
    page = vera.text(f"/app/quote/{quote['id']}")
    task = re.search(r'action="/app/approvals/tasks/(\d+)/share"', page).group(1)
    vera.post(f"/app/approvals/tasks/{task}/share", {"how": "transfer", "user": str(ids["sam"])})
    (inst,) = st.services.approvals.for_record(sam_ctx, "quote", quote["id"])
    assert [t["assignee"] for t in inst["tasks"] if t["status"] == "pending"] == [ids["sam"]]
    bad = vera.post(f"/app/approvals/tasks/{task}/share", {"how": "transfer", "user": "x"})
    assert "Not done" in vera.text(bad.headers["Location"])
