"""Approvals through the REST API on both databases: submit, the inbox, decide, the lock
on the record's own endpoints, recall, managers and delegations."""
from __future__ import annotations

import copy

import pytest

from loomwork.runtime.context import Actor, Context

QUOTE = {"fields": {"name": {"type": "text", "required": True}, "discount": {"type": "percent"},
                    "state": {"type": "text"}}}


@pytest.fixture
def approving(crm_app, fast_setup, api, api_as):
    """The CRM with a quote object, a discount process, and sam reporting to admin."""
    st = crm_app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    doc = copy.deepcopy(dict(st.services.metadata.current(ctx).doc))
    doc["approvals"] = {}  # the sample's quote approval; this test brings its own quote
    doc["objects"]["quote"] = QUOTE
    doc["roles"]["sales"]["permissions"]["quote"] = ["create", "read", "update", "delete"]
    doc["approvals"] = {"discount": {
        "object": "quote", "label": {"en": "Discount approval"}, "entry_condition": "discount > 20",
        "nodes": [{"name": "manager", "type": "approval", "approvers": [{"manager": {"levels": 1}}],
                   "editable_fields": ["discount"]}],
        "on_approved": [{"set": {"state": '"approved"'}}], "on_rejected": [{"set": {"state": '"rejected"'}}]}}
    st.services.metadata.publish(ctx, doc, comment="approvals")
    ids = {u.username: u.id for u in st.services.users.list(ctx)}
    assert api.put(f"/api/v1/users/{ids['sam']}/manager", json={"manager_id": ids["admin"]}).status_code == 200
    return st, ids, api, api_as("sam"), api_as("vera")


def test_submit_decide_and_the_lock(approving):
    st, ids, admin, sam, vera = approving
    quote = sam.post("/api/v1/data/quote", json={"name": "Big deal", "discount": "30"}).get_json()
    assert sam.get("/api/v1/approvals/processes/quote").get_json()["data"][0]["name"] == "discount"
    resp = sam.post(f"/api/v1/data/quote/{quote['id']}/approvals", json={"comment": "please"})
    assert resp.status_code == 201, resp.get_json()
    inst = resp.get_json()
    assert inst["status"] == "pending" and [n["state"] for n in inst["nodes"]] == ["current"]
    again = sam.post(f"/api/v1/data/quote/{quote['id']}/approvals", json={})
    assert again.status_code == 409
    # the record is locked while pending, on the record's own endpoint
    locked = sam.patch(f"/api/v1/data/quote/{quote['id']}", json={"name": "sneaky"})
    assert locked.status_code == 403 and "waiting for approval" in locked.get_json()["detail"]
    assert sam.delete(f"/api/v1/data/quote/{quote['id']}").status_code == 403

    waiting = admin.get("/api/v1/approvals/inbox").get_json()["data"]
    task = next(w["task"]["id"] for w in waiting if w["instance_id"] == inst["id"])
    assert sam.get("/api/v1/approvals/inbox?box=submitted").get_json()["data"][0]["id"] == inst["id"]
    assert sam.post(f"/api/v1/approvals/tasks/{task}/approve", json={}).status_code == 403  # not sam's
    # Someone who cannot be a user is a 422, an id beyond the column too (a 500 on PostgreSQL).
    for path, key in (("transfer", "to"), ("add-signer", "user")):
        for who in (2**40, 0, "nobody", [ids["vera"]]):
            resp = admin.post(f"/api/v1/approvals/tasks/{task}/{path}", json={key: who})
            assert resp.status_code == 422 and "user" in resp.get_json()["errors"], (path, who, resp.get_json())
    bad = admin.post(f"/api/v1/approvals/tasks/{task}/approve", json={"values": {"name": "x"}})
    assert bad.status_code == 422 and "cannot be changed at this step" in str(bad.get_json()["errors"])
    done = admin.post(f"/api/v1/approvals/tasks/{task}/approve", json={"comment": "ok", "values": {"discount": "25"}})
    assert done.status_code == 200 and done.get_json()["status"] == "approved"
    assert admin.post(f"/api/v1/approvals/tasks/{task}/approve", json={}).status_code == 409
    record = sam.get(f"/api/v1/data/quote/{quote['id']}").get_json()
    assert record["state"] == "approved" and record["discount"] == "25.00"
    history = sam.get(f"/api/v1/approvals/{inst['id']}").get_json()["history"]
    assert [h["action"] for h in history][:2] == ["submit", "approve"] and history[1]["comment"] == "ok"
    assert sam.patch(f"/api/v1/data/quote/{quote['id']}", json={"name": "free"}).status_code == 200
    assert vera.get(f"/api/v1/data/quote/{quote['id']}/approvals").status_code == 200


def test_refusals_recall_reject_and_batch(approving):
    st, ids, admin, sam, vera = approving
    small = sam.post("/api/v1/data/quote", json={"name": "Small", "discount": "5"}).get_json()
    refused = sam.post(f"/api/v1/data/quote/{small['id']}/approvals", json={})
    assert refused.status_code == 422 and "entry condition" in refused.get_json()["detail"]
    assert sam.post(f"/api/v1/data/quote/{small['id']}/approvals", json={"sudo": True}).status_code == 422
    assert vera.post("/api/v1/data/quote/1/approvals", json={}).status_code in (403, 404)

    q = sam.post("/api/v1/data/quote", json={"name": "Recall me", "discount": "30"}).get_json()
    inst = sam.post(f"/api/v1/data/quote/{q['id']}/approvals", json={}).get_json()
    assert vera.post(f"/api/v1/approvals/{inst['id']}/recall", json={}).status_code == 403
    recalled = sam.post(f"/api/v1/approvals/{inst['id']}/recall", json={"comment": "oops"})
    assert recalled.status_code == 200 and recalled.get_json()["status"] == "recalled"

    q = sam.post("/api/v1/data/quote", json={"name": "Reject me", "discount": "30"}).get_json()
    inst = sam.post(f"/api/v1/data/quote/{q['id']}/approvals", json={}).get_json()
    task = inst["tasks"][0]["id"]
    bad_to = admin.post(f"/api/v1/approvals/tasks/{task}/reject", json={"to": "nowhere"})
    assert bad_to.status_code == 422
    rejected = admin.post(f"/api/v1/approvals/tasks/{task}/reject", json={"comment": "too much"})
    assert rejected.get_json()["status"] == "rejected"
    assert sam.get(f"/api/v1/data/quote/{q['id']}").get_json()["state"] == "rejected"

    tasks = []
    for i in range(3):
        q = sam.post("/api/v1/data/quote", json={"name": f"Batch {i}", "discount": "30"}).get_json()
        tasks.append(sam.post(f"/api/v1/data/quote/{q['id']}/approvals", json={}).get_json()["tasks"][0]["id"])
    out = admin.post("/api/v1/approvals/tasks/batch-approve", json={"tasks": [*tasks, 999999]}).get_json()["data"]
    assert [r["ok"] for r in out] == [True, True, True, False]
    comment = sam.post(f"/api/v1/approvals/{inst['id']}/comments", json={"comment": "noted"})
    assert comment.status_code == 201


def test_managers_and_delegations_api(approving):
    st, ids, admin, sam, vera = approving
    loop = admin.put(f"/api/v1/users/{ids['admin']}/manager", json={"manager_id": ids["sam"]})
    assert loop.status_code == 422 and "loop" in str(loop.get_json()["errors"])
    assert sam.put(f"/api/v1/users/{ids['sam']}/manager", json={"manager_id": None}).status_code == 403
    made = admin.post(f"/api/v1/users/{ids['admin']}/delegations",
                      json={"delegate_id": ids["vera"], "starts_at": "2000-01-01T00:00:00Z",
                            "ends_at": "2100-01-01T00:00:00Z"})
    assert made.status_code == 201
    naive = admin.post(f"/api/v1/users/{ids['admin']}/delegations",
                       json={"delegate_id": ids["vera"], "starts_at": "2000-01-01T00:00:00", "ends_at": "x"})
    assert naive.status_code == 422
    # A delegate that cannot be a user's id is a 422 (it was a 500 on PostgreSQL).
    for bad in (2**40, "abc", [ids["vera"]], True, 0):
        resp = admin.post(f"/api/v1/users/{ids['admin']}/delegations", json={
            "delegate_id": bad, "starts_at": "2000-01-01T00:00:00Z", "ends_at": "2100-01-01T00:00:00Z"})
        assert resp.status_code == 422 and "delegate_id" in resp.get_json()["errors"], (bad, resp.get_json())
    q = sam.post("/api/v1/data/quote", json={"name": "While away", "discount": "30"}).get_json()
    inst = sam.post(f"/api/v1/data/quote/{q['id']}/approvals", json={}).get_json()
    assert inst["tasks"][0]["assignee"] == ids["vera"] and inst["tasks"][0]["delegated"]
    assert [d["delegate_id"] for d in admin.get(f"/api/v1/users/{ids['admin']}/delegations")
            .get_json()["data"]] == [ids["vera"]]
    assert sam.get(f"/api/v1/users/{ids['admin']}/delegations").status_code == 403
    assert admin.delete(f"/api/v1/users/{ids['admin']}/delegations/{made.get_json()['id']}").status_code == 204


def test_simultaneous_submissions_of_one_record_give_one_201_and_409s(approving, crm_app):
    """Five clients submit the same quote at the same moment, round after round: one
    201 and four 409 problems each round (no 500), one pending approval, one inbox task."""
    import threading

    from loomwork.testing import assert_problem

    st, ids, admin, sam, vera = approving
    rounds, clients = 4, [type(sam)(crm_app, sam.token) for _ in range(5)]  # a test client each
    statuses: list[int] = []
    for _ in range(rounds):
        quote = sam.post("/api/v1/data/quote", json={"name": "Rush", "discount": "30"}).get_json()
        gate, answers = threading.Barrier(len(clients)), []

        def submit(client, quote=quote, gate=gate, answers=answers) -> None:
            gate.wait()
            answers.append(client.post(f"/api/v1/data/quote/{quote['id']}/approvals", json={}))

        threads = [threading.Thread(target=submit, args=(c,)) for c in clients]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(a.status_code for a in answers) == [201, 409, 409, 409, 409]
        for lost in (a for a in answers if a.status_code == 409):
            assert "already waiting for approval" in assert_problem(lost, 409)["detail"]
        statuses += [a.status_code for a in answers]
        approvals = sam.get(f"/api/v1/data/quote/{quote['id']}/approvals").get_json()["data"]
        assert [a["status"] for a in approvals] == ["pending"]
        inbox = admin.get("/api/v1/approvals/inbox").get_json()["data"]
        assert sum(1 for w in inbox if w["record_id"] == quote["id"]) == 1
    assert (statuses.count(201), statuses.count(409)) == (rounds, rounds * 4)
