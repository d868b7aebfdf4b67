"""Metric 4: evaluating an expression (a rule) against a hand-written Python lambda.

Two rules on the benchmark object's fields, compiled once with the built-in function
library: the simple ``amount > 1000 and stage == "won"`` and a 10-clause rule mixing
comparisons (decimal against number literals), ``in``, functions and ``and``/``or``.
Each hand-written lambda does the same work on the row dict, NULL checks included,
and must agree with the compiled rule on every row before anything is timed.

The evaluation environment (:class:`Env`) of each row is built beforehand, as the
record service builds one per write and evaluates every rule against it; the call
measured is ``expression(env)``. Both sides run over the same rows in many short
rounds, back to back, alternating which goes first; the value is the median of the
rounds' microseconds per call, the ratio the median of the per-round ratios.

    python bench/bench_expr.py [--quick] [--json results.json] [--strict]

or as the ``expr`` suite of ``bench/run_all.py``. No database is involved.
"""
from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Run as a script with PYTHONSAFEPATH=1: put this folder (only) on the path for the
# sibling benchmark modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import BASE_TIME, DEAL, STAGES, Result, deal_rows, header, log, median  # noqa: E402

from loomwork.runtime.expr import (  # noqa: E402
    Env,
    FieldInfo,
    Scope,
    builtin_functions,
    compile_expression,
)

TARGET_US = 5.0

SIMPLE = 'amount > 1000 and stage == "won"'

TEN_CLAUSES = """amount >= 1000 and amount < 500000
and stage in ["prospecting", "qualification", "proposal", "negotiation", "won"]
and (probability >= 10 or stage == "won")
and close_date >= date("2024-01-01")
and not is_blank(name)
and (starts_with(name, "Platform") or contains(name, "#"))
and len(name) <= 200
and year(close_date) >= 2024
and round(amount * probability / 100, 2) >= 0"""


def simple_by_hand(r: dict[str, Any]) -> bool:
    amount = r["amount"]
    return amount is not None and amount > 1000 and r["stage"] == "won"


_OPEN = frozenset({"prospecting", "qualification", "proposal", "negotiation", "won"})
_FROM = dt.date(2024, 1, 1)


def ten_by_hand(r: dict[str, Any]) -> bool:
    amount, stage, prob, close, name = r["amount"], r["stage"], r["probability"], r["close_date"], r["name"]
    return bool(
        amount is not None and 1000 <= amount < 500000
        and stage in _OPEN
        and (prob is not None and prob >= 10 or stage == "won")
        and close is not None and close >= _FROM
        and name
        and (name.startswith("Platform") or "#" in name)
        and len(name) <= 200
        and close.year >= 2024
        and prob is not None and round(amount * prob / 100, 2) >= 0
    )


RULES: dict[str, tuple[str, str, Callable[[dict[str, Any]], bool]]] = {
    "simple": ("typical rule", SIMPLE, simple_by_hand),
    "ten_clauses": ("10 clauses", TEN_CLAUSES, ten_by_hand),
}

#: The expression type of each storage type the benchmark object uses (what the field
#: type plugins answer; spelled out so this benchmark needs no metadata service).
_EXPR_TYPES = {"text": "text", "currency": "decimal", "percent": "decimal", "choice": "choice", "date": "date"}


def deal_scope() -> Scope:
    fields = {}
    for name, spec in DEAL["fields"].items():
        options = tuple(o["value"] for o in spec.get("options", ()))
        fields[name] = FieldInfo(name, _EXPR_TYPES[spec["type"]], spec["type"], options)
    return Scope("deal", {"deal": fields})


def _rounds(sides: dict[str, Callable[[], int]], rounds: int) -> dict[str, list[float]]:
    """Microseconds per call of each side in each round; sides alternate going first."""
    names = list(sides)
    for name in names:  # warm up
        sides[name]()
    out: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.disable()  # a collection landing in one side's slice is noise, not cost
    try:
        for r in range(rounds):
            for name in (names if r % 2 == 0 else names[::-1]):
                t0 = time.perf_counter_ns()
                calls = sides[name]()
                out[name].append((time.perf_counter_ns() - t0) / 1000 / calls)
    finally:
        gc.enable()
    return out


def _loop(fn: Callable[[Any], Any], items: Sequence[Any], repeat: int) -> Callable[[], int]:
    def run() -> int:
        for _ in range(repeat):
            for item in items:
                fn(item)
        return repeat * len(items)
    return run


def run(quick: bool) -> list[Result]:
    n_rows, repeat, rounds = (2_000, 5, 15) if quick else (10_000, 5, 41)
    rows = list(deal_rows(n_rows))
    envs = [Env(row, None, now=BASE_TIME) for row in rows]
    scope, functions = deal_scope(), builtin_functions()
    assert set(STAGES) == set(scope.fields()["stage"].options)
    out = []
    for key, (label, source, by_hand) in RULES.items():
        expr = compile_expression(source, scope, functions, expect="boolean")
        passed = 0
        for row, env in zip(rows, envs, strict=True):  # a fair comparison does the same work
            got = expr(env) is True
            if got != by_hand(row):
                raise AssertionError(f"{key}: rule and lambda disagree on {row}")
            passed += got
        log(f"expr: {key}: {rounds} rounds x {repeat * n_rows:,} calls per side ({passed / n_rows:.0%} of rows pass)")
        us = _rounds({"rule": _loop(expr, envs, repeat), "closure": _loop(expr.evaluate, envs, repeat),
                      "hand": _loop(by_hand, rows, repeat)}, rounds)
        rule, hand = median(us["rule"]), median(us["hand"])
        ratio = median([a / b for a, b in zip(us["rule"], us["hand"], strict=True)])
        out.append(Result(
            f"expr.{key}",
            f"rule {rule:.2f} us | hand {hand:.2f} us per call",
            f"{ratio:.1f}x rule/hand",
            f"<= {TARGET_US:.0f} us ({label})",
            rule <= TARGET_US,
            {"source": source, "rule_us": us["rule"], "closure_us": us["closure"], "handwritten_us": us["hand"],
             "ratio": ratio, "rows": n_rows, "pass_rate": passed / n_rows, "calls_per_round": repeat * n_rows,
             "rounds": rounds},
        ))
    # What the record service pays once per write before evaluating its rules.
    env_us = _rounds({"env": _loop(lambda row: Env(row, None), rows, 1)}, rounds)["env"]
    out.append(Result("expr.env", f"Env(...) {median(env_us):.2f} us per record", "-", "- (information)", None,
                      {"env_us": env_us}))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer rows and rounds")
    ap.add_argument("--json", type=Path, help="also write every result with its raw samples to this file")
    ap.add_argument("--strict", action="store_true", help="exit with status 1 when a metric misses its target")
    args = ap.parse_args(argv)
    log(f"{'quick' if args.quick else 'full'} run: expr; {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(header(), flush=True)
    results = run(args.quick)
    for r in results:
        print(r.line(), flush=True)
    if args.json:
        args.json.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": args.quick, "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "results": [{"name": r.name, "value": r.value, "ratio": r.ratio, "target": r.target, "ok": r.ok,
                         "data": r.data} for r in results],
        }, indent=2, default=str))
    return 1 if args.strict and any(r.ok is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())

