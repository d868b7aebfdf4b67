"""Packages: loading YAML folders (errors name the file), installing, dependencies."""
from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest

from loomwork.metadata.errors import MetadataError, ValidationError
from loomwork.metadata.packages import MAX_FILE_BYTES, load_package
from loomwork.plugins import crm_sample
from loomwork.runtime.packages import DowngradeRefused, satisfies, version_key

MANIFEST = "name: kit\nversion: 1.0.0\ntitle: {en: Kit, zh-CN: 套件}\n"


def make_pkg(root: Path, files: dict[str, str | bytes], manifest: str | None = MANIFEST) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if manifest is not None:
        (root / "package.yaml").write_text(manifest, encoding="utf-8")
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def load_errors(folder) -> dict[str, list[str]]:
    with pytest.raises(MetadataError) as info:
        load_package(folder)
    return info.value.errors


DEAL = """\
    kind: object
    name: deal
    fields:
      name: {type: text, required: true}
    """


def test_loads_objects_and_roles_from_files_and_documents(tmp_path):
    root = make_pkg(tmp_path / "kit", {
        "deal.yaml": DEAL,
        "sub/more.yml": """\
            kind: object
            name: quote
            fields: {deal: {type: lookup, target: deal}}
            ---
            kind: role
            name: rep
            permissions: {deal: [read]}
            """,
        "README.md": "not yaml, ignored",
    })
    pkg = load_package(root)
    assert (pkg.name, pkg.version) == ("kit", "1.0.0")
    assert pkg.manifest["title"] == {"en": "Kit", "zh-CN": "套件"}
    assert pkg.objects == {"deal": {"fields": {"name": {"type": "text", "required": True}}},
                           "quote": {"fields": {"deal": {"type": "lookup", "target": "deal"}}}}
    assert pkg.roles == {"rep": {"permissions": {"deal": ["read"]}}}


def test_missing_manifest_names_the_folder(tmp_path):
    root = make_pkg(tmp_path / "kit", {"deal.yaml": DEAL}, manifest=None)
    assert load_errors(root) == {str(root): ["is not a package: package.yaml is missing"]}


def test_invalid_manifest(tmp_path):
    root = make_pkg(tmp_path / "kit", {}, manifest="name: Kit\nversion: one\n")
    errs = load_errors(root)
    assert errs == {"package.yaml": ["title is required"],
                    "package.yaml.name": ["must match ^[a-z][a-z0-9_]{0,62}$"],
                    "package.yaml.version": [
                        "must match ^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$"]}
    root = make_pkg(tmp_path / "two", {}, manifest=MANIFEST + "---\n" + MANIFEST)
    assert load_errors(root) == {"package.yaml": ["must hold exactly one mapping"]}


def test_bad_yaml_names_file_and_line(tmp_path):
    root = make_pkg(tmp_path / "kit", {"deal.yaml": "kind: object\nname: deal\nfields:\n  name: {type: text\n"})
    errs = load_errors(root)
    assert list(errs) == ["deal.yaml"]
    assert errs["deal.yaml"][0].startswith("invalid YAML at line 5, column 1:")
    root = make_pkg(tmp_path / "kit2", {"deal.yaml": "kind: object\nname: deal\n  bad: indent\n"})
    errs = load_errors(root)
    assert errs["deal.yaml"][0].startswith("invalid YAML at line 3, column 6:")


def test_bad_manifest_yaml(tmp_path):
    root = make_pkg(tmp_path / "kit", {}, manifest="name: [kit\n")
    assert list(load_errors(root)) == ["package.yaml"]


def test_duplicate_keys_in_one_mapping_are_refused_with_line(tmp_path):
    root = make_pkg(tmp_path / "kit", {"deal.yaml": """\
        kind: object
        name: deal
        fields:
          amount: {type: integer}
          name: {type: text}
          amount: {type: decimal}
        """})
    assert load_errors(root) == {"deal.yaml": ["invalid YAML at line 6, column 3: found duplicate key 'amount'"]}


def test_merge_keys_may_override(tmp_path):
    root = make_pkg(tmp_path / "kit", {"deal.yaml": """\
        kind: object
        name: deal
        fields:
          a: &base {type: text, max_length: 10}
          b:
            <<: *base
            max_length: 20
        """})
    assert load_package(root).objects["deal"]["fields"]["b"] == {"type": "text", "max_length": 20}


def test_duplicate_names_across_files(tmp_path):
    root = make_pkg(tmp_path / "kit", {"a.yaml": DEAL, "b.yaml": DEAL,
                                       "c.yaml": "kind: role\nname: r\n---\nkind: role\nname: r\n"})
    assert load_errors(root) == {
        "b.yaml": ["object 'deal' is defined twice (first in a.yaml)"],
        "c.yaml#2": ["role 'r' is defined twice (first in c.yaml)"],
    }


def test_schema_errors_name_file_and_path(tmp_path):
    root = make_pkg(tmp_path / "kit", {
        "deal.yaml": """\
            kind: object
            name: deal
            colour: red
            fields:
              Amount: {type: decimal}
            """,
        "roles.yaml": "kind: role\nname: rep\npermissions: {deal: [fly]}\n",
        "junk.yaml": "- just\n- a list\n",
        "nokind.yaml": "name: x\nfields: {}\n",
    })
    errs = load_errors(root)
    assert errs == {
        "deal.yaml: objects.deal": ["unknown property 'colour'"],
        "deal.yaml: objects.deal.fields.Amount": [
            "name 'Amount' is not allowed (lower-case letters, digits and _, starting with a letter, "
            "at most 63 characters)"],
        "junk.yaml": ["each document needs kind (object, role, form or view) and name"],
        "nokind.yaml": ["each document needs kind (object, role, form or view) and name"],
        "roles.yaml: roles.rep.permissions.deal.0": ["must be one of create, read, update, delete"],
    }


def test_non_utf8_and_oversized_files(tmp_path):
    root = make_pkg(tmp_path / "kit", {"deal.yaml": b"kind: object\nname: \xff\xfe\n"})
    assert load_errors(root) == {"deal.yaml": ["is not UTF-8 text"]}
    root = make_pkg(tmp_path / "big", {"deal.yaml": "# " + "x" * MAX_FILE_BYTES + "\n"})
    assert load_errors(root) == {"deal.yaml": [f"file is larger than {MAX_FILE_BYTES} bytes"]}


def test_sample_package_loads():
    pkg = load_package(crm_sample.PATH)
    assert pkg.name == "crm_sample"
    assert set(pkg.objects) == {"account", "contact", "deal", "quote"}
    assert set(pkg.roles) == {"sales", "viewer", "finance"}
    assert set(pkg.approvals) == {"quote_discount"}
    assert pkg.objects["deal"]["fields"]["number"] == {
        "type": "autonumber", "pattern": "D-{YYYY}-{0000}", "label": {"en": "Deal number", "zh-CN": "商机编号"}}


@pytest.mark.parametrize("installed,spec,ok", [
    ("1.2.0", None, True), ("1.2.0", "", True), ("1.2.0", "1.2.0", True), ("1.2.0", "=1.2.0", True),
    ("1.2.0", "1.2.1", False), ("1.10.0", ">=1.9.0", True), ("1.2.0", ">=1.10.0", False),
    ("2.0.0-beta", ">=2.0.0", False), ("2.0.0", ">=2.0.0-beta", True), ("2.0.0-rc.1", ">=2.0.0-beta.3", True),
    ("1.2.0", ">= 1.2.0", True), ("1.2.0", "= 1.2.0", True),
])
def test_version_specs(installed, spec, ok):
    assert satisfies(installed, spec) is ok


def test_versions_follow_semantic_versioning_precedence():
    """The order semver.org §11 gives, however the list starts out."""
    ordered = ["0.9.9", "1.0.0-0.3.7", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
               "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0-x.7.z.92", "1.0.0", "1.0.1", "1.2.0", "1.10.0",
               "2.0.0", "10.0.0"]
    for seed in range(5):
        shuffled = ordered[:]
        random.Random(seed).shuffle(shuffled)
        assert sorted(shuffled, key=version_key) == ordered
    assert version_key("1.2.3") == version_key("1.2.3")
    for bad in ("1.2", "1.2.3.4", "v1.2.3", "1.02.3", "1.2.3-", "1.2.3-a..b", "", None, "1.2.3+build"):
        with pytest.raises(ValueError):
            version_key(bad)
    with pytest.raises(ValueError):
        satisfies("1.0.0", ">=one")


# -- installing (storage: both dialects) ---------------------------------------------

def test_install_sample_package(lw_services, lw_ctx):
    version = lw_services.packages.install(lw_ctx, load_package(crm_sample.PATH))
    assert version == 1
    current = lw_services.metadata.current(lw_ctx)
    assert current.comment == "Install crm_sample 1.0.0"
    assert set(current.doc["objects"]) == {"account", "contact", "deal", "quote"}
    assert set(current.doc["roles"]) == {"sales", "viewer", "finance"}
    assert set(current.doc["approvals"]) == {"quote_discount"}
    assert current.doc["packages"]["crm_sample"]["version"] == "1.0.0"
    assert all(o == {"package": "crm_sample", "customized": False} for o in current.ownership.values())
    assert "objects.deal.fields.amount" in current.ownership
    # The app works: records with lookups, autonumbers, defaults.
    rec = lw_services.records
    acc = rec.create(lw_ctx, "account", {"name": "Acme", "annual_revenue": "1000000.00"})
    assert acc["active"] is True
    deal = rec.create(lw_ctx, "deal", {"name": "Big one", "account": acc["id"], "amount": "12500.50"})
    assert deal["stage"] == "prospecting"
    assert deal["number"].startswith("D-") and deal["number"].endswith("-0001")
    with pytest.raises(ValidationError):
        rec.create(lw_ctx, "deal", {"name": "No account"})
    # Installing the same package again publishes nothing new.
    assert lw_services.packages.install(lw_ctx, load_package(crm_sample.PATH)) == 1


def test_dependencies_are_checked(lw_services, lw_ctx, tmp_path):
    base = make_pkg(tmp_path / "base", {"thing.yaml": "kind: object\nname: thing\nfields: {n: {type: text}}\n"},
                    manifest="name: base\nversion: 1.0.0\ntitle: Base\n")
    addon = make_pkg(tmp_path / "addon", {"extra.yaml": """\
        kind: object
        name: extra
        fields: {thing: {type: lookup, target: thing}}
        """}, manifest="name: addon\nversion: 0.1.0\ntitle: Addon\ndepends: [{name: base, version: '>=1.1.0'}]\n")
    with pytest.raises(ValidationError) as info:
        lw_services.packages.install(lw_ctx, load_package(addon))
    assert info.value.errors == {"package.depends": ["install base >=1.1.0 first"]}
    lw_services.packages.install(lw_ctx, load_package(base))
    with pytest.raises(ValidationError):
        lw_services.packages.install(lw_ctx, load_package(addon))  # 1.0.0 is too old
    (base / "package.yaml").write_text("name: base\nversion: 1.1.0\ntitle: Base\n")
    lw_services.packages.install(lw_ctx, load_package(base))
    assert lw_services.packages.install(lw_ctx, load_package(addon)) == 3
    own = lw_services.metadata.current(lw_ctx).ownership
    assert own["objects.extra"]["package"] == "addon"
    assert own["objects.thing"]["package"] == "base"


def test_installing_an_older_version_is_refused_unless_allowed(lw_services, lw_ctx, tmp_path):
    """Defect 15 of issue 11: a downgrade is refused with a clear message, or done when allowed."""
    files = {"thing.yaml": "kind: object\nname: thing\nfields: {n: {type: text}}\n"}
    kit = make_pkg(tmp_path / "kit", files, manifest="name: kit\nversion: 1.10.0\ntitle: Kit\n")
    packages = lw_services.packages
    packages.install(lw_ctx, load_package(kit))
    (kit / "package.yaml").write_text("name: kit\nversion: 1.9.0\ntitle: Kit\n")  # older, though "9" > "1" as text
    for attempt in (lambda pkg: packages.install(lw_ctx, pkg), lambda pkg: packages.merged(lw_ctx, pkg)):
        with pytest.raises(DowngradeRefused) as info:
            attempt(load_package(kit))
        assert info.value.status == 409
        assert info.value.message.startswith("kit 1.10.0 is installed; 1.9.0 is older")
    assert lw_services.metadata.current(lw_ctx).doc["packages"]["kit"]["version"] == "1.10.0"
    (kit / "package.yaml").write_text("name: kit\nversion: 1.10.0-rc.1\ntitle: Kit\n")  # a pre-release is older
    with pytest.raises(DowngradeRefused):
        packages.install(lw_ctx, load_package(kit))
    assert packages.install(lw_ctx, load_package(kit), allow_downgrade=True) == 2
    assert lw_services.metadata.current(lw_ctx).doc["packages"]["kit"]["version"] == "1.10.0-rc.1"
    (kit / "package.yaml").write_text("name: kit\nversion: 1.10.0\ntitle: Kit\n")
    assert packages.install(lw_ctx, load_package(kit)) == 3  # upgrading needs no permission


def test_semantically_invalid_package_fails_at_install(lw_services, lw_ctx, tmp_path):
    root = make_pkg(tmp_path / "kit", {"deal.yaml": """\
        kind: object
        name: deal
        fields: {account: {type: lookup, target: account}}
        """})
    pkg = load_package(root)  # the schema is fine; the reference is not
    with pytest.raises(MetadataError) as info:
        lw_services.packages.install(lw_ctx, pkg)
    assert info.value.errors == {"objects.deal.fields.account.target": ["unknown object 'account'"]}
    assert lw_services.metadata.current(lw_ctx).version == 0
