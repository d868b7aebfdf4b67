"""Languages of the UI: every string translated, placeholders intact, formats per locale."""
from __future__ import annotations

import datetime as dt
import re
from configparser import ConfigParser
from decimal import Decimal
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from loomwork.web import i18n

ROOT = Path(__file__).resolve().parent.parent
PO = ROOT / "platform/loomwork/web/translations/zh_CN/LC_MESSAGES/messages.po"
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def _msgids() -> set[str]:
    """Every msgid the UI uses, extracted with babel.cfg's mapping (as ``make messages``)."""
    cfg = ConfigParser()
    cfg.read(ROOT / "babel.cfg")
    method_map = [(s.split(":", 1)[1].strip(), s.split(":", 1)[0].strip()) for s in cfg.sections()]
    options_map = {pattern: dict(cfg[f"{method}: {pattern}"]) for pattern, method in method_map}
    found = set()
    for _file, _line, message, _comments, _ctx in extract_from_dir(str(ROOT), method_map, options_map):
        for m in (message if isinstance(message, tuple) else (message,)):
            if m:
                found.add(m)
    return found


def test_every_ui_string_has_a_chinese_translation():
    msgids = _msgids()
    assert len(msgids) > 100 and "Save" in msgids and "%(n)s selected" in msgids  # templates, Python, JS
    with PO.open("rb") as fh:
        catalog = read_po(fh, locale="zh_CN")
    missing = sorted(m for m in msgids if not (catalog.get(m) and catalog.get(m).string))
    assert not missing, f"untranslated in {PO.relative_to(ROOT)} (run make messages, then translate): {missing}"
    fuzzy = sorted(m.id for m in catalog if m.id and m.fuzzy)
    assert not fuzzy, f"fuzzy entries: {fuzzy}"
    wrong = [(m.id, m.string) for m in catalog if m.id and
             sorted(PLACEHOLDER.findall(m.id)) != sorted(PLACEHOLDER.findall(m.string))]
    assert not wrong, f"placeholders differ: {wrong}"


def test_gettext_in_both_languages():
    assert i18n.gettext("en", "Save") == "Save"
    assert i18n.gettext("zh-CN", "Save") == "保存"
    assert i18n.gettext("zh-CN", "%(n)s selected", n=3) == "已选 3 条"
    assert i18n.gettext("en", "%(n)s selected", n=3) == "3 selected"
    assert i18n.gettext("zh-CN", "a string nobody translated") == "a string nobody translated"
    assert i18n.js_messages("en") == {}
    js = i18n.js_messages("zh-CN")
    assert js["This field is required."] == "此字段为必填项。" and "%(n)s selected" in js


@pytest.mark.parametrize(("header", "expected"), [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"), ("zh-Hans", "zh-CN"), ("zh-TW", "zh-CN"), ("zh_SG", "zh-CN"),
    ("en-US,en;q=0.9", "en"), ("fr-FR, zh;q=0.5", "zh-CN"), ("de", "en"), ("", "en"), ("en;q=0.5, zh;q=0.9", "zh-CN"),
])
def test_negotiate(header, expected):
    assert i18n.negotiate(header) == expected


def test_formats_per_locale():
    amount = Decimal("15000")
    assert i18n.format_currency(amount, "USD", "en", 2) == "$15,000.00"
    assert i18n.format_currency(amount, "USD", "zh-CN", 2) == "US$15,000.00"
    assert i18n.format_currency(Decimal("15000.5"), "CNY", "zh-CN", 0) == "¥15,000"
    assert i18n.format_decimal(Decimal("1234.5"), "en", 2) == "1,234.50"
    assert i18n.format_decimal(Decimal("1234.567"), "zh-CN") == "1,234.567"
    assert i18n.format_percent(Decimal("12.5"), "en") == "12.5%"
    assert i18n.format_integer(17564, "zh-CN") == "17,564"
    assert i18n.format_date(dt.date(2026, 11, 22), "en") == "Nov 22, 2026"
    assert i18n.format_date(dt.date(2026, 11, 22), "zh-CN") == "2026年11月22日"
    when = dt.datetime(2026, 11, 22, 9, 5, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    shown = i18n.format_datetime(when, "en")  # CLDR puts a narrow no-break space before AM
    assert shown.startswith("Nov 22, 2026 1:05") and shown.endswith("AM UTC")
    assert i18n.format_datetime(when, "zh-CN") == "2026年11月22日 01:05 UTC"
    assert i18n.format_time(dt.time(14, 30), "zh-CN") == "14:30"
    assert i18n.format_relative(dt.datetime(2026, 1, 1, 9), dt.datetime(2026, 1, 1, 12), "zh-CN") == "3小时前"
    assert i18n.format_relative(dt.datetime(2026, 1, 1, 9), dt.datetime(2026, 1, 1, 12), "en") == "3 hours ago"
