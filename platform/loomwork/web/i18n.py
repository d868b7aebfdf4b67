"""TEMPORARY stand-in while the real i18n module is written (lead's scaffolding)."""
from __future__ import annotations

import datetime as dt

from babel import dates, numbers
from flask import g

SUPPORTED = {"en": "English", "zh-CN": "简体中文"}


def _b(locale):
    return "zh_Hans_CN" if locale == "zh-CN" else "en_US"


def gettext(locale, msg, **vars):
    return msg % vars if vars else msg


def negotiate(header):
    return "zh-CN" if header.lower().startswith("zh") else "en"


def install(env):
    env.add_extension("jinja2.ext.i18n")
    env.install_gettext_callables(lambda m, **kw: gettext(g.get("lw_locale", "en"), m, **kw),
                                  lambda s, p, n, **kw: gettext("en", s if n == 1 else p, **kw), newstyle=True)


def format_integer(v, locale):
    return numbers.format_decimal(v, locale=_b(locale))


def format_decimal(v, locale, scale=None):
    fmt = None if scale is None else "#,##0." + "0" * scale if scale else "#,##0"
    return numbers.format_decimal(v, format=fmt, locale=_b(locale), decimal_quantization=scale is not None)


def format_currency(v, code, locale, scale=None):
    return numbers.format_currency(v, code, locale=_b(locale))


def format_percent(v, locale):
    return numbers.format_percent(v / 100, locale=_b(locale))


def format_date(d, locale):
    return dates.format_date(d, "medium", locale=_b(locale))


def format_datetime(d, locale, tz="UTC"):
    return dates.format_datetime(d, "medium", tzinfo=dt.UTC, locale=_b(locale))


def format_time(t, locale):
    return dates.format_time(t, "short", locale=_b(locale))


def js_messages(locale):
    return {}
