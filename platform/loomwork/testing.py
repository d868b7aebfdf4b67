"""Pytest fixtures for Loomwork, its plugins and templates.

Installed as a ``pytest11`` plugin, so any project that installs Loomwork can use
them. Storage fixtures are parametrised over ``sqlite`` and ``postgres``.
PostgreSQL comes from ``LOOMWORK_TEST_POSTGRES_URL`` (default: a local server); when
it cannot be reached the postgres cases skip with the reason, unless the variable is
set explicitly or ``CI`` is true, in which case they fail.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_url() -> str | None:
    """A reachable PostgreSQL URL, or ``None`` (after deciding to skip or fail)."""
    url = os.environ.get("LOOMWORK_TEST_POSTGRES_URL")
    required = bool(url) or os.environ.get("CI") == "true"
    url = url or DEFAULT_PG_URL
    import sqlalchemy as sa

    from loomwork.runtime.tenancy import normalise_url

    try:
        engine = sa.create_engine(normalise_url(url))
        with engine.connect():
            pass
        engine.dispose()
        return url
    except Exception as exc:  # any driver or network failure means "not available"
        if required:
            pytest.fail(f"PostgreSQL is required here but unreachable at {url}: {exc}")
        pytest.skip(f"PostgreSQL not reachable ({exc.__class__.__name__}); set LOOMWORK_TEST_POSTGRES_URL")
    return None


@pytest.fixture(scope="session")
def lw_plugin_manager():
    from loomwork.plugin_manager import make_plugin_manager

    return make_plugin_manager(entry_points=False)


@pytest.fixture(scope="session")
def lw_runtime(lw_plugin_manager):
    from loomwork.plugin_manager import make_runtime

    return make_runtime(lw_plugin_manager)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def lw_database_url(request, tmp_path) -> str:
    """A platform URL: a fresh SQLite directory, or the test PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'instance'}"
    return postgres_url()


@pytest.fixture
def lw_platform(lw_database_url) -> Iterator[Any]:
    """A platform in its own namespace, dropped afterwards."""
    from loomwork.runtime.tenancy import Platform

    platform = Platform(lw_database_url, namespace=f"lwt{secrets.token_hex(4)}")
    try:
        yield platform
    finally:
        platform.drop_all()
        platform.dispose()


@pytest.fixture
def lw_tenant(lw_platform):
    return lw_platform.create_tenant("acme")


@pytest.fixture
def lw_ctx(lw_tenant):
    """An administrator's context in the test tenant."""
    from loomwork.runtime.context import Actor, Context

    return Context(lw_tenant, Actor.system())


@pytest.fixture
def lw_services(lw_plugin_manager, lw_runtime):
    """The runtime services, with the write pipeline the plugins give (as an app has)."""
    from loomwork.plugin_manager import make_services

    return make_services(lw_plugin_manager, lw_runtime)


@pytest.fixture
def lw_publish(lw_services, lw_ctx) -> Callable[..., int]:
    """Publish objects into the test tenant: ``lw_publish(deal={"fields": {...}})``."""

    def publish(_doc: dict | None = None, **objects: dict) -> int:
        doc = _doc or {"objects": objects}
        return lw_services.metadata.publish(lw_ctx, doc, comment="test")

    return publish


def assert_problem(resp: Any, status: int) -> dict[str, Any]:
    """Assert a Flask test response is an RFC 9457 problem document with ``status``
    and a useful ``detail``; return the document."""
    assert resp.status_code == status, (resp.status_code, resp.get_data(as_text=True)[:500])
    assert resp.mimetype == "application/problem+json", resp.mimetype
    doc = resp.get_json()
    assert doc["status"] == status
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and doc["detail"]
    if status == 422:
        assert doc["errors"] and all(isinstance(v, list) and v and all(isinstance(m, str) for m in v)
                                     for v in doc["errors"].values()), doc
    return doc


@pytest.fixture
def lw_cheap_passwords(monkeypatch) -> None:
    """Use cheap Argon2 parameters (the real ones cost ~50 ms a hash): for tests whose
    subject is not the key derivation itself."""
    from argon2 import PasswordHasher

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr("loomwork.runtime.users._hasher", cheap)
    monkeypatch.setattr("loomwork.runtime.users._DUMMY_HASH", cheap.hash("not a password"))


def with_fields(doc: dict[str, Any], obj: str = "deal", **edits: Any) -> dict[str, Any]:
    """A copy of a metadata document with fields of ``obj`` replaced or added
    (``name=None`` removes one): for tests of schema changes."""
    import copy

    doc = copy.deepcopy(doc)
    fields = doc["objects"][obj]["fields"]
    for name, fdoc in edits.items():
        if fdoc is None:
            fields.pop(name)
        else:
            fields[name] = fdoc
    return doc


def wait_until_serving(url: str, proc: subprocess.Popen, deadline: float) -> None:
    """Wait (until ``deadline``, a ``time.monotonic()``) for a server started as ``proc``
    to answer ``url``/login. :raises AssertionError: with its output if it exited."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stdout.read() if proc.stdout else ''}")
        try:
            urllib.request.urlopen(url + "/login", timeout=1).read()
            return
        except OSError:  # not listening yet (URLError and ConnectionError are OSErrors)
            time.sleep(0.1)
