"""The API does what its OpenAPI document says, checked by Schemathesis.

For every operation of ``/api/v1/openapi.json`` (as the administrator of a demo tenant
with the sample CRM and its records sees it), Schemathesis generates requests that fit
the document (positive) and requests that break it (negative), sends them in-process to
the WSGI app with the administrator's API token, and checks each answer: no 5xx
(``not_a_server_error``), a documented status (``status_code_conformance``), a documented
media type (``content_type_conformance``) and a body valid under the documented schema
(``response_schema_conformance``).

Half the requests of an operation with ids in its path (records, approvals, tasks,
users) take small ids, which name the demo's rows: an id drawn from its whole range
(up to 2^63-1 or 2^31-1) would almost never name one, and the run would test little but
404s.

The run is bounded (:data:`EXAMPLES` requests per operation and mode, no shrinking) and
derandomised, so CI sends the same requests every time and a failure replays locally.
To explore further, ``LOOMWORK_CONFORMANCE_EXAMPLES=100`` sends more requests and
``LOOMWORK_CONFORMANCE_SEED=<n>`` other ones.

The operations share one tenant: a generated request may create, change or delete
records, views and even metadata, so later operations meet a tenant in whatever state
earlier ones left. The document has to be true in every such state; the order is the
document's, so each run meets the same states, except that operations which can take
away what the others need (:data:`LAST`) come at the end.
"""
from __future__ import annotations

import os
import secrets
import time
from collections import Counter

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from loomwork.testing import postgres_url

#: Requests per operation and generation mode.
EXAMPLES = int(os.environ.get("LOOMWORK_CONFORMANCE_EXAMPLES", "10"))
#: A seed for other requests than CI's (unset: derandomised).
SEED = os.environ.get("LOOMWORK_CONFORMANCE_SEED")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
#: The demo's sample records: enough that small generated ids name real ones.
RECORDS = 30
#: Ids up to this name rows of the demo.
SMALL_ID = 12
#: Operations that can take away what the others need run after them, in this order: a
#: recall (the approvals the task endpoints decide), those that can change or roll back the
#: metadata (the CRM's objects), then those that can end the run's access (its token).
LAST = ("POST /api/v1/approvals/{instance}/recall", "PUT /api/v1/meta/objects/{name}", "DELETE /api/v1/meta/objects/{name}", "PUT /api/v1/meta/roles/{name}",
        "POST /api/v1/meta/publish", "POST /api/v1/meta/rollback", "POST /api/v1/auth/password",
        "DELETE /api/v1/auth/tokens/{token_id}")
#: Operations the run must reach, at least: the CRM's four objects have eight operations
#: each (plus action scripts), the platform's endpoints about fifty.
MIN_OPERATIONS = 75

SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES, deadline=None, database=None, derandomize=SEED is None,
    phases=[Phase.explicit, Phase.generate],
    # Schemathesis makes the strategies; a slow or filtering one is its business, not a fault of the API.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                           HealthCheck.large_base_example],
)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def demo_api(request, tmp_path_factory):
    """The demo (sample CRM, its users and records) on a fresh platform, and the
    administrator's API token."""
    from loomwork import create_app
    from loomwork.demo import setup_demo

    root = tmp_path_factory.mktemp("conformance")
    (root / "instance").mkdir()  # the demo keeps its login there (SQLite would make it for its files)
    url = f"sqlite:///{root / 'instance'}" if request.param == "sqlite" else postgres_url()
    app = create_app({"database_url": url, "namespace": f"lwt{secrets.token_hex(4)}",
                      "instance_dir": str(root / "instance"), "secret_key": "conformance", "secure_cookies": False})
    loomwork = app.extensions["loomwork"]
    login = setup_demo(loomwork, RECORDS, echo=lambda _message: None)
    _submit_quotes(loomwork)
    yield app, login["token"]
    loomwork.platform.drop_all()
    loomwork.platform.dispose()


def _submit_quotes(loomwork) -> None:
    """Approvals in flight, so that the approval and task endpoints meet real ones: quotes
    of sam's whose discounts need his manager (the administrator), some finance too."""
    from loomwork.runtime.context import Actor, Context

    tenant = loomwork.platform.tenant(loomwork.settings.default_tenant)
    sam = loomwork.services.users.by_username(Context(tenant, Actor.system()), "sam")
    ctx = Context(tenant, sam.actor())
    for n, discount in enumerate(("30", "50", "25", "45"), 1):
        quote = loomwork.services.records.create(ctx, "quote", {"name": f"Discounted {n}", "list_price": "1000",
                                                                "discount": discount})
        loomwork.services.approvals.submit(ctx, "quote", quote["id"])


def _id_parameters(doc: dict, operation) -> list[str]:
    """The integer path parameters of ``operation`` (record, approval, task, user ids)."""
    params = doc["paths"][operation.path][operation.method.lower()].get("parameters", [])
    return [p["name"] for p in params if p.get("in") == "path" and p["schema"].get("type") == "integer"]


def _cases(doc: dict, operation, mode: GenerationMode):
    """The strategy of ``operation``'s requests: half of them with small ids, if it takes any."""
    cases = operation.as_strategy(mode)
    ids = _id_parameters(doc, operation)
    if not ids:
        return cases
    strategies: dict[tuple, object] = {}

    def with_ids(values: tuple[int, ...]):
        if values not in strategies:
            strategies[values] = operation.as_strategy(mode, path_parameters=dict(zip(ids, values, strict=True)))
        return strategies[values]

    small = st.tuples(*(st.integers(1, SMALL_ID) for _ in ids)).flatmap(with_ids)
    return st.one_of(cases, small)


def _run(doc: dict, operation, mode: GenerationMode, headers: dict[str, str], sent: Counter) -> str | None:
    """Send ``operation``'s generated requests of ``mode``; the failure report, if any."""

    @given(case=_cases(doc, operation, mode))
    @SETTINGS
    def check(case) -> None:
        sent[operation.label] += 1
        case.call_and_validate(headers=headers, checks=CHECKS)

    if SEED is not None:
        check = hypothesis.seed(int(SEED))(check)
    try:
        check()
    except hypothesis.errors.Unsatisfiable:
        if mode is GenerationMode.NEGATIVE:
            return None  # nothing in it can be made invalid (no parameters, no body)
        raise
    except (AssertionError, BaseExceptionGroup) as exc:  # how Schemathesis reports failed checks
        return f"{operation.label} ({mode.value}):\n{exc}"
    return None


def test_every_operation_does_what_the_document_says(demo_api):
    app, token = demo_api
    headers = {"Authorization": f"Bearer {token}"}
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app, headers=headers)
    doc = schema.raw_schema
    failures: list[str] = []
    sent: Counter = Counter()
    started = time.monotonic()
    operations = [result.ok() for result in schema.get_all_operations()]  # raises for one it cannot read
    operations.sort(key=lambda op: LAST.index(op.label) if op.label in LAST else -1)  # stable: else as listed
    for operation in operations:
        for mode in MODES:
            failure = _run(doc, operation, mode, headers, sent)
            if failure:
                failures.append(failure)
    took = time.monotonic() - started
    assert not failures, f"{len(failures)} failing operation(s) of {len(sent)}:\n\n" + "\n\n".join(failures)
    assert len(sent) >= MIN_OPERATIONS, sorted(sent)
    print(f"{len(sent)} operations, {sum(sent.values())} requests in {took:.1f}s")
