"""Publishing: versions with who/when/comment/diff, diffs between versions, rollback,
base-version conflicts, the ownership map and the per-version compiled cache."""
from __future__ import annotations

import copy
import datetime as dt
import threading

import pytest

from loomwork.metadata.errors import ConflictError, MetadataError, NotFound, PermissionDenied
from loomwork.metadata.packages import Package
from loomwork.runtime.compiled import Runtime
from loomwork.runtime.context import Actor, Context

UTC = dt.UTC
V1 = {"objects": {"deal": {"fields": {"name": {"type": "text", "label": "Name"}}}}}


def as_user(ctx, uid, name, when):
    return Context(ctx.tenant, Actor(uid, name, frozenset({"admin"})), clock=lambda: when)


def edit(doc, fn):
    doc = copy.deepcopy(doc)
    fn(doc)
    return doc


def fields(doc, obj="deal"):
    return doc["objects"][obj]["fields"]


def test_versions_record_who_when_comment_and_diff(meta, lw_ctx):
    t1 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    t2 = dt.datetime(2026, 2, 3, 12, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=8)))  # 04:05:06 UTC
    ann, bob = as_user(lw_ctx, 1, "ann", t1), as_user(lw_ctx, 2, "bob", t2)
    assert meta.current(lw_ctx).version == 0
    assert meta.publish(ann, V1, comment="first") == 1
    v2 = edit(V1, lambda d: fields(d).update(amount={"type": "integer"}))
    assert meta.publish(bob, v2, comment="add amount") == 2
    versions = meta.versions(lw_ctx)
    assert [v.version for v in versions] == [2, 1]
    first, second = versions[1], versions[0]
    assert (first.created_by, first.comment, first.created_at) == ("ann", "first", t1)
    assert (second.created_by, second.comment, second.created_at) == ("bob", "add amount", t2)
    assert first.created_at.tzinfo == UTC and second.created_at.tzinfo == UTC
    assert second.diff == [{"path": "objects.deal.fields.amount", "op": "added", "old": None,
                            "new": {"type": "integer"}}]
    assert [op["kind"] for op in second.plan] == ["add_field"]
    assert first.diff == [{"path": "objects.deal", "op": "added", "old": None, "new": V1["objects"]["deal"]}]
    summary = second.summary()
    assert summary == {"version": 2, "created_at": "2026-02-03T04:05:06+00:00", "created_by": "bob",
                       "comment": "add amount", "changes": 1}
    assert meta.version(lw_ctx, 1).doc == {**V1, "roles": {}, "packages": {}, "forms": {}, "views": {}, "scripts": {},
                                           "approvals": {}, "workflows": {}}
    with pytest.raises(NotFound):
        meta.version(lw_ctx, 9)
    assert [v.version for v in meta.versions(lw_ctx, limit=1)] == [2]


def test_diff_between_any_two_versions(meta, lw_ctx):
    meta.publish(lw_ctx, V1)
    v2 = edit(V1, lambda d: fields(d).update(amount={"type": "integer"}))
    meta.publish(lw_ctx, v2)
    v3 = edit(v2, lambda d: fields(d)["name"].update(label="Title"))
    meta.publish(lw_ctx, v3)
    assert meta.diff(lw_ctx, 1, 3) == [
        {"path": "objects.deal.fields.name.label", "op": "changed", "old": "Name", "new": "Title"},
        {"path": "objects.deal.fields.amount", "op": "added", "old": None, "new": {"type": "integer"}},
    ]
    assert meta.diff(lw_ctx, 3, 1) == [
        {"path": "objects.deal.fields.name.label", "op": "changed", "old": "Title", "new": "Name"},
        {"path": "objects.deal.fields.amount", "op": "removed", "old": {"type": "integer"}, "new": None},
    ]
    assert meta.diff(lw_ctx, 2, 2) == []
    assert meta.diff(lw_ctx, 0, 1)[0] == {"path": "objects.deal", "op": "added", "old": None,
                                          "new": V1["objects"]["deal"]}
    with pytest.raises(NotFound):
        meta.diff(lw_ctx, 1, 7)


def test_rollback_undoes_a_rename_without_losing_data(meta, rec, lw_ctx):
    meta.publish(lw_ctx, V1)
    r = rec.create(lw_ctx, "deal", {"name": "alpha"})
    v2 = {"objects": {"deal": {"fields": {"title": {"type": "text", "label": "Name", "renamed_from": "name"},
                                          "extra": {"type": "integer"}}}}}
    meta.publish(lw_ctx, v2)
    rec.update(lw_ctx, "deal", r["id"], {"title": "beta", "extra": 5})
    preview = meta.preview_rollback(lw_ctx, 1)
    assert sorted(op.kind for op in preview.operations) == ["drop_field", "rename_field"]
    assert meta.rollback(lw_ctx, 1) == 3
    got = rec.get(lw_ctx, "deal", r["id"])
    assert got["name"] == "beta"
    assert "title" not in got and "extra" not in got
    v3 = meta.version(lw_ctx, 3)
    assert v3.comment == "Roll back to version 1"
    assert v3.doc == meta.version(lw_ctx, 1).doc
    # Rolling forward again restores the renamed field and the hidden one's data.
    assert meta.rollback(lw_ctx, 2, comment="forward") == 4
    got = rec.get(lw_ctx, "deal", r["id"])
    assert (got["title"], got["extra"]) == ("beta", 5)
    assert meta.current(lw_ctx).comment == "forward"
    # Rolling back to the current state changes nothing.
    assert meta.rollback(lw_ctx, 4) == 4


def test_rollback_undoes_an_object_rename(meta, rec, lw_ctx):
    meta.publish(lw_ctx, V1)
    r = rec.create(lw_ctx, "deal", {"name": "alpha"})
    meta.publish(lw_ctx, {"objects": {"opportunity": {"renamed_from": "deal", "fields": {
        "title": {"type": "text", "label": "Name", "renamed_from": "name"}}}}})
    assert rec.get(lw_ctx, "opportunity", r["id"])["title"] == "alpha"
    assert meta.rollback(lw_ctx, 1) == 3
    assert rec.get(lw_ctx, "deal", r["id"])["name"] == "alpha"
    with pytest.raises(NotFound):
        rec.get(lw_ctx, "opportunity", r["id"])


def test_base_version_conflict(meta, lw_ctx):
    meta.publish(lw_ctx, V1, base_version=0)
    stale = edit(V1, lambda d: fields(d).update(a={"type": "text"}))
    with pytest.raises(ConflictError) as info:
        meta.publish(lw_ctx, stale, base_version=0)
    assert info.value.status == 409
    assert meta.current(lw_ctx).version == 1
    assert meta.publish(lw_ctx, stale, base_version=1) == 2


def _publish_race(meta, lw_ctx, **publish_kw) -> list[object]:
    """Two threads publish V1 plus one field each at the same moment; their results."""
    meta.publish(lw_ctx, V1)
    barrier = threading.Barrier(2)
    results: list[object] = []

    def work(name: str) -> None:
        doc = edit(V1, lambda d: fields(d).update({name: {"type": "text"}}))
        barrier.wait()
        try:
            results.append(meta.publish(lw_ctx, doc, **publish_kw))
        except Exception as exc:  # judged by the caller's assertions
            results.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in ("alpha", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_concurrent_publishes_one_wins(meta, lw_ctx):
    results = _publish_race(meta, lw_ctx, base_version=1)
    assert sorted(map(type, results), key=str) == sorted([int, ConflictError], key=str), results
    assert 2 in results
    assert meta.current(lw_ctx).version == 2
    assert len(fields(meta.current(lw_ctx).doc)) == 2


def test_concurrent_publishes_without_base_queue(meta, lw_ctx):
    results = _publish_race(meta, lw_ctx)
    # Each publish was planned against the version before it, so both apply.
    assert sorted(results, key=str) == [2, 3], results
    last = meta.version(lw_ctx, 3)
    assert len(fields(last.doc)) == 2
    assert [op["kind"] for op in last.plan] == ["drop_field", "add_field"]


def test_only_admins_publish(meta, lw_ctx):
    user = Context(lw_ctx.tenant, Actor(5, "u", frozenset({"user"})))
    with pytest.raises(PermissionDenied):
        meta.publish(user, V1)
    with pytest.raises(PermissionDenied):
        meta.preview(user, V1)
    assert meta.current(lw_ctx).version == 0


def test_invalid_document_stores_nothing(meta, lw_ctx):
    with pytest.raises(MetadataError) as info:
        meta.publish(lw_ctx, {"objects": {"deal": {"fields": {"amount": {"type": "decimal", "precision": 19}}}}})
    assert info.value.errors == {"objects.deal.fields.amount.precision": ["must be <= 18"]}
    assert meta.current(lw_ctx).version == 0
    assert meta.versions(lw_ctx) == []


def test_a_second_runtime_sees_a_publish_without_restart(meta, rec, lw_ctx, lw_runtime):
    other = Runtime(lw_runtime.field_types)
    meta.publish(lw_ctx, V1)
    assert other.compiled(lw_ctx.tenant).version == 1
    assert set(other.compiled(lw_ctx.tenant).object("deal").fields) == {"name"}
    first = other.compiled(lw_ctx.tenant)
    assert other.compiled(lw_ctx.tenant) is first  # cached per version
    meta.publish(lw_ctx, edit(V1, lambda d: fields(d).update(n={"type": "integer"})))
    again = other.compiled(lw_ctx.tenant)
    assert again.version == 2 and again is not first
    assert set(again.object("deal").fields) == {"name", "n"}


# -- ownership ----------------------------------------------------------------------------

def package(version="1.0.0", **fields_):
    deal = {"label": "Deal", "fields": {"name": {"type": "text"}, "stage": {"type": "text"}, **fields_}}
    return Package({"name": "sales_kit", "version": version, "title": "Sales kit"},
                   objects={"deal": deal}, roles={"rep": {"permissions": {"deal": ["read"]}}})


def test_ownership_map_tracks_package_and_customisation(lw_services, meta, lw_ctx):
    pkgs = lw_services.packages
    assert pkgs.install(lw_ctx, package()) == 1
    own = meta.current(lw_ctx).ownership
    assert own == {
        "objects.deal": {"package": "sales_kit", "customized": False},
        "objects.deal.fields.name": {"package": "sales_kit", "customized": False},
        "objects.deal.fields.stage": {"package": "sales_kit", "customized": False},
        "roles.rep": {"package": "sales_kit", "customized": False},
    }
    doc = meta.current(lw_ctx).doc
    assert doc["packages"]["sales_kit"]["version"] == "1.0.0"

    # The tenant relabels a package field and adds its own field.
    doc["objects"]["deal"]["fields"]["stage"]["label"] = "Phase"
    doc["objects"]["deal"]["fields"]["mine"] = {"type": "integer"}
    assert meta.publish(lw_ctx, doc) == 2
    own = meta.current(lw_ctx).ownership
    assert own["objects.deal.fields.stage"] == {"package": "sales_kit", "customized": True}
    assert own["objects.deal.fields.name"] == {"package": "sales_kit", "customized": False}
    assert own["objects.deal.fields.mine"] == {"package": None, "customized": False}
    assert own["objects.deal"] == {"package": "sales_kit", "customized": False}

    # An upgrade updates what the tenant left alone and keeps its customisations.
    upgraded = package("1.1.0", name={"type": "text", "max_length": 80}, stage={"type": "text", "label": "Step"},
                       amount={"type": "integer"})
    assert pkgs.install(lw_ctx, upgraded) == 3
    doc = meta.current(lw_ctx).doc
    f = doc["objects"]["deal"]["fields"]
    assert f["name"] == {"type": "text", "max_length": 80}
    assert f["stage"]["label"] == "Phase"
    assert f["mine"] == {"type": "integer"}
    assert f["amount"] == {"type": "integer"}
    assert doc["packages"]["sales_kit"]["version"] == "1.1.0"
    own = meta.current(lw_ctx).ownership
    assert own["objects.deal.fields.stage"] == {"package": "sales_kit", "customized": True}
    assert own["objects.deal.fields.amount"] == {"package": "sales_kit", "customized": False}
    assert own["objects.deal.fields.name"] == {"package": "sales_kit", "customized": False}
    # Re-installing the same version changes nothing.
    assert pkgs.install(lw_ctx, upgraded) == 3


def test_ownership_follows_renames_and_package_style_keys(lw_services, meta, lw_ctx):
    lw_services.packages.install(lw_ctx, package())
    doc = meta.current(lw_ctx).doc
    styled = copy.deepcopy(doc)
    styled["objects"]["deal"].update(kind="object", name="deal")
    assert meta.publish(lw_ctx, styled) == 1  # not a change, so not a customisation
    f = doc["objects"]["deal"]["fields"]
    f["phase"] = {**f.pop("stage"), "renamed_from": "stage"}
    assert meta.publish(lw_ctx, doc) == 2
    own = meta.current(lw_ctx).ownership
    assert "objects.deal.fields.stage" not in own
    assert own["objects.deal.fields.phase"] == {"package": "sales_kit", "customized": True}


def test_package_cannot_take_over_tenant_elements(lw_services, meta, lw_ctx):
    meta.publish(lw_ctx, {"objects": {"deal": {"fields": {"x": {"type": "text"}}}}})
    with pytest.raises(ConflictError, match="objects.deal"):
        lw_services.packages.install(lw_ctx, package())
    assert meta.current(lw_ctx).version == 1
