"""The command line for formulas and rules: ``meta where-used``, ``meta recompute`` and
``meta apply --update-dependents``, end to end on both databases."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
import yaml

from loomwork.plugins import crm_sample

OPP = {
    "fields": {
        "name": {"type": "text", "required": True},
        "account": {"type": "lookup", "target": "account", "on_delete": "cascade"},
        "amount": {"type": "currency"},
        "discount": {"type": "percent"},
        "net": {"type": "formula", "result_type": "decimal", "stored": True,
                "expression": "amount * (1 - coalesce(discount, 0) / 100)"},
        "big": {"type": "formula", "result_type": "boolean", "expression": "net > 1000"},
        "code": {"type": "text", "default_expr": 'concat("D/", upper(name))'},
    },
    "validations": {
        "no_tests": {"condition": 'starts_with(lower(name), "test")', "message": "No test deals"},
    },
}
ROLLUPS = {
    "opp_count": {"type": "rollup", "object": "opp", "via": "account", "function": "count"},
    "pipeline": {"type": "rollup", "object": "opp", "via": "account", "function": "sum", "field": "amount"},
}


@pytest.fixture
def services(lw_database_url, cli):
    """The same platform's state (services, platform) and a system context in ``main``."""
    from loomwork import create_app
    from loomwork.runtime.context import Actor, Context

    cli("init", "--password", "a-long-password")
    st = create_app({"database_url": lw_database_url}).extensions["loomwork"]
    yield st, Context(st.platform.tenant("main"), Actor.system())
    st.platform.dispose()


@pytest.fixture
def published(cli, services, tmp_path):
    """The sample CRM plus ``opp`` and roll-ups over it on ``account``, applied from a file."""
    cli("package", "install", str(crm_sample.PATH))
    doc = yaml.safe_load(cli("meta", "export"))
    doc["objects"]["opp"] = OPP
    doc["objects"]["account"]["fields"].update(ROLLUPS)
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    out = cli("meta", "apply", str(path), "-m", "rules")
    assert "Create table opp" in out and "Add column account.pipeline" in out
    assert "metadata version 2" in out
    return path


def test_where_used(cli, published):
    lines = cli("meta", "where-used", "opp", "amount").splitlines()
    assert sorted(lines) == [
        "objects.account.fields.pipeline: sum(opp.amount)",
        "objects.opp.fields.net.expression: amount * (1 - coalesce(discount, 0) / 100)",
    ]
    assert cli("meta", "where-used", "opp", "name").splitlines() == [
        'objects.opp.fields.code.default_expr: concat("D/", upper(name))',
        'objects.opp.validations.no_tests.condition: starts_with(lower(name), "test")',
    ]
    assert cli("meta", "where-used", "opp", "net").splitlines() == ["objects.opp.fields.big.expression: net > 1000"]
    assert cli("meta", "where-used", "opp", "big").strip() == "nothing uses opp.big"
    assert "no field 'nope' on opp" in cli("meta", "where-used", "opp", "nope", ok=False)
    assert "no object 'nope'" in cli("meta", "where-used", "nope", "x", ok=False)


def test_recompute(cli, services, published):
    st, ctx = services
    acc = st.services.records.create(ctx, "account", {"name": "Acme"})
    a = st.services.records.create(ctx, "opp", {"name": "a", "account": acc["id"], "amount": "100"})
    st.services.records.create(ctx, "opp", {"name": "b", "account": acc["id"], "amount": "2000", "discount": "10"})
    app = st.services.runtime.compiled(ctx.tenant)
    opp_t, acc_t = app.object("opp").table, app.object("account").table
    # Stale values, as an interrupted publish would leave them.
    with ctx.tenant.write() as conn:
        conn.execute(opp_t.update().where(opp_t.c.id == a["id"]).values(net=sa.null()))
        conn.execute(acc_t.update().where(acc_t.c.id == acc["id"]).values(pipeline=1, opp_count=7))
    assert cli("meta", "recompute", "opp").splitlines()[0] == "opp.net: 1 rows"  # then the roll-ups over opp
    assert st.services.records.get(ctx, "opp", a["id"])["net"] == "100.00"
    assert cli("meta", "recompute", "opp").splitlines()[0] == "opp.net: 0 rows"  # idempotent
    with ctx.tenant.write() as conn:  # stale again, to recompute one roll-up on its own
        conn.execute(acc_t.update().where(acc_t.c.id == acc["id"]).values(pipeline=1, opp_count=7))
    assert cli("meta", "recompute", "account", "--field", "pipeline").splitlines() == ["account.pipeline: 1 rows"]
    got = st.services.records.get(ctx, "account", acc["id"])
    assert (got["opp_count"], got["pipeline"]) == (7, "2100.00")
    assert sorted(cli("meta", "recompute", "account").splitlines()) == [  # open_deals, won_amount: the sample's
        "account.open_deals: 1 rows", "account.opp_count: 1 rows", "account.pipeline: 1 rows",
        "account.won_amount: 1 rows"]
    assert st.services.records.get(ctx, "account", acc["id"])["opp_count"] == 2
    assert "opp.big is not a stored formula or roll-up" in cli("meta", "recompute", "opp", "--field", "big", ok=False)
    assert "no field 'nope' on opp" in cli("meta", "recompute", "opp", "--field", "nope", ok=False)


def test_apply_update_dependents(cli, services, published):
    st, ctx = services
    kept = st.services.records.create(ctx, "opp", {"name": "keep", "amount": "1500"})
    doc = yaml.safe_load(published.read_text())
    fields = doc["objects"]["opp"]["fields"]
    fields["title"] = {**fields.pop("name"), "renamed_from": "name"}
    fields["net_value"] = {**fields.pop("net"), "renamed_from": "net"}
    published.write_text(yaml.safe_dump(doc, allow_unicode=True))

    refused = cli("meta", "apply", str(published), ok=False)
    assert "objects.opp.fields.code.default_expr: uses opp.name, which this change renames to title" in refused
    assert "objects.opp.validations.no_tests.condition: uses opp.name" in refused
    assert "objects.opp.fields.big.expression: uses opp.net, which this change renames to net_value" in refused
    assert "metadata version" not in refused
    assert "uses opp.name, which this change renames to title" in cli("meta", "plan", str(published), ok=False)

    out = cli("meta", "apply", str(published), "--update-dependents", "-m", "rename")
    assert "Rename column opp.name to title" in out and "Rename column opp.net to net_value" in out
    assert "metadata version 3" in out
    now = yaml.safe_load(cli("meta", "export"))["objects"]["opp"]
    assert now["fields"]["code"]["default_expr"] == 'concat("D/", upper(title))'
    assert now["fields"]["big"]["expression"] == "net_value > 1000"
    assert now["validations"]["no_tests"]["condition"] == 'starts_with(lower(title), "test")'
    assert "renamed_from" not in now["fields"]["title"]
    # The data moved with the columns and the rewritten rules run.
    got = st.services.records.get(ctx, "opp", kept["id"])
    assert (got["title"], got["net_value"], got["big"]) == ("keep", "1500.00", True)
    made = st.services.records.create(ctx, "opp", {"title": "new one", "amount": "5"})
    assert (made["code"], made["net_value"], made["big"]) == ("D/NEW ONE", "5.00", False)
    from loomwork.metadata.errors import ValidationError

    with pytest.raises(ValidationError) as info:
        st.services.records.create(ctx, "opp", {"title": "Test"})
    assert info.value.errors == {"_schema": ["No test deals"]}
