"""Templates as a registry filled through ``loomwork_templates``: ``loomwork package
list`` shows what plugins offer, ``package install NAME`` installs one by name (a
plugin's as the built-in sample CRM), and the demo finds the CRM there — on both
databases."""
from __future__ import annotations

import secrets
import textwrap

import pytest

from loomwork.metadata.errors import LoomworkError, MetadataError
from loomwork.metadata.packages import Template
from loomwork.plugin_manager import make_plugin_manager, templates
from loomwork.plugins import crm_sample
from loomwork.runtime import hookimpl

NOTES = """\
kind: object
name: note
fields:
  text: {type: text, required: true}
"""


@pytest.fixture
def cli(cli, tmp_path, monkeypatch, lw_cheap_passwords):
    """``cli`` with a plugin module (``lwt_notes_*``, a new
    name each time: imported modules stay) offering the template ``notes`` from a folder
    under ``tmp_path``."""
    folder = tmp_path / "notes_pkg"
    folder.mkdir()
    (folder / "package.yaml").write_text("name: notes\nversion: 1.0.0\ntitle: {en: Notes, zh-CN: 笔记}\n")
    (folder / "note.yaml").write_text(NOTES)
    mods = tmp_path / "mods"
    mods.mkdir()
    module = f"lwt_notes_{secrets.token_hex(4)}"
    (mods / f"{module}.py").write_text(textwrap.dedent(f"""
        from loomwork.metadata.packages import Template
        from loomwork.runtime import hookimpl

        @hookimpl
        def loomwork_templates():
            return [Template.at({str(folder)!r})]
        """))
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.setenv("LOOMWORK_PLUGINS", module)
    cli.folder = folder
    return cli


def test_templates_are_listed_and_installed_by_name(cli):
    listing = cli("package", "list").splitlines()
    assert listing[0].split() == ["NAME", "VERSION", "TITLE", "IN", "TENANT", "main"]
    assert listing[1].split()[:2] == ["crm_sample", "1.0.0"] and listing[1].endswith("not installed")
    assert "Sample CRM" in listing[1]
    assert listing[2].split()[:3] == ["notes", "1.0.0", "Notes"] and listing[2].endswith("not installed")

    cli("init", "--tenant", "main", "--admin", "boss", "--password", "a-long-password")
    assert "plan from version 0" in cli("package", "install", "crm_sample", "--dry-run")
    assert "installed crm_sample 1.0.0: metadata version 1" in cli("package", "install", "crm_sample")
    assert "installed notes 1.0.0: metadata version 2" in cli("package", "install", "notes", "-m", "by name")
    (cli.folder / "package.yaml").write_text("name: notes\nversion: 1.1.0\ntitle: Notes\n")
    listing = cli("package", "list").splitlines()
    assert next(line for line in listing if line.startswith("crm_sample")).endswith("installed 1.0.0")
    notes = next(line for line in listing if line.startswith("notes"))
    assert notes.split()[:2] == ["notes", "1.1.0"] and notes.endswith("installed 1.0.0 (upgrade available)")
    assert "installed notes 1.1.0: metadata version 3" in cli("package", "install", "notes")

    out = cli("package", "install", "nope", ok=False)
    assert "nope: no package folder or template of that name (templates: crm_sample, notes; " \
           "see loomwork package list)" in out
    # A folder is still installed by its path.
    assert "installed notes 1.1.0" in cli("package", "install", str(cli.folder))


def test_template_registry_checks(tmp_path):
    found = templates(make_plugin_manager(entry_points=False))
    assert found["crm_sample"] == Template.at(crm_sample.PATH)
    assert (found["crm_sample"].version, found["crm_sample"].title["en"]) == ("1.0.0", "Sample CRM")
    assert found["crm_sample"].load().objects.keys() >= {"account", "deal"}

    class Again:
        @hookimpl
        def loomwork_templates(self):
            return [Template.at(crm_sample.PATH)]

    with pytest.raises(LoomworkError, match="template 'crm_sample' is registered twice"):
        templates(make_plugin_manager([Again()], entry_points=False))
    with pytest.raises(MetadataError, match="is not a package: package.yaml is missing"):
        Template.at(tmp_path)


def test_the_demo_installs_the_crm_template_it_finds_by_name(tmp_path, lw_cheap_passwords):
    """The demo asks the plugins for the template crm_sample: with the built-in one
    replaced by a plugin's (a copy at 9.9.9), that copy is what it installs."""
    import shutil

    from loomwork.app import create_app
    from loomwork.demo import setup_demo
    from loomwork.runtime.context import Actor, Context

    copy = tmp_path / "crm_copy"
    shutil.copytree(crm_sample.PATH, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    manifest = (copy / "package.yaml").read_text()
    (copy / "package.yaml").write_text(manifest.replace("version: 1.0.0", "version: 9.9.9"))

    class StandIn:
        @hookimpl
        def loomwork_templates(self):
            return [Template.at(copy)]

    pm = make_plugin_manager([StandIn()], entry_points=False)
    pm.unregister(name="loomwork.plugins.crm_sample")
    app = create_app({"database_url": f"sqlite:///{tmp_path / 'demo'}", "instance_dir": str(tmp_path),
                      "secret_key": "x"}, plugin_manager=pm)
    st = app.extensions["loomwork"]
    login = setup_demo(st, 12, echo=lambda _m: None)
    assert {u["username"] for u in login["users"]} >= {"admin", "sam"}
    ctx = Context(st.platform.tenant(st.settings.default_tenant), Actor.system())
    assert st.services.metadata.current(ctx).doc["packages"]["crm_sample"]["version"] == "9.9.9"
    st.platform.dispose()
