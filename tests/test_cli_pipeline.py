"""``loomwork debug pipeline``: the write pipeline's participants for an object, in order."""
from __future__ import annotations

from loomwork.plugins import crm_sample


def test_debug_pipeline_lists_what_runs_in_order(cli):
    cli("init", "--password", "a-long-password")
    cli("package", "install", str(crm_sample.PATH))
    out = cli("debug", "pipeline", "quote", "-o", "update")
    names = [line.split()[1] for line in out.splitlines()[1:]]
    assert names[:3] == ["before_scripts", "object_access", "stored_rows"]
    assert names.index("rules") < names.index("approval_lock") < names.index("update") < names.index("history")
    assert "approval_lock" in out and "nothing to do here" not in out.split("approval_lock")[1].split("\n")[0]
    assert "workflow_lock" in out and "nothing to do here" in out.split("workflow_lock")[1].split("\n")[0]
    full = cli("debug", "pipeline", "account")
    assert [line for line in full.splitlines() if not line.startswith(" ")] == [
        "create:", "update:", "delete:", "restore:"]
    bad = cli("debug", "pipeline", "nope", ok=False)
    assert bad.startswith("error: ") and "nope" in bad  # the command's own error (exit 1), not a usage error
