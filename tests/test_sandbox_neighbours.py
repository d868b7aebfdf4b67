"""Tenants sharing the script workers must not hurt each other (issue 12 §1).

Noisy neighbours, the two ways they hurt: through the state a run leaves in a worker
(a run that ends at its memory limit, or leaves a lot allocated or a pile of garbage,
must not make the next run in that worker, another tenant's, fail or pay for it), and
through the pool's capacity (one tenant saturating the workers must not make another
tenant's save wait). The fair queue itself (:class:`~loomwork.runtime.sandbox.quota.Slots`)
is tested without processes, deterministically.
"""
from __future__ import annotations

import threading
import time

import pytest

from loomwork.runtime.sandbox.budget import DEFAULTS
from loomwork.runtime.sandbox.policy import digest
from loomwork.runtime.sandbox.pool import Pool, SandboxBusy
from loomwork.runtime.sandbox.quota import Slots

LIMITS = {**DEFAULTS.as_dict(), "wall_ms": 5000, "steps": 50_000_000, "memory_mib": 256}


def request(source: str, **limits: int) -> dict:
    return {"name": "t", "source": source, "digest": digest(source), "limits": {**LIMITS, **limits},
            "record": {"amount": "1"}, "old": None, "types": {}, "now": "2026-12-04T10:00:00+00:00",
            "today": "2026-12-04", "user": {"id": 1}, "params": {}}


def host(name, args, item):
    return {"error": "no ctx calls here"}


def run(pool: Pool, tenant: str, source: str, **limits: int) -> dict:
    wall = limits.get("wall_ms", LIMITS["wall_ms"])
    return pool.run(request(source, **limits), host, wall, tenant=tenant)


# -- one tenant's run, then another tenant's, in the same worker -------------------------------

#: Needs 150 MiB of its 256: it fails if the worker still holds much of a run before it.
NORMAL = "x = ['z' * 1000000 for i in range(150)]\nresult = len(x)"
#: Makes 300,000 small containers: slow if it inherits a pile of garbage to collect.
ALLOCATING = "x = [[i] for i in range(300000)]\nresult = len(x)"

HOSTILE = [
    pytest.param("x = []\nwhile True:\n    x.append('y' * 100000)", "limit", id="ends-at-its-memory-limit"),
    # A function's globals are the run's scope: without clearing it, the list stays in a
    # cycle the collector finds at some later run's expense.
    pytest.param("def keep():\n    pass\nx = ['y' * 1000 for i in range(200000)]", "ok", id="leaves-200-mib-in-a-cycle"),
    pytest.param("x = []\nfor i in range(500000):\n    a = []\n    a.append(a)\n    x.append(a)", "ok",
                 id="leaves-half-a-million-cycles"),
    pytest.param("x = []\nfor i in range(30000):\n    a = [i]\n    a.append(a)\n    x.append(a)", "ok",
                 id="leaves-some-cycles"),
    pytest.param("while True:\n    pass", "limit", id="ends-at-its-step-limit"),
    pytest.param("while True:\n    print('x' * 10000)", "limit", id="ends-at-its-output-limit"),
]


@pytest.fixture(scope="module")
def solo():
    """One worker: every run uses it (or the replacement it got)."""
    pool = Pool(size=1)
    pool.warm()
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def baseline_cpu_ms(solo):
    run(solo, "b", ALLOCATING)  # warm: the code is cached, as it is below
    return min(run(solo, "b", ALLOCATING)["used"]["cpu_ms"] for _ in range(3))


@pytest.mark.parametrize(("hostile", "ends"), HOSTILE)
def test_a_hostile_run_leaves_the_next_tenant_a_worker_as_good_as_new(solo, baseline_cpu_ms, hostile, ends):
    steps = {"steps": 200_000} if ends == "limit" else {}
    assert run(solo, "a", hostile, **steps)["status"] == ends
    after = run(solo, "b", NORMAL)
    assert after["status"] == "ok" and after["result"] == 150, after  # its whole memory limit is there
    run(solo, "a", hostile, **steps)
    allocating = run(solo, "b", ALLOCATING)
    assert allocating["status"] == "ok"
    # CPU time (not wall time, which a loaded machine stretches): the garbage was not left
    # for this run's collector (before: 216 ms against 60 ms after a million cycles).
    assert allocating["used"]["cpu_ms"] <= 2 * baseline_cpu_ms + 40, (allocating["used"], baseline_cpu_ms)


def test_a_worker_that_stays_as_good_as_new_is_kept(solo):
    run(solo, "a", "result = 1")
    started = solo.started
    for _ in range(20):
        assert run(solo, "a", "def f(x):\n    return [x] * 3\nresult = f(2)")["result"] == [2, 2, 2]
        assert run(solo, "b", NORMAL)["result"] == 150
    assert solo.started == started  # no replacement: settling put it back as it was


def test_the_replacement_is_ready_before_the_next_run():
    pool = Pool(size=1)
    try:
        pool.warm()
        run(pool, "a", "result = 1")
        run(pool, "a", "while True:\n    pass", steps=1000)
        (worker,) = pool._idle
        assert worker.ready  # the run that used the worker up waited for its replacement
    finally:
        pool.close()


# -- one tenant saturating the pool while another saves ---------------------------------------

SLOW = "while ctx.budget['used']['wall_ms'] < 1200:\n    pass\nresult = 'slow'"


def test_a_tenant_saturating_the_pool_does_not_delay_another_tenants_save():
    """Six concurrent 1.2 s runs of tenant a on two workers; then tenant b saves.

    Before per-tenant quotas, b's run waited behind a's queue: 4.3 s (three rounds of a's
    runs). Now a holds at most one worker (all but one), so b's run starts at once."""
    pool = Pool(size=2)
    try:
        pool.warm()
        for worker in pool._idle:
            worker.wait_ready()
        done: list[str] = []
        flood = [threading.Thread(target=lambda: done.append(run(pool, "a", SLOW)["result"])) for _ in range(6)]
        for thread in flood:
            thread.start()
        deadline = time.monotonic() + 10
        while pool.slots.state()["waiting"].get("a", 0) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert pool.slots.state() == {"out": 1, "held": {"a": 1}, "waiting": {"a": 5}, "nested": 0}
        waits = []
        for _ in range(5):
            started = time.monotonic()
            assert run(pool, "b", "result = record['amount']")["result"] == "1"
            waits.append(time.monotonic() - started)
        for thread in flood:
            thread.join()
        assert done == ["slow"] * 6  # a's runs waited their turn; none was refused
        assert max(waits) < 0.5, waits  # measured: 1-5 ms each
    finally:
        pool.close()


def test_a_script_run_from_inside_a_run_takes_another_worker():
    """A script's ctx call can set off another script of the same tenant (an approval's
    action): that run is nested, outside the tenant's share of one worker."""
    pool = Pool(size=2)
    try:
        def host(name, args, item):
            inner = pool.run(request("result = 'inner'"), None, 1000, tenant="a")
            return {"value": [{"got": inner["result"]}]}

        reply = pool.run(request("result = ctx.query('deal')[0]['got']"), host, 5000, tenant="a")
        assert reply["result"] == "inner", reply
    finally:
        pool.close()


def test_a_tenants_queue_is_capped():
    pool = Pool(size=1, tenant_queue=1, wait_s=10)
    try:
        pool.warm()
        first = threading.Thread(target=run, args=(pool, "a", SLOW))
        second = threading.Thread(target=run, args=(pool, "a", "result = 1"))
        first.start()
        while pool.slots.state()["out"] < 1:
            time.sleep(0.01)
        second.start()
        while pool.slots.state()["waiting"].get("a", 0) < 1:
            time.sleep(0.01)
        with pytest.raises(SandboxBusy, match="too many of this workspace's scripts are waiting"):
            run(pool, "a", "result = 2")
        first.join()
        second.join()
    finally:
        pool.close()


# -- the fair queue, without processes ----------------------------------------------------------

def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def _queue(slots: Slots, tenant: str, name: str, order: list[str]) -> threading.Thread:
    """A run of ``tenant`` that waits for a slot, notes ``name`` when it gets one and
    gives it back at once."""
    def take():
        with slots.held(tenant):
            order.append(name)

    before = slots.state()["waiting"].get(tenant, 0)
    thread = threading.Thread(target=take)
    thread.start()
    _wait_until(lambda: slots.state()["waiting"].get(tenant, 0) > before)
    return thread


def test_one_tenant_never_holds_the_last_slot():
    slots = Slots(size=3)
    assert slots.per_tenant == 2
    slots.acquire("a")
    slots.acquire("a")
    order: list[str] = []
    waiting = _queue(slots, "a", "a3", order)  # at its quota
    slots.acquire("b")  # at once
    assert slots.state() == {"out": 3, "held": {"a": 2, "b": 1}, "waiting": {"a": 1}, "nested": 0}
    slots.release("b")
    assert order == []  # a free slot, but a is at its quota
    slots.release("a")
    waiting.join()
    assert order == ["a3"]


def test_a_free_slot_goes_to_the_tenant_served_least_recently():
    slots = Slots(size=1)
    slots.acquire("a")
    order: list[str] = []
    threads = [_queue(slots, "a", f"a{i}", order) for i in range(1, 4)]
    threads.append(_queue(slots, "b", "b1", order))  # came last, but b has not run for a while
    threads.append(_queue(slots, "c", "c1", order))
    slots.release("a")
    for thread in threads:
        thread.join()
    assert order == ["b1", "c1", "a1", "a2", "a3"]
    assert slots.state() == {"out": 0, "held": {}, "waiting": {}, "nested": 0}


def test_tenants_take_turns_while_both_have_runs_waiting():
    slots = Slots(size=1)
    slots.acquire("x")
    order: list[str] = []
    threads = [_queue(slots, tenant, f"{tenant}{i}", order) for i in range(1, 4) for tenant in ("a", "b")]
    slots.release("x")
    for thread in threads:
        thread.join()
    assert order == ["a1", "b1", "a2", "b2", "a3", "b3"]


def test_waiting_is_bounded_and_leaves_no_trace():
    slots = Slots(size=1, queue=1, wait_s=0.05)
    slots.acquire("a")
    with pytest.raises(SandboxBusy, match="every script worker is busy"):
        slots.acquire("b")
    assert slots.state() == {"out": 1, "held": {"a": 1}, "waiting": {}, "nested": 0}
    order: list[str] = []
    slots.wait_s = 5
    waiting = _queue(slots, "b", "b1", order)
    with pytest.raises(SandboxBusy, match="too many"):
        slots.acquire("b")  # its one place in the queue is taken
    slots.release("a")
    waiting.join()
    assert order == ["b1"]


def test_a_nested_run_is_outside_the_share_and_first_in_line():
    slots = Slots(size=2)
    order: list[str] = []
    with slots.held("a"):
        later = _queue(slots, "a", "a-later", order)  # a is at its share of one
        with slots.held("a"):  # started inside: the second slot at once
            assert slots.state()["held"] == {"a": 2}
        assert order == []
    later.join()
    assert order == ["a-later"]
    full = Slots(size=1, wait_s=0.05)
    with full.held("a"), pytest.raises(SandboxBusy), full.held("a"):
        pass  # no slot can free while the outer run waits for the inner (D38)
    assert full.state() == {"out": 0, "held": {}, "waiting": {}, "nested": 0}
