"""Compiling tenant scripts costs CPU; where, for how long and how much of it (issue 12 §1).

A plan or a publish compiles the document's scripts in a sandbox worker, not in the web
process, within a time limit and in the tenant's share of the pool; one request brings
at most so much script source; each distinct source is compiled once per process. A run
compiling a script its worker has not seen does so in a time of its own, never in the
run's wall time. Runs and checks take the tenant's share of the pool.
"""
from __future__ import annotations

import secrets

import pytest

from loomwork.metadata.errors import MetadataError
from loomwork.runtime.sandbox.budget import DEFAULTS
from loomwork.runtime.sandbox.policy import MAX_TOTAL_SOURCE_BYTES, Inconclusive, Verdicts, digest
from loomwork.runtime.sandbox.pool import Pool

#: A script at the size caps that is slow to compile (~0.5 s on an idle machine).
HEAVY = "f = lambda: 0\n" * 4500


def _doc(**scripts: str) -> dict:
    return {"objects": {"deal": {"fields": {"name": {"type": "text"}}}},
            "scripts": {name: {"object": "deal", "trigger": {"event": "before_save"}, "source": source}
                        for name, source in scripts.items()}}


def _unique(source: str) -> str:
    """``source`` no verdict of this process knows yet."""
    return f"{source}# {secrets.token_hex(8)}\n"


def test_publishing_compiles_scripts_in_a_worker_not_in_this_process(lw_services, lw_ctx, monkeypatch):
    import loomwork.runtime.sandbox.policy as policy

    def here(*args, **kwargs):
        raise AssertionError("a script was compiled in the web process")

    monkeypatch.setattr(policy, "compile_script", here)
    with pytest.raises(MetadataError) as bad:
        lw_services.metadata.preview(lw_ctx, _doc(bad=_unique("x = 1\nimport os\n")))
    assert bad.value.errors["scripts.bad.source"][0].startswith("Line 2: import"), bad.value.errors
    lw_services.metadata.publish(lw_ctx, _doc(good=_unique("record['name'] = 'checked'\n")))


def test_each_distinct_source_is_compiled_once_in_the_tenants_share(lw_services, lw_ctx, monkeypatch):
    pool = lw_services.scripts.pool
    calls = []
    check = pool.check

    def counted(name, source, **kwargs):
        calls.append((name, kwargs.get("tenant")))
        return check(name, source, **kwargs)

    monkeypatch.setattr(pool, "check", counted)
    doc = _doc(one=_unique("record['name'] = 'one'\n"), two=_unique("record['name'] = 'two'\n"))
    lw_services.metadata.preview(lw_ctx, doc)
    lw_services.metadata.publish(lw_ctx, doc)
    lw_services.metadata.publish(lw_ctx, doc)
    assert sorted(calls) == [("one", lw_ctx.tenant.cache_key), ("two", lw_ctx.tenant.cache_key)]


def test_a_document_brings_a_bounded_amount_of_script_source(lw_runtime):
    size = MAX_TOTAL_SOURCE_BYTES // 8
    body = "x = 1\n#" + "a" * (size - 8) + "\n"
    assert len(body) == size
    lw_runtime.validate(_doc(**{f"s{i}": body for i in range(8)}))  # at the cap: fine
    with pytest.raises(MetadataError) as bad:
        lw_runtime.validate(_doc(**{f"s{i}": body for i in range(9)}))
    assert bad.value.errors == {"scripts": [
        f"the scripts come to {9 * size // 1024} KiB together; one document may hold at most "
        f"{MAX_TOTAL_SOURCE_BYTES // 1024} KiB of scripts"]}


@pytest.fixture(scope="module")
def pool():
    pool = Pool(size=1)
    pool.warm()
    yield pool
    pool.close()


def test_compiling_has_a_time_limit(pool):
    with pytest.raises(Inconclusive, match="longer than 0.001 s to compile"):
        pool.check("heavy", HEAVY, limit_ms=1)
    assert pool.check("heavy", HEAVY) == []  # within the real limit it compiles
    assert pool.check("broken", "x = (\n") == ["Line 1: '(' was never closed"]


def test_a_check_without_a_verdict_is_not_remembered():
    verdicts = Verdicts()
    calls = []

    def slow(name, source):
        calls.append(name)
        raise Inconclusive("the script took longer than 5 s to compile")

    assert verdicts.errors({"a": "x = 1\n"}, slow) == {"a": ["the script took longer than 5 s to compile"]}
    assert verdicts.errors({"a": "x = 1\n"}, slow) == {"a": ["the script took longer than 5 s to compile"]}
    assert calls == ["a", "a"]
    assert verdicts.errors({"a": "x = 1\n"}) == {}
    assert verdicts.errors({"b": "x = 1\n"}, slow) == {}  # the same source: its verdict is known


def test_a_run_compiles_in_a_time_of_its_own(pool):
    """A script the worker has not compiled yet still runs within a short wall time: the
    compile is not part of it (it was, and a big script failed a 1 s limit under load)."""
    source = _unique(HEAVY + "result = 'ran'\n")
    limits = {**DEFAULTS.as_dict(), "wall_ms": 50}
    request = {"name": "heavy", "source": source, "digest": digest(source), "limits": limits, "record": None,
               "old": None, "types": {}, "now": "2026-12-04T10:00:00+00:00", "today": "2026-12-04",
               "user": {"id": 1}, "params": {}}
    reply = pool.run(request, None, 50, tenant="t")
    assert reply["status"] == "ok" and reply["result"] == "ran", reply
    assert reply["wall_ms"] < 50 + 250  # the run's own time, without the compile


def test_a_tenants_runs_take_its_share_of_the_pool(lw_services, lw_ctx, monkeypatch):
    lw_services.metadata.publish(lw_ctx, _doc(tag=_unique("record['name'] = 'tagged'\n")))
    lw_services.scripts.enabled = lambda tenant: True
    pool = lw_services.scripts.pool
    tenants = []
    run = pool.run

    def spied(*args, **kwargs):
        tenants.append(kwargs.get("tenant"))
        return run(*args, **kwargs)

    monkeypatch.setattr(pool, "run", spied)
    assert lw_services.records.create(lw_ctx, "deal", {"name": "x"})["name"] == "tagged"
    assert tenants == [lw_ctx.tenant.cache_key]


def test_code_a_check_compiled_serves_runs_and_names_its_script(pool):
    source = _unique("x = 1\nraise ValueError('no')\n")
    assert pool.check("first", source) == []
    for name in ("first", "second"):  # the same source under another name: its own code
        request = {"name": name, "source": source, "digest": digest(source), "limits": DEFAULTS.as_dict(),
                   "record": None, "old": None, "types": {}, "now": "2026-12-04T10:00:00+00:00",
                   "today": "2026-12-04", "user": {"id": 1}, "params": {}}
        reply = pool.run(request, None, 1000)
        assert (reply["status"], reply["message"], reply["line"]) == ("error", "ValueError: no", 2), reply
