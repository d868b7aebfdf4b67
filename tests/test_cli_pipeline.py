"""``loomwork debug pipeline``: the write pipeline's participants for an object, in order."""
from __future__ import annotations

import secrets

from click.testing import CliRunner

from loomwork.cli import main
from loomwork.plugins import crm_sample


def test_debug_pipeline_lists_what_runs_in_order(lw_database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOMWORK_NAMESPACE", f"lwt{secrets.token_hex(4)}")
    monkeypatch.setenv("LOOMWORK_SECRET_KEY", "cli-test")
    monkeypatch.setenv("LOOMWORK_INSTANCE_DIR", str(tmp_path / "inst"))
    runner = CliRunner()

    def run(*args: str):
        result = runner.invoke(main, ["--database-url", lw_database_url, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    try:
        run("init", "--password", "a-long-password")
        run("package", "install", str(crm_sample.PATH))
        out = run("debug", "pipeline", "quote", "-o", "update")
        names = [line.split()[1] for line in out.splitlines()[1:]]
        assert names[:3] == ["before_scripts", "object_access", "stored_rows"]
        assert names.index("rules") < names.index("approval_lock") < names.index("update") < names.index("history")
        assert "approval_lock" in out and "nothing to do here" not in out.split("approval_lock")[1].split("\n")[0]
        assert "workflow_lock" in out and "nothing to do here" in out.split("workflow_lock")[1].split("\n")[0]
        full = run("debug", "pipeline", "account")
        assert [line for line in full.splitlines() if not line.startswith(" ")] == [
            "create:", "update:", "delete:", "restore:"]
        bad = runner.invoke(main, ["--database-url", lw_database_url, "debug", "pipeline", "nope"])
        assert bad.exit_code == 1 and "nope" in bad.output
    finally:
        from loomwork import create_app

        app = create_app({"database_url": lw_database_url})
        app.extensions["loomwork"].platform.drop_all()
        app.extensions["loomwork"].platform.dispose()
