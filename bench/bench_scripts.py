"""Script hooks: the sandbox round trip, and a bulk insert with a ``before_save`` hook
against the same insert without it, side by side in one run.

``roundtrip``: a trivial ``before_save`` script (``record["checked"] = True``) sent to
a warm sandbox worker and answered, as the record service does for every hooked
write: host → worker (JSON frame), compile cache hit, guarded exec, plain-data reply,
worker → host. Target: median ≤ 100 µs.

``bulk_hook``: 10,000 records created through the record service in requests of 1,000,
into two tenants with the same object: one with a ``before_save`` script that computes
a total and cleans a code (each request's records go to the worker as one batch), one
without. Reported as the hooked side's speed relative to the plain one.
"""
from __future__ import annotations

import statistics
import time

from bench_common import Result, backend, log, make_services

ROUNDTRIP_TARGET_US = 100.0
BATCH = 1000

HOOK = """
total = Decimal(0)
for line in record["lines"] or []:
    total = total + Decimal(str(line["qty"])) * Decimal(str(line["price"]))
record["total"] = total.quantize(Decimal("0.01"))
record["code"] = (record["code"] or "").strip().upper() or None
"""

DOC = {"objects": {"quote": {"fields": {
    "name": {"type": "text", "required": True},
    "lines": {"type": "json"},
    "total": {"type": "decimal", "scale": 2},
    "code": {"type": "text"},
}}}}


def run_roundtrip(quick: bool) -> list[Result]:
    from loomwork.runtime.sandbox.budget import DEFAULTS
    from loomwork.runtime.sandbox.policy import compile_script
    from loomwork.runtime.sandbox.pool import Pool

    source = 'record["checked"] = True\n'
    request = {"name": "trivial", "source": source, "digest": compile_script(source).digest,
               "limits": DEFAULTS.as_dict(), "types": {"amount": "decimal"}, "event": "before_save",
               "now": "2026-12-04T10:00:00+00:00", "today": "2026-12-04", "user": {"id": 1},
               "record": {"id": 1, "name": "Quote 1", "amount": "12.50"}, "old": None}
    pool = Pool(size=1)
    try:
        pool.warm()
        for _ in range(200):
            pool.run(request, None, 1000)
        n = 2_000 if quick else 10_000
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            reply = pool.run(request, None, 1000)
            samples.append((time.perf_counter() - t0) * 1e6)
        assert reply["record"]["checked"] is True
    finally:
        pool.close()
    med = statistics.median(samples)
    p95 = sorted(samples)[int(len(samples) * 0.95)]
    log(f"sandbox round trip: median {med:.1f} µs, p95 {p95:.1f} µs over {n:,} runs")
    return [Result("script_roundtrip", f"median {med:.1f} µs, p95 {p95:.1f} µs ({n:,} runs)", "-",
                   f"<= {ROUNDTRIP_TARGET_US:.0f} µs median", med <= ROUNDTRIP_TARGET_US,
                   {"median_us": med, "p95_us": p95, "runs": n})]


def bodies(n: int) -> list[dict]:
    return [{"name": f"Quote {i}", "code": f" q{i} ",
             "lines": [{"qty": 1 + i % 5, "price": f"{10 + i % 90}.{i % 100:02d}"}, {"qty": 2, "price": "0.99"}]}
            for i in range(n)]


def run(kind: str, quick: bool) -> list[Result]:
    from loomwork.runtime.context import Actor, Context
    from loomwork.runtime.scripts import SCRIPTS_FLAG
    from loomwork.runtime.tenancy import Platform

    n = 10_000
    data = bodies(n)
    with backend(kind) as b:
        platform = Platform(b.url, namespace="lwbench")
        try:
            services = make_services()
            services.scripts.enabled = lambda tenant: platform.flag(tenant, SCRIPTS_FLAG)
            contexts = {}
            for name, scripts in (("hooked", {"totals": {"object": "quote", "trigger": {"event": "before_save"},
                                                         "source": HOOK}}), ("plain", {})):
                tenant = platform.create_tenant(name)
                platform.set_flag(name, SCRIPTS_FLAG, True)
                ctx = Context(tenant, Actor(1, "bench", frozenset({"admin"})))
                services.metadata.publish(ctx, {**DOC, "scripts": scripts}, comment="scripts benchmark")
                contexts[name] = ctx
            services.records.bulk_create(contexts["hooked"], "quote", data[:10])  # start the worker
            services.records.bulk_create(contexts["plain"], "quote", data[:10])
            log(f"{kind}: {n:,} records in requests of {BATCH:,}, with and without a before_save script, interleaved")
            took = {"hooked": 0.0, "plain": 0.0}
            for i in range(0, n, BATCH):
                for name in ("hooked", "plain"):
                    t0 = time.perf_counter()
                    created = services.records.bulk_create(contexts[name], "quote", data[i:i + BATCH])
                    took[name] += time.perf_counter() - t0
                    if name == "hooked":
                        assert created[0]["total"] is not None and created[0]["code"] == created[0]["code"].upper()
        finally:
            platform.dispose()
    ratio = took["plain"] / took["hooked"]
    return [Result(
        f"bulk_hook.{kind}", f"{n / took['hooked']:,.0f} rows/s hooked, {n / took['plain']:,.0f} rows/s plain",
        f"{ratio:.2f}x", "report (hooked vs plain)", None if ratio <= 0 else True,
        {"rows": n, "hooked_s": took["hooked"], "plain_s": took["plain"], "ratio": ratio})]


if __name__ == "__main__":
    import sys

    for r in run_roundtrip(quick=True):
        print(r.line())
    for k in sys.argv[1:] or ["sqlite"]:
        for r in run(k, quick=True):
            print(r.line())
