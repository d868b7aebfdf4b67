"""Schema sync: plans applied to real tables on SQLite and PostgreSQL, checked with
SQLAlchemy's inspector."""
from __future__ import annotations

import copy

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loomwork.metadata.errors import (
    ConflictError,
    HeavyChangeRefused,
    MetadataError,
    NotFound,
    ValidationError,
)
from loomwork.runtime.systables import dropped
from loomwork.testing import with_fields

DEAL = {"fields": {
    "name": {"type": "text", "label": "Name"},
    "amount": {"type": "decimal", "precision": 12, "scale": 2},
}}


def columns(ctx, table) -> set[str]:
    with ctx.tenant.read() as conn:
        return {c["name"] for c in sa.inspect(conn).get_columns(table, schema=ctx.tenant.schema)}


def indexes(ctx, table) -> dict[str, dict]:
    with ctx.tenant.read() as conn:
        return {i["name"]: i for i in sa.inspect(conn).get_indexes(table, schema=ctx.tenant.schema)}


def tables(ctx) -> set[str]:
    with ctx.tenant.read() as conn:
        return set(sa.inspect(conn).get_table_names(schema=ctx.tenant.schema))


def raw_values(ctx, table, column) -> list:
    with ctx.tenant.read() as conn:
        t = sa.Table(table, sa.MetaData(), sa.Column("id", sa.Integer), sa.Column(column))
        return [r[1] for r in conn.execute(sa.select(t.c.id, t.c[column]).order_by(t.c.id))]


def partial_where(index) -> str:
    opts = index.get("dialect_options", {})
    where = opts.get("postgresql_where") or opts.get("sqlite_where")
    return str(where).strip("()").lower() if where is not None else ""


@pytest.fixture
def base(meta, lw_ctx):
    doc = {"objects": {"deal": copy.deepcopy(DEAL)}}
    assert meta.publish(lw_ctx, doc) == 1
    return doc


def test_create_object_makes_the_table_with_system_columns(base, lw_ctx):
    assert "deal" in tables(lw_ctx)
    assert columns(lw_ctx, "deal") == {"id", "created_at", "created_by", "updated_at", "updated_by", "owner_id",
                                       "row_version", "deleted_at", "name", "amount"}
    idx = indexes(lw_ctx, "deal")
    assert idx["ix_deal_sort"]["column_names"] == ["created_at", "id"]


def test_add_field_is_fast_and_adds_a_nullable_column(base, meta, rec, lw_ctx):
    r = rec.create(lw_ctx, "deal", {"name": "old"})
    new = with_fields(base, notes={"type": "long_text"})
    p = meta.preview(lw_ctx, new)
    assert [(op.kind, op.change) for op in p.operations] == [("add_field", "fast")]
    assert meta.publish(lw_ctx, new) == 2
    assert "notes" in columns(lw_ctx, "deal")
    assert rec.get(lw_ctx, "deal", r["id"])["notes"] is None
    rec.update(lw_ctx, "deal", r["id"], {"notes": "hello"})
    assert rec.get(lw_ctx, "deal", r["id"])["notes"] == "hello"


def test_label_change_is_instant_and_runs_no_ddl(base, meta, lw_ctx):
    before = columns(lw_ctx, "deal"), indexes(lw_ctx, "deal").keys()
    new = with_fields(base, name={"type": "text", "label": {"en": "Title", "zh-CN": "标题"}})
    p = meta.preview(lw_ctx, new)
    assert p.change == "instant"
    assert [op.kind for op in p.operations] == ["change_field"]
    assert meta.publish(lw_ctx, new) == 2
    assert (columns(lw_ctx, "deal"), indexes(lw_ctx, "deal").keys()) == before
    assert meta.current(lw_ctx).doc["objects"]["deal"]["fields"]["name"]["label"]["zh-CN"] == "标题"


@pytest.mark.parametrize("change", [
    {"name": {"type": "integer"}},
    {"amount": {"type": "decimal", "precision": 12, "scale": 4}},
    {"amount": {"type": "text"}},
])
def test_heavy_changes_are_refused(base, meta, rec, lw_ctx, change):
    rec.create(lw_ctx, "deal", {"name": "x", "amount": "1.00"})
    new = with_fields(base, **change)
    with pytest.raises(HeavyChangeRefused) as info:
        meta.preview(lw_ctx, new)
    assert info.value.status == 409
    with pytest.raises(HeavyChangeRefused):
        meta.publish(lw_ctx, new)
    assert meta.current(lw_ctx).version == 1
    assert meta.current(lw_ctx).doc == {"objects": {"deal": DEAL}, "roles": {}, "packages": {}, "forms": {},
                                        "views": {}, "scripts": {}, "approvals": {}, "workflows": {}}


def test_require_field_refused_while_rows_are_empty(base, meta, rec, lw_ctx):
    a = rec.create(lw_ctx, "deal", {"name": "a"})
    b = rec.create(lw_ctx, "deal", {})
    new = with_fields(base, name={"type": "text", "label": "Name", "required": True})
    assert not meta.preview(lw_ctx, with_fields(base))
    with pytest.raises(HeavyChangeRefused, match="1 record"):
        meta.preview(lw_ctx, new)
    with pytest.raises(HeavyChangeRefused, match="1 record"):
        meta.publish(lw_ctx, new)
    assert meta.current(lw_ctx).version == 1
    rec.delete(lw_ctx, "deal", b["id"])  # deleted rows do not count
    assert meta.publish(lw_ctx, new) == 2
    with pytest.raises(ValidationError):
        rec.update(lw_ctx, "deal", a["id"], {"name": None})


def test_blank_text_counts_as_empty_for_require(base, meta, rec, lw_ctx):
    r = rec.create(lw_ctx, "deal", {"name": ""})
    new = with_fields(base, name={"type": "text", "required": True})
    with pytest.raises(HeavyChangeRefused, match="1 record"):
        meta.publish(lw_ctx, new)
    rec.update(lw_ctx, "deal", r["id"], {"name": "filled"})
    assert meta.publish(lw_ctx, new) == 2


def test_require_field_allowed_when_no_rows(base, meta, lw_ctx):
    new = with_fields(base, name={"type": "text", "label": "Name", "required": True})
    assert [op.kind for op in meta.preview(lw_ctx, new).operations] == ["require_field"]
    # A setting changed with it gets its own line.
    relabelled = with_fields(base, name={"type": "text", "required": True})
    assert [op.description for op in meta.preview(lw_ctx, relabelled).operations] == [
        "Make deal.name required (checked: no empty values)", "Change label of deal.name"]
    assert meta.publish(lw_ctx, new) == 2


def test_rename_and_require_in_one_publish(base, meta, rec, lw_ctx):
    r = rec.create(lw_ctx, "deal", {"name": "kept"})
    new = with_fields(base, name=None, title={"type": "text", "label": "Name", "required": True,
                                              "renamed_from": "name"})
    assert [op.kind for op in meta.preview(lw_ctx, new).operations] == ["rename_field", "require_field"]
    assert meta.publish(lw_ctx, new) == 2
    assert rec.get(lw_ctx, "deal", r["id"])["title"] == "kept"


def test_adding_a_required_field_to_a_populated_table_is_refused(base, meta, rec, lw_ctx):
    new = with_fields(base, code={"type": "text", "required": True})
    r = rec.create(lw_ctx, "deal", {"name": "x"})
    with pytest.raises(HeavyChangeRefused, match="1 existing record"):
        meta.publish(lw_ctx, new)
    assert "code" not in columns(lw_ctx, "deal")
    rec.delete(lw_ctx, "deal", r["id"])
    assert meta.publish(lw_ctx, new) == 2
    assert "code" in columns(lw_ctx, "deal")


def test_publishing_the_same_document_twice_is_a_no_op(base, meta, lw_ctx):
    assert meta.publish(lw_ctx, copy.deepcopy(base)) == 1
    assert not meta.preview(lw_ctx, copy.deepcopy(base))
    assert len(meta.versions(lw_ctx)) == 1
    # Package-style documents (with kind and name) are the same metadata.
    styled = copy.deepcopy(base)
    styled["objects"]["deal"].update(kind="object", name="deal")
    assert not meta.preview(lw_ctx, styled)
    assert meta.publish(lw_ctx, styled) == 1
    new = with_fields(base, x={"type": "text"})
    assert meta.publish(lw_ctx, new) == 2
    assert meta.publish(lw_ctx, new) == 2
    assert not meta.preview(lw_ctx, new)


def test_object_name_key_mismatch_is_refused(meta, lw_ctx):
    with pytest.raises(MetadataError) as info:
        meta.publish(lw_ctx, {"objects": {"deal": {"name": "quote", "fields": {}}}})
    assert info.value.errors == {"objects.deal.name": ["must be 'deal', the object's key"]}


def test_drop_field_hides_and_keeps_data_readd_restores(base, meta, rec, lw_ctx):
    r = rec.create(lw_ctx, "deal", {"name": "n", "amount": "12.34"})
    assert meta.publish(lw_ctx, with_fields(base, amount=None)) == 2
    got = rec.get(lw_ctx, "deal", r["id"])
    assert "amount" not in got
    assert "amount" in columns(lw_ctx, "deal")  # the data is kept
    with lw_ctx.tenant.read() as conn:
        rows = conn.execute(sa.select(dropped.c.object, dropped.c.field, dropped.c.type, dropped.c.version)).all()
    assert [tuple(r) for r in rows] == [("deal", "amount", "decimal", 2)]
    with pytest.raises(ValidationError):
        rec.update(lw_ctx, "deal", r["id"], {"amount": "1.00"})
    r2 = rec.create(lw_ctx, "deal", {"name": "while hidden"})
    # Adding it back with the same type brings the values back.
    assert meta.publish(lw_ctx, base) == 3
    assert rec.get(lw_ctx, "deal", r["id"])["amount"] == "12.34"
    assert rec.get(lw_ctx, "deal", r2["id"])["amount"] is None
    with lw_ctx.tenant.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(dropped)).scalar_one() == 0


def test_readding_a_dropped_field_with_another_type_is_refused(base, meta, rec, lw_ctx):
    rec.create(lw_ctx, "deal", {"amount": "1.00"})
    meta.publish(lw_ctx, with_fields(base, amount=None))
    with pytest.raises(MetadataError) as info:
        meta.publish(lw_ctx, with_fields(base, amount={"type": "text"}))
    assert list(info.value.errors) == ["objects.deal.fields.amount"]
    assert "dropped decimal field" in info.value.errors["objects.deal.fields.amount"][0]
    assert meta.current(lw_ctx).version == 2


def test_rename_field_keeps_data_and_history(base, meta, rec, lw_ctx):
    r = rec.create(lw_ctx, "deal", {"name": "before"})
    rec.update(lw_ctx, "deal", r["id"], {"name": "after"})
    new = with_fields(base, name=None, title={"type": "text", "label": "Name", "renamed_from": "name"})
    assert [op.kind for op in meta.preview(lw_ctx, new).operations] == ["rename_field"]
    assert meta.publish(lw_ctx, new) == 2
    cols = columns(lw_ctx, "deal")
    assert "title" in cols and "name" not in cols
    assert rec.get(lw_ctx, "deal", r["id"])["title"] == "after"
    hist = rec.history(lw_ctx, "deal", r["id"])
    assert (hist[0]["field"], hist[0]["old"], hist[0]["new"]) == ("title", "before", "after")
    # The hint is not stored: publishing the result again changes nothing.
    stored = meta.current(lw_ctx).doc
    assert "renamed_from" not in stored["objects"]["deal"]["fields"]["title"]
    assert meta.publish(lw_ctx, stored) == 2


def test_rename_onto_a_hidden_column_is_refused(base, meta, rec, lw_ctx):
    meta.publish(lw_ctx, with_fields(base, amount=None))
    new = with_fields(base, name=None, amount={"type": "text", "renamed_from": "name"})
    with pytest.raises(MetadataError):
        meta.publish(lw_ctx, new)
    assert meta.current(lw_ctx).version == 2


def test_rename_object_moves_table_data_indexes_and_counters(meta, rec, lw_ctx):
    doc = {"objects": {"deal": {"fields": {"n": {"type": "autonumber", "pattern": "D{000}"},
                                           "code": {"type": "text", "unique": True}}}}}
    meta.publish(lw_ctx, doc)
    r = rec.create(lw_ctx, "deal", {"code": "a"})
    rec.update(lw_ctx, "deal", r["id"], {"code": "b"})
    new = {"objects": {"opportunity": {**copy.deepcopy(doc["objects"]["deal"]), "renamed_from": "deal"}}}
    plan = meta.preview(lw_ctx, new)
    assert "rename_object" in [op.kind for op in plan.operations]
    assert meta.publish(lw_ctx, new) == 2
    assert "opportunity" in tables(lw_ctx) and "deal" not in tables(lw_ctx)
    assert set(indexes(lw_ctx, "opportunity")) == {"ix_opportunity_sort", "ux_opportunity_code"}
    got = rec.get(lw_ctx, "opportunity", r["id"])
    assert (got["code"], got["n"]) == ("b", "D001")
    assert [h["action"] for h in rec.history(lw_ctx, "opportunity", r["id"])] == ["update", "create"]
    assert rec.create(lw_ctx, "opportunity", {})["n"] == "D002"
    with pytest.raises(NotFound):
        rec.get(lw_ctx, "deal", r["id"])
    with pytest.raises(ValidationError):
        rec.create(lw_ctx, "opportunity", {"code": "b"})  # the unique index moved along


def test_drop_object_hides_it_and_adding_it_back_restores(base, meta, rec, lw_ctx):
    r = rec.create(lw_ctx, "deal", {"name": "kept"})
    assert meta.publish(lw_ctx, {"objects": {}}) == 2
    assert "deal" in tables(lw_ctx)
    with pytest.raises(NotFound):
        rec.get(lw_ctx, "deal", r["id"])
    assert meta.publish(lw_ctx, with_fields(base, extra={"type": "integer"})) == 3
    got = rec.get(lw_ctx, "deal", r["id"])
    assert (got["name"], got["extra"]) == ("kept", None)


def test_indexes_follow_metadata(base, meta, rec, lw_ctx):
    doc = {"objects": {
        "account": {"fields": {"name": {"type": "text"}}},
        "deal": {"fields": {
            "name": {"type": "text", "unique": True},
            "account": {"type": "lookup", "target": "account"},
            "stage": {"type": "text", "indexed": True},
            "amount": {"type": "decimal", "precision": 12, "scale": 2},
        }, "indexes": {"stage_amount": {"fields": ["stage", "amount"]}}},
    }}
    assert meta.publish(lw_ctx, doc) == 2
    idx = indexes(lw_ctx, "deal")
    assert set(idx) == {"ix_deal_sort", "ux_deal_name", "ix_deal_account", "ix_deal_stage", "ix_deal_stage_amount"}
    assert bool(idx["ux_deal_name"]["unique"]) is True
    assert partial_where(idx["ux_deal_name"]) == "deleted_at is null"
    assert bool(idx["ix_deal_account"]["unique"]) is False
    assert partial_where(idx["ix_deal_account"]) == ""
    assert idx["ix_deal_stage_amount"]["column_names"] == ["stage", "amount", "id"]  # id ends non-unique indexes

    # Drop the declared index and the unique flag; add a unique pair.
    new = copy.deepcopy(doc)
    deal = new["objects"]["deal"]
    deal["fields"]["name"].pop("unique")
    deal["fields"]["stage"].pop("indexed")
    deal["indexes"] = {"name_stage": {"fields": ["name", "stage"], "unique": True}}
    deal["default_sort"] = ["-amount"]
    assert meta.publish(lw_ctx, new) == 3
    idx = indexes(lw_ctx, "deal")
    assert set(idx) == {"ix_deal_sort", "ix_deal_account", "ux_deal_name_stage"}
    assert idx["ix_deal_sort"]["column_names"] == ["amount", "id"]
    assert partial_where(idx["ux_deal_name_stage"]) == "deleted_at is null"
    # Publishing the same again touches no index.
    assert not meta.preview(lw_ctx, new)


def test_unique_on_duplicated_values_is_refused_cleanly(base, meta, rec, lw_ctx):
    rec.create(lw_ctx, "deal", {"name": "same"})
    rec.create(lw_ctx, "deal", {"name": "same"})
    deleted = rec.create(lw_ctx, "deal", {"name": "gone"})
    rec.create(lw_ctx, "deal", {"name": "gone"})
    rec.delete(lw_ctx, "deal", deleted["id"])
    with pytest.raises(MetadataError) as info:
        meta.publish(lw_ctx, with_fields(base, name={"type": "text", "unique": True}))
    assert list(info.value.errors) == ["objects.deal.fields.name"]
    assert "ux_deal_name" not in indexes(lw_ctx, "deal")
    assert meta.current(lw_ctx).version == 1
    # Once the live duplicates are gone it works (the deleted duplicate does not count).
    rows = raw_values(lw_ctx, "deal", "name")
    assert rows == ["same", "same", "gone", "gone"]
    rec.delete(lw_ctx, "deal", 1)
    assert meta.publish(lw_ctx, with_fields(base, name={"type": "text", "unique": True})) == 2
    assert partial_where(indexes(lw_ctx, "deal")["ux_deal_name"]) == "deleted_at is null"


def test_a_failed_publish_rolls_back_its_ddl(base, meta, rec, lw_ctx):
    rec.create(lw_ctx, "deal", {"name": "same"})
    rec.create(lw_ctx, "deal", {"name": "same"})
    # One publish: add a column, then an index that fails.
    new = with_fields(base, extra={"type": "integer"}, name={"type": "text", "unique": True})
    with pytest.raises(MetadataError):
        meta.publish(lw_ctx, new)
    assert "extra" not in columns(lw_ctx, "deal")
    assert meta.current(lw_ctx).version == 1


def test_renaming_a_lookup_target_keeps_the_links(meta, rec, lw_ctx):
    doc = {"objects": {"account": {"fields": {"name": {"type": "text"}}},
                       "deal": {"fields": {"account": {"type": "lookup", "target": "account"}}}}}
    meta.publish(lw_ctx, doc)
    acc = rec.create(lw_ctx, "account", {"name": "Acme"})
    deal = rec.create(lw_ctx, "deal", {"account": acc["id"]})
    new = copy.deepcopy(doc)
    new["objects"]["client"] = {**new["objects"].pop("account"), "renamed_from": "account"}
    new["objects"]["deal"]["fields"]["account"]["target"] = "client"
    assert meta.preview(lw_ctx, new).change == "fast"
    assert meta.publish(lw_ctx, new) == 2
    assert rec.get(lw_ctx, "deal", deal["id"])["account"] == acc["id"]
    assert rec.get(lw_ctx, "client", acc["id"])["name"] == "Acme"
    with pytest.raises(ConflictError):
        rec.delete(lw_ctx, "client", acc["id"])  # the default on_delete still restricts
    # Pointing the lookup at another object is refused: the ids would name the wrong records.
    other = copy.deepcopy(new)
    del other["objects"]["client"]["renamed_from"]
    other["objects"]["contact"] = {"fields": {}}
    other["objects"]["deal"]["fields"]["account"]["target"] = "contact"
    with pytest.raises(HeavyChangeRefused):
        meta.publish(lw_ctx, other)


# -- property: random field changes applied to real tables converge -------------------------

_NAMES = [f"f{i}" for i in range(6)]
_TYPES = ["text", "integer", "date", "boolean", "decimal"]


@st.composite
def _changes(draw):
    existing = draw(st.dictionaries(st.sampled_from(_NAMES), st.sampled_from(_TYPES), min_size=1, max_size=5))
    names = sorted(existing)
    removed = draw(st.sets(st.sampled_from(names)))
    kept = [n for n in names if n not in removed]
    relabelled = draw(st.sets(st.sampled_from(kept))) if kept else set()
    added = draw(st.dictionaries(st.sampled_from(["g0", "g1", "g2"]), st.sampled_from(_TYPES), max_size=2))
    return existing, removed, relabelled, added


@settings(max_examples=12, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=_changes())
def test_random_field_changes_apply_and_converge(meta, lw_ctx, lw_runtime, case):
    existing, removed, relabelled, added = case
    current = meta.current(lw_ctx).doc
    name = f"t{current.get('objects', {}).__len__()}"
    old_fields = {n: {"type": t, "label": n} for n, t in existing.items()}
    doc = copy.deepcopy(current)
    doc["objects"][name] = {"fields": old_fields}
    meta.publish(lw_ctx, doc)
    new = copy.deepcopy(doc)
    fields = new["objects"][name]["fields"]
    for n in removed:
        del fields[n]
    for n in relabelled:
        fields[n]["label"] = f"{n} v2"
    fields.update({n: {"type": t} for n, t in added.items()})
    before = meta.current(lw_ctx).version
    after = meta.publish(lw_ctx, new)
    assert after == before + (1 if (removed or relabelled or added) else 0)
    assert not meta.preview(lw_ctx, new)  # nothing left to do
    assert meta.publish(lw_ctx, new) == after
    # The table holds every live field, and hidden ones keep their columns.
    cols = columns(lw_ctx, name)
    assert set(fields) | set(existing) <= cols
    compiled = lw_runtime.compiled(lw_ctx.tenant)
    assert set(compiled.object(name).fields) == set(fields)
