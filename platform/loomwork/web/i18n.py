"""English and Simplified Chinese for the end-user UI, with Babel.

UI strings are gettext msgids in templates (``{{ _("Save") }}``), Python (``_()`` in
:mod:`.common`) and the JavaScript modules (``_("…")`` in ``static/*.js``). Their
translations live in ``translations/<locale>/LC_MESSAGES/messages.po``; the catalog is
compiled in memory the first time a locale is used, so there is no build step and no
binary file in the repository (``make messages`` extracts and merges new msgids).
Numbers, money, dates and times are formatted by Babel's CLDR data for the locale.
Metadata labels are not here: they carry their own translations (``label_text``).
"""
from __future__ import annotations

import datetime as dt
import functools
import io
import threading
import zoneinfo
from decimal import Decimal
from gettext import NullTranslations
from pathlib import Path
from typing import Any

from babel import Locale, dates, numbers
from babel.messages.extract import extract
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations
from flask import g
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

from loomwork.runtime.timezones import is_time_zone

#: Our locale tags and their names, as a language menu shows them.
SUPPORTED = {"en": "English", "zh-CN": "简体中文"}
#: Our tag -> the catalog folder and the CLDR locale for formatting.
_CATALOG = {"zh-CN": "zh_CN"}
_CLDR = {"en": Locale.parse("en_US"), "zh-CN": Locale.parse("zh_Hans_CN")}
ROOT = Path(__file__).resolve().parent
TRANSLATIONS = ROOT / "translations"
STATIC = ROOT / "static"

_lock = threading.Lock()
_loaded: dict[str, NullTranslations] = {}


def translations(locale: str) -> NullTranslations:
    """The compiled catalog of ``locale`` (English is the msgids themselves)."""
    found = _loaded.get(locale)
    if found is not None:
        return found
    with _lock:
        if locale not in _loaded:
            _loaded[locale] = _compile(locale)
        return _loaded[locale]


def _compile(locale: str) -> NullTranslations:
    folder = _CATALOG.get(locale)
    po = TRANSLATIONS / folder / "LC_MESSAGES" / "messages.po" if folder else None
    if po is None or not po.is_file():
        return NullTranslations()
    with po.open("rb") as fh:
        catalog = read_po(fh, locale=folder)
    buf = io.BytesIO()
    write_mo(buf, catalog, use_fuzzy=False)
    buf.seek(0)
    return Translations(buf)


def gettext(locale: str, message: str, **values: Any) -> str:
    """``message`` translated; ``%(name)s`` placeholders filled from ``values``."""
    text = translations(locale).gettext(message)
    return text % values if values else text


def ngettext(locale: str, singular: str, plural: str, n: int, **values: Any) -> str:
    text = translations(locale).ngettext(singular, plural, n)
    return text % {"num": n, **values}


def _page_locale() -> str:
    return g.get("lw_locale") or "en"


def page_zone() -> str:
    """The time zone the request's page shows times in (``set_locale`` sets it): the
    signed-in user's, else UTC."""
    return g.get("lw_zone") or "UTC"


def install(env: Any) -> None:
    """Give a Jinja environment ``_``/``gettext``/``ngettext`` in the request's language."""
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(
        lambda message, **values: gettext(_page_locale(), message, **values),
        lambda singular, plural, n, **values: ngettext(_page_locale(), singular, plural, n, **values),
        newstyle=True)
    # A global, not a context variable: imported macros (_widgets.html) see globals only.
    env.globals["page_time_zone"] = page_zone


def negotiate(header: str) -> str:
    """The supported locale an ``Accept-Language`` header prefers (English by default)."""
    accept = parse_accept_header(header or "", LanguageAccept)
    for tag, _quality in accept:
        primary = tag.lower().replace("_", "-").split("-")[0]
        if primary == "zh":
            return "zh-CN"
        if primary == "en":
            return "en"
    return "en"


def cldr(locale: str) -> Locale:
    return _CLDR.get(locale, _CLDR["en"])


# -- formatting --------------------------------------------------------------
def format_integer(value: int, locale: str) -> str:
    return numbers.format_decimal(value, locale=cldr(locale))


@functools.lru_cache(maxsize=32)
def _fixed(scale: int) -> str:
    return "#,##0." + "0" * scale if scale else "#,##0"


def format_decimal(value: Decimal | float, locale: str, scale: int | None = None) -> str:
    """Grouped digits; exactly ``scale`` decimals when given, else as many as the value has."""
    if scale is None:
        return numbers.format_decimal(value, locale=cldr(locale), decimal_quantization=False)
    return numbers.format_decimal(value, format=_fixed(scale), locale=cldr(locale))


def format_currency(value: Decimal, code: str, locale: str, scale: int | None = None) -> str:
    """Money with the locale's symbol and pattern, with ``scale`` decimals when given."""
    loc = cldr(locale)
    pattern = loc.currency_formats["standard"].pattern
    if scale is None or "0.00" not in pattern:
        return numbers.format_currency(value, code, locale=loc)
    fixed = pattern.replace("0.00", "0." + "0" * scale if scale else "0")
    return numbers.format_currency(value, code, format=fixed, locale=loc, currency_digits=False)


def format_percent(value: Decimal | float, locale: str) -> str:
    """A percentage stored as a number of percent (25 means 25 %)."""
    return numbers.format_percent(Decimal(str(value)) / 100, locale=cldr(locale), decimal_quantization=False)


def format_date(value: dt.date, locale: str) -> str:
    return dates.format_date(value, "medium", locale=cldr(locale))


def format_datetime(value: dt.datetime, locale: str, tz: str = "UTC") -> str:
    """Medium date and short time in the zone ``tz`` (an IANA name), and the zone's short
    name: ``Mar 5, 2026 10:30 PM +0800``, ``… 9:30 AM EST``, ``… 2:30 PM UTC`` (decision D66).
    A naive value is UTC, as every stored time is."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    loc = cldr(locale)
    zone = _zone(tz)
    when = value.astimezone(zone)
    label = "UTC" if zone is dt.UTC else dates.format_datetime(when, "z", tzinfo=zone, locale=loc)
    return f"{dates.format_date(when, 'medium', locale=loc)} {dates.format_time(when, 'short', locale=loc)} {label}"


def _zone(name: str) -> dt.tzinfo:
    """The zone ``name`` (UTC for UTC, or a name this installation does not know)."""
    if name in ("UTC", "Etc/UTC") or not is_time_zone(name):
        return dt.UTC
    return zoneinfo.ZoneInfo(name)


def local_datetime(value: dt.datetime, tz: str) -> dt.datetime:
    """``value`` as the wall-clock time in ``tz`` (what a datetime-local box shows)."""
    return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(_zone(tz))


def aware_datetime(value: dt.datetime, tz: str) -> dt.datetime:
    """A wall-clock time typed in ``tz`` as an instant (an hour skipped or repeated by a
    clock change takes the offset before the change, as ``zoneinfo`` does)."""
    return value if value.tzinfo else value.replace(tzinfo=_zone(tz))


def format_time(value: dt.time, locale: str) -> str:
    return dates.format_time(value, "short", locale=cldr(locale))


def format_relative(value: dt.datetime, now: dt.datetime, locale: str) -> str:
    """``3 hours ago`` / ``3小时前``."""
    return dates.format_timedelta(value - now, add_direction=True, locale=cldr(locale))


# -- strings for the JavaScript modules -------------------------------------
@functools.cache
def js_msgids() -> tuple[str, ...]:
    """Every ``_("…")`` msgid in the static JavaScript modules."""
    found: dict[str, None] = {}
    for path in sorted(STATIC.glob("*.js")):
        with path.open("rb") as fh:
            for _lineno, message, _comments, _context in extract("javascript", fh, keywords={"_": None}):
                if isinstance(message, str):
                    found[message] = None
    return tuple(found)


def js_messages(locale: str) -> dict[str, str]:
    """msgid -> translation for the JavaScript modules (empty for English)."""
    if locale not in _CATALOG:
        return {}
    return _js_messages(locale)


@functools.cache
def _js_messages(locale: str) -> dict[str, str]:
    t = translations(locale)
    return {m: t.gettext(m) for m in js_msgids()}
