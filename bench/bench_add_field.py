"""Metric 3: add a field to the 1M-row object with ``MetadataService.publish``.

Runs on the table :mod:`bench_list` loaded. Each publish adds one nullable ``choice``
field to the current document (validate, plan, ``ALTER TABLE ... ADD COLUMN``, store
the version, one transaction); the wall time of the whole ``publish`` call is
measured, several times with a new field each time.

"No table rewrite" is shown on PostgreSQL by the table's ``relfilenode`` (a rewrite
writes a new file) and its size; on SQLite by the database file plus WAL (after a
checkpoint, so the WAL starts empty), which would grow by about the table's size if
rows were rewritten. The first list call after a publish (which recompiles the
metadata) is timed too, for information.
"""
from __future__ import annotations

import copy
import time

import sqlalchemy as sa
from bench_common import Result, dir_size, fmt_bytes, log, median

TARGET_MS = 200.0


def _pg_table(conn: sa.Connection, schema: str) -> tuple[int, int]:
    row = conn.execute(sa.text(
        "SELECT c.relfilenode, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = :s AND c.relname = 'deal'"), {"s": schema}).one()
    return int(row[0]), int(row[1])


def _sqlite_checkpoint(tenant) -> None:
    with tenant.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")


def _sqlite_table_bytes(tenant) -> int | None:
    try:
        with tenant.engine.connect() as conn:
            return conn.exec_driver_sql("SELECT SUM(pgsize) FROM dbstat WHERE name = 'deal'").scalar()
    except sa.exc.OperationalError:  # SQLite built without the dbstat table
        return None


def run(kind: str, b, platform, services, tenant, admin_ctx, user_ctx, rows: int, quick: bool) -> list[Result]:
    from loomwork.runtime.query import ListRequest

    repeats = 3 if quick else 5
    db_dir = b.root / "tenants" if b.root else None
    if kind == "postgres":
        with tenant.engine.connect() as conn:
            before_node, table_bytes = _pg_table(conn, tenant.schema)
        size_before = table_bytes
    else:
        _sqlite_checkpoint(tenant)
        table_bytes = _sqlite_table_bytes(tenant) or 0
        size_before = dir_size(db_dir)
    timings, first_calls = [], []
    log(f"{kind}: add a field to deal ({rows:,} rows) x {repeats}")
    for i in range(repeats):
        doc = copy.deepcopy(services.metadata.current(admin_ctx).doc)
        name = f"priority_{i + 1}"
        doc["objects"]["deal"]["fields"][name] = {
            "type": "choice", "label": f"Priority {i + 1}", "options": [{"value": "high"}, {"value": "low"}]}
        t0 = time.perf_counter()
        version = services.metadata.publish(admin_ctx, doc, comment=f"bench: add {name}")
        timings.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        page = services.query.list(user_ctx, "deal", ListRequest(fields=[name], limit=50))
        first_calls.append((time.perf_counter() - t0) * 1000)
        assert page.data and name in page.data[0] and page.data[0][name] is None, "new field not visible"
        assert services.runtime.compiled(tenant).version == version
    if kind == "postgres":
        with tenant.engine.connect() as conn:
            after_node, size_after = _pg_table(conn, tenant.schema)
        rewritten = after_node != before_node
        evidence = (f"relfilenode {'changed' if rewritten else 'same'}, "
                    f"size {fmt_bytes(size_after - size_before)}")
    else:
        size_after = dir_size(db_dir)  # database + WAL: the ALTERs are still in the WAL
        grew = size_after - size_before
        rewritten = grew > max(table_bytes, 1) * 0.5
        evidence = f"db+WAL +{fmt_bytes(grew)}, table {fmt_bytes(table_bytes)}"
    med, worst = median(timings), max(timings)
    ok = worst <= TARGET_MS and not rewritten
    return [Result(
        f"add_field.{kind}", f"p50 {med:.0f} ms, max {worst:.0f} ms ({repeats}x); {evidence}",
        "-", f"<= {TARGET_MS:.0f} ms, no rewrite", ok,
        {"rows": rows, "publish_ms": timings, "first_list_after_publish_ms": first_calls,
         "rewritten": rewritten, "size_before": size_before, "size_after": size_after, "table_bytes": table_bytes},
    )]


