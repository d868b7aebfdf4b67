"""Guards for the source layout (ARCHITECTURE §1) and the plugin hooks."""
from __future__ import annotations

import ast
import configparser
import inspect
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"platform/loomwork": "loomwork", "metadata": "loomwork.metadata", "runtime": "loomwork.runtime",
           "designer": "loomwork.designer", "plugins": "loomwork.plugins"}
CARD_FOLDERS = ("platform", "metadata", "runtime", "designer", "plugins")


def _setup() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def test_platform_is_a_source_root_not_a_package():
    assert not (ROOT / "platform" / "__init__.py").exists()
    import platform

    assert hasattr(platform, "python_version"), "the standard library's platform module must not be shadowed"


def test_package_dir_maps_every_folder():
    mapping = dict(
        line.split("=", 1) for line in _setup()["options"]["package_dir"].strip().splitlines()
    )
    mapping = {k.strip(): v.strip() for k, v in mapping.items()}
    assert mapping == {v: k for k, v in FOLDERS.items()}


def test_every_package_folder_is_listed():
    listed = set(_setup()["options"]["packages"].split())
    found = set()
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]) if rel.parts else package)
    assert found == listed


def test_pyproject_holds_only_build_system_and_tools():
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(data) <= {"build-system", "tool"}


def test_nothing_imports_a_card_folder_by_its_name():
    offenders = []
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    if name.split(".")[0] in CARD_FOLDERS and name != "platform":
                        offenders.append(f"{path.relative_to(ROOT)}: import {name}")
    assert not offenders


def test_no_root_conftest_and_no_tests_package():
    assert not (ROOT / "conftest.py").exists()
    assert not (ROOT / "tests" / "__init__.py").exists()


def test_import_layers_hold():
    exe = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_hook_is_typed_and_documented():
    from loomwork import hookspecs

    hooks = [f for name, f in vars(hookspecs).items() if name.startswith("loomwork_") and callable(f)]
    assert hooks
    for hook in hooks:
        assert inspect.getdoc(hook), f"{hook.__name__} has no docstring"
        sig = inspect.signature(hook)
        assert sig.return_annotation is not inspect.Signature.empty, f"{hook.__name__} has no return type"
        for p in sig.parameters.values():
            assert p.annotation is not inspect.Parameter.empty, f"{hook.__name__}({p.name}) is untyped"


def test_plugin_manager_rejects_a_misspelt_hook():
    import pytest

    from loomwork.plugin_manager import make_plugin_manager
    from loomwork.runtime import hookimpl

    class Bad:
        @hookimpl
        def loomwork_feild_types(self):
            return []

    with pytest.raises(Exception, match="unknown hook"):
        make_plugin_manager([Bad()], entry_points=False)


def test_a_plugin_can_add_a_field_type(tmp_path):
    from loomwork.metadata.validation import validate_app
    from loomwork.plugin_manager import field_types, make_plugin_manager
    from loomwork.runtime import hookimpl
    from loomwork.runtime.fieldtypes import TextType

    class ColorType(TextType):
        name = "color"
        properties = {}

    class Plugin:
        @hookimpl
        def loomwork_field_types(self):
            return [ColorType()]

    types = field_types(make_plugin_manager([Plugin()], entry_points=False))
    assert "color" in types and "text" in types
    validate_app({"objects": {"car": {"fields": {"paint": {"type": "color"}}}}}, types)


def test_runtime_reads_time_only_from_the_context_clock():
    """Main must be green on any date: runtime code takes ``now`` from ``Context.clock``
    (whose default is ``context.utcnow``), never from the wall clock directly."""
    import re

    wall = re.compile(r"\b(datetime\.now|datetime\.utcnow|date\.today|time\.time)\(")
    offenders = []
    for folder in ("runtime", "metadata"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.relative_to(ROOT).as_posix() == "runtime/context.py":
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if wall.search(line):
                    offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "read the time from ctx.now() (or context.utcnow):\n" + "\n".join(offenders)
