"""Bulk insert through the record service with 5 validation rules and 2 stored formulas,
against plain SQLAlchemy ``executemany`` of the same rows, side by side in one run.

Both sides insert the same N rows in requests of 1,000 records, one transaction per
request. The record service does all its work per record: parse and type-check the
JSON body (marshmallow), apply defaults, evaluate the 5 rules and 2 formulas, write
the row and its history entry. The baseline inserts the finished column values
(formulas precomputed) with one ``executemany`` per request: the floor any platform
doing the same work would sit on. Target: Loomwork at >= 0.25x the baseline's speed.
"""
from __future__ import annotations

import copy
import random
import time

import sqlalchemy as sa
from bench_common import BENCH_DOC, NAMES, STAGES, Result, backend, log, make_services

TARGET_RATIO = 0.25
BATCH = 1000

RULES = {
    "amount_positive": {"condition": "amount <= 0", "message": "Amount must be positive", "field": "amount"},
    "probability_range": {"condition": "probability > 100 or probability < 0", "message": "0 to 100",
                          "field": "probability"},
    "won_is_certain": {"condition": 'stage == "won" and probability < 100', "message": "Won deals are certain",
                       "field": "probability"},
    "close_in_range": {"condition": 'close_date < date("2020-01-01") or close_date > date("2030-12-31")',
                       "message": "Close date out of range", "field": "close_date"},
    "name_shape": {"condition": "len(trim(name)) < 3 or starts_with(name, \"-\")", "message": "Name too short",
                   "field": "name"},
}
FORMULAS = {
    "weighted": {"type": "formula", "result_type": "decimal", "stored": True,
                 "expression": "round(amount * coalesce(probability, 0) / 100, 2)"},
    "quarter": {"type": "formula", "result_type": "text", "stored": True,
                "expression": 'concat("Q", case(month(close_date), 1, "1", 2, "1", 3, "1", 4, "2", 5, "2", 6, "2", '
                              '7, "3", 8, "3", 9, "3", "4"))'},
}


def doc() -> dict:
    d = copy.deepcopy(BENCH_DOC)
    deal = d["objects"]["deal"]
    deal["fields"].update(copy.deepcopy(FORMULAS))
    deal["validations"] = copy.deepcopy(RULES)
    return d


def bodies(n: int, seed: int = 7) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        stage = rnd.choice(STAGES)
        out.append({"name": f"{rnd.choice(NAMES)} {i}", "amount": f"{rnd.randint(1_000, 500_000)}.{rnd.randint(0, 99):02d}",
                    "stage": stage, "probability": "100" if stage == "won" else str(rnd.choice((10, 25, 50, 75))),
                    "close_date": f"2026-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"})
    return out


def run(kind: str, quick: bool, rows: int | None = None) -> list[Result]:
    from loomwork.runtime.context import Actor, Context
    from loomwork.runtime.tenancy import Platform

    n = rows or (20_000 if quick else 100_000)
    data = bodies(n)
    with backend(kind) as b:
        platform = Platform(b.url, namespace="lwbench")
        try:
            services = make_services()
            tenants = []
            for name in ("rules", "plain"):
                tenant = platform.create_tenant(name)
                ctx = Context(tenant, Actor(1, "bench", frozenset({"admin"})))
                services.metadata.publish(ctx, doc(), comment="rules benchmark")
                tenants.append((tenant, ctx))
            (tenant, ctx), (plain, _) = tenants
            table = services.runtime.compiled(tenant).object("deal").table
            log(f"{kind}: {n:,} rows through the record service (5 rules, 2 stored formulas), "
                f"interleaved with executemany of the same rows into a twin table")
            ours = base = 0.0
            for i in range(0, n, BATCH):
                t0 = time.perf_counter()
                services.records.bulk_create(ctx, "deal", data[i:i + BATCH])
                ours += time.perf_counter() - t0
                # The baseline writes exactly what the record service stored.
                with tenant.read() as conn:
                    stored = [dict(r) for r in conn.execute(
                        sa.select(table).where(table.c.id > i).order_by(table.c.id).limit(BATCH)).mappings()]
                t0 = time.perf_counter()
                with plain.write() as conn:
                    conn.execute(table.insert(), stored)
                base += time.perf_counter() - t0
        finally:
            platform.dispose()
    ratio = base / ours
    return [Result(
        f"bulk_rules.{kind}", f"{n / ours:,.0f} rows/s (executemany {n / base:,.0f} rows/s)",
        f"{ratio:.2f}x", f">= {TARGET_RATIO}x executemany", ratio >= TARGET_RATIO,
        {"rows": n, "loomwork_s": ours, "executemany_s": base, "ratio": ratio})]


if __name__ == "__main__":
    import sys

    for k in sys.argv[1:] or ["sqlite"]:
        for r in run(k, quick=True):
            print(r.line())
