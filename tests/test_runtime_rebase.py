"""MetadataService.rebase: a document edited from an older version, merged with what was
published since (or refused, naming the conflicts and the versions that made them)."""
from __future__ import annotations

import copy
import datetime as dt

import pytest

from loomwork.metadata.errors import ConflictError, NotFound, PermissionDenied
from loomwork.metadata.merge import MergeConflict, digest
from loomwork.runtime.context import Actor, Context

V1 = {"objects": {"deal": {"fields": {"name": {"type": "text", "label": "Name"},
                                      "amount": {"type": "integer", "label": "Amount"}}}},
      "roles": {"auditor": {"permissions": {"deal": ["read"]}}}}
WHEN = dt.datetime(2026, 3, 4, 5, 6, tzinfo=dt.UTC)


def as_ann(ctx):
    return Context(ctx.tenant, Actor(7, "ann", frozenset({"admin"})), clock=lambda: WHEN)


def edit(doc, fn):
    doc = copy.deepcopy(doc)
    fn(doc)
    return doc


def fields(doc):
    return doc["objects"]["deal"]["fields"]


def test_a_stale_document_keeps_a_colleagues_later_change(meta, lw_ctx):
    assert meta.publish(lw_ctx, V1) == 1
    exported = copy.deepcopy(meta.current(lw_ctx).doc)
    # Ann adds a field after the export...
    meta.publish(as_ann(lw_ctx), edit(exported, lambda d: fields(d).update(region={"type": "text"})))
    # ... and the stale export deletes a role and relabels amount.
    mine = edit(exported, lambda d: (d["roles"].pop("auditor"), fields(d)["amount"].update(label="Value")))
    rebased = meta.rebase(lw_ctx, mine, 1, digest(meta.version(lw_ctx, 1).doc))
    assert (rebased.base, rebased.head, rebased.merged) == (1, 2, True)
    assert rebased.taken == [{"path": "objects.deal.fields.region", "op": "added", "old": None,
                              "new": {"type": "text"}}]
    assert meta.publish(lw_ctx, rebased.doc, base_version=rebased.head) == 3
    doc = meta.current(lw_ctx).doc
    assert "region" in fields(doc) and fields(doc)["amount"]["label"] == "Value" and doc["roles"] == {}
    # Without the merge, publishing the stale document would have hidden Ann's field.
    assert "Hide field deal.region (its data is kept)" in [
        op.description for op in meta.preview(lw_ctx, edit(mine, lambda d: None)).operations]


def test_conflicts_are_reported_three_ways_with_who_changed_them(meta, lw_ctx):
    meta.publish(lw_ctx, V1)
    meta.publish(as_ann(lw_ctx), edit(V1, lambda d: fields(d)["amount"].update(label="Total")))
    mine = edit(V1, lambda d: (fields(d)["amount"].update(label="Value"), d["roles"].pop("auditor")))
    with pytest.raises(MergeConflict) as info:
        meta.rebase(lw_ctx, mine, 1)
    exc = info.value
    assert exc.status == 409 and "metadata changed since version 1 (now 2)" in exc.message
    assert [c.as_dict() for c in exc.conflicts] == [{
        "path": "objects.deal.fields.amount.label", "base": "Amount", "yours": "Value", "theirs": "Total",
        "changed_in": [{"version": 2, "by": "ann", "at": "2026-03-04T05:06:00+00:00"}],
        "summary": "you changed it, and version 2 changed it"}]
    assert exc.problem_members["head_version"] == 2
    assert meta.current(lw_ctx).version == 2  # nothing published


def test_the_base_must_be_this_tenants(meta, lw_ctx):
    meta.publish(lw_ctx, V1)
    same = meta.rebase(lw_ctx, V1, 1, digest(meta.current(lw_ctx).doc))
    assert (same.merged, same.taken) == (False, [])
    with pytest.raises(ConflictError, match="another tenant or installation"):
        meta.rebase(lw_ctx, V1, 1, "0123456789abcdef")
    with pytest.raises(NotFound, match="version 5 does not exist"):
        meta.rebase(lw_ctx, V1, 5)
    viewer = Context(lw_ctx.tenant, Actor(3, "vera", frozenset({"viewer"})))
    with pytest.raises(PermissionDenied):
        meta.rebase(viewer, V1, 1)
