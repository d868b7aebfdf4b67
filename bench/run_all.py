"""Run every Loomwork benchmark and print one line per metric.

    python bench/run_all.py [--quick] [--only api,list,add_field,expr,rules,rollup,formula_list,ui_list,scripts]
                            [--backends sqlite,postgres]
                            [--rows N] [--json results.json] [--strict]

``make bench`` runs it at 1,000,000 rows, ``make bench QUICK=1`` at 100,000. Progress
goes to stderr; stdout has a header and one line per metric: name, measured value, the
ratio where there is a baseline, the target and PASS/FAIL (SKIP when PostgreSQL is not
reachable). PostgreSQL comes from ``LOOMWORK_BENCH_POSTGRES_URL`` (or
``LOOMWORK_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``);
the benchmarks create and drop their own database there.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

# Run as a script with PYTHONSAFEPATH=1: put this folder (only) on the path for the
# sibling benchmark modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_add_field  # noqa: E402
import bench_api  # noqa: E402
import bench_expr  # noqa: E402
import bench_formula_list  # noqa: E402
import bench_list  # noqa: E402
import bench_rollup  # noqa: E402
import bench_rules  # noqa: E402
import bench_scripts  # noqa: E402
import bench_ui_list  # noqa: E402
from bench_common import Result, header, log, pg_available  # noqa: E402

SUITES = ("api", "list", "add_field", "expr", "rules", "rollup", "formula_list", "ui_list", "scripts")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000 and shorter rounds")
    ap.add_argument("--only", default=",".join(SUITES), help=f"comma-separated subset of {', '.join(SUITES)}")
    ap.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    ap.add_argument("--rows", type=int, help="rows for the list, add-field and formula-list benchmarks (overrides --quick; "
                    "rules inserts 20,000 quick, 100,000 full)")
    ap.add_argument("--json", type=Path, help="also write every result with its raw samples to this file")
    ap.add_argument("--strict", action="store_true", help="exit with status 1 when a metric misses its target")
    args = ap.parse_args(argv)
    suites = [s for s in args.only.split(",") if s]
    unknown = set(suites) - set(SUITES)
    if unknown:
        ap.error(f"unknown suite(s): {', '.join(sorted(unknown))}")
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    backends = [k for k in args.backends.split(",") if k]
    pg_problem = pg_available() if "postgres" in backends else None
    if pg_problem:
        log(f"PostgreSQL not reachable, its metrics are skipped: {pg_problem}")

    started = time.time()
    log(f"{'quick' if args.quick else 'full'} run: {rows:,} rows; suites {', '.join(suites)}; "
        f"backends {', '.join(backends)}; {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(header(), flush=True)
    results: list[Result] = []

    def emit(new: list[Result]) -> None:
        for r in new:
            print(r.line(), flush=True)
        results.extend(new)

    for kind in backends:
        if kind == "postgres" and pg_problem:
            emit([Result(f"{s}.postgres", "not run", "-", "-", None, {"reason": pg_problem})
                  for s in suites if s != "expr"])
            continue
        if "api" in suites:
            emit(bench_api.run(kind, args.quick))
    for kind in backends:
        if kind == "postgres" and pg_problem:
            continue
        if "list" in suites or "add_field" in suites:
            emit(bench_list.run(kind, rows, args.quick, with_list="list" in suites,
                                with_add_field="add_field" in suites, add_field=bench_add_field.run))
        if "rules" in suites:
            emit(bench_rules.run(kind, args.quick))
        if "rollup" in suites:
            emit(bench_rollup.run(kind, args.quick))
        if "formula_list" in suites:
            emit(bench_formula_list.run(kind, rows, args.quick))
        if "ui_list" in suites:
            emit(bench_ui_list.run(kind, rows, args.quick))
        if "scripts" in suites:
            emit(bench_scripts.run(kind, args.quick))

    if "expr" in suites:  # in-process, no database: once, whatever the backends
        emit(bench_expr.run(args.quick))
    if "scripts" in suites:  # the sandbox round trip needs no database either
        emit(bench_scripts.run_roundtrip(args.quick))

    failed = [r.name for r in results if r.ok is False]
    log(f"done in {time.time() - started:.0f} s; {len(results)} metrics, {len(failed)} below target"
        + (f": {', '.join(failed)}" if failed else ""))
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": rows, "quick": args.quick,
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "results": [{"name": r.name, "value": r.value, "ratio": r.ratio, "target": r.target, "ok": r.ok,
                         "data": r.data} for r in results],
        }, indent=2, default=str))
    return 1 if args.strict and failed else 0


if __name__ == "__main__":
    sys.exit(main())
