"""A corpus of hostile tenant scripts, each of which the script sandbox must block, and
a few benign business scripts it must run exactly.

Why: the sandbox (``loomwork.runtime.sandbox``) is the only thing between a tenant
admin's Python and the host. Each hostile script here must be refused at compile time
(``ScriptCompileError``, and the worker refuses it again when the host's check is
skipped) or end at run time with status ``error`` or ``limit`` (or the watchdog's
``BudgetExceeded``). After every one, the same pool must still run a benign canary
script correctly (the host is alive and a broken worker was replaced), and a secret in
the host's environment must never show up in anything a run returns.

The corpus covers imports and module traversal, dunder and attribute escapes,
format-string tricks, frame walking, recovering builtins, classes and types, CPU loops
(also ones that try to catch the stop), memory bombs, recursion and deeply nested source
or data, results that are not plain data, and ``ctx`` calls with arguments the host must
refuse. A script the sandbox does not block today is a strict xfail whose reason starts
with "HOLE:", so fixing the hole makes the suite say so.

All runs share one module-scoped pool with low limits (300 ms, 200 000 steps, 128 MiB)
to keep the file fast.
"""
from __future__ import annotations

import json
import os
import re
import textwrap
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from loomwork.runtime.sandbox.budget import DEFAULTS, BudgetExceeded
from loomwork.runtime.sandbox.policy import ScriptCompileError, compile_script, digest
from loomwork.runtime.sandbox.pool import Pool, WorkerCrashed

SECRET = "s3cr3t-canary"
LIMITS = {**DEFAULTS.as_dict(), "wall_ms": 300, "steps": 200_000, "memory_mib": 128}
NOW = "2026-12-04T10:00:00+00:00"
TODAY = "2026-12-04"

CANARY = "total = sum(Decimal(x) for x in record['lines'])\nrecord['total'] = total\nresult = str(total * 2)"


# -- driving the pool -------------------------------------------------------------------

class FakeHost:
    """The host's side of ``ctx``: known arguments only (like ``ScriptRunner._serve``),
    a query meter that answers "fatal" past ``max_queries``, and a record of the calls."""

    ARGS = {"query": {"object", "filter", "fields", "order", "limit"}, "get": {"object", "id"},
            "create": {"object", "values"}, "update": {"object", "id", "values"}}

    def __init__(self, rows: list[dict[str, Any]] | None = None, max_queries: int = 20) -> None:
        self.rows = rows if rows is not None else [{"amount": "1.50"}]
        self.max_queries = max_queries
        self.queries = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, args: dict[str, Any], steps: int) -> dict[str, Any]:
        self.calls.append((name, args))
        allowed = self.ARGS.get(name)
        if allowed is None:
            return {"error": f"ctx has no call {name!r}"}
        unknown = sorted(set(args) - allowed)
        if unknown:
            return {"error": f"ctx.{name}: unknown argument(s) {', '.join(unknown)}"}
        if args.get("object") != "deal":
            return {"error": f"ctx.{name}: unknown object {args.get('object')!r}"}
        if name == "query":
            self.queries += 1
            if self.queries > self.max_queries:
                return {"fatal": "queries"}
            return {"value": self.rows, "types": {"amount": "decimal"}}
        if name == "get":
            return {"value": {"id": args["id"], "amount": "1.50"}, "types": {"amount": "decimal"}}
        return {"value": {"id": 7}}


@dataclass
class Outcome:
    #: compile | compiler-crashed | ok | error | limit (a limit status or the watchdog) | crashed
    kind: str
    text: str = ""  # compile errors, the error message or the limit's name
    reply: dict[str, Any] | None = field(default=None, repr=False)

    def everything(self) -> str:
        return self.text + json.dumps(self.reply, default=str)


def request(source: str, script_digest: str, record: dict[str, Any] | None = None,
            params: dict[str, Any] | None = None, limits: dict[str, int] | None = None) -> dict[str, Any]:
    return {"name": "t", "source": source, "digest": script_digest, "limits": limits or dict(LIMITS),
            "record": record, "old": None, "types": {"amount": "decimal"}, "now": NOW, "today": TODAY,
            "user": {"id": 1}, "params": params or {}}


def run(pool: Pool, source: str, *, host: FakeHost | None = None, record: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None, limits: dict[str, int] | None = None,
        host_compiles: bool = True) -> Outcome:
    """Compile like the host does when a script is saved, then run in the pool.
    ``host_compiles=False`` skips the host's check (the worker must refuse on its own)."""
    if host_compiles:
        try:
            script_digest = compile_script(source).digest
        except ScriptCompileError as exc:
            return Outcome("compile", "; ".join(exc.errors))
        except Exception as exc:  # the compiler itself failed: not a refusal the host can report
            return Outcome("compiler-crashed", f"{type(exc).__name__}: {exc}")
    else:
        script_digest = digest(source)
    limits = {**LIMITS, **(limits or {})}
    try:
        reply = pool.run(request(source, script_digest, record, params, limits), host or FakeHost(),
                         limits["wall_ms"])
    except BudgetExceeded as exc:
        return Outcome("limit", f"wall_ms (watchdog: {exc})")
    except WorkerCrashed as exc:
        return Outcome("crashed", str(exc))
    status = reply["status"]
    text = reply.get("limit") if status == "limit" else reply.get("message")
    return Outcome(status, text or "", reply)


def assert_canary(pool: Pool) -> None:
    """The host is alive and the pool still runs a benign script correctly."""
    out = run(pool, CANARY, record={"lines": ["1.10", "2.20"]})
    assert out.kind == "ok", out
    assert out.reply["result"] == "6.60"
    assert out.reply["record"] == {"total": "3.30"}  # what the script changed, not what it read
    assert out.reply["log"] == "" and out.reply["errors"] == []


@pytest.fixture(scope="module")
def pool():
    """One worker for the whole file, started with a secret in the host's environment."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOMWORK_SECRET_CANARY", SECRET)
        p = Pool(size=1)
        p.warm()
        try:
            yield p
        finally:
            p.close()


# -- the hostile corpus -------------------------------------------------------------------

def H(case_id: str, expect: str, source: str, hole: str | None = None, limits: dict[str, int] | None = None):
    """A hostile case. ``expect`` is "kind" or "kind:fragment": the kind of outcome
    (compile, error, limit, or blocked for any of them) and a text its errors, message
    or limit name must contain. ``limits`` override :data:`LIMITS` for this case; a case
    that must stop at another limit than wall time gets more wall time (see
    :data:`SLOW_MACHINE`), so a loaded machine does not turn its limit into wall_ms."""
    if expect.startswith("limit:") and expect != "limit:wall_ms":
        limits = {**SLOW_MACHINE, **(limits or {})}
    marks = [pytest.mark.xfail(strict=True, reason=f"HOLE: {hole}")] if hole else []
    return pytest.param(textwrap.dedent(source).strip("\n"), expect, limits, id=case_id, marks=marks)


#: Wall time for cases that must end at another limit (they take 10-150 ms here).
SLOW_MACHINE = {"wall_ms": 3000}


def _deep_ifs(levels: int) -> str:
    return "".join(" " * i + "if True:\n" for i in range(levels)) + " " * levels + "x = 1"


HOSTILE = [
    # imports and module traversal
    H("import-os", "compile:import", "import os\nresult = os.environ"),
    H("import-as", "compile:import", "import subprocess as sp\nsp.run(['id'])"),
    H("from-import", "compile:import", "from os import environ\nresult = dict(environ)"),
    H("dunder-import-call", "compile:__import__", "os = __import__('os')\nresult = os.getcwd()"),
    H("builtins-subscript", "compile:__builtins__", "result = __builtins__['__import__']('sys').modules"),
    H("sys-name", "error:NameError", "result = sys.modules['os'].environ"),
    H("builtins-module-name", "compile:builtins", "result = builtins.open('/etc/passwd')"),
    H("os-environ-name", "error:NameError", "result = os.environ['LOOMWORK_SECRET_CANARY']"),
    H("exec-import", "compile:exec", "exec('import os')"),
    H("eval", "compile:eval", "result = eval('1 + 1')"),
    H("compile-builtin", "compile:compile", "code = compile('1', 'x', 'eval')"),
    H("open-file", "compile:open", "result = open('/proc/self/environ').read()"),
    H("namespace-dict", "compile:__dict__", "result = math.__dict__"),
    H("namespace-private-members", "compile:_members", "result = regex._members"),
    H("namespace-unknown-member", "error:no attribute", "result = math.sys"),
    H("ctx-module-name", "compile:__module__", "result = ctx.__module__"),
    # dunder and attribute escapes
    H("subclasses-via-tuple", "compile:__class__", "result = ().__class__.__bases__[0].__subclasses__()"),
    H("mro-via-str", "compile:__class__", "result = ''.__class__.__mro__[-1]"),
    H("func-globals", "compile:__globals__", "def f():\n    pass\nresult = f.__globals__['__builtins__']"),
    H("func-code", "compile:__code__", "def f():\n    pass\nresult = f.__code__.co_consts"),
    H("func-globals-old-name", "error:no attribute", "def f():\n    pass\nresult = f.func_globals"),
    H("lambda-closure", "compile:__closure__", "f = lambda: 0\nresult = f.__closure__"),
    H("bound-method-self", "compile:__self__", "result = ctx.query.__self__._run"),
    H("bound-method-im-self", "error:no attribute", "result = ctx.query.im_self"),
    H("builtin-method-self", "compile:__self__", "result = record.get.__self__"),
    H("ctx-dict", "compile:__dict__", "result = ctx.__dict__"),
    H("ctx-private-run", "compile:_run", "result = ctx._run"),
    H("ctx-private-call", "compile:_call", "ctx._call('query', {'object': 'deal', 'sudo': True})"),
    H("ctx-errors-list", "error:no attribute", "for i in range(1000):\n    ctx.errors.append(['x', 'y'])"),
    H("ctx-class-constant", "error:no attribute", "result = sorted(ctx.PUBLIC)"),
    H("ctx-method-overwrite", "error:cannot be changed", "ctx.query = print"),
    H("namespace-overwrite", "error:cannot be changed", "math.floor = print"),
    H("record-class", "compile:__class__", "result = record.__class__.__init__"),
    H("type-builtin", "compile:type", "result = type(record)"),
    H("object-subclasses", "compile:object", "result = object.__subclasses__()"),
    H("mro-method-on-type", "error:no attribute", "result = str.mro()"),
    H("class-attribute-on-type", "error:no attribute", "result = datetime.now()"),
    H("exception-base-walk", "compile:__base__", "result = ValueError.__base__.__base__"),
    H("getattr-builtin", "compile:getattr", "result = getattr(ctx, '_' + 'run')"),
    H("getattribute-string", "compile:__getattribute__", "result = ctx.__getattribute__('_' + 'run')"),
    H("hasattr-builtin", "compile:hasattr", "result = hasattr(ctx, '_run')"),
    H("setattr-builtin", "compile:setattr", "setattr(ctx, 'query', print)"),
    # format-string tricks
    H("str-format-attribute", "error:format", "result = '{0.__class__}'.format(ctx)"),
    H("str-format-globals", "error:format", "result = '{0.query.__func__.__globals__}'.format(ctx)"),
    H("format-map", "error:format_map", "result = '{x.__class__.__mro__}'.format_map({'x': record})"),
    H("str-format-unbound", "error:no attribute", "result = str.format('{0._run}', ctx)"),
    H("format-builtin", "compile:format", "result = format(ctx, '')"),
    H("string-formatter", "error:NameError", "result = string.Formatter().format('{0.__class__}', ctx)"),
    H("fstring-width", "compile:f-string", "result = f\"{'x':>999999999}\""),
    H("fstring-nested-spec", "compile:f-string", "w = 10**9\nresult = f\"{'x':>{w}}\""),
    H("fstring-nested-literal-spec", "compile:f-string", "result = f\"{'x':{'>'}{'9' * 9}}\""),
    H("percent-width", "limit:memory_mib", "result = '%*s' % (10**9, '')"),
    # frame walking through generators, coroutines, tracebacks, exceptions
    H("genexp-gi-frame", "compile:gi_frame", "g = (x for x in [1])\nresult = g.gi_frame.f_back.f_globals"),
    H("genexp-gi-code", "compile:gi_code", "g = (x for x in [1])\nresult = g.gi_code"),
    H("genexp-gi-running", "error:no attribute", "g = (x for x in [1])\nresult = g.gi_running"),
    H("frame-attr-on-function", "compile:f_globals", "def f():\n    pass\nresult = f.f_globals"),
    H("genexp-throw", "error:no attribute", "g = (x for x in [1])\ng.throw(ValueError)"),
    H("generator-function", "compile:yield", "def g():\n    yield 1\nresult = g().gi_frame"),
    H("coroutine-cr-frame", "compile:AsyncFunctionDef", "async def c():\n    pass\nresult = c().cr_frame"),
    H("traceback-dunder", "compile:__traceback__", """
        try:
            1 / 0
        except ZeroDivisionError as e:
            result = e.__traceback__.tb_frame.f_back.f_globals
        """),
    H("traceback-tb-frame", "compile:tb_frame", """
        try:
            1 / 0
        except ZeroDivisionError as e:
            result = e.tb_frame
        """),
    H("traceback-line-runtime", "error:no attribute", """
        try:
            1 / 0
        except ZeroDivisionError as e:
            result = e.tb_lineno
        """),
    H("with-traceback", "error:no attribute", """
        try:
            1 / 0
        except ZeroDivisionError as e:
            result = e.with_traceback(None)
        """),
    H("exception-context", "compile:__context__", """
        try:
            1 / 0
        except ZeroDivisionError as e:
            result = e.__context__
        """),
    H("stopiteration-value", "error:no attribute", """
        try:
            next(iter([]))
        except StopIteration as e:
            result = e.value
        """),
    H("attributeerror-obj", "error:no attribute", """
        try:
            ctx.nothing
        except AttributeError as e:
            result = e.obj
        """),
    H("api-error-args", "error:no attribute", """
        try:
            ctx.query('deal', 'positional')
        except ScriptApiError as e:
            result = e.args
        """),
    H("sys-getframe", "compile:_getframe", "result = sys._getframe(0).f_back"),
    # recovering builtins and the worker's scope
    H("vars", "compile:vars", "result = vars()"),
    H("globals", "compile:globals", "result = globals()['ctx']"),
    H("locals", "compile:locals", "result = locals()"),
    H("dir", "compile:dir", "result = dir(ctx)"),
    H("printed", "compile:printed", "print('x')\nresult = printed"),
    H("guard-name", "compile:_getattr_", "result = _getattr_"),
    H("breakpoint", "compile:breakpoint", "breakpoint()"),
    H("denied-name-as-parameter", "compile:type", "def f(type):\n    return type\nresult = f(1)"),
    H("denied-name-as-function", "compile:getattr", "def getattr(o, n):\n    return 1"),
    # classes, types, language features that are refused
    H("class-def", "compile:class", "class A:\n    pass"),
    H("metaclass-name", "compile:__metaclass__", "result = __metaclass__"),
    H("super", "compile:super", "result = super()"),
    H("decorator", "compile:decorator", "def d(f):\n    return f\n@d\ndef g():\n    pass"),
    H("global", "compile:global", "def f():\n    global result\n    result = 1\nf()"),
    H("nonlocal", "compile:nonlocal", "def f():\n    x = 1\n    def g():\n        nonlocal x\n    g()"),
    H("with", "compile:with", "with ctx:\n    pass"),
    H("match", "compile:Match", "match record:\n    case {'a': a}:\n        result = a"),
    H("bare-except", "compile:bare except", "try:\n    pass\nexcept:\n    pass"),
    H("except-baseexception", "compile:BaseException", "try:\n    pass\nexcept BaseException:\n    pass"),
    H("except-star", "compile:TryStar", "try:\n    pass\nexcept* ValueError:\n    pass"),
    H("raise-systemexit", "compile:SystemExit", "raise SystemExit(0)"),
    H("raise-keyboardinterrupt", "compile:KeyboardInterrupt", "raise KeyboardInterrupt"),
    H("exit", "compile:exit", "exit(0)"),
    # CPU
    H("while-true", "limit:steps", "while True:\n    pass"),
    H("nested-for", "limit:steps", "for i in range(10**7):\n    for j in range(10**7):\n        pass"),
    H("sum-huge-range", "error:range", "result = sum(range(10**12))"),
    H("sum-range-repeated", "limit", "result = [sum(range(10**7)) for i in range(1000)]"),
    H("loop-in-finally", "limit:steps", """
        try:
            while True:
                pass
        finally:
            while True:
                pass
        """),
    H("loop-in-except-handler", "limit:steps", """
        try:
            1 / 0
        except ZeroDivisionError:
            while True:
                pass
        """),
    H("catch-step-limit", "limit:steps", """
        while True:
            try:
                while True:
                    pass
            except Exception:
                pass
        """),
    H("catch-wall-limit", "limit:wall_ms", """
        while True:
            try:
                while True:
                    x = sum(range(10**6))
            except Exception:
                pass
        """),
    H("catch-limit-with-tuple", "limit:steps", """
        try:
            while True:
                pass
        except (Exception, ArithmeticError, LookupError, RuntimeError):
            result = 'escaped'
        """),
    H("recursion-in-finally", "limit", """
        def f():
            try:
                f()
            finally:
                f()
        f()
        """),
    H("c-loop-over-callable-iterator", "limit", "result = any(iter(int, 1))"),
    H("for-over-callable-iterator", "limit:steps", "for x in iter(int, 1):\n    pass"),
    H("map-lambda-huge", "limit:steps", "result = list(map(lambda x: x, range(10**7)))"),
    H("sorted-key-huge", "limit", "result = sorted(range(10**7), key=lambda x: -x)"),
    H("modular-pow-huge", "limit", "result = pow(3, 1 << 99999, (1 << 99999) + 1)"),
    H("regex-sub-amplification", "limit", "result = len(regex.sub('', 'x' * 1000, 'y' * 1000000))"),
    H("print-flood", "limit:output_bytes", "while True:\n    print('x' * 10000)"),
    H("ctx-log-flood", "limit:output_bytes", "for i in range(10**6):\n    ctx.log('y' * 100000)"),
    H("query-flood", "limit:queries", "while True:\n    ctx.query('deal')"),
    H("budget-is-a-copy", "limit:steps", "ctx.budget['limits']['steps'] = 10**9\nwhile True:\n    pass"),
    # memory
    H("str-times-huge", "limit:memory_mib", "x = 'x' * 10**9"),
    H("list-times-huge", "limit:memory_mib", "x = [0] * 10**9"),
    H("huge-times-str", "limit:memory_mib", "x = 10**9 * 'ab'"),
    H("inplace-times", "limit:memory_mib", "x = 'ab'\nx *= 10**9"),
    H("bytes-times-huge", "limit:memory_mib", "x = b'x' * 10**9"),
    H("join-huge", "limit:memory_mib", "x = ''.join(['x' * 1000000] * 10000)"),
    H("center-huge", "limit:memory_mib", "x = 'a'.center(10**9)"),
    H("zfill-huge", "limit:memory_mib", "x = '1'.zfill(10**9)"),
    H("replace-amplification", "limit:memory_mib", "x = ('x' * 1000000).replace('x', 'y' * 100)"),
    H("power-tower", "limit:memory_mib", "x = 10**10**10"),
    H("left-shift-huge", "limit:memory_mib", "x = 1 << 10**9"),
    H("pow-builtin-huge", "limit:memory_mib", "x = pow(2, 10**9)"),
    H("squaring-loop", "limit:memory_mib", "x = 3\nwhile True:\n    x = x * x"),
    H("list-growth-loop", "limit:memory_mib", "x = []\nwhile True:\n    x.append('x' * 1000000)"),
    H("string-doubling", "limit:memory_mib", "s = 'x'\nfor i in range(40):\n    s = s + s"),
    H("extend-doubling", "limit:memory_mib", "x = [0]\nwhile True:\n    x.extend(x)"),
    H("percent-zero-pad", "limit:memory_mib", "x = '%0*d' % (10**9, 1)"),
    H("decimal-fixed-format", "limit:memory_mib", "x = f\"{Decimal('1e999999999'):f}\""),
    H("ljust-many", "limit:memory_mib", "x = ['a'.ljust(10**7) for i in range(100)]"),
    H("list-of-callable-iterator", "limit", "x = list(iter(int, 1))"),
    H("json-dumps-huge", "error:longer than", "result = json_dumps(['x' * 1000000] * 2)"),
    # recursion and deeply nested source or data
    H("deep-recursion", "limit:steps", "def f(n):\n    return f(n + 1)\nf(0)"),
    H("mutual-recursion", "limit:steps", "def a(n):\n    return b(n)\ndef b(n):\n    return a(n)\na(0)"),
    H("lambda-recursion", "limit:steps", "f = lambda n: f(n + 1)\nf(0)"),
    H("recursion-caught", "limit:steps", """
        def f():
            try:
                return f()
            except RuntimeError:
                return f()
        result = f()
        """),
    H("parentheses-1000", "compile", "x = " + "(" * 1000 + "1" + ")" * 1000),
    H("unary-minus-1000", "compile:nested too deeply", "x = " + "-" * 1000 + "1"),
    H("binop-chain-1000", "compile:nested too deeply", "x = " + "1 + " * 1000 + "1"),
    H("list-literal-1000", "compile", "x = " + "[" * 1000 + "]" * 1000),
    H("nested-calls-100", "compile:nested too deeply", "x = " + "abs(" * 100 + "1" + ")" * 100),
    H("nested-lambdas-100", "compile:nested too deeply", "f = " + "lambda: " * 100 + "1"),
    H("nested-ifs-80", "compile:nested too deeply", _deep_ifs(80)),
    H("source-too-long", "compile:longer than", "x = 1\n" * 20000),
    H("too-many-nodes", "compile:too long", "x = (" + "a," * 30000 + ")"),
    H("nul-character", "compile:NUL", "x = 1\x00"),
    H("print-deep-list", "limit:steps", "x = []\nfor i in range(10000):\n    x = [x]\nprint(x)"),
    H("str-deep-dict", "limit:steps", "d = {}\nfor i in range(10000):\n    d = {'a': d}\nresult = str(d)"),
    H("compare-deep-lists", "limit:steps", """
        x = []
        y = []
        for i in range(10000):
            x = [x]
            y = [y]
        result = x == y
        """),
    H("json-dumps-deep", "error:nested", "x = []\nfor i in range(100):\n    x = [x]\nresult = json_dumps(x)"),
    # results that are not plain data
    H("result-nested-10000", "error:nested more than", "x = []\nfor i in range(10000):\n    x = [x]\nresult = x"),
    H("record-nested-dict", "error:nested more than",
      "x = {}\nfor i in range(100):\n    x = {'a': x}\nrecord['x'] = x"),
    H("result-function", "error:function", "def f():\n    pass\nresult = f"),
    H("result-range", "error:range", "result = range(3)"),
    H("result-set", "error:set", "result = {1, 2}"),
    H("result-ctx", "error:ScriptContext", "result = ctx"),
    H("result-namespace", "error:Namespace", "result = math"),
    H("result-iterator", "error:list_iterator", "result = iter([1])"),
    H("result-exception", "error:ValueError", "result = ValueError('x')"),
    H("result-nan", "error:not finite", "result = float('nan')"),
    H("result-decimal-infinity", "error:not finite", "result = Decimal('Infinity')"),
    H("result-int-keys", "error:keys must be text", "result = {1: 'a'}"),
    H("result-huge-int", "error:too large", "result = 2 ** 2000"),
    H("record-builtin-value", "error:cannot be passed on", "record['f'] = print"),
    H("ctx-positional-arguments", "error:keyword arguments", "ctx.query('deal', {'stage': 'won'})"),
    # replies that cannot be encoded as they are: refused, the worker answers
    H("result-int-over-64-bits", "blocked", "result = 2 ** 100"),
    H("record-int-over-64-bits", "blocked", "record['amount'] = 2 ** 64"),
    H("result-lone-surrogate", "blocked", "result = chr(0xd800)"),
    H("log-lone-surrogate", "ok", "print(chr(0xdc00))"),
    H("ctx-error-lone-surrogate", "ok", "ctx.error(chr(0xd800), 'amount')"),
    H("exception-message-lone-surrogate", "blocked", "raise ValueError(chr(0xd800))"),
    H("result-over-frame-cap", "blocked", "result = ['x' * 9000000, 'y' * 9000000]"),
    H("exception-message-deep-repr", "blocked", "x = []\nfor i in range(1000):\n    x = [x]\nraise ValueError(x)"),
    H("deep-tuple-hash", "contained", "t = ()\nfor i in range(300000):\n    t = (t,)\nresult = {t: 1}",
      limits={"steps": 1_000_000, **SLOW_MACHINE}),
    H("nested-map-iterators", "contained", "m = [1]\nfor i in range(150000):\n    m = map(abs, m)\nresult = list(m)",
      limits={"steps": 1_000_000, **SLOW_MACHINE}),
    # what only the compiler notices, or a refusal inside another node: still a compile error
    H("yield-in-lambda", "compile:yield", "g = lambda: (yield)"),
    H("yield-in-binop", "compile:yield", "x = (yield) * 2"),
    H("await-in-lambda", "compile:Await", "f = lambda: (await x)"),
    H("return-at-top-level", "compile:return", "return 1"),
    H("break-outside-loop", "compile:break", "break"),
    H("async-comprehension", "compile", "x = [i async for i in y]"),
    H("duplicate-argument", "compile:duplicate", "def f(x, x):\n    pass"),
]


@pytest.mark.parametrize(("source", "expect", "limits"), HOSTILE)
def test_hostile_script_is_blocked(pool, source, expect, limits):
    kind, _, fragment = expect.partition(":")
    outcome = run(pool, source, record={"amount": "2.25"}, limits=limits)
    again = None
    if outcome.kind in ("compile", "compiler-crashed"):
        # Code never crosses the pipe: the worker compiles the source again and must refuse it too.
        # Compiling has a time of its own (COMPILE_WALL_MS), never the run's wall time, so on a
        # loaded machine a huge script (too-many-nodes) is still refused by the caps, not by time.
        again = run(pool, source, record={"amount": "2.25"}, limits=limits, host_compiles=False)
        assert SECRET not in again.everything()
    assert SECRET not in outcome.everything()
    assert_canary(pool)  # whatever happened, the host is alive and the pool works
    if kind == "blocked":
        assert outcome.kind in ("compile", "error", "limit"), outcome
    elif kind == "contained":
        # Deep C recursion (tuple hashing, nested iterators) has no depth check in CPython and
        # overflows the worker's stack: the worker dies, the host reports it and starts another.
        assert outcome.kind in ("crashed", "error", "limit"), outcome
    else:
        assert outcome.kind == kind, outcome
    assert fragment in outcome.text, outcome
    if again is not None:
        assert again.kind == "error", again


# -- ctx calls with arguments the host must refuse ---------------------------------------------

@pytest.mark.parametrize(("source", "call", "argument"), [
    pytest.param("ctx.query('deal', ignore_permissions=True)", "query", "ignore_permissions",
                 id="query-ignore-permissions"),
    pytest.param("ctx.query('deal', **{'sudo': True})", "query", "sudo", id="query-kwargs-dict"),
    pytest.param("ctx.query(object='deal', tenant='other')", "query", "tenant", id="query-other-tenant"),
    pytest.param("ctx.get('deal', 1, run_as='admin')", "get", "run_as", id="get-run-as"),
    pytest.param("ctx.create('deal', {'name': 'x'}, skip_hooks=True)", "create", "skip_hooks", id="create-skip-hooks"),
    pytest.param("ctx.update('deal', 1, {'name': 'x'}, bypass_validation=True)", "update", "bypass_validation",
                 id="update-bypass-validation"),
])
def test_unknown_ctx_arguments_reach_the_host_to_be_refused(pool, source, call, argument):
    host = FakeHost()
    outcome = run(pool, source, host=host)
    assert [name for name, args in host.calls if argument in args] == [call]  # the host saw it...
    assert outcome.kind == "error", outcome  # ...refused it, and the script stopped there
    assert f"unknown argument(s) {argument}" in outcome.text
    assert_canary(pool)


# -- what a script can see holds no secret -------------------------------------------------------

def test_nothing_a_script_reaches_shows_the_host_environment(pool):
    assert os.environ.get("LOOMWORK_SECRET_CANARY") == SECRET  # the host has it...
    source = ("result = [repr(ctx), repr(ctx.query), repr(ctx.user), repr(params), repr(ctx.budget), "
              "repr(math), repr(regex), repr(record), repr(Decimal), repr(json_loads), str(ctx.now())]\n"
              "print(*result)")
    outcome = run(pool, source, record={"amount": "1"}, params={"p": 1})
    assert outcome.kind == "ok", outcome
    assert SECRET not in outcome.everything()  # ...no script sees it


def test_ctx_error_flood_is_capped(pool):
    outcome = run(pool, "for i in range(1000):\n    ctx.error('m' * 5000, 'f' * 500)")
    assert outcome.kind == "ok", outcome
    assert len(outcome.reply["errors"]) == 100
    assert outcome.reply["errors"][0] == ["f" * 100, "m" * 1000]


#: What CPython's default representation of an object shows: where it lives.
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")

ADDRESSES = """
def f():
    pass
g = lambda: 0
texts = [repr(f), str(f), repr(g), f'{f}', f'{f!r}', f'{f!s}', f'{f!a}', f'{f:>30}', '%s' % f, '%r' % (f,),
         '%(x)s' % {'x': f}, str([f, g]), repr({'k': f}), repr((f,)), repr({f}), str(frozenset([f])),
         repr(record.get), str(ctx.query), repr(map(abs, [])), repr(iter([])), repr((x for x in [1])),
         repr('x'.upper), repr({'k': f}.values()), repr(slice(f)), repr(ValueError(f)), str(KeyError(f)),
         repr(math.floor), repr(regex.test), repr(json_loads), repr(len), repr(str), repr(repr), f'{[f]}',
         str(b'%r' % (f,), 'ascii')]
try:
    [1].index(f)
except ValueError as e:
    texts.extend([str(e), repr(e), *e.args])
try:
    {}[f]
except KeyError as e:
    texts.extend([str(e), repr(e), f'{e}'])
print(f, g, record.get)
ctx.log(f, [g])
ctx.error(f, field=g)
result = texts
"""


def test_no_text_a_script_makes_shows_a_memory_address(pool):
    """repr(), str(), f-strings, % formatting, print, ctx.log, ctx.error and error
    messages show an object by its kind and name, never where it lives."""
    outcome = run(pool, ADDRESSES, record={"amount": "1"})
    assert outcome.kind == "ok", outcome
    assert not ADDRESS.search(json.dumps(outcome.reply)), outcome.reply
    texts = outcome.reply["result"]
    assert texts[:4] == ["<function f>", "<function f>", "<function <lambda>>", "<function f>"]
    assert "<built-in method get of dict object>" in texts
    assert "<class 'str'>" in texts and "<function repr>" in texts
    assert "<function f> is not in list" in texts
    assert outcome.reply["log"] == "<function f> <function <lambda>> <built-in method get of dict object>\n" \
                                   "<function f> [<function <lambda>>]\n"
    assert outcome.reply["errors"] == [["<function <lambda>>", "<function f>"]]
    failed = run(pool, "def f():\n    pass\nraise ValueError('no', f, [f])")
    assert failed.kind == "error" and failed.text == "ValueError: ('no', <function f>, [<function f>])", failed


def test_text_of_plain_data_is_what_python_shows(pool):
    """Hiding addresses changes nothing for data, a text that mentions 'at 0x' included."""
    source = ("x = 7\nx %= 3\n"
              "result = [repr('meet at 0xCAFEBABE1'), str(['at 0x1234567', 1]), '%s|%r' % ('at 0xABCDEF12', 'y'),"
              " '%d items, %5.2f' % (3, 1.234),"
              " '%(a)s-%(b)r' % {'a': 1, 'b': 'x'}, f\"{Decimal('1.5'):>6}|{1.5:.2f}|{[1, 'a']}|{None}|{'a'!r}\","
              " isinstance('a', str), isinstance(1, (str, int)), isinstance(1, str), str(12), list(map(str, [1, 2])),"
              " str(b'ab', 'utf-8'), str(), str(Decimal('2.50')), str(date(2026, 1, 2)), x, 10 % 4, repr(record)]")
    outcome = run(pool, source, record={"amount": "1"})
    assert outcome.kind == "ok", outcome
    assert outcome.reply["result"] == [
        "'meet at 0xCAFEBABE1'", "['at 0x1234567', 1]", "at 0xABCDEF12|'y'", "3 items,  1.23", "1-'x'",
        "   1.5|1.50|[1, 'a']|None|'a'", True, True, False, "12", ["1", "2"], "ab", "", "2.50", "2026-01-02", 1, 2,
        "{'amount': Decimal('1')}"]
    wrong = run(pool, "result = '%d' % [1]")
    assert wrong.kind == "error" and "not list" in wrong.text, wrong


def test_runs_share_no_state(pool):
    first = run(pool, "ctx.user['id'] = 99\nparams['x'] = 1\nrecord['amount'] = Decimal('9')\n"
                      "ctx.budget['limits']['steps'] = 1", record={"amount": "1"})
    assert first.kind == "ok", first
    second = run(pool, "result = [ctx.user, params, record, ctx.budget['limits']['steps']]",
                 record={"amount": "1"})
    assert second.reply["result"] == [{"id": 1}, {}, {"amount": "1"}, LIMITS["steps"]]


# -- benign business scripts -----------------------------------------------------------------

LINES = {"lines": [{"qty": "2", "price": "9.99"}, {"qty": "3", "price": "0.10"}, {"qty": "1", "price": "0.01"}]}

BENIGN = [
    pytest.param("""
        total = Decimal('0')
        for line in record['lines']:
            total += Decimal(line['qty']) * Decimal(line['price'])
        record['total'] = total
        result = str(total)
        """, LINES, None, {"result": "20.29", "record": {"total": "20.29"}}, id="line-item-total"),
    pytest.param("""
        due = add_months(parse_date(record['start']), 1)
        leap = add_months(date(2024, 1, 31), 1)
        result = [due.isoformat(), leap.isoformat(), days_between(due, ctx.today()),
                  add_months(ctx.today(), -12).isoformat(), ctx.today() > due]
        """, {"start": "2026-01-31"}, None,
        {"result": ["2026-02-28", "2024-02-29", 279, "2025-12-04", True]}, id="dates"),
    pytest.param("""
        name = record['name'].strip().title().replace('Corp', 'Corporation')
        record['name'] = name
        result = ' '.join(name.split()).lower()
        """, {"name": "  aCME   corp  "}, None,
        {"result": "acme corporation", "record": {"name": "Acme   Corporation"}}, id="string-cleanup"),
    pytest.param("""
        pattern = '^[^@ ]+@[^@ ]+[.][a-z]{2,}$'
        result = [regex.test(pattern, e) for e in record['emails']]
        """, {"emails": ["ann@example.com", "not an email", "bob@host"]}, None,
        {"result": [True, False, False]}, id="regex-email"),
    pytest.param("""
        text = json_dumps({'a': [1, 2], 'b': Decimal('1.50'), 'c': date(2026, 1, 2), 'd': None})
        result = [text, json_loads(text)]
        """, None, None,
        {"result": ['{"a":[1,2],"b":"1.50","c":"2026-01-02","d":null}',
                    {"a": [1, 2], "b": "1.50", "c": "2026-01-02", "d": None}]}, id="json-round-trip"),
    pytest.param("""
        if record['amount'] < 0:
            ctx.error('must not be negative', 'amount')
        if not record.get('name'):
            ctx.error('a deal needs a name', field='name')
        ctx.error('checked')
        """, {"amount": "-1", "name": ""}, None,
        {"errors": [["amount", "must not be negative"], ["name", "a deal needs a name"], [None, "checked"]]},
        id="ctx-error-fields"),
    pytest.param("""
        print('total', record['amount'] * 2)
        ctx.log('checked', 2, 'lines')
        print('a', 'b', sep='-', end='!')
        """, {"amount": "1.25"}, None, {"log": "total 2.50\nchecked 2 lines\na-b!"}, id="print-to-log"),
    pytest.param("""
        rows = ctx.query('deal', filter={'stage': 'won'}, limit=10)
        total = sum(r['amount'] for r in rows)
        result = [str(total), isinstance(total, Decimal)]
        """, None, [{"amount": "1.50"}, {"amount": "2.25"}, {"amount": "0.10"}],
        {"result": ["3.85", True]}, id="query-typed-decimal"),
    pytest.param("""
        third = (Decimal('10') / 3).quantize(Decimal('0.01'))
        record['total'] = record['amount'] * 2
        result = [str(third), f"{Decimal('1234.5'):,.2f}", f"{0.125:.1%}", round(Decimal('2.675'), 2)]
        """, {"amount": "2.25"}, None,
        {"result": ["3.33", "1,234.50", "12.5%", "2.68"], "record": {"total": "4.50"}},
        id="decimal-money"),
    pytest.param("""
        def to_int(text):
            try:
                return int(text)
            except ValueError:
                return None
        result = [to_int(x) for x in ['12', 'abc', ' 7 ']]
        """, None, None, {"result": [12, None, 7]}, id="catch-value-error"),
    pytest.param("""
        by_stage = {}
        for row in record['rows']:
            by_stage[row['stage']] = by_stage.get(row['stage'], 0) + row['n']
        result = sorted(by_stage.items(), key=lambda kv: -kv[1])
        """, {"rows": [{"stage": "won", "n": 2}, {"stage": "lost", "n": 5}, {"stage": "won", "n": 1}]}, None,
        {"result": [["lost", 5], ["won", 3]]}, id="group-and-sort"),
    pytest.param("result = [ctx.user['id'], params['rate'], ctx.now().hour, ctx.budget['limits']['wall_ms']]",
                 None, None, {"result": [1, "0.2", 10, 300]}, id="user-params-now"),
    # Benign scripts that failed once (issue 12): names in Chinese (the worker could not
    # load the module the parser needs for them), \N{...} escapes (the same module), and a
    # record with a long text the script does not touch (it counted against the output).
    pytest.param("""
        单价 = Decimal(record['price'])
        数量 = int(record['qty'])
        record['金额'] = 单价 * 数量
        result = f"{单价 * 数量:.2f}"
        """, {"price": "9.90", "qty": "3"}, None, {"result": "29.70", "record": {"金额": "29.70"}},
        id="chinese-names"),
    pytest.param("""
        result = ['\\N{EM DASH}', '\\N{CJK UNIFIED IDEOGRAPH-4E2D}', f"{record['n']}\\N{BULLET}"]
        """, {"n": "x"}, None, {"result": ["—", "中", "x•"]}, id="named-unicode-escapes"),
    pytest.param("""
        record['pages'] = len(record['notes']) // 2000 + 1
        result = 'ok'
        """, {"notes": "字" * 400_000}, None, {"result": "ok", "record": {"pages": 201}}, id="long-text-untouched"),
    pytest.param("""
        record['tags'].append('checked')
        record['meta']['n'] = record['meta']['n'] + 1
        record['same'].sort()
        """, {"tags": ["a"], "meta": {"n": 1}, "same": [1, 2], "other": [3]}, None,
        {"record": {"tags": ["a", "checked"], "meta": {"n": 2}}}, id="lists-changed-in-place"),
]


@pytest.mark.parametrize(("source", "record", "rows", "expected"), BENIGN)
def test_benign_script_runs_exactly(pool, source, record, rows, expected):
    record = json.loads(json.dumps(record)) if record is not None else None
    host = FakeHost(rows=rows)
    outcome = run(pool, textwrap.dedent(source).strip("\n"), host=host, record=record, params={"rate": "0.2"})
    assert outcome.kind == "ok", outcome
    reply = outcome.reply
    for key, value in expected.items():
        assert reply[key] == value, key
    if "errors" not in expected:
        assert reply["errors"] == []
    if rows is not None:
        assert host.calls == [("query", {"object": "deal", "filter": {"stage": "won"}, "limit": 10})]


def test_pool_is_healthy_after_the_corpus(pool):
    for _ in range(3):
        assert_canary(pool)


# -- review findings: a run interrupted mid-call, limits a script tries to outlive -------------------

class SlowHost(FakeHost):
    """A host whose answers take a while (a slow query)."""

    def __call__(self, name: str, args: dict[str, Any], steps: int) -> dict[str, Any]:
        time.sleep(0.06)
        return super().__call__(name, args, steps)


def test_a_run_cut_off_mid_call_never_poisons_the_next_one(pool):
    """The alarm fires while the worker waits for the host's answer: the answer is left
    in the pipe, so the worker must not serve again; the next run (another tenant's,
    say) gets a fresh worker and its right answer."""
    source = ("while ctx.budget['used']['wall_ms'] < 270:\n    pass\n"
              "try:\n    ctx.query('deal')\nexcept ScriptApiError:\n    pass\nresult = 'ok'\n")
    for _ in range(3):
        host = SlowHost()
        outcome = run(pool, source, host=host, limits={"wall_ms": 300, "steps": 100_000_000})
        assert outcome.kind == "limit", outcome
        assert [name for name, _ in host.calls] == ["query"]  # it was cut off inside the call
        assert_canary(pool)


@pytest.mark.parametrize("source", [
    "def f():\n    try:\n        while True:\n            pass\n    finally:\n        return 1\nf()\n",
    "for i in range(3):\n    try:\n        pass\n    finally:\n        break\n",
    "for i in range(3):\n    try:\n        pass\n    finally:\n        continue\n",
], ids=["return", "break", "continue"])
def test_finally_cannot_discard_a_limit(pool, source):
    outcome = run(pool, source)
    assert outcome.kind == "compile" and "inside finally" in outcome.text, outcome


def test_a_limit_stands_when_finally_raises_something_else(pool):
    outcome = run(pool, "try:\n    while True:\n        pass\nfinally:\n    raise ValueError('not me')\n")
    assert outcome.kind == "limit" and outcome.text == "steps", outcome
    assert_canary(pool)


def test_cpu_time_is_the_runs_own(pool):
    outcome = run(pool, "result = 1")
    assert outcome.kind == "ok" and outcome.reply["used"]["cpu_ms"] < 200, outcome.reply["used"]
    assert run(pool, "result = repr(ctx)").reply["result"] == "<ctx>"


def test_callers_wait_for_a_busy_pool_only_so_long():
    import threading

    from loomwork.runtime.sandbox.pool import SandboxBusy

    busy = Pool(size=1, wait_s=0.2)
    try:
        source = "while True:\n    pass\n"
        spin = threading.Thread(target=lambda: busy.run(
            request(source, digest(source), None, None, {**LIMITS, "wall_ms": 1500, "steps": 10**9}),
            FakeHost(), 1500))
        spin.start()
        time.sleep(0.3)  # the only worker is busy now
        with pytest.raises(SandboxBusy, match="busy"):
            busy.run(request("result = 1", digest("result = 1"), None, None, LIMITS), FakeHost(), 300)
        spin.join()
        reply = busy.run(request("result = 1", digest("result = 1"), None, None, LIMITS), FakeHost(), 300)
        assert reply["result"] == 1
    finally:
        busy.close()
