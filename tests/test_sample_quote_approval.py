"""The sample CRM's quote discount approval, end to end on both databases: above 20%
the owner's manager; above 40% the manager, then finance where both must approve."""
from __future__ import annotations

import pytest

from loomwork.metadata.errors import ValidationError
from loomwork.runtime.context import Actor, Context


@pytest.fixture
def crm(crm_app, fast_setup):
    st = crm_app.extensions["loomwork"]
    ctx = Context(st.platform.tenant("main"), Actor.system())
    users = {u.username: u for u in st.services.users.list(ctx)}
    st.services.users.set_manager(ctx, users["sam"].id, users["admin"].id)
    for name in ("fiona", "felix"):
        users[name] = st.services.users.create(ctx, name, None, roles=("finance",))

    def as_(name: str) -> Context:
        return Context(ctx.tenant, users[name].actor())

    return st.services, as_


def decide(services, as_, inst, who):
    task = next(t for t in inst["tasks"] if t["status"] == "pending" and t["assignee"] == as_(who).actor.id)
    return services.approvals.approve(as_(who), task["id"])


def test_discount_levels_route_to_the_right_people(crm):
    services, as_ = crm
    rec, approvals = services.records, services.approvals
    small = rec.create(as_("sam"), "quote", {"name": "Small", "list_price": "1000", "discount": "10"})
    assert small["net_price"] == "900.00" and small["number"].startswith("Q-")
    with pytest.raises(ValidationError, match="entry condition"):
        approvals.submit(as_("sam"), "quote", small["id"])

    mid = rec.create(as_("sam"), "quote", {"name": "Mid", "list_price": "1000", "discount": "30"})
    inst = approvals.submit(as_("sam"), "quote", mid["id"])
    assert [t["assignee"] for t in inst["tasks"]] == [as_("admin").actor.id]  # sam's manager
    inst = decide(services, as_, inst, "admin")
    assert inst["status"] == "approved"
    assert rec.get(as_("sam"), "quote", mid["id"])["approval_status"] == "approved"

    big = rec.create(as_("sam"), "quote", {"name": "Big", "list_price": "1000", "discount": "50"})
    inst = approvals.submit(as_("sam"), "quote", big["id"])
    inst = decide(services, as_, inst, "admin")
    pending = {t["assignee"] for t in inst["tasks"] if t["status"] == "pending"}
    assert pending == {as_("fiona").actor.id, as_("felix").actor.id}  # both finance approvers
    inst = decide(services, as_, inst, "fiona")
    assert inst["status"] == "pending"
    inst = decide(services, as_, inst, "felix")
    assert inst["status"] == "approved"
    assert [n["state"] for n in inst["nodes"]] == ["passed", "skipped", "approved", "approved"]  # the branch not taken
