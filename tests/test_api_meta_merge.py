"""``POST /api/v1/meta/publish`` with the version the document was edited from
(``base_version`` or ``If-Match``): later changes are merged in, conflicts are a 409
with a three-way report, ``force`` publishes as it is."""
from __future__ import annotations

import copy

import pytest

from loomwork.testing import assert_problem as problem

pytestmark = pytest.mark.usefixtures("fast_setup")


def current(api) -> tuple[int, dict]:
    whole = api.get("/api/v1/meta").json
    return whole["version"], copy.deepcopy(whole["doc"])


def test_a_stale_document_is_merged_with_later_changes(api):
    base, doc = current(api)
    theirs = copy.deepcopy(doc)
    theirs["objects"]["deal"]["fields"]["region"] = {"type": "text"}
    assert api.post("/api/v1/meta/publish", json={"doc": theirs}).status_code == 200

    mine = copy.deepcopy(doc)
    mine["objects"]["deal"]["validations"]["big_needs_close"] = {
        "condition": "amount > 100000 and is_blank(close_date)", "message": "Big deals need a close date"}
    dry = api.post("/api/v1/meta/publish", json={"doc": mine, "base_version": base, "dry_run": True})
    assert dry.status_code == 200, dry.json
    assert [op["description"] for op in dry.json["plan"]["operations"]] == [
        "Add validation rule deal.big_needs_close"]
    assert dry.json["merged"]["base_version"] == base and dry.json["merged"]["head_version"] == base + 1
    assert {c["path"] for c in dry.json["merged"]["taken"]} >= {"objects.deal.fields.region"}

    pub = api.post("/api/v1/meta/publish", json={"doc": mine, "comment": "rule"},
                   headers={"If-Match": f'"{base}"'})
    assert pub.status_code == 200, pub.json
    assert pub.json["version"] == base + 2 and pub.headers["ETag"] == f'"{base + 2}"'
    _, now = current(api)
    assert "region" in now["objects"]["deal"]["fields"]
    assert "big_needs_close" in now["objects"]["deal"]["validations"]


def test_conflicts_are_a_409_naming_each_one(api):
    base, doc = current(api)
    theirs = copy.deepcopy(doc)
    theirs["objects"]["deal"]["fields"]["amount"]["label"] = {"en": "Total", "zh-CN": "总额"}
    assert api.post("/api/v1/meta/publish", json={"doc": theirs}).status_code == 200
    mine = copy.deepcopy(doc)
    mine["objects"]["deal"]["fields"]["amount"]["label"]["en"] = "Value"
    for dry in (True, False):
        body = problem(api.post("/api/v1/meta/publish", json={"doc": mine, "base_version": base, "dry_run": dry}),
                       409)
        assert body["title"] == "Metadata conflict"
        assert (body["base_version"], body["head_version"]) == (base, base + 1)
        (c,) = body["conflicts"]
        assert (c["path"], c["yours"], c["theirs"]) == ("objects.deal.fields.amount.label.en", "Value", "Total")
        assert c["changed_in"][0]["version"] == base + 1 and c["changed_in"][0]["by"] == "admin"
    # force: the document as it is, undoing the other change.
    forced = api.post("/api/v1/meta/publish", json={"doc": mine, "base_version": base, "force": True})
    assert forced.status_code == 200 and "merged" not in forced.json
    assert current(api)[1]["objects"]["deal"]["fields"]["amount"]["label"]["en"] == "Value"


def test_bad_bases_are_refused(api):
    base, doc = current(api)
    for headers, json, status in [
        ({"If-Match": "seven"}, {}, 400), ({"If-Match": '"1"'}, {"base_version": 2}, 422),
        ({}, {"force": "yes"}, 422), ({}, {"base_version": base + 5}, 404),
    ]:
        problem(api.post("/api/v1/meta/publish", json={"doc": doc, **json}, headers=headers), status)
    assert api.post("/api/v1/meta/publish", json={"doc": doc}, headers={"If-Match": "*"}).status_code == 200
    assert current(api)[0] == base
