"""Built-in field types.

A field type knows everything the runtime needs of a field: its settings (as JSON
Schema properties checked at publish), its column type, its marshmallow field for
input and output, the filter operators it supports, and which setting changes would
rewrite stored data. Plugins add types through the ``loomwork_field_types`` hook;
the built-ins here are registered the same way (see
:mod:`loomwork.plugins.core_fields`).
"""
from __future__ import annotations

import datetime as dt
import functools
import math
import operator
import re
from collections.abc import Callable, Mapping
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, ClassVar

import marshmallow as ma
import sqlalchemy as sa
from marshmallow import fields as mf
from marshmallow import validate as mv

from loomwork.metadata.model import FieldDef

from .expr.functions import MAX_REGEX_INPUT, compile_regex
from .sqltypes import ExactDecimal, JSONDoc, UTCDateTime

COMPARE_OPS = frozenset({"eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "is_null", "between"})
TEXT_OPS = frozenset({"eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "is_null",
                      "contains", "icontains", "starts_with", "between"})
EQ_OPS = frozenset({"eq", "ne", "in", "nin", "is_null"})

_LABEL = {"$ref": "https://loomwork.dev/schemas/common.json#/$defs/label"}


_isoformat = operator.methodcaller("isoformat")


class FieldType:
    """Base class of field types; subclasses override what differs."""

    name: ClassVar[str]
    properties: ClassVar[Mapping[str, Any]] = {}
    required_properties: ClassVar[tuple[str, ...]] = ()
    indexable: ClassVar[bool] = True
    filter_ops: ClassVar[frozenset[str]] = COMPARE_OPS
    #: OpenAPI / JSON type written for this field (informative).
    json_type: ClassVar[str] = "string"
    #: The expression-language type of the field's values (None: expressions cannot use it).
    expr_type: ClassVar[str | None] = "text"
    #: Whether the server computes the value (formula, roll-up): never written by callers.
    computed: ClassVar[bool] = False
    #: Whether the server sets the value (computed, or numbered like an autonumber): a
    #: caller never writes it, it is never "missing", and no state rule holds it back.
    system_set: ClassVar[bool] = False
    #: The form widget a field of this type gets unless a layout overrides it.
    widget: ClassVar[str] = "text"
    #: How values of this type are shown, typed in, filtered, bulk-edited and described
    #: in OpenAPI: the name of the built-in type whose values they are like (``text``,
    #: ``integer``, ``currency``, ``choice``, ``lookup``...). A built-in's kind is its own
    #: name and a subclass inherits it, so a plugin's ``ColorType(TextType)`` behaves as
    #: text everywhere. Pages and the API ask for the kind (:meth:`value_kind`), never
    #: compare a type's name.
    kind: ClassVar[str] = "text"
    #: Whether values are picked from the field's ``options`` (choice, multi-choice).
    has_options: ClassVar[bool] = False
    #: Whether a value is a list of items (multi-choice): a form sends each one.
    multiple: ClassVar[bool] = False
    #: Whether lists sort by the field: long text, JSON and multi-choice have no order
    #: (and cannot be indexed either).
    sortable: ClassVar[bool] = True
    #: Whether the field may be one of an object's ``search_fields``: its values are
    #: text the list's search matches, whatever the case.
    searchable: ClassVar[bool] = False
    #: Whether the field holds ids of records of the object its ``target`` names (a
    #: lookup): see :meth:`reference_target`.
    references: ClassVar[bool] = False

    def value_kind(self, field: FieldDef) -> str:
        """The :attr:`kind` of the field's values (a computed field's is what it computes)."""
        return self.kind

    def places(self, field: FieldDef) -> int | None:
        """The decimal places the field's values have, or None when they are no decimals."""
        return None

    def starts_at_zero(self, field: FieldDef) -> bool:
        """Whether a new record's value is 0 rather than empty (a count or a sum)."""
        return False

    def expression_type(self, field: FieldDef) -> str | None:
        return self.expr_type

    def currency(self, field: FieldDef) -> str | None:
        """The ISO 4217 code of the money a field holds (its ``currency``), or None: a
        computed field holds money when it says so or when it sums money."""
        return None

    def widget_result_type(self, field: Mapping[str, Any]) -> str | None:
        """What a field document declares it computes, which picks its widgets (a
        formula's ``result_type``); None: widgets fit this type by its name."""
        return None

    def has_column(self, field: FieldDef) -> bool:
        """Whether the field is stored in a column (a virtual formula is computed in SQL)."""
        return True

    def field_ops(self, field: FieldDef) -> frozenset[str]:
        """The filter operators this field supports."""
        return self.filter_ops

    def reference_target(self, field: FieldDef) -> str | None:
        """The object whose record ids this field holds (a lookup's target), or None."""
        return field.prop("target") if self.references else None

    # -- metadata ---------------------------------------------------------
    def bound(self, value: Any) -> Any:
        """A ``min``/``max`` setting as a comparable value; :raises ValueError: if it is not one."""
        return value

    def check(self, field: Mapping[str, Any], path: str, app_doc: Mapping[str, Any]) -> list[tuple[str, str]]:
        errors = []
        bounds = {}
        for key in ("min", "max"):
            if field.get(key) is not None:
                try:
                    bounds[key] = self.bound(field[key])
                except (ValueError, TypeError):
                    errors.append((f"{path}.{key}", f"must be a valid {self.name}"))
        if errors:
            return errors
        if len(bounds) == 2 and bounds["min"] > bounds["max"]:
            return [(f"{path}.min", "must be <= max")]
        if field.get("default") is not None:
            fdef = FieldDef.from_doc(path.rsplit(".", 1)[-1], field)
            try:
                self.ma_field(fdef).deserialize(field["default"])
            except ma.ValidationError as exc:
                errors.append((f"{path}.default", f"invalid default: {_first_message(exc.messages)}"))
        return errors

    def heavy_change(self, old: FieldDef, new: FieldDef) -> str | None:
        """Why changing ``old`` into ``new`` would rewrite stored values, or ``None``."""
        if old.type != new.type:
            return f"changing the type from {old.type} to {new.type} converts every stored value"
        return None

    # -- storage ----------------------------------------------------------
    def column_type(self, field: FieldDef) -> sa.types.TypeEngine:
        raise NotImplementedError

    # -- API --------------------------------------------------------------
    def ma_field(self, field: FieldDef) -> mf.Field:
        raise NotImplementedError

    def dump(self, field: FieldDef, value: Any) -> Any:
        """Turn a stored value into its JSON form (the API's wire format)."""
        return value

    def converter(self, field: FieldDef) -> Callable[[Any], Any] | None:
        """A one-argument function turning a stored non-empty value into its JSON form,
        or ``None`` when the stored value already is (list pages call it per cell)."""
        if type(self).dump is FieldType.dump:
            return None
        return functools.partial(self.dump, field)

    def check_value(self, field: FieldDef, value: Any, old: Any) -> str | None:
        """Checks that need the previous value; return an error message or ``None``."""
        return None


def _first_message(messages: Any) -> str:
    """The first leaf message of marshmallow's (possibly nested) error messages."""
    while isinstance(messages, (dict, list)) and messages:
        messages = next(iter(messages.values())) if isinstance(messages, dict) else messages[0]
    return str(messages).rstrip(".")


def _no_nul(value: Any) -> None:
    # PostgreSQL cannot store NUL in text or jsonb; refuse it on every dialect alike.
    if isinstance(value, str) and "\x00" in value:
        raise ma.ValidationError("must not contain NUL (\\x00) characters")


def _len_validators(field: FieldDef, default_max: int) -> list:
    return [mv.Length(min=field.prop("min_length"), max=field.prop("max_length", default_max)), _no_nul]


class PatternValidator(mv.Validator):
    """A text field's ``pattern``, matched from the start of the value as marshmallow's
    ``Regexp`` does, but with RE2 (linear time: no pattern can make a save backtrack
    for seconds in the web process) and on at most ``MAX_REGEX_INPUT`` characters, the
    limit ``regex_match`` has in expressions."""

    error = "does not match the required pattern"

    def __init__(self, pattern: str, max_length: int) -> None:
        self.pattern = pattern
        self.max_length = max_length

    def __call__(self, value: Any) -> Any:
        if not isinstance(value, str) or len(value) > self.max_length:
            return value  # the length check reports a value that is too long
        if len(value) > MAX_REGEX_INPUT:
            raise ma.ValidationError(f"is too long to check against the field's pattern "
                                     f"(at most {MAX_REGEX_INPUT} characters)")
        try:
            regex = compile_regex(self.pattern)
        except ValueError:
            # Published before patterns were checked with RE2 (lookaround, backreferences):
            # refused until an administrator changes the pattern.
            raise ma.ValidationError("cannot be checked: the field's pattern is not supported; an administrator "
                                     "must change it") from None
        if regex.match(value) is None:
            raise ma.ValidationError(self.error)
        return value


class TextType(FieldType):
    name = kind = "text"
    searchable = True
    properties = {
        "max_length": {"type": "integer", "minimum": 1, "maximum": 10000},
        "min_length": {"type": "integer", "minimum": 0, "maximum": 10000},
        "pattern": {"type": "string", "maxLength": 500},
    }
    filter_ops = TEXT_OPS
    default_max = 255

    def column_type(self, field):
        return sa.Text()

    def ma_field(self, field):
        validators = _len_validators(field, self.default_max)
        if field.prop("pattern"):
            validators.append(PatternValidator(field.prop("pattern"), field.prop("max_length", self.default_max)))
        return mf.String(validate=validators, allow_none=True)

    def check(self, field, path, app_doc):
        errors = []
        if field.get("pattern"):
            try:
                compile_regex(field["pattern"])  # RE2, as saves match it
            except ValueError as exc:
                return [(f"{path}.pattern", str(exc))]
        if field.get("min_length", 0) > field.get("max_length", self.default_max):
            errors.append((f"{path}.min_length", "must be <= max_length"))
        return errors + super().check(field, path, app_doc)


class LongTextType(TextType):
    name = kind = "long_text"
    widget = "textarea"
    sortable = False
    properties = {"max_length": {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                  "min_length": {"type": "integer", "minimum": 0}}
    indexable = False
    filter_ops = frozenset({"contains", "icontains", "starts_with", "is_null", "eq", "ne"})
    default_max = 100_000


class EmailType(TextType):
    name = kind = "email"
    widget = "email"
    properties = {"max_length": {"type": "integer", "minimum": 3, "maximum": 320}}

    def ma_field(self, field):
        return mf.Email(validate=_len_validators(field, 320), allow_none=True)


class PhoneType(TextType):
    name = kind = "phone"
    widget = "phone"
    properties = {"max_length": {"type": "integer", "minimum": 3, "maximum": 40}}
    _re = r"^\+?[0-9 ()./-]{3,40}$"

    def ma_field(self, field):
        return mf.String(validate=[*_len_validators(field, 40),
                                   mv.Regexp(self._re, error="is not a phone number")], allow_none=True)


class UrlType(TextType):
    name = kind = "url"
    widget = "url"
    properties = {"max_length": {"type": "integer", "minimum": 8, "maximum": 2000}}

    def ma_field(self, field):
        return mf.Url(schemes={"http", "https"}, validate=_len_validators(field, 2000), allow_none=True)


class IntegerType(FieldType):
    name = kind = "integer"
    widget = "number"
    expr_type = "number"
    properties = {"min": {"type": "integer"}, "max": {"type": "integer"}}
    json_type = "integer"
    LIMIT = 2**63 - 1

    def column_type(self, field):
        return sa.BigInteger()

    def ma_field(self, field):
        lo = field.prop("min", -self.LIMIT)
        hi = field.prop("max", self.LIMIT)
        return mf.Integer(strict=True, validate=mv.Range(min=lo, max=hi), allow_none=True)


class DecimalType(FieldType):
    name = kind = "decimal"
    widget = "decimal"
    expr_type = "decimal"
    properties = {
        "precision": {"type": "integer", "minimum": 1, "maximum": 18},
        "scale": {"type": "integer", "minimum": 0, "maximum": 12},
        "min": {"type": "number"},
        "max": {"type": "number"},
    }
    default_precision, default_scale = 18, 2

    def check(self, field, path, app_doc):
        p = field.get("precision", self.default_precision)
        s = field.get("scale", self.default_scale)
        if s > p:
            return [(f"{path}.scale", f"must be <= precision ({p})")]
        return super().check(field, path, app_doc)

    def bound(self, value):
        return Decimal(str(value))

    def _ps(self, field: FieldDef) -> tuple[int, int]:
        return field.prop("precision", self.default_precision), field.prop("scale", self.default_scale)

    def places(self, field):
        return self._ps(field)[1]

    def heavy_change(self, old, new):
        reason = super().heavy_change(old, new)
        if reason is None and self._ps(old) != self._ps(new):
            return "changing precision or scale rewrites every stored value"
        return reason

    def column_type(self, field):
        return ExactDecimal(*self._ps(field))

    def ma_field(self, field):
        p, s = self._ps(field)
        bound = Decimal(10) ** (p - s)
        lo = Decimal(str(field.prop("min"))) if field.prop("min") is not None else -bound
        hi = Decimal(str(field.prop("max"))) if field.prop("max") is not None else bound
        return ExactDecimalField(p, s, validate=mv.Range(min=lo, max=hi, max_inclusive=field.prop("max") is not None,
                                                         min_inclusive=field.prop("min") is not None),
                                 allow_none=True)

    def dump(self, field, value):
        return None if value is None else str(value)

    def converter(self, field):
        return str


class ExactDecimalField(mf.Field):
    """A decimal that accepts a JSON number or string and rejects lost digits.

    Output is a string, so no JSON reader turns cents into binary floats.
    """

    default_error_messages = {
        "invalid": "Not a valid number.",
        "scale": "Too many decimal places (at most {scale}).",
        "precision": "Too many digits (at most {precision}).",
    }

    def __init__(self, precision: int, scale: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.precision, self.scale = precision, scale

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else str(value)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, (int, str, Decimal, float)):
            raise self.make_error("invalid")
        try:
            d = Decimal(str(value).strip()) if not isinstance(value, Decimal) else value
        except InvalidOperation as exc:
            raise self.make_error("invalid") from exc
        if not d.is_finite():
            raise self.make_error("invalid")
        # Too many integer digits first: quantizing 1e30 to cents would overflow the context.
        if d.adjusted() + 1 > self.precision - self.scale and d != 0:
            raise self.make_error("precision", precision=self.precision)
        try:
            q = d.quantize(Decimal(1).scaleb(-self.scale))
        except InvalidOperation as exc:
            raise self.make_error("precision", precision=self.precision) from exc
        if d.as_tuple().exponent < -self.scale and d != q:
            raise self.make_error("scale", scale=self.scale)
        if len(q.as_tuple().digits) > self.precision:
            raise self.make_error("precision", precision=self.precision)
        return abs(q) if q == 0 else q  # no "-0.00"


class CurrencyType(DecimalType):
    name = kind = "currency"
    widget = "currency"
    properties = {**DecimalType.properties,
                  "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}

    def currency(self, field):
        return field.prop("currency")


class PercentType(DecimalType):
    name = kind = "percent"
    widget = "percent"
    default_precision, default_scale = 7, 2


class BooleanType(FieldType):
    name = kind = "boolean"
    widget = "checkbox"
    expr_type = "boolean"
    filter_ops = EQ_OPS
    json_type = "boolean"

    def column_type(self, field):
        return sa.Boolean()

    def ma_field(self, field):
        return StrictBooleanField(allow_none=True)


class StrictBooleanField(mf.Boolean):
    """Only JSON ``true``/``false``: ``1 in {True}`` holds in Python, so the stock
    field would take 1 and 0 for booleans."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class DateType(FieldType):
    name = kind = "date"
    widget = "date"
    expr_type = "date"
    properties = {"min": {"type": "string", "format": "date"}, "max": {"type": "string", "format": "date"}}

    def bound(self, value):
        if not isinstance(value, str) or len(value) != 10:  # fromisoformat also takes 20260131
            raise ValueError(value)
        return dt.date.fromisoformat(value)

    def column_type(self, field):
        return sa.Date()

    def ma_field(self, field):
        lo = dt.date.fromisoformat(field.prop("min")) if field.prop("min") else None
        hi = dt.date.fromisoformat(field.prop("max")) if field.prop("max") else None
        return mf.Date(validate=mv.Range(min=lo, max=hi) if lo or hi else None, allow_none=True)

    def dump(self, field, value):
        return None if value is None else value.isoformat()

    def converter(self, field):
        return _isoformat


class AwareDateTimeField(mf.DateTime):
    """ISO 8601 with an offset in, UTC out (``2026-01-31T09:30:00+00:00``)."""

    default_error_messages = {"naive": "Needs a time zone offset, for example 2026-01-31T09:30:00+08:00."}

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        if result.tzinfo is None:
            raise self.make_error("naive")
        try:
            return result.astimezone(dt.UTC)
        except OverflowError:  # 0001-01-01T00:00+08:00 has no UTC datetime
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from None


class DateTimeType(FieldType):
    name = kind = "datetime"
    widget = "datetime"
    expr_type = "datetime"

    def column_type(self, field):
        return UTCDateTime()

    def ma_field(self, field):
        return AwareDateTimeField(format="iso", allow_none=True)

    def dump(self, field, value):
        return None if value is None else value.isoformat()

    def converter(self, field):
        return _isoformat


class NaiveTimeField(mf.Time):
    """A time of day: an offset cannot be honoured without a date, so it is refused
    rather than silently dropped by the column."""

    default_error_messages = {"offset": "A time of day takes no time zone offset."}

    def _deserialize(self, value, attr, data, **kwargs):
        result = super()._deserialize(value, attr, data, **kwargs)
        if result.tzinfo is not None:
            raise self.make_error("offset")
        return result


class TimeType(FieldType):
    name = kind = "time"
    widget = "time"
    expr_type = None

    def column_type(self, field):
        return sa.Time()

    def ma_field(self, field):
        return NaiveTimeField(allow_none=True)

    def dump(self, field, value):
        return None if value is None else value.isoformat()

    def converter(self, field):
        return _isoformat


_OPTION = {
    "type": "object",
    "required": ["value"],
    "additionalProperties": False,
    "properties": {
        "value": {"type": "string", "minLength": 1, "maxLength": 100},
        "label": _LABEL,
        "color": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$"},
        "active": {"type": "boolean"},
    },
}


def _check_options(field, path):
    values = [o["value"] for o in field.get("options", [])]
    dupes = sorted({v for v in values if values.count(v) > 1})
    return [(f"{path}.options", f"duplicate option value {d!r}") for d in dupes]


_DEPENDS_ON = {
    "type": "object",
    "required": ["field", "options"],
    "additionalProperties": False,
    "description": "Dependent choices: the controlling field's value decides which options are allowed.",
    "properties": {
        "field": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "options": {"type": "object", "maxProperties": 1000,
                    "additionalProperties": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}},
    },
}


def _check_depends_on(field: Mapping[str, Any], path: str, app_doc: Mapping[str, Any]) -> list[tuple[str, str]]:
    dep = field.get("depends_on")
    if not dep:
        return []
    parts = path.split(".")
    fields = app_doc.get("objects", {}).get(parts[1], {}).get("fields", {}) if len(parts) > 3 else {}
    ctl = fields.get(dep["field"])
    where = f"{path}.depends_on"
    if ctl is None or dep["field"] == parts[-1]:
        return [(f"{where}.field", f"unknown controlling field {dep['field']!r}")]
    if ctl.get("type") == "choice":
        allowed_keys = {o["value"] for o in ctl.get("options", [])}
    elif ctl.get("type") == "boolean":
        allowed_keys = {"true", "false"}
    else:
        return [(f"{where}.field", "the controlling field must be a choice or boolean field")]
    own = {o["value"] for o in field.get("options", [])}
    errors = []
    for key, values in dep["options"].items():
        if key not in allowed_keys:
            errors.append((f"{where}.options.{key}", f"{key!r} is not a value of {dep['field']}"))
        for v in values:
            if v not in own:
                errors.append((f"{where}.options.{key}", f"{v!r} is not an option of this field"))
    return errors


def allowed_by_controller(field: FieldDef, controlling_value: Any) -> tuple[str, ...] | None:
    """The options a dependent choice allows for ``controlling_value`` (None: no dependency)."""
    dep = field.prop("depends_on")
    if not dep:
        return None
    if isinstance(controlling_value, bool):
        controlling_value = "true" if controlling_value else "false"
    return tuple(dep["options"].get(controlling_value, ())) if controlling_value is not None else ()


class ChoiceType(FieldType):
    name = kind = "choice"
    widget = "select"
    expr_type = "choice"
    properties = {"options": {"type": "array", "minItems": 1, "maxItems": 1000, "items": _OPTION},
                  "depends_on": _DEPENDS_ON}
    required_properties = ("options",)
    filter_ops = EQ_OPS
    has_options = True

    def check(self, field, path, app_doc):
        return (_check_options(field, path) or _check_depends_on(field, path, app_doc)
                or super().check(field, path, app_doc))

    def ma_field(self, field):
        values = [o["value"] for o in field.prop("options", ())]
        return mf.String(validate=mv.OneOf(values, error="must be one of: {choices}"), allow_none=True)

    def column_type(self, field):
        return sa.String(100)

    def check_value(self, field, value, old):
        inactive = {o["value"] for o in field.prop("options", ()) if o.get("active") is False}
        if value in inactive and value != old:
            return f"option {value!r} is no longer offered"
        return None


def _no_repeats(values: list) -> None:
    if len(set(values)) != len(values):
        raise ma.ValidationError("must not repeat an option")


class MultiChoiceType(ChoiceType):
    name = kind = "multi_choice"
    widget = "checkboxes"
    expr_type = "list"
    indexable = sortable = False
    multiple = True
    filter_ops = frozenset({"contains", "is_null"})

    def ma_field(self, field):
        values = [o["value"] for o in field.prop("options", ())]
        return mf.List(mf.String(validate=mv.OneOf(values, error="must be one of: {choices}")),
                       validate=[mv.Length(max=len(values)), _no_repeats], allow_none=True)

    def column_type(self, field):
        return JSONDoc()

    def check_value(self, field, value, old):
        inactive = {o["value"] for o in field.prop("options", ()) if o.get("active") is False}
        added = set(value or ()) - set(old or ())
        bad = sorted(added & inactive)
        return f"option {bad[0]!r} is no longer offered" if bad else None


class LookupType(FieldType):
    name = kind = "lookup"
    widget = "lookup"
    references = True
    expr_type = "number"
    properties = {
        "target": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "on_delete": {"enum": ["restrict", "set_null", "cascade"]},
    }
    required_properties = ("target",)
    filter_ops = EQ_OPS | {"lt", "lte", "gt", "gte"}
    json_type = "integer"

    def check(self, field, path, app_doc):
        target = field.get("target")
        if target not in app_doc.get("objects", {}):
            return [(f"{path}.target", f"unknown object {target!r}")]
        if field.get("on_delete") == "set_null" and field.get("required"):
            return [(f"{path}.on_delete", "set_null is not possible on a required lookup")]
        return super().check(field, path, app_doc)

    def heavy_change(self, old, new):
        reason = super().heavy_change(old, new)
        if reason is None and old.prop("target") != new.prop("target"):
            return (f"pointing the lookup at {new.prop('target')} instead of {old.prop('target')} "
                    f"would make every stored id name a record of the wrong object")
        return reason

    def column_type(self, field):
        return sa.BigInteger()

    def ma_field(self, field):
        return mf.Integer(strict=True, validate=mv.Range(min=1), allow_none=True)


class AutonumberType(FieldType):
    """A number given by the server from a pattern such as ``Q-{YYYY}-{0000}``.

    ``{YYYY}``, ``{YY}``, ``{MM}`` and ``{DD}`` are the creation date (UTC); the run of
    zeros is the counter and its width. The counter restarts whenever the text before
    it changes (so ``Q-{YYYY}-{0000}`` restarts every year) and is gap-free: it is
    taken inside the write transaction.
    """

    widget = "readonly"
    name = kind = "autonumber"
    system_set = searchable = True
    properties = {"pattern": {"type": "string", "pattern": "\\{0+\\}", "maxLength": 60}}
    required_properties = ("pattern",)
    filter_ops = TEXT_OPS

    def check(self, field, path, app_doc):
        pattern = field.get("pattern", "")
        unknown = [t for t in re.findall(r"\{([^}]*)\}", pattern) if t not in ("YYYY", "YY", "MM", "DD")
                   and not re.fullmatch("0+", t)]
        if unknown:
            return [(f"{path}.pattern", f"unknown token {{{unknown[0]}}}")]
        if len(re.findall(r"\{0+\}", pattern)) != 1:
            return [(f"{path}.pattern", "needs exactly one counter such as {0000}")]
        if field.get("default") is not None:
            return [(f"{path}.default", "an autonumber takes no default")]
        return []

    def column_type(self, field):
        return sa.String(80)

    def ma_field(self, field):
        return mf.String(dump_only=True)

    @staticmethod
    def _filled(pattern: str, when: dt.datetime) -> tuple[str, re.Match[str]]:
        text = (pattern.replace("{YYYY}", f"{when.year:04d}").replace("{YY}", f"{when.year % 100:02d}")
                .replace("{MM}", f"{when.month:02d}").replace("{DD}", f"{when.day:02d}"))
        m = re.search(r"\{(0+)\}", text)
        assert m is not None, "checked at publish"
        return text, m

    @classmethod
    def prefix(cls, pattern: str, when: dt.datetime) -> str:
        """The text before the counter on ``when``: the counter restarts when it changes."""
        text, m = cls._filled(pattern, when)
        return text[: m.start()]

    @classmethod
    def render(cls, pattern: str, when: dt.datetime, n: int) -> str:
        """``pattern`` filled for ``when`` with counter value ``n``."""
        text, m = cls._filled(pattern, when)
        return f"{text[: m.start()]}{n:0{len(m.group(1))}d}{text[m.end():]}"


class JsonType(FieldType):
    name = kind = "json"
    widget = "json"
    expr_type = None
    properties = {"max_bytes": {"type": "integer", "minimum": 2, "maximum": 1_000_000}}
    indexable = sortable = False
    filter_ops = frozenset({"is_null"})
    json_type = "object"

    def column_type(self, field):
        return JSONDoc()

    def ma_field(self, field):
        return JsonValueField(max_bytes=field.prop("max_bytes", 65536), allow_none=True)


class JsonValueField(mf.Raw):
    default_error_messages = {"too_big": "JSON value is larger than {max_bytes} bytes.",
                              "too_deep": "JSON value is nested deeper than 20 levels.",
                              "nul": "JSON text must not contain NUL (\\u0000) characters.",
                              "invalid": "Not a JSON value."}

    def __init__(self, max_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_bytes = max_bytes

    def _deserialize(self, value, attr, data, **kwargs):
        import orjson

        def clean(v: Any, d: int = 0) -> Any:
            """Check depth and text, and turn API decimals into plain JSON numbers."""
            if d > 20:
                raise self.make_error("too_deep")
            if isinstance(v, str):
                if "\x00" in v:
                    raise self.make_error("nul")
                return v
            if isinstance(v, dict):
                if any(not isinstance(k, str) for k in v):
                    raise self.make_error("invalid")
                if any("\x00" in k for k in v):
                    raise self.make_error("nul")
                return {k: clean(x, d + 1) for k, x in v.items()}
            if isinstance(v, list):
                return [clean(x, d + 1) for x in v]
            if isinstance(v, Decimal) and v.is_finite():
                # Request bodies read fractions as Decimal to keep amounts exact; a JSON
                # document stores plain numbers.
                return int(v) if v == v.to_integral_value() and abs(v) < 2**63 else float(v)
            if v is None or isinstance(v, (bool, int)) or (isinstance(v, float) and math.isfinite(v)):
                return v
            raise self.make_error("invalid")

        value = clean(value)
        try:
            size = len(orjson.dumps(value))
        except orjson.JSONEncodeError:  # for example an integer beyond 64 bits
            raise self.make_error("invalid") from None
        if size > self.max_bytes:
            raise self.make_error("too_big", max_bytes=self.max_bytes)
        return value


_EXPRESSION = {"type": "string", "minLength": 1, "maxLength": 4000}
#: Result types a formula may declare, with their column, parser and filter operators.
RESULT_TYPES = ("text", "number", "decimal", "boolean", "date", "datetime")


def _result_parts(result_type: str, scale: int) -> tuple[sa.types.TypeEngine, mf.Field, frozenset[str]]:
    if result_type == "text":
        return sa.Text(), mf.String(allow_none=True), TEXT_OPS - {"between"}
    if result_type == "number":
        return sa.Float(), mf.Float(allow_none=True, allow_nan=False), COMPARE_OPS
    if result_type == "decimal":
        return ExactDecimal(18, scale), ExactDecimalField(18, scale, allow_none=True), COMPARE_OPS
    if result_type == "boolean":
        return sa.Boolean(), StrictBooleanField(allow_none=True), EQ_OPS
    if result_type == "date":
        return sa.Date(), mf.Date(allow_none=True), COMPARE_OPS
    return UTCDateTime(), AwareDateTimeField(format="iso", allow_none=True), COMPARE_OPS


class ComputedType(FieldType):
    """Shared by formula and roll-up fields: typed by their result, written by the server."""

    widget = "readonly"
    computed = True
    system_set = True
    indexable = True

    def result_type(self, field: FieldDef) -> str:
        raise NotImplementedError

    def scale(self, field: FieldDef) -> int:
        return field.prop("scale", 2)

    def currency(self, field):
        return field.prop("currency") if self.result_type(field) == "decimal" else None

    def expression_type(self, field):
        return self.result_type(field)

    def value_kind(self, field):
        return self.result_type(field)

    def places(self, field):
        return self.scale(field) if self.result_type(field) == "decimal" else None

    def column_type(self, field):
        return _result_parts(self.result_type(field), self.scale(field))[0]

    def ma_field(self, field):
        return _result_parts(self.result_type(field), self.scale(field))[1]

    def field_ops(self, field):
        return _result_parts(self.result_type(field), self.scale(field))[2]

    def dump(self, field, value):
        if value is None:
            return None
        if isinstance(value, Decimal):
            return str(value.quantize(Decimal(1).scaleb(-self.scale(field)), rounding=ROUND_HALF_UP))
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()
        if isinstance(value, float) and self.result_type(field) == "decimal":
            return self.dump(field, Decimal(repr(value)))
        return value

    def converter(self, field):
        return functools.partial(self.dump, field)

    def heavy_change(self, old, new):
        if old.type != new.type:
            return super().heavy_change(old, new)
        if self.has_column(old) and self.has_column(new) and (
                self.result_type(old) != self.result_type(new) or self.scale(old) != self.scale(new)):
            return ("changing the result type of a stored value rewrites its column; "
                    "add a new field and drop this one instead")
        return None


class FormulaType(ComputedType):
    """A value computed from an expression: ``virtual`` (computed in SQL when read, so
    always current) or ``stored: true`` (materialised on write and recomputed in
    batches when the formula changes; filters and sorts use an index)."""

    name = kind = "formula"
    properties = {
        "expression": _EXPRESSION,
        "result_type": {"enum": list(RESULT_TYPES)},
        "stored": {"type": "boolean"},
        "scale": {"type": "integer", "minimum": 0, "maximum": 12},
        # A decimal result that is an amount of money, shown with the currency's symbol.
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
    }
    required_properties = ("expression", "result_type")

    def result_type(self, field):
        return field.prop("result_type")

    def widget_result_type(self, field):
        return field.get("result_type")

    def has_column(self, field):
        return bool(field.prop("stored", False))

    def check(self, field, path, app_doc):
        errors = []
        if field.get("unique"):
            errors.append((f"{path}.unique", "a formula cannot be unique"))
        if field.get("indexed") and not field.get("stored"):
            errors.append((f"{path}.indexed", "only a stored formula can be indexed"))
        if field.get("currency") and field.get("result_type") != "decimal":
            errors.append((f"{path}.currency", "only a decimal result can be an amount of money"))
        for key in ("default", "default_expr", "required"):
            if field.get(key):
                errors.append((f"{path}.{key}", "a formula is computed; it takes no default and is never required"))
        return errors


ROLLUP_FUNCTIONS = ("count", "sum", "min", "max", "avg")


class RollupType(ComputedType):
    """An aggregate (count, sum, min, max, avg) over the records of another object that
    look up to this one, with an optional filter; stored, and kept current by the
    record service on every child write."""

    name = kind = "rollup"
    properties = {
        "object": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "via": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "function": {"enum": list(ROLLUP_FUNCTIONS)},
        "field": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,62}$"},
        "filter": _EXPRESSION,
        # Filled in when compiling from the summarised field; never written by admins.
        "source_type": {"type": "string"},
        "scale": {"type": "integer", "minimum": 0, "maximum": 12},
    }
    required_properties = ("object", "via", "function")
    _AGGREGABLE = {"sum": ("number", "decimal"), "avg": ("number", "decimal"),
                   "min": ("number", "decimal", "date", "datetime"), "max": ("number", "decimal", "date", "datetime")}

    def starts_at_zero(self, field):
        return field.prop("function") in ("count", "sum")

    def result_type(self, field):
        if field.prop("function") == "count":
            return "number"
        source = field.prop("source_type", "number")
        return "number" if source == "integer" else source

    def _integral(self, field: FieldDef) -> bool:
        fn = field.prop("function")
        return fn == "count" or (fn in ("sum", "min", "max") and field.prop("source_type") == "integer")

    def column_type(self, field):
        return sa.BigInteger() if self._integral(field) else super().column_type(field)

    def ma_field(self, field):
        return mf.Integer(allow_none=True) if self._integral(field) else super().ma_field(field)

    def check(self, field, path, app_doc):
        parts = path.split(".")
        here = parts[1] if len(parts) > 3 else None
        objects = app_doc.get("objects", {})
        child = objects.get(field.get("object"))
        where = path
        if child is None:
            return [(f"{where}.object", f"unknown object {field.get('object')!r}")]
        via = child.get("fields", {}).get(field.get("via"))
        if via is None or via.get("type") != "lookup" or via.get("target") != here:
            return [(f"{where}.via", f"must be a lookup field of {field['object']} pointing at {here}")]
        fn = field["function"]
        errors = []
        for key in ("default", "default_expr", "required", "unique", "source_type"):
            if field.get(key):
                errors.append((f"{where}.{key}", "not allowed on a roll-up"))
        if fn == "count":
            if field.get("field"):
                errors.append((f"{where}.field", "count takes no field"))
            return errors
        source = child.get("fields", {}).get(field.get("field") or "")
        if source is None:
            return [*errors, (f"{where}.field", f"{fn} needs a field of {field['object']}")]
        kind = {"integer": "number", "decimal": "decimal", "currency": "decimal", "percent": "decimal",
                "date": "date", "datetime": "datetime"}.get(source.get("type"))
        if source.get("type") == "rollup":
            return [*errors, (f"{where}.field", "a roll-up cannot summarise another roll-up")]
        if source.get("type") == "formula" and not source.get("stored"):
            return [*errors, (f"{where}.field", "a roll-up can summarise a stored formula, not a virtual one")]
        if source.get("type") in ("formula", "rollup"):
            kind = source.get("result_type") if source.get("type") == "formula" else "number"
        if kind not in self._AGGREGABLE[fn]:
            errors.append((f"{where}.field", f"{fn} cannot summarise a {source.get('type')} field"))
        return errors


BUILTIN_TYPES: tuple[type[FieldType], ...] = (
    TextType, LongTextType, IntegerType, DecimalType, CurrencyType, PercentType, BooleanType,
    DateType, DateTimeType, TimeType, EmailType, PhoneType, UrlType, ChoiceType, MultiChoiceType,
    LookupType, AutonumberType, JsonType, FormulaType, RollupType,
)
