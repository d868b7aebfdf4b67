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


# -- field types are asked, not named ------------------------------------------------

#: Where pages and the API are made: they ask a field type what it can do (its kind,
#: has_options, multiple, sortable, references, system_set...), so a plugin's type
#: built on a built-in one behaves like it.
ASKING_CODE = ("platform/loomwork/web", "platform/loomwork/api", "designer")


def _field_type_names() -> frozenset[str]:
    from loomwork.runtime.fieldtypes import BUILTIN_TYPES

    return frozenset(t.name for t in BUILTIN_TYPES)


def _strings(node: ast.AST) -> list[str]:
    """The string literals ``node`` is or holds (a tuple, list or set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [s for e in node.elts for s in _strings(e)]
    return []


def _is_type_name(node: ast.AST) -> bool:
    """``x.ftype.name`` or ``x.defn.type``: a field type's own name."""
    return isinstance(node, ast.Attribute) and (
        (node.attr == "name" and isinstance(node.value, ast.Attribute) and node.value.attr == "ftype")
        or (node.attr == "type" and isinstance(node.value, ast.Attribute) and node.value.attr == "defn"))


def _is_type_key(node: ast.AST) -> bool:
    """``x.type``, ``x["type"]`` or ``x.get("type")``: a field (document)'s type, maybe."""
    if isinstance(node, ast.Attribute):
        return node.attr == "type"
    if isinstance(node, ast.Subscript):
        return _strings(node.slice) == ["type"]
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and bool(node.args) and _strings(node.args[0]) == ["type"])


def type_name_decisions(source: str, filename: str) -> list[str]:
    """``file:line`` of each place ``source`` decides by a field type's name: reads
    ``x.ftype.name`` or ``x.defn.type`` outside a message (an f-string), or compares a
    field's ``type`` with the name of a built-in field type."""
    names = _field_type_names()
    tree = ast.parse(source, filename)
    in_message = {id(n) for js in ast.walk(tree) if isinstance(js, ast.JoinedStr) for n in ast.walk(js)}
    found = []
    for node in ast.walk(tree):
        if _is_type_name(node) and id(node) not in in_message:
            found.append(f"{filename}:{node.lineno}: reads a field type's name ({ast.unparse(node)})")
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(_is_type_key(s) for s in sides) and any(set(_strings(s)) & names for s in sides):
                found.append(f"{filename}:{node.lineno}: compares a field's type with a type name "
                             f"({ast.unparse(node)})")
    return found


#: A template or script deciding by a field's type (pages get its kind instead), and
#: where the field type names it compares with stand (None: the construct alone is one).
_PAGE_PATTERNS = (
    (r"""\btype\s*(?:[!=]==?|\bin\b|\bnot in\b)\s*[\[("']""", "after"),  # f.type == "lookup", type in (...)
    (r"""\.includes\(\s*(?:[\w.]+\.)?type\s*\)""", "before"),  # ["decimal", "currency"].includes(type)
    (r"""\bswitch\s*\(\s*(?:[\w.]+\.)?type\s*\)""", None),  # switch (f.type)
    (r"""\.has\(\s*(?:[\w.]+\.)?type\s*\)""", None),  # SKIPPED.has(f.type)
    (r"""data-type\s*=\s*["']\{\{""", None),  # data-type="{{ f.type }}"
    (r"""\bdataset\.type\b|\bmeta\.type\b""", None),
)


def page_type_decisions(text: str, filename: str) -> list[str]:
    """``file:line`` of each place a Jinja template or a script decides by a field's
    type: a comparison, ``switch`` or set test of ``type`` with field type names (a DOM
    element's ``type === "checkbox"`` names no field type), or the type put in the page."""
    import re

    names = _field_type_names()
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for pattern, where in _PAGE_PATTERNS:
            m = re.search(pattern, line)
            if m is None:
                continue
            if where is not None:
                part = line[m.start():] if where == "after" else line[:m.end()]
                if not set(re.findall(r"""["']([a-z_]+)["']""", part)) & names:
                    continue  # input.type === "checkbox", ["checkbox", "radio"].includes(c.type)
            found.append(f"{filename}:{n}: decides by a field's type: {line.strip()[:120]}")
            break
    return found


def test_the_type_name_guards_catch_what_they_are_for():
    """The guards below can fail: each way of deciding by a type's name is caught."""
    bad = '''
if f.ftype.name == "lookup": pass
kind = f.ftype.name
if f.defn.type in ("choice", "multi_choice"): pass
if fdoc.get("type") == "lookup" or fdoc["type"] != "json" or f.type == "autonumber": pass
'''
    found = type_name_decisions(bad, "x.py")
    assert sorted({int(line.split(":")[1]) for line in found}) == [2, 3, 4, 5]
    assert sum(":5: compares" in line for line in found) == 3
    fine = '''
raise ValueError(f"a {f.ftype.name} field cannot be sorted")
if node["type"] == "approval" or f.ftype.kind == "text" or f.ftype.has_options: pass
'''
    assert type_name_decisions(fine, "x.py") == []
    js = ('if (f.type === "multi_choice") x();\nswitch (field.type) {}\nSKIPPED.has(f.type);\n'
          '<div data-type="{{ f.type }}">\n{% if f.type == "lookup" %}\nconst t = wrap.dataset.type;\n'
          'if (["decimal", "currency"].includes(type)) y();\n')
    assert len(page_type_decisions(js, "x.js")) == 7
    assert page_type_decisions('if (c.type === "checkbox" || event.type === "input") x();\n'
                               'if (f.kind === "boolean" && c.type === "checkbox") y();\n'
                               'if (!["checkbox", "radio"].includes(c.type)) z();\n', "x.js") == []


def test_pages_and_the_api_ask_field_types_instead_of_naming_them():
    """Web and API code never decides by a field type's name: it asks the type
    (``FieldType.kind``, ``has_options``, ``multiple``, ``sortable``, ``system_set``,
    ``CompiledObject.lookups``...), so a plugin's ``ColorType(TextType)`` is shown,
    typed in, filtered, sorted, bulk-edited and documented as text is."""
    offenders = []
    for folder in ASKING_CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            offenders += type_name_decisions(path.read_text(encoding="utf-8"), rel)
        for pattern in ("*.html", "*.js"):
            for path in sorted((ROOT / folder).rglob(pattern)):
                rel = path.relative_to(ROOT).as_posix()
                offenders += page_type_decisions(path.read_text(encoding="utf-8"), rel)
    assert not offenders, ("ask the field type (kind, has_options, multiple, sortable, references, system_set, "
                           "places...; pages get its kind) instead of its name:\n" + "\n".join(offenders))
