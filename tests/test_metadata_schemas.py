"""Metadata validation: JSON Schema plus semantic checks, with errors keyed by path."""
from __future__ import annotations

import copy

import pytest

from loomwork.metadata.errors import MetadataError, ValidationError
from loomwork.metadata.model import AppMetadata, label_text
from loomwork.metadata.validation import RESERVED_NAMES, schema, validate_app, validate_manifest


@pytest.fixture(scope="module")
def types(lw_runtime):
    return lw_runtime.field_types


def errors_of(doc, types) -> dict[str, list[str]]:
    with pytest.raises(MetadataError) as info:
        validate_app(doc, types)
    assert isinstance(info.value, ValidationError)
    assert info.value.status == 422
    return info.value.errors


def one_object(fields, **extra):
    return {"objects": {"deal": {"fields": fields, **extra}}}


VALID = {
    "objects": {
        "account": {
            "label": {"en": "Account", "zh-CN": "客户"},
            "title_field": "name",
            "search_fields": ["name", "website"],
            "default_sort": ["name", "-created_at"],
            "fields": {
                "name": {"type": "text", "required": True, "unique": True, "max_length": 200},
                "website": {"type": "url"},
                "revenue": {"type": "currency", "precision": 16, "scale": 2, "currency": "USD", "min": 0},
                "kind": {"type": "choice", "default": "a",
                         "options": [{"value": "a", "label": {"en": "A"}, "color": "#aabbcc"},
                                     {"value": "b", "active": False}]},
            },
            "indexes": {"name_kind": {"fields": ["name", "kind"], "unique": True}},
        },
        "deal": {
            "fields": {
                "number": {"type": "autonumber", "pattern": "Q-{YYYY}-{0000}"},
                "account": {"type": "lookup", "target": "account", "required": True, "on_delete": "cascade"},
                "parent": {"type": "lookup", "target": "deal", "on_delete": "set_null"},
                "amount": {"type": "decimal", "precision": 18, "scale": 2, "default": "0.00"},
                "tags": {"type": "multi_choice", "options": [{"value": "x"}, {"value": "y"}], "default": ["x"]},
                "due": {"type": "datetime", "default": "2026-01-31T09:30:00+08:00"},
                "extra": {"type": "json", "default": {"a": [1, 2]}},
            },
        },
    },
    "roles": {"sales": {"label": "Sales", "permissions": {"deal": ["read", "create"], "*": ["read"]}}},
}


def test_valid_document_passes_and_compiles(types):
    doc = copy.deepcopy(VALID)
    assert validate_app(doc, types) is None
    assert doc == VALID  # validation never mutates
    meta = AppMetadata.from_doc(doc, 3)
    assert meta.version == 3
    assert meta.object("account").title_field == "name"
    assert meta.object("deal").fields["amount"].prop("precision") == 18
    assert meta.roles["sales"].allows("deal", "create")
    assert meta.roles["sales"].allows("account", "read")
    assert not meta.roles["sales"].allows("account", "delete")
    assert {"admin", "user", "sales"} == set(meta.roles)
    assert label_text(meta.object("account").label, "zh-CN") == "客户"
    assert label_text(meta.object("account").label, "zh") == "Account"
    assert meta.object("deal").title() == "Deal"


def test_empty_document_is_valid(types):
    validate_app({}, types)
    validate_app({"objects": {}, "roles": {}, "packages": {}}, types)


def test_decimal_precision_over_18_names_the_path(types):
    errs = errors_of(one_object({"amount": {"type": "decimal", "precision": 19}}), types)
    assert errs == {"objects.deal.fields.amount.precision": ["must be <= 18"]}
    with pytest.raises(MetadataError, match=r"^objects\.deal\.fields\.amount\.precision: must be <= 18$"):
        validate_app(one_object({"amount": {"type": "decimal", "precision": 19}}), types)


def test_decimal_scale_over_precision(types):
    errs = errors_of(one_object({"amount": {"type": "decimal", "precision": 4, "scale": 5}}), types)
    assert errs == {"objects.deal.fields.amount.scale": ["must be <= precision (4)"]}


@pytest.mark.parametrize("bad", ["Amount", "2amount", "amount-x", "a" * 64, "amöunt"])
def test_bad_field_names(types, bad):
    errs = errors_of(one_object({bad: {"type": "text"}}), types)
    assert list(errs) == [f"objects.deal.fields.{bad}"]
    assert errs[f"objects.deal.fields.{bad}"][0].startswith(f"name {bad!r} is not allowed")


def test_uppercase_object_name(types):
    errs = errors_of({"objects": {"Deal": {"fields": {}}}}, types)
    assert list(errs) == ["objects.Deal"]


@pytest.mark.parametrize("where", ["object", "field"])
@pytest.mark.parametrize("name,message", [
    ("lw_things", "name 'lw_things' must not start with 'lw_' (reserved for system tables)"),
    ("select", "name 'select' is reserved"),
    ("user", "name 'user' is reserved"),
    ("created_at", "name 'created_at' is reserved"),
    ("row_version", "name 'row_version' is reserved"),
    ("id", "name 'id' is reserved"),
])
def test_reserved_and_system_names(types, where, name, message):
    if where == "object":
        doc, path = {"objects": {name: {"fields": {"x": {"type": "text"}}}}}, f"objects.{name}"
    else:
        doc, path = one_object({name: {"type": "text"}}), f"objects.deal.fields.{name}"
    assert errors_of(doc, types) == {path: [message]}


def test_reserved_words_cover_every_system_column():
    for col in ("id", "created_at", "created_by", "updated_at", "updated_by", "owner_id", "row_version",
                "deleted_at"):
        assert col in RESERVED_NAMES


def test_role_names_are_checked(types):
    errs = errors_of({"objects": {}, "roles": {"lw_admin": {}, "select": {}}}, types)
    assert errs == {"roles.lw_admin": ["name 'lw_admin' must not start with 'lw_' (reserved for system tables)"],
                    "roles.select": ["name 'select' is reserved"]}


def test_unknown_field_type(types):
    errs = errors_of(one_object({"x": {"type": "money"}}), types)
    assert list(errs) == ["objects.deal.fields.x.type"]
    assert errs["objects.deal.fields.x.type"][0].startswith("unknown field type 'money'; known: autonumber,")


def test_missing_field_type(types):
    errs = errors_of(one_object({"x": {"label": "X"}}), types)
    assert errs == {"objects.deal.fields.x": ["type is required"]}


def test_unknown_property_for_type(types):
    errs = errors_of(one_object({"x": {"type": "text", "precision": 3, "options": []}}), types)
    assert errs == {"objects.deal.fields.x.options": ["unknown property for a text field"],
                    "objects.deal.fields.x.precision": ["unknown property for a text field"]}


def test_unknown_object_property(types):
    assert errors_of(one_object({}, colour="red"), types) == {"objects.deal": ["unknown property 'colour'"]}
    assert errors_of({"objects": {}, "extra": 1}, types) == {"": ["unknown property 'extra'"]}


def test_property_values_are_type_checked(types):
    errs = errors_of(one_object({
        "a": {"type": "text", "max_length": 0},
        "b": {"type": "text", "max_length": "long"},
        "c": {"type": "currency", "currency": "usd"},
        "d": {"type": "text", "required": "yes"},
        "e": {"type": "text", "label": ""},
    }), types)
    assert errs == {
        "objects.deal.fields.a.max_length": ["must be >= 1"],
        "objects.deal.fields.b.max_length": ["must be of type integer"],
        "objects.deal.fields.c.currency": ["must match ^[A-Z]{3}$"],
        "objects.deal.fields.d.required": ["must be of type boolean"],
        "objects.deal.fields.e.label": ["must not be empty"],
    }


def test_required_type_properties(types):
    errs = errors_of(one_object({"c": {"type": "choice"}, "l": {"type": "lookup"}, "n": {"type": "autonumber"}}),
                     types)
    assert errs == {"objects.deal.fields.c": ["options is required"],
                    "objects.deal.fields.l": ["target is required"],
                    "objects.deal.fields.n": ["pattern is required"]}


def test_text_pattern_and_lengths(types):
    errs = errors_of(one_object({"a": {"type": "text", "pattern": "("},
                                 "b": {"type": "text", "min_length": 10, "max_length": 5}}), types)
    assert list(errs) == ["objects.deal.fields.a.pattern", "objects.deal.fields.b.min_length"]
    assert errs["objects.deal.fields.a.pattern"][0].startswith("invalid regular expression")
    assert errs["objects.deal.fields.b.min_length"] == ["must be <= max_length"]


def test_lookup_to_unknown_target(types):
    errs = errors_of(one_object({"account": {"type": "lookup", "target": "account"}}), types)
    assert errs == {"objects.deal.fields.account.target": ["unknown object 'account'"]}


def test_set_null_on_required_lookup(types):
    errs = errors_of(one_object({"me": {"type": "lookup", "target": "deal", "required": True,
                                        "on_delete": "set_null"}}), types)
    assert errs == {"objects.deal.fields.me.on_delete": ["set_null is not possible on a required lookup"]}


def test_bad_on_delete(types):
    errs = errors_of(one_object({"me": {"type": "lookup", "target": "deal", "on_delete": "explode"}}), types)
    assert errs == {"objects.deal.fields.me.on_delete": ["must be one of restrict, set_null, cascade"]}


def test_references_to_unknown_fields(types):
    doc = one_object({"name": {"type": "text"}, "extra": {"type": "json"}, "n": {"type": "integer"}},
                     title_field="title", search_fields=["name", "subject", "n"], default_sort=["-nope", "created_at"],
                     indexes={"by_x": {"fields": ["name", "x"]}, "by_extra": {"fields": ["extra"]}})
    assert errors_of(doc, types) == {
        "objects.deal.title_field": ["unknown field 'title'"],
        "objects.deal.search_fields.1": ["unknown field 'subject'"],
        "objects.deal.search_fields.2": ["field 'n' is not a text field"],
        "objects.deal.default_sort.0": ["unknown field 'nope'"],
        "objects.deal.indexes.by_x.fields.1": ["unknown field 'x'"],
        "objects.deal.indexes.by_extra.fields.0": ["field 'extra' cannot be indexed"],
    }


def test_unindexable_field_cannot_be_unique(types):
    errs = errors_of(one_object({"extra": {"type": "json", "unique": True},
                                 "notes": {"type": "long_text", "indexed": True}}), types)
    assert errs == {"objects.deal.fields.extra.unique": ["a json field cannot be unique or indexed"],
                    "objects.deal.fields.notes.indexed": ["a long_text field cannot be unique or indexed"]}


def test_choice_duplicate_options(types):
    errs = errors_of(one_object({"stage": {"type": "choice", "options": [
        {"value": "won"}, {"value": "lost"}, {"value": "won"}]}}), types)
    assert errs == {"objects.deal.fields.stage.options": ["duplicate option value 'won'"]}
    errs = errors_of(one_object({"tags": {"type": "multi_choice", "options": [{"value": "a"}, {"value": "a"}]}}),
                     types)
    assert errs == {"objects.deal.fields.tags.options": ["duplicate option value 'a'"]}


def test_choice_option_shape(types):
    errs = errors_of(one_object({"stage": {"type": "choice", "options": [
        {"value": "a", "color": "red"}, {"value": ""}, {"label": "x"}]}}), types)
    assert errs == {
        "objects.deal.fields.stage.options.0.color": ["must match ^#[0-9a-fA-F]{6}$"],
        "objects.deal.fields.stage.options.1.value": ["must not be empty"],
        "objects.deal.fields.stage.options.2": ["value is required"],
    }


@pytest.mark.parametrize("fdoc,message", [
    ({"type": "integer", "default": "abc"}, "invalid default: Not a valid integer."),
    ({"type": "integer", "default": True}, "invalid default: Not a valid integer."),
    ({"type": "integer", "min": 0, "default": -1}, None),
    ({"type": "boolean", "default": 1}, "invalid default: Not a valid boolean."),
    ({"type": "decimal", "precision": 5, "scale": 2, "default": "12345.6"},
     "invalid default: Too many digits (at most 5)."),
    ({"type": "date", "default": "2026-13-01"}, "invalid default: Not a valid date."),
    ({"type": "datetime", "default": "2026-01-31T09:30:00"},
     "invalid default: Needs a time zone offset, for example 2026-01-31T09:30:00+08:00."),
    ({"type": "choice", "options": [{"value": "a"}], "default": "b"}, "invalid default: must be one of: a"),
    ({"type": "multi_choice", "options": [{"value": "a"}], "default": ["b"]}, "invalid default: must be one of: a"),
    ({"type": "email", "default": "not-an-email"}, "invalid default: Not a valid email address."),
    ({"type": "text", "max_length": 3, "default": "abcd"}, "invalid default: Longer than maximum length 3."),
    ({"type": "autonumber", "pattern": "{0000}", "default": "1"}, "an autonumber takes no default"),
])
def test_invalid_default_for_type(types, fdoc, message):
    errs = errors_of(one_object({"x": fdoc}), types)
    assert list(errs) == ["objects.deal.fields.x.default"]
    if message is not None:
        assert errs["objects.deal.fields.x.default"] == [message.rstrip(".")]
    else:
        assert errs["objects.deal.fields.x.default"][0].startswith("invalid default: Must be greater")


@pytest.mark.parametrize("fdoc,path,message", [
    ({"type": "date", "min": "garbage"}, "min", "must be a valid date"),
    ({"type": "date", "max": "20260131"}, "max", "must be a valid date"),
    ({"type": "date", "min": "2026-02-01", "max": "2026-01-01"}, "min", "must be <= max"),
    ({"type": "integer", "min": 5, "max": 1}, "min", "must be <= max"),
    ({"type": "decimal", "min": 10, "max": 1.5}, "min", "must be <= max"),
    ({"type": "percent", "min": 50, "max": 10}, "min", "must be <= max"),
])
def test_bounds_must_be_valid_and_ordered(types, fdoc, path, message):
    assert errors_of(one_object({"x": fdoc}), types) == {f"objects.deal.fields.x.{path}": [message]}


def test_equal_bounds_are_fine(types):
    validate_app(one_object({"x": {"type": "integer", "min": 3, "max": 3, "default": 3},
                             "d": {"type": "date", "min": "2026-01-01", "max": "2026-01-01"}}), types)


def test_autonumber_patterns(types):
    errs = errors_of(one_object({"a": {"type": "autonumber", "pattern": "Q-{XX}-{0000}"},
                                 "b": {"type": "autonumber", "pattern": "{000}-{00}"},
                                 "c": {"type": "autonumber", "pattern": "no counter"}}), types)
    assert errs == {"objects.deal.fields.a.pattern": ["unknown token {XX}"],
                    "objects.deal.fields.b.pattern": ["needs exactly one counter such as {0000}"],
                    "objects.deal.fields.c.pattern": ["must match \\{0+\\}"]}


def test_cycle_of_required_lookups(types):
    doc = {"objects": {
        "a": {"fields": {"b": {"type": "lookup", "target": "b", "required": True}}},
        "b": {"fields": {"c": {"type": "lookup", "target": "c", "required": True}}},
        "c": {"fields": {"a": {"type": "lookup", "target": "a", "required": True}}},
    }}
    assert errors_of(doc, types) == {"objects.a.fields.b": ["required lookups form a cycle: a -> b -> c -> a"]}
    # One optional link breaks the cycle.
    doc["objects"]["c"]["fields"]["a"]["required"] = False
    validate_app(doc, types)


def test_required_self_lookup_is_a_cycle(types):
    errs = errors_of(one_object({"parent": {"type": "lookup", "target": "deal", "required": True}}), types)
    assert errs == {"objects.deal.fields.parent": ["required lookups form a cycle: deal -> deal"]}


def test_cycle_of_cascades(types):
    doc = {"objects": {
        "x": {"fields": {"ref": {"type": "text"}}},
        "a": {"fields": {"b": {"type": "lookup", "target": "b", "on_delete": "cascade"}}},
        "b": {"fields": {"a": {"type": "lookup", "target": "a", "on_delete": "cascade"}}},
    }}
    assert errors_of(doc, types) == {"objects.a.fields.b": ["cascading deletes form a cycle: a -> b -> a"]}
    doc["objects"]["b"]["fields"]["a"]["on_delete"] = "restrict"
    validate_app(doc, types)


def test_cascade_chain_without_cycle_is_fine(types):
    validate_app({"objects": {
        "a": {"fields": {"n": {"type": "text"}}},
        "b": {"fields": {"a": {"type": "lookup", "target": "a", "on_delete": "cascade", "required": True}}},
        "c": {"fields": {"b": {"type": "lookup", "target": "b", "on_delete": "cascade", "required": True},
                         "a": {"type": "lookup", "target": "a", "on_delete": "cascade"}}},
    }}, types)


def test_role_permissions_naming_unknown_objects(types):
    doc = {"objects": {"deal": {"fields": {}}},
           "roles": {"sales": {"permissions": {"deal": ["read"], "invoice": ["read"], "*": ["read"]}}}}
    assert errors_of(doc, types) == {"roles.sales.permissions.invoice": ["unknown object 'invoice'"]}


def test_role_permission_operations(types):
    doc = {"objects": {"deal": {"fields": {}}}, "roles": {"r": {"permissions": {"deal": ["read", "fly"]}}}}
    assert errors_of(doc, types) == {"roles.r.permissions.deal.1": ["must be one of create, read, update, delete"]}
    doc = {"objects": {"deal": {"fields": {}}}, "roles": {"r": {"permissions": {"deal": ["read", "read"]}}}}
    assert errors_of(doc, types) == {"roles.r.permissions.deal": ["must not repeat entries"]}


def test_label_shapes(types):
    validate_app(one_object({"x": {"type": "text", "label": {"en": "X", "zh-CN": "艾克斯"}}}), types)
    errs = errors_of(one_object({"x": {"type": "text", "label": {"english": "X"}}}), types)
    assert list(errs) == ["objects.deal.fields.x.label"]
    errs = errors_of(one_object({"x": {"type": "text", "label": 5}}), types)
    assert errs == {"objects.deal.fields.x.label": ["must be a text or a mapping of locale to text"]}


def test_every_problem_is_reported_at_once(types):
    doc = {"objects": {
        "deal": {"fields": {"amount": {"type": "decimal", "precision": 19}, "select": {"type": "text"}}},
        "quote": {"fields": {"x": {"type": "nope"}}},
    }}
    errs = errors_of(doc, types)
    assert set(errs) == {"objects.deal.fields.amount.precision", "objects.deal.fields.select",
                         "objects.quote.fields.x.type"}
    with pytest.raises(MetadataError, match=r"\(and 2 more\)$"):
        validate_app(doc, types)


def test_index_names_may_not_clash(types):
    errs = errors_of(one_object({"stage": {"type": "text", "indexed": True}},
                                indexes={"stage": {"fields": ["stage", "created_at"]}}), types)
    assert list(errs) == ["objects.deal.indexes.stage"]
    assert "'ix_deal_stage'" in errs["objects.deal.indexes.stage"][0]
    errs = errors_of(one_object({"name": {"type": "text"}}, indexes={"sort": {"fields": ["name"]}}), types)
    assert list(errs) == ["objects.deal.indexes.sort"]
    # Index names are global to the namespace: deal_x.y and deal.x_y would both be ix_deal_x_y.
    errs = errors_of({"objects": {"deal_x": {"fields": {"y": {"type": "text", "indexed": True}}},
                                  "deal": {"fields": {"x_y": {"type": "text", "indexed": True}}}}}, types)
    assert list(errs) == ["objects.deal.fields.x_y"]
    assert "objects.deal_x.fields.y" in errs["objects.deal.fields.x_y"][0]


def test_kind_schemas_are_draft_2020_12():
    for kind in ("object", "role", "package", "app"):
        assert schema(kind)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_manifest_validation():
    validate_manifest({"name": "crm", "version": "1.2.3", "title": "CRM"})
    with pytest.raises(MetadataError) as info:
        validate_manifest({"name": "CRM", "version": "1.2", "title": "CRM", "depends": [{"version": "1"}]})
    assert info.value.errors == {
        "package.depends.0": ["name is required"],
        "package.name": ["must match ^[a-z][a-z0-9_]{0,62}$"],
        "package.version": [
            "must match ^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?$"],
    }


@pytest.mark.parametrize("sort, message", [
    (["deleted_at"], "unknown field 'deleted_at'"),
    (["notes"], "a long_text field cannot be sorted"),
    (["name", "-name"], "'name' is already in the sort"),
])
def test_default_sort_must_be_sortable(lw_runtime, sort, message):
    from loomwork.metadata.errors import MetadataError

    doc = {"objects": {"deal": {"default_sort": sort, "fields": {
        "name": {"type": "text"}, "notes": {"type": "long_text"}}}}}
    with pytest.raises(MetadataError) as exc:
        lw_runtime.validate(doc)
    assert any(message in m for msgs in exc.value.errors.values() for m in msgs), exc.value.errors


def test_a_formula_may_be_money_in_a_currency(types, lw_runtime):
    """Issue 11, defect 13: a decimal formula may say it is an amount in a currency (and a
    sum of amounts is one), so pages show the currency's symbol."""
    errs = errors_of(one_object({"price": {"type": "currency", "currency": "EUR"},
                                 "net": {"type": "formula", "result_type": "decimal", "currency": "EUR",
                                         "expression": "price * 2"},
                                 "label": {"type": "formula", "result_type": "text", "currency": "EUR",
                                           "expression": '"x"'},
                                 "odd": {"type": "formula", "result_type": "decimal", "currency": "euro",
                                         "expression": "price"}}), types)
    assert list(errs) == ["objects.deal.fields.label.currency", "objects.deal.fields.odd.currency"]
    assert errs["objects.deal.fields.label.currency"] == ["only a decimal result can be an amount of money"]
    doc = one_object({"price": {"type": "currency", "currency": "EUR"},
                      "net": {"type": "formula", "result_type": "decimal", "currency": "EUR", "expression": "price"},
                      "parent": {"type": "lookup", "target": "deal"},
                      "total": {"type": "rollup", "object": "deal", "via": "parent", "function": "sum",
                                "field": "price"},
                      "many": {"type": "rollup", "object": "deal", "via": "parent", "function": "count"},
                      "plain": {"type": "formula", "result_type": "decimal", "expression": "price"}})
    app = lw_runtime.compile(doc, 1)
    money = {n: f.ftype.currency(f.defn) for n, f in app.object("deal").fields.items()}
    assert money == {"price": "EUR", "net": "EUR", "parent": None, "total": "EUR", "many": None, "plain": None}
