"""Field values between the record service's JSON form and the browser.

Three directions, by the field type's kind (``FieldType.kind``: the built-in type whose
values a field's are like, so a plugin's type built on text reads as text): ``display``
formats a value for reading
(per locale, links for email/phone/URL, localised choice labels); ``input_value``
gives the text a form control starts with; ``parse_form`` turns a submitted form
back into the JSON the record service takes. Parsing only translates the browser's
encoding (empty boxes, checkbox pairs, ``datetime-local`` without an offset); every
check stays in the record service, so a form can never accept what the API refuses.
"""
from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from markupsafe import Markup, escape
from werkzeug.datastructures import MultiDict

from loomwork.metadata.errors import BadQuery
from loomwork.metadata.model import label_text
from loomwork.runtime.compiled import CompiledApp, CompiledField

from ..inputs import parse_json
from . import i18n
from .common import _, digits, zone

NUMERIC = frozenset({"integer", "decimal", "currency", "percent"})
LINKS = {"email": "mailto:", "phone": "tel:", "url": ""}


def value_kind(f: CompiledField) -> str:
    """The kind of ``f``'s values: a formula or roll-up shows as its result type."""
    return f.ftype.value_kind(f.defn)


def scale(f: CompiledField) -> int | None:
    """The decimal places ``f``'s values show, or None for values that are no decimals."""
    return f.ftype.places(f.defn)


def choice_labels(f: CompiledField, locale: str) -> dict[str, str]:
    return {o["value"]: label_text(o.get("label"), locale, o["value"]) for o in f.defn.prop("options", ())}


# A layout may show a value of one type as another it can stand for: a formula's
# decimal result as money, a text as a link.
_SHOWN_AS = {"decimal": {"currency", "percent"}, "number": {"decimal", "currency", "percent"},
             "integer": {"currency", "percent"}, "text": {"email", "phone", "url"}}


def shown_as(f: CompiledField, widget: str | None = None) -> str:
    """How ``f``'s values read: their type, or the layout's ``widget`` when it suits
    that type (see ``_SHOWN_AS``); a decimal amount of money (a formula with a
    ``currency``, a sum of amounts) reads as money."""
    kind = value_kind(f)
    if widget in _SHOWN_AS.get(kind, ()):
        return widget
    if kind == "decimal" and f.ftype.currency(f.defn):
        return "currency"
    return kind


def display(f: CompiledField, value: Any, locale: str, *, title: str | None = None,
            link: str | None = None, widget: str | None = None) -> Markup:
    """``value`` (the API's JSON form) formatted for reading; empty values are ''.

    ``widget`` is the layout's widget for the field (see :func:`shown_as`).
    """
    if value is None or value == [] or value == "":
        return Markup("")
    kind = shown_as(f, widget)
    if kind == "lookup":
        text = escape(title if title is not None else f"#{value}")
        return Markup(f'<a href="{escape(link)}">{text}</a>') if link else text
    if kind in LINKS:
        href = LINKS[kind] + str(value)
        if kind == "url" and not href.lower().startswith(("http://", "https://")):
            return escape(value)  # never a javascript: or data: link
        return Markup(f'<a href="{escape(href)}" rel="noopener">{escape(value)}</a>')
    if kind == "choice":
        return _chip(f, value, choice_labels(f, locale).get(value, value))
    if kind == "multi_choice":
        labels = choice_labels(f, locale)
        return Markup(" ").join(_chip(f, v, labels.get(v, v)) for v in value)
    if kind == "boolean":
        return escape(_("Yes") if value else _("No"))
    if kind == "json":
        return Markup(f'<pre class="lw-json">{escape(json.dumps(value, indent=2, ensure_ascii=False)[:4000])}</pre>')
    if kind == "long_text":
        return Markup(f'<span class="lw-multiline">{escape(value)}</span>')
    return escape(format_plain(kind, value, locale, scale(f), f.ftype.currency(f.defn)))


def format_plain(kind: str, value: Any, locale: str, places: int | None = None, currency: str | None = None) -> str:
    """Numbers, dates and times per locale; other values as text."""
    try:
        if kind == "integer":
            return i18n.format_integer(int(value), locale)
        if kind in ("decimal", "number"):
            return i18n.format_decimal(Decimal(str(value)), locale, scale=places)
        if kind == "currency":
            return i18n.format_currency(Decimal(str(value)), currency or "USD", locale, scale=places)
        if kind == "percent":
            return i18n.format_percent(Decimal(str(value)), locale)
        if kind == "date":
            return i18n.format_date(dt.date.fromisoformat(value), locale)
        if kind == "datetime":
            return i18n.format_datetime(dt.datetime.fromisoformat(value), locale, zone())
        if kind == "time":
            return i18n.format_time(dt.time.fromisoformat(value), locale)
    except (ValueError, TypeError, InvalidOperation):
        pass  # a value stored before its field's type changed: show it as it is
    return str(value)


def _chip(f: CompiledField, value: str, label: str) -> Markup:
    colour = next((o.get("color") for o in f.defn.prop("options", ()) if o["value"] == value), None)
    cls = f" chip-{colour[1:].lower()}" if isinstance(colour, str) and _COLOUR.match(colour) else ""
    return Markup(f'<span class="lw-chip{cls}">{escape(label)}</span>')


def choice_css(app: CompiledApp) -> str:
    """A class per colour the tenant's choice options use (chips name their colour)."""
    colours = {o["color"][1:].lower() for obj in app.objects.values() for f in obj.fields.values()
               if f.ftype.has_options for o in f.defn.prop("options", ())
               if isinstance(o.get("color"), str) and _COLOUR.match(o["color"])}
    return "".join(f".chip-{c}{{--chip:#{c}}}\n" for c in sorted(colours))


_COLOUR = re.compile(r"^#[0-9a-fA-F]{3,8}$")


def input_value(f: CompiledField, value: Any) -> Any:
    """What a form control holds for ``value``: text, a bool (checkbox) or a list (multi)."""
    kind = f.ftype.kind
    if f.ftype.multiple:
        return list(value or ())
    if kind == "boolean":
        return bool(value)
    if value is None:
        return ""
    if kind == "datetime":
        # Seconds too: an edit form saved unchanged must not round the stored time.
        return i18n.local_datetime(dt.datetime.fromisoformat(value), zone()).strftime("%Y-%m-%dT%H:%M:%S")
    if kind == "json":
        return json.dumps(value, indent=2, ensure_ascii=False)
    return str(value)


def parse_form(fields: Mapping[str, CompiledField], names: list[str], form: MultiDict
               ) -> tuple[dict[str, Any], dict[str, str], dict[str, list[str]]]:
    """The record data in a submitted form, for the fields ``names`` the form showed.

    Returns ``(data, raw, errors)``: values for the record service, what the user typed
    (to show it again when the save fails), and errors the browser encoding itself
    causes (a JSON box that is not JSON). Fields absent from the form are left out, so
    a control the browser did not send never clears a value.
    """
    data: dict[str, Any] = {}
    raw: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for name in names:
        f = fields[name]
        kind, multiple = f.ftype.kind, f.ftype.multiple
        if name not in form:
            if multiple and f"{name}__present" in form:
                data[name], raw[name] = [], []
            continue
        values = form.getlist(name)
        if kind == "boolean":
            data[name] = raw[name] = "true" in values
            continue
        if multiple:
            data[name] = raw[name] = [v for v in values if v]
            continue
        text = values[-1].strip() if kind not in ("long_text", "json") else values[-1]
        raw[name] = text
        if text.strip() == "":
            data[name] = None
        elif kind in ("integer", "lookup"):
            data[name] = int(text) if digits(text.removeprefix("-")) and len(text) < 20 else text
        elif kind == "datetime":
            data[name] = text if _has_offset(text) else _in_zone(text)
        elif kind == "json":
            try:  # read as the API reads a body: the same depth, number and text limits
                data[name] = parse_json(text, name)
            except BadQuery as exc:
                errors[name] = [_("Not valid JSON: %(reason)s", reason=exc.message)]
        else:
            data[name] = text
    return data, raw, errors


def _has_offset(text: str) -> bool:
    tail = text[10:]
    return tail.endswith("Z") or "+" in tail or "-" in tail


def _in_zone(text: str) -> str:
    """A datetime-local value (no offset) as typed in the page's time zone, with its offset."""
    try:
        naive = dt.datetime.fromisoformat(text)
    except ValueError:
        return text  # not a time at all: the record service says so at the field
    return i18n.aware_datetime(naive, zone()).isoformat()
