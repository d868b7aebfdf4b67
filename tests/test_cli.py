"""The ``loomwork`` command line, end to end on both databases."""
from __future__ import annotations

import secrets

import yaml
from click.testing import CliRunner

from loomwork.cli import main
from loomwork.plugins import crm_sample


def test_init_tenants_users_and_tokens(cli):
    out = cli("init", "--tenant", "main", "--admin", "boss", "--password", "a-long-password")
    assert "tenant main created; administrator boss" in out
    cli("tenant", "create", "second", "--title", "Second Co")
    listing = cli("tenant", "list")
    assert "main" in listing and "second\tSecond Co" in listing
    assert "already exists" in cli("tenant", "create", "second", ok=False)
    assert "tenant names are" in cli("tenant", "create", "Bad-Name", ok=False)
    refused = cli("user", "create", "ann", "--tenant", "second", "--role", "sales", "--password", "ann-password-1",
                  ok=False)
    assert "no role 'sales' in this tenant (it has admin, user)" in refused  # the second tenant has no package
    out = cli("user", "create", "ann", "--tenant", "second", "--password", "ann-password-1")
    assert "user ann created" in out and "roles user" in out
    assert "at least 10 characters" in cli("user", "create", "bob", "--password", "short", ok=False)
    token = cli("user", "token", "ann", "--tenant", "second").strip()
    assert token.startswith("lw_second.")
    assert "no user 'zed'" in cli("user", "token", "zed", ok=False)


def test_user_tokens_are_listed_and_revoked(cli):
    cli("init", "--admin", "boss", "--password", "a-long-password")
    cli("user", "create", "ann", "--password", "ann-password-1")
    first = cli("user", "token", "ann", "--name", "laptop").strip()
    cli("user", "token", "ann", "--name", "ci")
    listing = cli("user", "tokens", "ann").splitlines()
    assert listing[0].split() == ["ID", "NAME", "HINT", "CREATED", "EXPIRES", "STATUS"]
    rows = [line.split() for line in listing[1:]]
    assert [(r[1], r[-1]) for r in rows] == [("laptop", "active"), ("ci", "active")]
    assert first.endswith(rows[0][2]) and first not in "\n".join(listing)
    assert cli("user", "tokens", "boss").splitlines()[1:] == []
    laptop = rows[0][0]
    assert f"token {laptop} of ann revoked" in cli("user", "revoke-token", "ann", laptop)
    rows = [line.split() for line in cli("user", "tokens", "ann").splitlines()[1:]]
    assert rows[0][-3] == "revoked" and rows[1][-1] == "active"
    # Another user's token, one that is not there, and an id that is no number are refused.
    assert f"no token {rows[1][0]}" in cli("user", "revoke-token", "boss", rows[1][0], ok=False)
    assert "no token 999" in cli("user", "revoke-token", "ann", "999", ok=False)
    assert "no user 'zed'" in cli("user", "tokens", "zed", ok=False)
    assert "Invalid value" in cli("user", "revoke-token", "ann", "x", ok=False)
    assert "Invalid value" in cli("user", "revoke-token", "ann", "0", ok=False)


def test_tenant_create_makes_its_administrator(cli):
    """Defect 19 of issue 11: a new tenant comes with an administrator who can sign in."""
    from loomwork import create_app
    from loomwork.runtime.context import Actor, Context

    cli("init", "--password", "a-long-password")
    out = cli("tenant", "create", "acme", "--title", "Acme Co", "--admin", "ada").strip()
    assert out.startswith("tenant acme created; administrator ada / ")
    generated = out.rsplit(" / ", 1)[1]
    assert len(generated) >= 16
    out = cli("tenant", "create", "globex", "--admin", "gus", "--password", "gus-password-1").strip()
    assert out == "tenant globex created; administrator gus"  # a password given is not printed
    # Nothing is left behind when the administrator cannot be made.
    assert "at least 10 characters" in cli("tenant", "create", "initech", "--password", "short", ok=False)
    assert "printable" in cli("tenant", "create", "initech", "--admin", "x" * 151, ok=False)
    assert "initech" not in cli("tenant", "list")
    assert cli("user", "list", "--tenant", "acme").splitlines()[1].split()[-3:] == ["admin", "-", "active"]

    st = create_app({"database_url": cli.database_url}).extensions["loomwork"]
    for tenant, username, password in (("acme", "ada", generated), ("globex", "gus", "gus-password-1")):
        ctx = Context(st.platform.tenant(tenant), Actor(None, "anonymous", frozenset()))
        assert st.services.users.authenticate(ctx, username, password).roles == {"admin"}
    st.platform.dispose()


def test_user_roles_are_checked_and_users_managed(cli):
    """Defect 8 of issue 11: roles are the tenant's; list, update, deactivate and reset users."""
    cli("init", "--admin", "boss", "--password", "a-long-password")
    out = cli("user", "create", "zed", "--role", "nonexistent", "--password", "zed-password-1", ok=False)
    assert "roles: no role 'nonexistent' in this tenant (it has admin, user)" in out
    cli("package", "install", str(crm_sample.PATH))
    cli("user", "create", "ann", "--role", "sales", "--email", "ann@example.com", "--full-name", "Ann Lee",
        "--password", "ann-password-1")
    listing = cli("user", "list").splitlines()
    assert listing[0].split() == ["USERNAME", "FULL", "NAME", "EMAIL", "ROLES", "MANAGER", "STATUS"]
    assert listing[1].split() == ["ann", "Ann", "Lee", "ann@example.com", "sales", "-", "active"]
    assert listing[2].split() == ["boss", "boss", "-", "admin", "-", "active"]
    assert "zed" not in "".join(listing)

    out = cli("user", "update", "ann", "--add-role", "finance", "--manager", "boss", "--locale", "zh-CN")
    assert out.splitlines()[1].split() == ["ann", "Ann", "Lee", "ann@example.com", "finance,sales", "boss", "active"]
    assert "no role 'auditor'" in cli("user", "update", "ann", "--add-role", "auditor", ok=False)
    assert "locale: must be one of en, zh-CN" in cli("user", "update", "ann", "--locale", "fr", ok=False)
    assert "email: is not an email address" in cli("user", "update", "ann", "--email", "nope", ok=False)
    assert "no user 'nobody'" in cli("user", "update", "ann", "--manager", "nobody", ok=False)
    assert "nothing to change" in cli("user", "update", "ann", ok=False)
    out = cli("user", "update", "ann", "--role", "viewer", "--email", "", "--manager", "")
    assert out.splitlines()[1].split() == ["ann", "Ann", "Lee", "-", "viewer", "-", "active"]
    out = cli("user", "update", "ann", "--remove-role", "viewer", ok=False)
    assert "give at least one role" in out
    assert "last active administrator" in cli("user", "update", "boss", "--role", "sales", ok=False)
    assert "last active administrator" in cli("user", "deactivate", "boss", ok=False)

    assert "user ann deactivated" in cli("user", "deactivate", "ann")
    assert cli("user", "list").splitlines()[1].split()[-1] == "inactive"
    assert "user ann reactivated" in cli("user", "reactivate", "ann")
    assert "no user 'nobody'" in cli("user", "deactivate", "nobody", ok=False)

    out = cli("user", "reset-password", "ann", "--generate")
    generated = out.strip().rsplit(": ", 1)[1]
    assert out.startswith("password of ann reset: ") and len(generated) >= 16
    cli("user", "reset-password", "ann", input="a-typed-password\na-typed-password\n")
    assert "at least 10 characters" in cli("user", "reset-password", "ann", "--password", "short", ok=False)
    from loomwork import create_app
    from loomwork.runtime.context import Actor, Context

    st = create_app({"database_url": cli.database_url}).extensions["loomwork"]
    users = st.services.users
    ctx = Context(st.platform.tenant("main"), Actor.system())
    assert users.authenticate(ctx, "ann", "a-typed-password").roles == {"viewer"}
    st.platform.dispose()


def test_publishes_record_the_operator_and_the_comment(cli, tmp_path, monkeypatch):
    """Defect 14 of issue 11: CLI publishes name who did them (--as USER, else os:NAME) and why."""
    monkeypatch.setenv("LOGNAME", "alice")  # what getpass.getuser() reads first
    cli("init", "--admin", "boss", "--password", "a-long-password")
    cli("package", "install", str(crm_sample.PATH), "-m", "first CRM")
    cli("user", "create", "sam", "--role", "sales", "--password", "sam-password-1")
    exported = yaml.safe_load(cli("meta", "export"))
    exported["objects"]["deal"]["fields"]["priority"] = {"type": "choice", "options": [{"value": "high"}]}
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(exported, allow_unicode=True))
    assert "--as: no user 'nobody' in tenant main" in cli("meta", "apply", str(path), "--as", "nobody",
                                                          ok=False)
    assert "only administrators may change metadata" in cli("meta", "apply", str(path), "--as", "sam",
                                                            ok=False)
    cli("meta", "apply", str(path), "--as", "boss", "-m", "Deal priority")
    cli("meta", "rollback", "1", "-m", "priority was a mistake")
    cli("user", "update", "boss", "--role", "admin", "--role", "sales")
    cli("user", "create", "root", "--role", "admin", "--password", "root-password")
    cli("user", "deactivate", "boss")
    assert "--as: user 'boss' is deactivated" in cli("meta", "rollback", "2", "--as", "boss", ok=False)
    lines = cli("meta", "versions").splitlines()
    assert lines[0].split() == ["VER", "PUBLISHED", "(UTC)", "BY", "CHANGES", "COMMENT"]
    # version, when, who, "N changes", why
    rows = [(v, by, why) for v, _when, by, _n, _changes, why in (line.split(None, 5) for line in lines[1:])]
    assert rows == [("3", "os:alice", "priority was a mistake"), ("2", "boss", "Deal priority"),
                    ("1", "os:alice", "Install crm_sample 1.0.0: first CRM")]


def test_package_install_and_meta_plan_apply_rollback(cli, tmp_path):
    cli("init", "--password", "a-long-password")
    dry = cli("package", "install", str(crm_sample.PATH), "--dry-run")
    assert "Create table deal" in dry
    assert "metadata version 1" in cli("package", "install", str(crm_sample.PATH))

    exported = yaml.safe_load(cli("meta", "export"))
    assert set(exported["objects"]) == {"account", "contact", "deal", "quote"}
    exported["objects"]["deal"]["fields"]["priority"] = {"type": "choice", "options": [{"value": "high"}]}
    path = tmp_path / "app.yaml"
    path.write_text(yaml.safe_dump(exported, allow_unicode=True))
    plan = cli("meta", "plan", str(path))
    assert "[fast   ] Add column deal.priority" in plan
    applied = cli("meta", "apply", str(path), "-m", "priority")
    assert "metadata version 2" in applied
    assert "nothing to change" in cli("meta", "plan", str(path))
    versions = cli("meta", "versions")
    assert "priority" in versions and "Install crm_sample 1.0.0" in versions
    rolled = cli("meta", "rollback", "1")
    assert "Hide field deal.priority" in rolled and "metadata version 3" in rolled

    exported["objects"]["deal"]["fields"]["amount"]["precision"] = 19
    path.write_text(yaml.safe_dump(exported, allow_unicode=True))
    bad = cli("meta", "plan", str(path), ok=False)
    assert "objects.deal.fields.amount.precision: must be <= 18" in bad


def test_package_downgrade_needs_allow_downgrade(cli, tmp_path):
    """Defect 15 of issue 11."""
    cli("init", "--password", "a-long-password")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "note.yaml").write_text("kind: object\nname: note\nfields: {body: {type: text}}\n")
    (pkg / "package.yaml").write_text("name: notes\nversion: 2.0.0\ntitle: Notes\n")
    cli("package", "install", str(pkg))
    (pkg / "package.yaml").write_text("name: notes\nversion: 1.5.0\ntitle: Notes\n")
    for extra in ((), ("--dry-run",)):
        out = cli("package", "install", str(pkg), *extra, ok=False)
        assert "error: notes 2.0.0 is installed and 1.5.0 is older; give --allow-downgrade to install it anyway" in out
    assert "Install notes 2.0.0" in cli("meta", "versions").splitlines()[1]
    assert "metadata version 2" in cli("package", "install", str(pkg), "--allow-downgrade")
    assert "Install notes 1.5.0" in cli("meta", "versions").splitlines()[1]


def test_bad_package_reports_the_file(cli, tmp_path):
    cli("init", "--password", "a-long-password")
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "package.yaml").write_text("name: broken\nversion: 1.0.0\ntitle: Broken\n")
    (pkg / "thing.yaml").write_text("kind: object\nname: thing\nfields:\n  a: {type: text\n")
    out = cli("package", "install", str(pkg), ok=False)
    assert "thing.yaml: invalid YAML at line" in out


def test_scripts_switch_dry_run_runs_and_worker(cli, tmp_path):
    cli("init", "--tenant", "main", "--admin", "boss", "--password", "a-long-password")
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "package.yaml").write_text(yaml.safe_dump({"name": "tiny", "version": "1.0.0", "title": "Tiny"}))
    (folder / "note.yaml").write_text(yaml.safe_dump({"kind": "object", "name": "note",
                                                      "fields": {"body": {"type": "text"}}}))
    (folder / "shout.yaml").write_text(yaml.safe_dump({
        "kind": "script", "name": "shout", "object": "note", "trigger": {"event": "before_save"},
        "source": "record['body'] = (record['body'] or '').upper()\nprint('shouted')\n"}))
    (folder / "tick.yaml").write_text(yaml.safe_dump({
        "kind": "script", "name": "tick", "trigger": {"schedule": "* * * * *"},
        "source": "ctx.create('note', {'body': 'tick'})\n"}))
    cli("package", "install", str(folder))
    assert "scripts are disabled for tenant main" in cli("tenant", "scripts")
    refused = cli("script", "run", "shout", "--values", '{"body": "hi"}', "--dry", ok=False)
    assert "loomwork tenant scripts --enable" in refused
    assert "scripts are enabled for tenant main" in cli("tenant", "scripts", "main", "--enable")
    out = cli("script", "run", "shout", "--values", '{"body": "hi"}', "--dry")
    assert '"body": "HI"' in out and "shouted" in out
    assert "not JSON" in cli("script", "run", "shout", "--values", "{", "--dry", ok=False)
    runs = cli("script", "runs")
    assert "shout" in runs and "(dry run)" in runs and "ok" in runs
    cli("worker", "--once")  # first sight of "tick": its schedule starts now
    assert "scripts are disabled" in cli("tenant", "scripts", "--disable")


def test_demo_prints_every_user_and_serves_on_the_port_asked(tmp_path, monkeypatch, lw_cheap_passwords):
    """Defect 16 of issue 11: every demo user with the password and roles; --port, make demo PORT=."""
    import os
    import socket
    import subprocess
    from pathlib import Path

    for name in ("LOOMWORK_DATABASE_URL", "LOOMWORK_NAMESPACE", "LOOMWORK_DEFAULT_TENANT"):
        monkeypatch.delenv(name, raising=False)
    instance = str(tmp_path / "demo")
    runner = CliRunner()

    def demo(*args: str):
        return runner.invoke(main, ["demo", "--instance", instance, "--records", "12", *args], catch_exceptions=False)

    first = demo("--no-serve", "--port", "5099")
    assert first.exit_code == 0, first.output
    assert "URL:       http://127.0.0.1:5099/" in first.output
    password = (Path(instance) / "demo-login.json").read_text().split('"password": "')[1].split('"')[0]
    rows = {line.split()[0]: line.split() for line in first.output.splitlines()
            if line.startswith("    ") and f"/ {password}" in line}
    assert {name: row[2:4] for name, row in rows.items()} == {
        "admin": [password, "admin"], "sam": [password, "sales"], "fiona": [password, "finance"],
        "felix": [password, "finance"]}
    again = demo("--no-serve")
    assert "reusing the demo instance" in again.output
    assert [line for line in again.output.splitlines() if f"/ {password}" in line] == \
        [line for line in first.output.splitlines() if f"/ {password}" in line]

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        busy = runner.invoke(main, ["demo", "--instance", str(tmp_path / "other"), "--port", str(port)])
    assert busy.exit_code == 1
    assert f"cannot serve on 127.0.0.1:{port}" in busy.output and "make demo PORT=" in busy.output
    assert not (tmp_path / "other" / "demo-login.json").exists()  # refused before building anything
    assert demo("--port", "70000").exit_code == 2

    root = Path(__file__).resolve().parent.parent
    # Run as a make of its own: under `make test` the inherited MAKEFLAGS/MAKELEVEL make
    # it print "Entering/Leaving directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    dry = subprocess.run(["make", "--no-print-directory", "-n", "demo", "PORT=5001"], cwd=root, capture_output=True,
                         env=env, text=True, check=True).stdout.splitlines()
    assert dry[-1].split() == [".venv/bin/loomwork", "demo", "--port", "5001"]
    plain = subprocess.run(["make", "--no-print-directory", "-n", "demo"], cwd=root, capture_output=True,
                           env={**env, "HOST": "box"}, text=True, check=True).stdout.splitlines()
    assert plain[-1].split() == [".venv/bin/loomwork", "demo"]


PLUGIN = '''
import click

from loomwork.runtime import hookimpl


@hookimpl
def loomwork_register_commands(cli):
    @cli.command("hello")
    @click.argument("name")
    @click.pass_obj
    def hello(env, name):
        """Greet NAME from the default tenant."""
        click.echo(f"hello {name} from {env.state.settings.default_tenant} ({len(cli.commands)} commands)")
        click.echo(f"same plugins: {env.state.plugins is env.plugin_manager}")
'''


def test_a_plugin_named_in_the_settings_adds_commands(tmp_path, monkeypatch):
    """Issue 11 §2: the CLI registers the plugins the app does, the ``plugins`` setting's too."""
    name = f"lw_cli_plugin_{secrets.token_hex(4)}"
    (tmp_path / f"{name}.py").write_text(PLUGIN)
    (tmp_path / f"{name}_clash.py").write_text(PLUGIN.replace('"hello"', '"user"'))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("LOOMWORK_DATABASE_URL", f"sqlite:///{tmp_path / 'inst'}")
    monkeypatch.setenv("LOOMWORK_INSTANCE_DIR", str(tmp_path / "inst"))
    runner = CliRunner()
    monkeypatch.delenv("LOOMWORK_PLUGINS", raising=False)
    missing = runner.invoke(main, ["hello", "ann"])
    assert missing.exit_code == 2 and "No such command 'hello'" in missing.output

    monkeypatch.setenv("LOOMWORK_PLUGINS", name)
    out = runner.invoke(main, ["hello", "ann"], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert out.output.startswith("hello ann from main (") and "commands)" in out.output
    assert "same plugins: True" in out.output  # the app of the command is built with the CLI's plugins
    listed = runner.invoke(main, ["--help"]).output
    assert "hello" in listed and "Greet NAME from the default tenant." in listed and "user" in listed
    assert "hello" not in main.commands  # the group itself is left as it was, for other settings

    config = tmp_path / "loomwork.toml"  # the settings file works the same way
    config.write_text(f'[loomwork]\nplugins = "{name}"\n')
    monkeypatch.delenv("LOOMWORK_PLUGINS")
    monkeypatch.setenv("LOOMWORK_CONFIG", str(config))
    assert runner.invoke(main, ["hello", "bo"]).output.startswith("hello bo from main")

    monkeypatch.setenv("LOOMWORK_PLUGINS", f"{name}_clash")
    clash = runner.invoke(main, ["hello", "ann"])
    assert clash.exit_code == 1 and "a plugin adds a command 'user', which is a built-in command's name" in clash.output
    monkeypatch.setenv("LOOMWORK_PLUGINS", "no_such_plugin_module")
    broken = runner.invoke(main, ["hello", "ann"])
    assert broken.exit_code == 1 and "cannot load plugin no_such_plugin_module" in broken.output
    # A built-in command is found without the plugins, and then says why the app cannot start.
    built_in = runner.invoke(main, ["tenant", "list"])
    assert built_in.exit_code == 1 and "error: cannot load plugin no_such_plugin_module" in built_in.output
