"""A text field's ``pattern`` is matched in the web process with RE2, the linear-time
engine expressions use, on a bounded input (issue 12 §1: Python's backtracking ``re``
held a request for over a second on ``^(a+)+$``)."""
from __future__ import annotations

import time

import marshmallow as ma
import pytest

from loomwork.metadata.errors import MetadataError, ValidationError
from loomwork.runtime.expr.functions import MAX_REGEX_INPUT
from loomwork.runtime.fieldtypes import PatternValidator


@pytest.fixture
def create(lw_publish, lw_services, lw_ctx):
    lw_publish(deal={"fields": {"code": {"type": "text", "pattern": "^(a+)+$", "max_length": 10000},
                                "short": {"type": "text", "pattern": "[A-Z]{3}", "max_length": 5}}})
    return lambda values: lw_services.records.create(lw_ctx, "deal", values)


def test_a_backtracking_pattern_takes_linear_time(create):
    started = time.process_time()
    with pytest.raises(ValidationError) as bad:
        create({"code": "a" * 9999 + "!"})
    assert bad.value.errors == {"code": ["does not match the required pattern"]}
    # Python's re needs ~2^n steps here: 1.5 s for 26 characters, 9,999 would never end.
    assert time.process_time() - started < 0.5
    assert create({"code": "aaaa"})["code"] == "aaaa"


def test_the_pattern_matches_from_the_start_of_the_value(create):
    assert create({"short": "ABCde"})["short"] == "ABCde"  # as marshmallow's Regexp did: re.match
    with pytest.raises(ValidationError) as bad:
        create({"short": "xABC"})
    assert bad.value.errors == {"short": ["does not match the required pattern"]}


def test_a_value_over_the_length_is_reported_once(create):
    with pytest.raises(ValidationError) as bad:
        create({"short": "abcdefgh"})
    (message,) = bad.value.errors["short"]
    assert "pattern" not in message  # the length check says it; the pattern is not run


def test_a_value_over_the_regex_input_cap_is_refused_unmatched():
    check = PatternValidator("^a", 10 * MAX_REGEX_INPUT)  # a plugin's type may allow longer text
    with pytest.raises(ma.ValidationError, match=f"at most {MAX_REGEX_INPUT} characters"):
        check("a" * (MAX_REGEX_INPUT + 1))
    assert check("a" * MAX_REGEX_INPUT) == "a" * MAX_REGEX_INPUT


def test_publish_refuses_a_pattern_re2_cannot_run(lw_runtime):
    for pattern in ("(?=a)a", r"(a)\1", "("):
        with pytest.raises(MetadataError) as bad:
            lw_runtime.validate({"objects": {"deal": {"fields": {"code": {"type": "text", "pattern": pattern}}}}})
        (message,) = bad.value.errors["objects.deal.fields.code.pattern"]
        assert message.startswith("invalid regular expression"), message


def test_a_pattern_published_before_re2_refuses_values_until_it_is_changed():
    with pytest.raises(ma.ValidationError, match="the field's pattern is not supported"):
        PatternValidator("(?=a)a", 255)("a")
