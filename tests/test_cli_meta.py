"""``loomwork meta export|plan|apply``: plan lines that name what changes, new fields
placed on explicit form layouts with warnings for the rest, and exports that name their
base version so a stale file is merged or refused; end to end on both databases."""
from __future__ import annotations

import pytest
import yaml

from loomwork.plugins import crm_sample


@pytest.fixture
def cli(cli):
    """``cli`` with the sample CRM installed."""
    cli("init", "--password", "a-long-password")
    cli("package", "install", str(crm_sample.PATH))
    return cli


def write(path, doc) -> str:
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return str(path)


def test_new_fields_are_placed_and_the_plan_warns_about_layouts_left_alone(cli, tmp_path):
    doc = yaml.safe_load(cli("meta", "export"))
    doc["objects"]["deal"]["fields"]["priority"] = {"type": "choice", "options": [{"value": "high"}]}
    doc["objects"]["account"]["fields"]["tier"] = {"type": "text"}
    doc["forms"]["account_main"]["new_fields"] = "none"
    path = write(tmp_path / "app.yaml", doc)
    plan = cli("meta", "plan", path)
    assert "[instant] Add deal.priority to form deal_main (new section new_fields)" in plan
    assert "warning: account.tier is on no form layout: form account_main (new_fields: none) lists its " \
           "fields explicitly" in plan
    assert "Change new_fields of form account_main" in plan
    assert "metadata version 2" in cli("meta", "apply", path)
    stored = yaml.safe_load(cli("meta", "export"))
    assert stored["forms"]["deal_main"]["tabs"][0]["sections"][-1] == {
        "name": "new_fields", "label": {"en": "New fields", "zh-CN": "新字段"}, "new_fields": True,
        "fields": ["priority"]}


def test_export_names_its_base_and_apply_merges_a_colleagues_later_change(cli, tmp_path):
    text = cli("meta", "export")
    assert text.startswith("# Loomwork metadata of tenant main, version 1.")
    exported = yaml.safe_load(text)
    assert exported["base_version"] == 1 and len(exported["base_digest"]) == 16

    # A colleague publishes from their own export...
    theirs = tmp_path / "theirs.yaml"
    doc = yaml.safe_load(cli("meta", "export"))
    doc["objects"]["deal"]["fields"]["region"] = {"type": "text"}
    cli("meta", "apply", write(theirs, doc), "-m", "region")
    assert yaml.safe_load(theirs.read_text())["base_version"] == 2  # the file now holds what it published

    # ... then the stale export is applied: her field stays.
    del exported["roles"]["viewer"]
    exported["objects"]["deal"]["validations"]["big_needs_close"] = {
        "condition": "amount > 100000 and is_blank(close_date)", "message": "Big deals need a close date"}
    mine = write(tmp_path / "mine.yaml", exported)
    plan = cli("meta", "plan", mine)
    assert "was exported from version 1; merged with version 2, keeping 2 changes published since:" in plan
    assert "  objects.deal.fields.region (added)" in plan
    assert "[instant] Add validation rule deal.big_needs_close" in plan
    assert "[instant] Delete role viewer" in plan
    assert "Hide field deal.region" not in plan
    out = cli("meta", "apply", mine, "-m", "rule")
    assert "metadata version 3" in out and f"{mine} now holds version 3 (base_version: 3)" in out
    now = yaml.safe_load(cli("meta", "export"))
    assert "region" in now["objects"]["deal"]["fields"] and "viewer" not in now["roles"]
    assert yaml.safe_load((tmp_path / "mine.yaml").read_text()) == now
    assert "nothing to change" in cli("meta", "plan", mine)


def test_a_conflicting_stale_export_is_refused_with_a_three_way_report(cli, tmp_path):
    stale = yaml.safe_load(cli("meta", "export"))
    doc = yaml.safe_load(cli("meta", "export"))
    doc["objects"]["deal"]["fields"]["amount"]["label"] = {"en": "Total", "zh-CN": "总额"}
    cli("meta", "apply", write(tmp_path / "theirs.yaml", doc), "--keep-file")
    assert yaml.safe_load((tmp_path / "theirs.yaml").read_text())["base_version"] == 1  # kept as it was

    stale["objects"]["deal"]["fields"]["amount"]["label"]["en"] = "Deal value"
    mine = write(tmp_path / "mine.yaml", stale)
    for command in ("plan", "apply"):
        out = cli("meta", command, mine, ok=False)
        assert f"error: {mine} was exported from version 1; 1 change published since (now version 2) " \
               "conflicts with it:" in out
        assert "  objects.deal.fields.amount.label.en: you changed it, and version 2 changed it" in out
        assert '    base   (version 1): "Amount"' in out
        assert f'    yours  ({mine}): "Deal value"' in out
        assert '    theirs (version 2): "Total"  [version 2 by os:' in out
        assert "or use --force to publish" in out
    assert yaml.safe_load(cli("meta", "export"))["base_version"] == 2  # nothing published

    forced = cli("meta", "apply", mine, "--force")
    assert "--force:" in forced and "metadata version 3" in forced
    assert yaml.safe_load(cli("meta", "export"))["objects"]["deal"]["fields"]["amount"]["label"] == {
        "en": "Deal value", "zh-CN": "金额"}


def test_bases_from_elsewhere_and_files_without_one(cli, tmp_path):
    doc = yaml.safe_load(cli("meta", "export"))
    doc["base_digest"] = "0123456789abcdef"
    out = cli("meta", "apply", write(tmp_path / "other.yaml", doc), ok=False)
    assert "exported from version 1 of another tenant or installation" in out
    doc["base_version"] = "one"
    assert "base_version: must be the version number" in cli("meta", "plan", write(tmp_path / "bad.yaml", doc),
                                                             ok=False)
    del doc["base_version"], doc["base_digest"]
    doc["objects"]["deal"]["fields"]["region"] = {"type": "text"}
    out = cli("meta", "apply", write(tmp_path / "plain.yaml", doc))
    assert "names no base_version, so it replaces the current version as it is" in out
    assert "metadata version 2" in out and "now holds" not in out
