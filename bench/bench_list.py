"""Metric 2: list with a filter and a sort at 1M rows (100k quick), first and deep page.

Setup (not measured): publish the benchmark object through ``MetadataService``, then
bulk-insert the rows with Core ``executemany`` straight into its table; on PostgreSQL
``VACUUM ANALYZE`` the table (what autovacuum does shortly after a bulk load).

Measured: ``QueryService.list`` as a signed-in non-admin user (connection checkout,
metadata version check, permission check, filter compile, SQL, row dump, cursor),
``stage = won`` sorted by ``-amount``, 50 per page. The deep page is the page after the
first 90% of the matching rows, reached by following ``next_cursor`` 500 rows at a time
(setup; its first row is checked against an ``OFFSET`` query). The same pair is also
measured sorted by ``amount`` ascending (NULLs last) and by the object's default sort
(``-created_at``, a NOT NULL system column) for comparison.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from bench_common import (
    Result,
    backend,
    bench_tenant,
    bulk_load,
    log,
    make_services,
    median,
    percentile,
    sample_ms,
    vacuum_analyze,
)

FIRST_TARGET_MS = 15.0
DEEP_TARGET_RATIO = 1.5
DEEP_AT = 0.9
FILTER = {"field": "stage", "op": "eq", "value": "won"}
#: (label, sort): the metric, then two for comparison: ascending (NULLs last) and the
#: default sort on a NOT NULL system column.
SORTS = (("amount_desc", ["-amount"]), ("amount_asc", ["amount"]), ("created_desc", ["-created_at"]))


def _expected_id(tenant, obj, sort: list[str], position: int) -> int:
    """The id of the matching row at ``position`` (0-based) of the sort order, by ``OFFSET``."""
    t = obj.table
    order = []
    for item in sort:
        name, desc = item.lstrip("-"), item.startswith("-")
        c = t.c[name]
        if not c.nullable:
            order.append(c.desc() if desc else c.asc())
        else:  # NULL counts as the largest value on both dialects
            order.append(c.desc().nulls_first() if desc else c.asc().nulls_last())
    order.append(t.c.id.desc() if sort[-1].startswith("-") else t.c.id.asc())
    with tenant.read() as conn:
        return conn.execute(sa.select(t.c.id).where(t.c.deleted_at.is_(None), t.c.stage == FILTER["value"])
                            .order_by(*order).offset(position).limit(1)).scalar_one()


def _walk(query, ctx, sort: list[str], position: int) -> tuple[str, float]:
    """Follow ``next_cursor`` 500 rows at a time until ``position`` rows are behind;
    return that cursor and the seconds the walk took (setup, not measured)."""
    from loomwork.runtime.query import ListRequest

    t0 = time.perf_counter()
    seen, cursor = 0, None
    while seen < position:
        step = min(500, position - seen)
        page = query.list(ctx, "deal", ListRequest(filter=FILTER, sort=sort, limit=step, cursor=cursor))
        assert len(page.data) == step and page.next_cursor, "the walk ended early"
        seen += step
        cursor = page.next_cursor
    return cursor, time.perf_counter() - t0


def _bounded(fn: Callable[[], Any], samples: int, budget_ms: float = 20_000) -> list[float]:
    """``samples`` timings of ``fn`` (ms), fewer (at least 20) when it is slow: about
    ``budget_ms`` in all."""
    one = sample_ms(fn, 3, warmup=5)
    n = max(20, min(samples, int(budget_ms / max(median(one), 0.1))))
    return sample_ms(fn, n, warmup=2)


def _pair(services, ctx, tenant, obj, sort: list[str], matching: int, samples: int) -> dict[str, Any]:
    from loomwork.runtime.query import ListRequest

    query = services.query
    first_req = ListRequest(filter=FILTER, sort=sort, limit=50)
    first = _bounded(lambda: query.list(ctx, "deal", first_req), samples)
    position = int(matching * DEEP_AT)
    cursor, walk_s = _walk(query, ctx, sort, position)
    deep_req = ListRequest(filter=FILTER, sort=sort, limit=50, cursor=cursor)
    page = query.list(ctx, "deal", deep_req)
    assert page.data[0]["id"] == _expected_id(tenant, obj, sort, position), "deep page is not where OFFSET is"
    deep = _bounded(lambda: query.list(ctx, "deal", deep_req), samples)
    return {"first_ms": first, "deep_ms": deep, "position": position, "matching": matching,
            "walk_seconds": walk_s}


def _list_results(kind: str, rows: int, label: str, sort_name: str, m: dict[str, Any]) -> list[Result]:
    f50, d50 = median(m["first_ms"]), median(m["deep_ms"])
    ratio = d50 / f50
    return [
        Result(f"list.{label}.first.{kind}", f"p50 {f50:.1f} ms, p95 {percentile(m['first_ms'], 95):.1f} ms",
               "-", f"p50 <= {FIRST_TARGET_MS:.0f} ms", f50 <= FIRST_TARGET_MS,
               {"rows": rows, "sort": sort_name, **m}),
        Result(f"list.{label}.deep.{kind}",
               f"p50 {d50:.1f} ms at row {m['position']:,} of {m['matching']:,}",
               f"{ratio:.2f}x first", f"<= {DEEP_TARGET_RATIO}x first", ratio <= DEEP_TARGET_RATIO,
               {"rows": rows, "sort": sort_name, "ratio": ratio}),
    ]


def run(kind: str, rows: int, quick: bool, *, with_list: bool = True, with_add_field: bool = True,
        add_field: Callable[..., list[Result]] | None = None) -> list[Result]:
    from loomwork.runtime.context import Actor, Context
    from loomwork.runtime.tenancy import Platform

    samples = 100 if quick else 200
    out: list[Result] = []
    with backend(kind) as b:
        platform = Platform(b.url, namespace="lwbench")
        try:
            services = make_services()
            tenant, admin_ctx = bench_tenant(platform, services)
            obj = services.runtime.compiled(tenant).object("deal")
            log(f"{kind}: loading {rows:,} rows (setup, not measured)")
            secs = bulk_load(tenant, obj.table, rows)
            log(f"{kind}: loaded in {secs:.0f} s ({rows / secs:,.0f} rows/s)")
            vacuum_analyze(tenant)
            ctx = Context(tenant, Actor(1, "bench", frozenset({"user"})))
            if with_list:
                t = obj.table
                with tenant.read() as conn:
                    matching = conn.execute(sa.select(sa.func.count()).select_from(t).where(
                        t.c.deleted_at.is_(None), t.c.stage == FILTER["value"])).scalar_one()
                for label, sort in SORTS:
                    log(f"{kind}: list stage=won sort={','.join(sort)} ({matching:,} matching rows)")
                    m = _pair(services, ctx, tenant, obj, sort, matching, samples)
                    out.extend(_list_results(kind, rows, label, ",".join(sort), m))
            if with_add_field and add_field is not None:
                out.extend(add_field(kind, b, platform, services, tenant, admin_ctx, ctx, rows, quick))
        finally:
            platform.drop_all()
            platform.dispose()
    return out


