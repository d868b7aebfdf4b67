"""Shared pieces of the benchmarks: the benchmark object, deterministic data, fast
loading, throw-away databases, timing and the one-line result format."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

SEED = 20260131
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
STAGES = ["prospecting", "qualification", "proposal", "negotiation", "won", "lost"]
NAMES = ["Platform", "Renewal", "Pilot", "Expansion", "Support", "Migration", "Training", "Audit"]

#: The benchmark object: the sample CRM's ``deal`` without lookups and autonumber, so the
#: hand-written baseline can do exactly the same work (a few typed fields, a choice with
#: a default, decimals, a date, a composite index and the default sort index).
DEAL = {
    "label": "Deal",
    "title_field": "name",
    "search_fields": ["name"],
    "default_sort": ["-created_at"],
    "fields": {
        "name": {"type": "text", "required": True, "max_length": 200},
        "amount": {"type": "currency", "precision": 14, "scale": 2, "currency": "USD", "min": 0},
        "stage": {"type": "choice", "required": True, "default": "prospecting",
                  "options": [{"value": s} for s in STAGES]},
        "probability": {"type": "percent", "min": 0, "max": 100},
        "close_date": {"type": "date"},
    },
    "indexes": {"stage_amount": {"fields": ["stage", "amount"]}},
}
BENCH_DOC = {"objects": {"deal": DEAL}, "roles": {}, "packages": {}}


def log(msg: str) -> None:
    """Progress goes to stderr; stdout carries only the result lines."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- results -----------------------------------------------------------------
@dataclass
class Result:
    name: str
    value: str
    ratio: str
    target: str
    ok: bool | None
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        return f"{self.name:<30} {self.value:<56} {self.ratio:<17} {self.target:<30} {verdict}"


def header() -> str:
    return f"{'metric':<30} {'measured':<56} {'ratio':<17} {'target':<30} result"


# -- timing ------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def sample_ms(fn: Callable[[], Any], n: int, warmup: int = 5) -> list[float]:
    """Run ``fn`` ``warmup`` + ``n`` times; the ``n`` timings in milliseconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- data --------------------------------------------------------------------
BASE_TIME = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
BASE_DATE = dt.date(2024, 1, 1)


def deal_rows(n: int, seed: int = SEED, start: int = 0) -> Iterator[dict[str, Any]]:
    """``n`` deal rows as column values, the same for the same seed.

    About 2% have no amount (NULLs sort first in ``-amount``), 1% are soft-deleted,
    ``created_at`` rises by 30 s per row from 2024-01-01.
    """
    rnd = random.Random(seed)
    choice, rand, randint = rnd.choice, rnd.random, rnd.randint
    for i in range(start, start + n):
        ts = BASE_TIME + dt.timedelta(seconds=30 * i)
        yield {
            "created_at": ts, "updated_at": ts, "created_by": 1, "updated_by": 1, "owner_id": 1,
            "row_version": 1, "deleted_at": ts if rand() < 0.01 else None,
            "name": f"{choice(NAMES)} #{i + 1}",
            "amount": None if rand() < 0.02 else Decimal(randint(100_000, 50_000_000)).scaleb(-2),
            "stage": choice(STAGES),
            "probability": Decimal(choice((0, 10, 25, 50, 75, 100))),
            "close_date": BASE_DATE + dt.timedelta(days=randint(0, 900)),
        }


def create_bodies(n: int, seed: int = SEED + 1) -> list[dict[str, Any]]:
    """JSON bodies for create requests (what a client would send)."""
    rnd = random.Random(seed)
    return [{"name": f"{rnd.choice(NAMES)} bench {i}", "amount": f"{rnd.randint(1_000, 500_000)}.{rnd.randint(0, 99):02d}",
             "stage": rnd.choice(STAGES), "probability": str(rnd.choice((10, 25, 50, 75))),
             "close_date": (BASE_DATE + dt.timedelta(days=rnd.randint(0, 900))).isoformat()}
            for i in range(n)]


def bulk_load(tenant, table: sa.Table, n: int, *, seed: int = SEED, batch: int = 10_000,
              progress: bool = True, rows: Iterator[dict[str, Any]] | None = None) -> float:
    """Insert ``n`` rows with Core ``executemany`` in batches; returns seconds taken.

    This is setup, not a measurement: it bypasses the record service on purpose.
    """
    t0 = time.perf_counter()
    rows = rows if rows is not None else deal_rows(n, seed)
    done = 0
    while done < n:
        chunk = [next(rows) for _ in range(min(batch, n - done))]
        with tenant.write() as conn:
            conn.execute(table.insert(), chunk)
        done += len(chunk)
        if progress and (done % 200_000 == 0 or done == n) and n >= 200_000:
            log(f"  loaded {done:,}/{n:,} rows ({time.perf_counter() - t0:.0f} s)")
    return time.perf_counter() - t0


# -- databases ---------------------------------------------------------------
def pg_admin_url() -> str:
    return (os.environ.get("LOOMWORK_BENCH_POSTGRES_URL") or os.environ.get("LOOMWORK_TEST_POSTGRES_URL")
            or DEFAULT_PG_URL)


def pg_available() -> str | None:
    """Why PostgreSQL cannot be used, or ``None`` when it can."""
    from loomwork.runtime.tenancy import normalise_url

    try:
        engine = sa.create_engine(normalise_url(pg_admin_url()))
        with engine.connect():
            pass
        engine.dispose()
        return None
    except Exception as exc:  # any driver or network failure means "not available"
        return f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:120]}"


@dataclass
class Backend:
    """A throw-away database: a temporary SQLite directory or a temporary PostgreSQL database."""

    kind: str  # "sqlite" | "postgres"
    url: str
    cleanup: Callable[[], None]
    root: Path | None = None  # the SQLite instance directory


@contextlib.contextmanager
def backend(kind: str) -> Iterator[Backend]:
    if kind == "sqlite":
        tmp = Path(tempfile.mkdtemp(prefix="lwbench-"))
        try:
            yield Backend("sqlite", f"sqlite:///{tmp / 'instance'}", lambda: None, tmp / "instance")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    from loomwork.runtime.tenancy import normalise_url

    admin_url = normalise_url(pg_admin_url())
    name = f"lwbench_{secrets.token_hex(4)}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield Backend("postgres", url, lambda: None)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def make_services():
    from loomwork.plugin_manager import make_plugin_manager, make_runtime
    from loomwork.runtime.services import Services

    return Services(make_runtime(make_plugin_manager(entry_points=False)))


def bench_tenant(platform, services, name: str = "bench"):
    """Create tenant ``name`` with the benchmark object published; return (tenant, system ctx)."""
    from loomwork.runtime.context import Actor, Context

    tenant = platform.create_tenant(name)
    ctx = Context(tenant, Actor.system())
    services.metadata.publish(ctx, BENCH_DOC, comment="benchmark object")
    return tenant, ctx


def vacuum_analyze(tenant, table: str = "deal") -> None:
    """PostgreSQL: what autovacuum does shortly after a bulk load (statistics for the
    planner, visibility map). SQLite is left as the platform leaves it: no ANALYZE."""
    if tenant.dialect != "postgresql":
        return
    with tenant.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'VACUUM ANALYZE "{tenant.schema}"."{table}"')


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"
