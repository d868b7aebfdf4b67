"""The password-check throttle: counted in the platform registry before each check, so
parallel guesses and several processes share one limit; windows move with the clock."""
from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from loomwork.metadata.errors import TooManyAttempts
from loomwork.runtime.context import Clock
from loomwork.runtime.tenancy import Platform, attempts
from loomwork.runtime.throttle import AttemptThrottle, account, address

T0 = dt.datetime(2030, 1, 1, 9, 0, tzinfo=dt.UTC)
SAM, HERE = account("main", "sam"), address("10.0.0.1")


def rows(platform: Platform) -> list[tuple]:
    with platform.registry_engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(attempts.c.kind, attempts.c.subject, attempts.c.checks)
                                                  .order_by(attempts.c.kind, attempts.c.subject))]


def taken(throttle: AttemptThrottle, keys, now) -> bool:
    try:
        throttle.reserve(keys, now)
    except TooManyAttempts:
        return False
    return True


def test_checks_are_counted_before_they_run_and_the_window_moves_with_the_clock(lw_platform):
    clock = Clock(T0)
    throttle = AttemptThrottle(lw_platform, 3, 300)
    assert [taken(throttle, (SAM, HERE), clock()) for _ in range(5)] == [True, True, True, False, False]
    assert rows(lw_platform) == [("account", "sam", 3), ("address", "10.0.0.1", 3)]  # refusals count nothing
    clock.advance(seconds=120)
    with pytest.raises(TooManyAttempts) as info:
        throttle.reserve((SAM, HERE), clock())
    assert info.value.retry_after == 180 and info.value.headers == {"Retry-After": "180"}
    assert info.value.status == 429
    clock.advance(seconds=179)
    assert not taken(throttle, (SAM, HERE), clock())
    clock.advance(seconds=1)  # the window has ended: a new one starts with this check
    assert taken(throttle, (SAM, HERE), clock())
    assert rows(lw_platform) == [("account", "sam", 1), ("address", "10.0.0.1", 1)]


def test_an_address_has_ten_times_an_accounts_limit_and_refusing_one_key_counts_none(lw_platform):
    throttle = AttemptThrottle(lw_platform, 2, 300)
    for i in range(20):
        assert taken(throttle, (account("main", f"ghost{i}"), HERE), T0)
    assert not taken(throttle, (account("main", "fresh"), HERE), T0)  # the address is full
    assert ("account", "fresh", 1) not in rows(lw_platform)  # and the account's check was given back
    assert taken(throttle, (account("main", "fresh"), address("10.0.0.2")), T0)


def test_a_success_forgets_the_account_and_returns_the_address_check(lw_platform):
    throttle = AttemptThrottle(lw_platform, 3, 300)
    for _ in range(2):
        throttle.reserve((SAM, HERE), T0)
    throttle.reserve((SAM, HERE), T0)
    throttle.succeeded((SAM, HERE))
    assert rows(lw_platform) == [("address", "10.0.0.1", 2)]
    assert [taken(throttle, (SAM, HERE), T0) for _ in range(4)] == [True, True, True, False]


def test_accounts_are_per_tenant_and_long_names_are_cut():
    assert account("main", "sam") != account("other", "sam")
    long = account("t" * 500, "u" * 5000)
    assert (len(long.tenant), len(long.subject)) == (64, 200)
    assert address(None).subject == ""


def test_parallel_checks_through_two_platforms_over_one_database_stop_at_the_limit(lw_database_url, lw_platform):
    """Two processes' worth of engines (as two gunicorn workers have) over the same
    registry: 40 checks sent at once, exactly the limit taken."""
    other = Platform(lw_database_url, namespace=lw_platform.namespace)
    try:
        throttles = [AttemptThrottle(p, 10, 300) for p in (lw_platform, other)]
        start = threading.Barrier(40)

        def guess(i: int) -> bool:
            start.wait()
            return taken(throttles[i % 2], (SAM, address(f"10.0.0.{i}")), T0)

        with ThreadPoolExecutor(40) as pool:
            results = list(pool.map(guess, range(40)))
        assert results.count(True) == 10
        assert ("account", "sam", 10) in rows(lw_platform)
    finally:
        other.dispose()


def test_rows_of_ended_windows_are_deleted(lw_platform):
    clock = Clock(T0)
    throttle = AttemptThrottle(lw_platform, 3, 300)
    throttle.reserve((account("main", "once"), HERE), clock())
    clock.advance(seconds=200)
    throttle.reserve((SAM, address("10.0.0.9")), clock())
    clock.advance(seconds=150)  # once's window ended; sam's did not
    throttle.reserve((account("main", "later"), address("10.0.0.9")), clock())
    assert rows(lw_platform) == [("account", "later", 1), ("account", "sam", 1), ("address", "10.0.0.9", 2)]


def test_drop_tenant_forgets_its_accounts(lw_platform):
    lw_platform.create_tenant("gone")
    throttle = AttemptThrottle(lw_platform, 3, 300)
    throttle.reserve((account("gone", "sam"), HERE), T0)
    lw_platform.drop_tenant("gone")
    assert rows(lw_platform) == [("address", "10.0.0.1", 1)]


def test_an_older_registry_gains_the_table(lw_database_url, lw_platform):
    with lw_platform.registry_write() as conn:
        attempts.drop(conn)
    again = Platform(lw_database_url, namespace=lw_platform.namespace)
    try:
        AttemptThrottle(again, 3, 300).reserve((SAM, HERE), T0)
        assert rows(again) == [("account", "sam", 1), ("address", "10.0.0.1", 1)]
    finally:
        again.dispose()
