"""Roll-ups on a parent with 100,000 children against a parent with 10, side by side.

Setup (not measured): an ``account`` with four roll-ups over ``deal`` (count, sum of
amount, max of amount, a filtered count); 100,000 deals of one account and 10 of
another, bulk-loaded with ``executemany``, then the roll-ups computed by
``loomwork meta recompute`` (``MetadataService.recompute``).

Measured, interleaved: creating a deal, changing its amount and deleting it through
the record service, under the big parent and under the small one. Reported apart, for
information: an update that takes away the parent's maximum (the one case that reads
the children: the maximum is recomputed with one aggregate). The roll-ups keep
the cost of a child write independent of the number of siblings (counts and sums move
by deltas, a maximum is only recomputed when the maximum itself leaves), so the ratio
big/small should be about 1. Then, on PostgreSQL, 4 threads create children of the
big parent at once: every parent update is one short row update, so the writers queue
on it without deadlocks or timeouts, and the count comes out exact.
"""
from __future__ import annotations

import copy
import datetime as dt
import threading
import time
from decimal import Decimal

import sqlalchemy as sa
from bench_common import Result, backend, log, make_services, median, percentile

BIG, SMALL = 100_000, 10
TARGET_RATIO = 2.0

DOC = {"objects": {
    "account": {"fields": {
        "name": {"type": "text"},
        "deals": {"type": "rollup", "object": "deal", "via": "account", "function": "count"},
        "total": {"type": "rollup", "object": "deal", "via": "account", "function": "sum", "field": "amount"},
        "largest": {"type": "rollup", "object": "deal", "via": "account", "function": "max", "field": "amount"},
        "won": {"type": "rollup", "object": "deal", "via": "account", "function": "count",
                "filter": 'stage == "won"'},
    }},
    "deal": {"fields": {
        "name": {"type": "text"},
        "account": {"type": "lookup", "target": "account", "on_delete": "cascade"},
        "amount": {"type": "currency"},
        "stage": {"type": "choice", "options": [{"value": "open"}, {"value": "won"}]},
    }},
}}


def _load(tenant, table: sa.Table, account: int, n: int) -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    for start in range(0, n, 10_000):
        rows = [{"created_at": now, "updated_at": now, "row_version": 1, "name": f"d{i}", "account": account,
                 "amount": Decimal(i % 5000), "stage": "won" if i % 3 == 0 else "open"}
                for i in range(start, min(n, start + 10_000))]
        with tenant.write() as conn:
            conn.execute(table.insert(), rows)


def run(kind: str, quick: bool) -> list[Result]:
    from loomwork.runtime.context import Actor, Context
    from loomwork.runtime.tenancy import Platform

    big = 20_000 if quick else BIG
    rounds = 30 if quick else 60
    with backend(kind) as b:
        platform = Platform(b.url, namespace="lwbench")
        try:
            services = make_services()
            tenant = platform.create_tenant("rollup")
            ctx = Context(tenant, Actor(1, "bench", frozenset({"admin"})))
            services.metadata.publish(ctx, copy.deepcopy(DOC))
            rec = services.records
            a_big = rec.create(ctx, "account", {"name": "big"})["id"]
            a_small = rec.create(ctx, "account", {"name": "small"})["id"]
            table = services.runtime.compiled(tenant).object("deal").table
            t0 = time.perf_counter()
            _load(tenant, table, a_big, big)
            _load(tenant, table, a_small, SMALL)
            services.metadata.recompute(ctx, "account")
            log(f"{kind}: {big:,} + {SMALL} children loaded and rolled up in {time.perf_counter() - t0:.1f} s")
            if kind == "postgres":
                with tenant.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                    conn.exec_driver_sql(f'VACUUM ANALYZE "{tenant.schema}"."deal"')
            assert rec.get(ctx, "account", a_big)["deals"] == big

            timings: dict[str, list[float]] = {"big": [], "small": []}
            for i in range(rounds):
                for label, parent in (("big", a_big), ("small", a_small)) if i % 2 else (("small", a_small),
                                                                                        ("big", a_big)):
                    t0 = time.perf_counter()
                    d = rec.create(ctx, "deal", {"name": "x", "account": parent, "amount": "50", "stage": "won"})
                    rec.update(ctx, "deal", d["id"], {"amount": "60"})
                    rec.delete(ctx, "deal", d["id"])
                    timings[label].append((time.perf_counter() - t0) * 1000)
            # The worst case, for information: the maximum itself leaves, so the parent's
            # maximum is recomputed over all its children.
            worst = []
            for _ in range(rounds // 3):
                d = rec.create(ctx, "deal", {"name": "x", "account": a_big, "amount": "9999"})
                t0 = time.perf_counter()
                rec.update(ctx, "deal", d["id"], {"amount": "1"})
                worst.append((time.perf_counter() - t0) * 1000)
                rec.delete(ctx, "deal", d["id"])
            after = rec.get(ctx, "account", a_big)
            assert (after["deals"], after["largest"]) == (big, "4999.00"), after

            storm = ""
            if kind == "postgres":
                errors: list[BaseException] = []
                per_thread = 50

                def writer() -> None:
                    try:
                        for _ in range(per_thread):
                            rec.create(ctx, "deal", {"name": "t", "account": a_big, "amount": "1"})
                    except BaseException as exc:  # reported below
                        errors.append(exc)

                threads = [threading.Thread(target=writer) for _ in range(4)]
                t0 = time.perf_counter()
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                took = time.perf_counter() - t0
                count = rec.get(ctx, "account", a_big)["deals"]
                ok = not errors and count == big + 4 * per_thread
                storm = (f"; 4 threads x {per_thread} creates: {4 * per_thread / took:,.0f}/s, "
                         f"{'no errors, count exact' if ok else f'{len(errors)} errors, count {count}'}")
                if not ok:
                    raise AssertionError(f"concurrent child writes failed: {errors[:1]} count={count}")
        finally:
            platform.dispose()
    b50, s50 = median(timings["big"]), median(timings["small"])
    ratio = b50 / s50
    return [Result(
        f"rollup_100k.{kind}",
        f"create+update+delete p50 {b50:.1f} ms ({big:,} siblings) vs {s50:.1f} ms ({SMALL}); "
        f"max leaving: {median(worst):.1f} ms{storm}",
        f"{ratio:.2f}x", f"<= {TARGET_RATIO}x", ratio <= TARGET_RATIO,
        {"children": big, "worst_ms": worst, "big_ms": timings["big"], "small_ms": timings["small"],
         "big_p95": percentile(timings["big"], 95), "small_p95": percentile(timings["small"], 95)})]


if __name__ == "__main__":
    import sys

    quick = "--quick" in sys.argv
    for k in [a for a in sys.argv[1:] if not a.startswith("--")] or ["sqlite"]:
        for r in run(k, quick):
            print(r.line())
