"""The time zones a user may have: the IANA names this installation knows (tzdata).

Stored times are UTC everywhere; a user's zone only says where pages show them. One
list serves the profile's choice and the user service's check.
"""
from __future__ import annotations

import functools
import zoneinfo

from loomwork.metadata.errors import ValidationError

#: Longer names are no zone (the longest IANA name has 32 characters).
MAX_NAME = 64


@functools.cache
def time_zones() -> tuple[str, ...]:
    """Every zone name, sorted (``Africa/Abidjan`` … ``UTC`` …)."""
    return tuple(sorted(zoneinfo.available_timezones()))


def is_time_zone(name: object) -> bool:
    return isinstance(name, str) and len(name) <= MAX_NAME and name in _known()


def check_time_zone(name: object) -> str:
    """``name`` if it is a zone. :raises ValidationError: at ``time_zone`` if it is not."""
    if not is_time_zone(name):
        raise ValidationError({"time_zone": ["is not a time zone; give an IANA name such as Europe/Berlin"]})
    return name  # type: ignore[return-value]


@functools.cache
def _known() -> frozenset[str]:
    return frozenset(time_zones())
