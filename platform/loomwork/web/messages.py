"""The record service's field errors in the page's language.

The runtime speaks English to every caller (the API's problem documents are English
by design, apart from validation-rule messages, which metadata translates). Pages
show the same errors in the user's language: each known message shape maps to a
catalog entry, with its numbers and names carried over; an unknown one is shown as
the runtime wrote it rather than hidden.
"""
from __future__ import annotations

import re

from .common import _


def N_(message: str) -> str:  # noqa: N802  (Babel's marker for strings translated later)
    return message


_EXACT = {m: m for m in (
    N_("is required"), N_("is read-only"), N_("is read-only here"), N_("unknown field"),
    N_("Not a valid number"), N_("Not a valid integer"), N_("Not a valid date"), N_("Not a valid datetime"),
    N_("Not a valid time"), N_("Not a valid email address"), N_("Not a valid URL"), N_("Not a valid boolean"),
    N_("is not your current password"), N_("must be at least 10 characters"), N_("is numbered by the system"),
    N_("is computed by the system"), N_("conflicts with an existing record"),
    N_("is not a time zone; give an IANA name such as Europe/Berlin"),
    N_("does not match the required pattern"),
    N_("cannot be checked: the field's pattern is not supported; an administrator must change it"),
)}

_PATTERNS = [(re.compile(p), m) for p, m in (
    (r"^Must be greater than or equal to (?P<min>\S+) and less than or equal to (?P<max>\S+)$",
     N_("must be between %(min)s and %(max)s")),
    (r"^Must be greater than or equal to (?P<min>\S+) and less than (?P<max>\S+)$",
     N_("must be at least %(min)s and less than %(max)s")),
    (r"^Must be greater than or equal to (?P<min>\S+)$", N_("must be at least %(min)s")),
    (r"^Must be less than or equal to (?P<max>\S+)$", N_("must be at most %(max)s")),
    (r"^Longer than maximum length (?P<n>\d+)$", N_("must be at most %(n)s characters")),
    (r"^Shorter than minimum length (?P<n>\d+)$", N_("must be at least %(n)s characters")),
    (r"^is too long to check against the field's pattern \(at most (?P<n>\d+) characters\)$",
     N_("is too long to check against the field's pattern (at most %(n)s characters)")),
    (r"^Too many decimal places \(at most (?P<n>\d+)\)$", N_("too many decimal places (at most %(n)s)")),
    (r"^Too many digits \(at most (?P<n>\d+)\)$", N_("too many digits (at most %(n)s)")),
    (r"^must be one of: (?P<choices>.+)$", N_("must be one of: %(choices)s")),
    (r"^must be unique: another record has this value$", N_("must be unique: another record has this value")),
    (r"^(?P<n>\d+) (?P<object>\S+) record\(s\) refer to it through (?P<field>\S+); delete or re-link them first$",
     N_("%(n)s %(object)s record(s) refer to it through %(field)s; delete or re-link them first")),
    (r"^its (?P<field>\S+) \((?P<object>\S+) (?P<id>\d+)\) is deleted; restore that first$",
     N_("its %(field)s (%(object)s %(id)s) is deleted; restore that first")),
)]


def translate(message: str) -> str:
    """``message`` in the current page's language when it is one we know."""
    exact = _EXACT.get(message.rstrip("."))
    if exact is not None:
        return _(exact)
    for pattern, msgid in _PATTERNS:
        m = pattern.match(message.rstrip("."))
        if m:
            return _(msgid, **m.groupdict())
    return message


def translate_all(errors: dict[str, list[str]]) -> dict[str, list[str]]:
    return {k: [translate(m) for m in msgs] for k, msgs in errors.items()}


#: The runtime's refusal reasons (:class:`loomwork.runtime.reasons.Reason`) by code.
_REASONS = {
    "approval_pending": N_("Locked while it waits for approval (%(process)s)"),
    "approval_locked": N_("Locked by its approval (%(process)s)"),
    "already_pending": N_("Already waiting for approval (%(process)s)"),
    "returned_to_submitter": N_("Sent back to its submitter, who submits it again"),
    "final_state": N_("In its final state (%(state)s): not submitted for approval"),
    "no_update": N_("You may not change these records"),
    "no_delete": N_("You may not delete these records"),
    "not_submitter": N_("You may not submit this record for %(process)s"),
    "not_applicable": N_("%(process)s does not apply to this record"),
    "state_locked": N_("In state %(state)s it cannot be changed by you"),
    "transition_not_yet": N_("%(transition)s is not possible yet"),
    "no_fields": N_("No field of it may be changed now"),
}


def reason_text(reason: object) -> str:
    """A refusal reason (a ``Reason`` or its dict) in the page's language."""
    if reason is None:
        return ""
    data = reason.as_dict() if hasattr(reason, "as_dict") else dict(reason)  # type: ignore[call-overload]
    params = data.get("params") or {}
    if data["code"] == "transition_not_yet" and params.get("message"):
        return params["message"]  # the transition's own words, translated by its metadata
    msgid = _REASONS.get(data["code"])
    if msgid is None:
        return translate(data["message"])
    return _(msgid, **{k: v for k, v in params.items() if isinstance(v, (str, int, float))})
