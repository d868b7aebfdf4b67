"""Metric 1: the generated REST API against a hand-written Flask + Core endpoint.

Both apps run in this process, each behind its own werkzeug test client, over the
same table in the same database (so they share data, indexes and the connection
settings); no HTTP server or load generator competes for the two cores. Each
operation runs in many short rounds; in every round both apps get the same time
slice (0.25 s) back to back, alternating which goes first, so machine noise (WAL
checkpoints, other processes, GC) hits both alike. Throughput is requests per second
of one thread (median round); the ratio is the median of the per-round ratios
generated / hand-written.
"""
from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from bench_common import (
    SEED,
    Result,
    backend,
    bench_tenant,
    bulk_load,
    create_bodies,
    log,
    median,
    vacuum_analyze,
)
from handwritten_app import create_handwritten_app

PRELOAD_ROWS = 20_000
TARGET_RATIO = 0.8


def _setup(b):
    import secrets

    from loomwork import create_app

    inst = Path(b.root).parent / "inst" if b.root else None
    app = create_app({
        "database_url": b.url, "namespace": f"lwbench{secrets.token_hex(3)}", "secret_key": "bench-secret",
        "instance_dir": str(inst or "/nonexistent"), "secure_cookies": False,
    })
    st = app.extensions["loomwork"]
    tenant, ctx = bench_tenant(st.platform, st.services)
    user = st.services.users.create(ctx, "integration", "bench-password-1", roles=("user",))
    token = st.services.users.create_token(ctx, user.id, "bench")
    obj = st.services.runtime.compiled(tenant).object("deal")
    bulk_load(tenant, obj.table, PRELOAD_ROWS, progress=False)
    vacuum_analyze(tenant)
    if b.kind == "sqlite":
        hw_url = f"sqlite:///{b.root / 'tenants' / 'bench.db'}"
    else:
        hw_url = tenant.engine.url.render_as_string(hide_password=False)
    hw = create_handwritten_app(hw_url, tenant.schema)
    with tenant.read() as conn:
        t = obj.table
        live = [r[0] for r in conn.execute(sa.select(t.c.id).where(t.c.deleted_at.is_(None)))]
    return app, st, tenant, hw, token, live


def _check_same(gen, hw, ids: list[int]) -> None:
    """Both apps must answer the same records (a fair comparison does the same work)."""
    for rid in ids[:20]:
        a, b = gen(f"/api/v1/data/deal/{rid}"), hw(f"/hw/deal/{rid}")
        assert a.status_code == b.status_code == 200, (a.status_code, b.status_code)
        assert a.get_json() == b.get_json(), (a.get_json(), b.get_json())
        assert a.headers["ETag"] == b.headers["ETag"]
    for stage in ("won", "lost", "proposal"):
        a = gen(f"/api/v1/data/deal?stage={stage}&sort=-amount&limit=50").get_json()
        b = hw(f"/hw/deal?stage={stage}&sort=-amount&limit=50").get_json()
        assert a["data"] == b["data"], "list pages differ"


def _rounds(ops: dict[str, Callable[[int], Any]], rounds: int, seconds: float) -> dict[str, list[float]]:
    """Requests per second of each op in each round. A round gives every op the same
    time slice back to back, alternating which goes first."""
    rates: dict[str, list[float]] = {name: [] for name in ops}
    counters = dict.fromkeys(ops, 0)
    names = list(ops)
    for name in names:  # warm caches, pools and the compiled metadata
        for _ in range(50):
            ops[name](counters[name])
            counters[name] += 1
    gc.collect()
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn = ops[name]
            n, i = 0, counters[name]
            t0 = time.perf_counter()
            deadline = t0 + seconds
            while True:
                fn(i + n)
                n += 1
                if n % 4 == 0 and time.perf_counter() >= deadline:
                    break
            rates[name].append(n / (time.perf_counter() - t0))
            counters[name] += n
    return rates


def run(kind: str, quick: bool) -> list[Result]:
    rounds, seconds = (12, 0.25) if quick else (30, 0.25)
    out = []
    with backend(kind) as b:
        app, st, tenant, hw_app, token, live = _setup(b)
        try:
            auth = {"Authorization": f"Bearer {token}"}
            gc_, hc_ = app.test_client(), hw_app.test_client()

            def gen(path, **kw):
                return gc_.open(path, headers=auth, **kw)

            def hw(path, **kw):
                return hc_.open(path, headers=auth, **kw)

            _check_same(gen, hw, live)
            bodies = create_bodies(1000)
            rnd = random.Random(SEED + 2)
            ids = [rnd.choice(live) for _ in range(5000)]
            stages = ["won", "lost", "proposal", "negotiation", "qualification", "prospecting"]

            def expect(resp, status):
                if resp.status_code != status:
                    raise AssertionError(f"{resp.status_code}: {resp.get_data(as_text=True)[:300]}")

            cases = {
                "create": {
                    "generated": lambda i: expect(gen("/api/v1/data/deal", method="POST", json=bodies[i % 1000]), 201),
                    "hand-written": lambda i: expect(hw("/hw/deal", method="POST", json=bodies[i % 1000]), 201),
                },
                "get": {
                    "generated": lambda i: expect(gen(f"/api/v1/data/deal/{ids[i % 5000]}"), 200),
                    "hand-written": lambda i: expect(hw(f"/hw/deal/{ids[i % 5000]}"), 200),
                },
                "list": {
                    "generated": lambda i: expect(
                        gen(f"/api/v1/data/deal?stage={stages[i % 6]}&sort=-amount&limit=50"), 200),
                    "hand-written": lambda i: expect(
                        hw(f"/hw/deal?stage={stages[i % 6]}&sort=-amount&limit=50"), 200),
                },
            }
            for op, sides in cases.items():
                log(f"{kind}: {op}: {rounds} rounds x {seconds:.2f} s per app")
                rates = _rounds(sides, rounds, seconds)
                g, h = median(rates["generated"]), median(rates["hand-written"])
                # The median of the per-round ratios: each round's pair ran back to back.
                ratio = median([a / b for a, b in zip(rates["generated"], rates["hand-written"], strict=True)])
                label = {"create": "create", "get": "get by id", "list": "list 50, filter+sort"}[op]
                out.append(Result(
                    f"api.{op}.{kind}",
                    f"gen {g:,.0f} req/s | hand {h:,.0f} req/s",
                    f"{ratio:.2f}x gen/hand",
                    f">= {TARGET_RATIO:.1f}x ({label})",
                    ratio >= TARGET_RATIO,
                    {"generated_rps": rates["generated"], "handwritten_rps": rates["hand-written"],
                     "ratio": ratio, "rounds": rounds, "seconds_per_round": seconds},
                ))
        finally:
            hw_app.extensions["hw_engine"].dispose()
            st.platform.drop_all()
            st.platform.dispose()
    return out
