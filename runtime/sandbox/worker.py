"""The program a sandbox worker process runs: ``python -I -m loomwork.runtime.sandbox.worker``.

The host starts it with an empty environment, ``/`` as its directory and only its
three standard pipes open. Before it reads a script it imports everything it will
need, drops root if it has it, and locks itself down with resource limits (no new
files, no file writes, no child processes, no core dumps, an address-space cap).
Then it serves one run at a time: compile (cached by hash), execute with the guards
below, convert the results to plain data inside the budget, answer.

A script reaches the outside world only through ``ctx``, whose every method is a
request back to the host over the same pipe.
"""
from __future__ import annotations

import datetime as dt
import decimal
import gc
import math
import operator
import os
import resource
import signal
import sys
import time
import traceback
from collections import OrderedDict
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import orjson
import re2
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from .policy import ScriptCompileError, compile_script
from .protocol import PlainError, TooLarge, plain, read_frame, typed, write_frame

#: The host's requests arrive on stdin (buffered: a frame is one read), answers go to stdout.
IN = open(0, "rb", buffering=1 << 16, closefd=False)  # noqa: SIM115  (lives as long as the process)
OUT = 1
#: Sizes a single operation may produce (elements of a string/list, bits of an int).
MAX_SEQUENCE = 10_000_000
MAX_INT_BITS = 100_000
MAX_RANGE = 10_000_000
MAX_REGEX_PATTERN = 1_000
MAX_JSON = 1024 * 1024


class Stop(BaseException):
    """A limit was reached. A BaseException: ``except Exception`` in a script does not
    catch it, and bare ``except:`` is refused at compile time."""

    def __init__(self, limit: str) -> None:
        super().__init__(limit)
        self.limit = limit


class ScriptApiError(Exception):
    """The host refused a ``ctx`` call (bad argument, no permission, not found).
    A script may catch it."""


# -- the run's meters -------------------------------------------------------------

class Meter:
    """Steps, the stop flag and the log of the current run."""

    def __init__(self) -> None:
        self.steps = 0
        self.max_steps = 0
        self.stopped: str | None = None
        self.log: list[str] = []
        self.log_bytes = 0
        self.max_output = 0

    def reset(self, limits: dict[str, int]) -> None:
        self.steps = 0
        self.max_steps = int(limits["steps"])
        self.stopped = None
        self.log = []
        self.log_bytes = 0
        self.max_output = int(limits["output_bytes"])

    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            if self.stopped is None:
                self.stopped = "steps"
            raise Stop(self.stopped)

    def stop(self, limit: str) -> None:
        """Make every later tick fail too (a ``finally:`` cannot loop on)."""
        self.stopped = limit
        self.max_steps = -1
        raise Stop(limit)

    def write_log(self, text: str) -> None:
        size = len(text.encode("utf-8", "replace"))
        if self.log_bytes + size > self.max_output:
            self.stop("output_bytes")
        self.log_bytes += size
        self.log.append(text)


METER = Meter()
_tick_ = METER.tick
#: Set while a ctx call's exchange with the host is under way (see ScriptContext._call).
POISONED = False


# -- guards RestrictedPython's code calls ------------------------------------------

def _size_of(value: Any) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _binop_(symbol: str, left: Any, right: Any) -> Any:
    if symbol == "*":
        for seq, n in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and type(n) is int and _size_of(seq) * max(n, 0) > MAX_SEQUENCE:
                raise MemoryError(f"the result would have more than {MAX_SEQUENCE} items")
        if type(left) is int and type(right) is int and left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise MemoryError(f"the result would have more than {MAX_INT_BITS} bits")
        return left * right
    if symbol == "**":
        if type(left) is int and type(right) is int and right > 0 and abs(left) > 1 \
                and right * max(left.bit_length(), 1) > MAX_INT_BITS:
            raise MemoryError(f"the result would have more than {MAX_INT_BITS} bits")
        return left ** right
    if type(left) is int and type(right) is int and right > MAX_INT_BITS:  # <<
        raise MemoryError(f"the result would have more than {MAX_INT_BITS} bits")
    return left << right


_INPLACE = {"+=": operator.add, "-=": operator.sub, "/=": operator.truediv, "//=": operator.floordiv,
            "%=": operator.mod, ">>=": operator.rshift, "&=": operator.and_, "|=": operator.or_,
            "^=": operator.xor, "@=": operator.matmul}


def _inplacevar_(op: str, x: Any, y: Any) -> Any:
    if op in ("*=", "**=", "<<="):
        return _binop_(op[:-1], x, y)
    return _INPLACE[op](x, y)


def _caught_(error: BaseException) -> None:
    """First statement of every ``except`` block: memory and recursion are limits."""
    if isinstance(error, MemoryError):
        METER.stop("memory_mib")
    if isinstance(error, RecursionError):
        METER.stop("steps")
    if METER.stopped:
        raise Stop(METER.stopped)


def _width_ok(width: Any) -> None:
    if type(width) is int and width > MAX_SEQUENCE:
        raise MemoryError(f"a width over {MAX_SEQUENCE} characters")


def _str_padding(name: str):
    def method(s: str, width: Any, *args: Any) -> str:
        _width_ok(width)
        return getattr(s, name)(width, *args)
    return method


def _str_replace(s: str, old: str, new: str, count: int = -1) -> str:
    if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        hits = s.count(old) if count < 0 else min(count, s.count(old))
        if len(s) + hits * (len(new) - len(old)) > MAX_SEQUENCE:
            raise MemoryError(f"the result would have more than {MAX_SEQUENCE} characters")
    return s.replace(old, new, count)


def _str_join(s: str, items: Any) -> str:
    parts = list(items)
    if sum(len(p) for p in parts if isinstance(p, str)) + len(s) * len(parts) > MAX_SEQUENCE:
        raise MemoryError(f"the result would have more than {MAX_SEQUENCE} characters")
    return s.join(parts)


_WRAPPED_STR = {"center": _str_padding("center"), "ljust": _str_padding("ljust"), "rjust": _str_padding("rjust"),
                "zfill": _str_padding("zfill"), "replace": _str_replace, "join": _str_join}


class Namespace:
    """``math`` and ``regex``: a fixed set of functions under one name."""

    def __init__(self, name: str, members: dict[str, Any]) -> None:
        self._name = name
        self._members = members

    def __repr__(self) -> str:
        return f"<{self._name}>"


def _names(*groups: str) -> frozenset[str]:
    return frozenset(" ".join(groups).split())


_STR = _names("capitalize casefold count endswith find index isalnum isalpha isascii isdecimal isdigit",
              "islower isnumeric isspace istitle isupper lower lstrip partition removeprefix removesuffix rfind",
              "rindex rpartition rsplit rstrip split splitlines startswith strip swapcase title upper",
              "center ljust rjust zfill replace join")
_DATE = _names("year month day weekday isoweekday isoformat replace toordinal")
ATTRIBUTES: dict[type, frozenset[str]] = {
    str: _STR,
    list: _names("append extend insert pop remove index count sort reverse copy clear"),
    dict: _names("get keys values items pop setdefault update copy clear popitem"),
    MappingProxyType: _names("get keys values items copy"),
    set: _names("add discard remove pop union intersection difference symmetric_difference issubset",
                "issuperset isdisjoint copy clear update"),
    frozenset: _names("union intersection difference symmetric_difference issubset issuperset isdisjoint copy"),
    tuple: _names("count index"),
    Decimal: _names("quantize to_integral_value copy_abs copy_negate is_zero is_signed is_nan is_finite",
                    "adjusted normalize sqrt to_eng_string"),
    dt.date: _DATE,
    dt.datetime: _DATE | _names("hour minute second microsecond date time timestamp"),
    dt.time: _names("hour minute second microsecond isoformat replace"),
    dt.timedelta: _names("days seconds microseconds total_seconds"),
}
_EXCEPTION_ATTRS = frozenset({"args"})


def _getattr_(obj: Any, name: str, default: Any = None) -> Any:
    """Attribute access by allow-list: a type's plain methods and values, nothing
    that leads to frames, code, classes or modules."""
    kind = type(obj)
    if kind is Namespace:
        members = obj._members
        if name in members:
            return members[name]
    elif kind is ScriptContext:
        if name in ScriptContext.PUBLIC:
            return getattr(obj, name)
    elif kind is str and name in _WRAPPED_STR:
        fn = _WRAPPED_STR[name]
        return lambda *a, **kw: fn(obj, *a, **kw)
    elif name in ATTRIBUTES.get(kind, ()):
        return getattr(obj, name)
    elif isinstance(obj, Exception) and kind.__module__ == "builtins" and name in _EXCEPTION_ATTRS:
        return obj.args
    raise AttributeError(f"{kind.__name__!s} has no attribute {name!r} a script may use")


_ITEM_TYPES = (dict, list, tuple, str, range, MappingProxyType)


def _getitem_(obj: Any, key: Any) -> Any:
    if type(obj) not in _ITEM_TYPES:
        raise TypeError(f"{type(obj).__name__} cannot be indexed in a script")
    return obj[key]


def _getiter_(iterable: Any):
    tick = METER.tick
    for item in iterable:
        tick()
        yield item


def _write_(obj: Any) -> Any:
    if type(obj) in (dict, list, set):
        return obj
    if type(obj) is MappingProxyType:
        raise TypeError("this record cannot be changed here (it is saved already, or it is `old`): "
                        "use ctx.update")
    raise TypeError(f"a {type(obj).__name__} cannot be changed in a script")


def _apply_(func: Any, *args: Any, **kwargs: Any) -> Any:
    return func(*args, **kwargs)


class _Printer:
    """``print(...)`` writes to the run's log (capped by the output budget)."""

    def __init__(self, _getattr: Any = None) -> None:
        pass

    def _call_print(self, *objects: Any, sep: str = " ", end: str = "\n", **_ignored: Any) -> None:
        METER.write_log(str(sep).join(str(o) for o in objects) + str(end))

    def __call__(self) -> str:
        return ""


def _range(*args: Any) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise ValueError(f"a range of more than {MAX_RANGE} numbers")
    return r


def _pow(base: Any, exp: Any, mod: Any = None) -> Any:
    return pow(base, exp, mod) if mod is not None else _binop_("**", base, exp)


# -- helpers scripts get -------------------------------------------------------------

def _regex(pattern: Any, text: Any) -> Any:
    if not isinstance(pattern, str) or len(pattern) > MAX_REGEX_PATTERN:
        raise ValueError(f"a pattern must be text of at most {MAX_REGEX_PATTERN} characters")
    if not isinstance(text, str):
        raise TypeError("regex functions search text")
    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise ValueError(f"bad pattern: {exc}") from None


def _groups(m: Any) -> Any:
    return None if m is None else [m.group(0), *m.groups()]


REGEX = Namespace("regex", {
    "test": lambda p, t: _regex(p, t).search(t) is not None,
    "match": lambda p, t: _groups(_regex(p, t).match(t)),
    "fullmatch": lambda p, t: _groups(_regex(p, t).fullmatch(t)),
    "search": lambda p, t: _groups(_regex(p, t).search(t)),
    "findall": lambda p, t: _regex(p, t).findall(t)[:100_000],
    "sub": lambda p, r, t, count=0: _regex(p, t).sub(str(r).replace("\\", "\\\\"), t, count=count),
    "split": lambda p, t, maxsplit=0: _regex(p, t).split(t, maxsplit=maxsplit),
})

MATH = Namespace("math", {name: getattr(math, name) for name in (
    "floor", "ceil", "trunc", "sqrt", "fabs", "isclose", "log", "log10", "log2", "exp", "isfinite", "isnan",
    "sin", "cos", "tan", "atan2", "hypot", "pi", "e", "inf", "copysign", "fmod")})


def json_loads(text: Any) -> Any:
    if not isinstance(text, str) or len(text) > MAX_JSON:
        raise ValueError(f"json_loads takes text of at most {MAX_JSON} characters")
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None


def json_dumps(value: Any) -> str:
    try:
        text = orjson.dumps(plain(value, tick=METER.tick)).decode()
    except PlainError as exc:
        raise ValueError(str(exc)) from None
    if len(text) > MAX_JSON:
        raise ValueError(f"the JSON text would be longer than {MAX_JSON} characters")
    return text


def parse_date(text: Any) -> dt.date:
    return dt.date.fromisoformat(str(text))


def parse_datetime(text: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(str(text))


def add_months(day: dt.date, months: int) -> dt.date:
    """``day`` moved by whole months, kept within the month (31 Jan + 1 → 28/29 Feb)."""
    index = day.year * 12 + day.month - 1 + int(months)
    year, month = divmod(index, 12)
    first_next = dt.date(year + (month == 11), (month + 1) % 12 + 1, 1)
    return day.replace(year=year, month=month + 1, day=min(day.day, (first_next - dt.timedelta(days=1)).day))


def days_between(start: dt.date, end: dt.date) -> int:
    return (end - start).days


SAFE_BUILTINS: dict[str, Any] = {
    "None": None, "True": True, "False": False,
    "abs": abs, "all": all, "any": any, "bool": bool, "chr": chr, "dict": dict, "divmod": divmod,
    "enumerate": enumerate, "filter": filter, "float": float, "frozenset": frozenset, "int": int,
    "isinstance": isinstance, "len": len, "list": list, "map": map, "max": max, "min": min, "ord": ord,
    "range": _range, "repr": repr, "reversed": reversed, "round": round, "set": set, "sorted": sorted,
    "str": str, "sum": sum, "tuple": tuple, "zip": zip, "iter": iter, "next": next, "pow": _pow,
    "hex": hex, "oct": oct, "bin": bin, "slice": slice,
    "Exception": Exception, "ValueError": ValueError, "TypeError": TypeError, "KeyError": KeyError,
    "IndexError": IndexError, "ZeroDivisionError": ZeroDivisionError, "ArithmeticError": ArithmeticError,
    "LookupError": LookupError, "AttributeError": AttributeError, "RuntimeError": RuntimeError,
    "AssertionError": AssertionError, "NameError": NameError, "OverflowError": OverflowError,
    "StopIteration": StopIteration, "ScriptApiError": ScriptApiError,
}


# -- ctx: the script API, each call a request to the host ------------------------------

class ScriptContext:
    PUBLIC = frozenset({"error", "query", "get", "create", "update", "log", "now", "today", "budget", "user",
                        "event"})

    def __repr__(self) -> str:
        return "<ctx>"

    def __init__(self, run: dict[str, Any], started: float) -> None:
        self._run = run
        self._started = started
        self.errors: list[list[Any]] = []
        self.user = run.get("user") or {}
        self.event = run.get("event")

    def _call(self, name: str, args: dict[str, Any]) -> Any:
        try:
            payload = plain(args, tick=METER.tick)
        except PlainError as exc:
            raise ScriptApiError(f"ctx.{name}: {exc}") from None
        # Between the request and its answer the pipe holds a half-done exchange: if
        # anything interrupts it (the alarm, say), this worker must not serve again.
        global POISONED
        POISONED = True
        write_frame(OUT, {"op": "call", "name": name, "args": payload, "steps": METER.steps,
                          "item": self._run.get("item", 0)})
        reply = read_frame(IN)
        POISONED = False
        if "fatal" in reply:
            METER.stop(reply["fatal"])
        if "error" in reply:
            raise ScriptApiError(reply["error"])
        value, types = reply.get("value"), reply.get("types")
        if types:
            rows = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
            for row in rows:
                typed(row, types)
        return value

    def error(self, message: Any, field: Any = None) -> None:
        """Refuse the save with ``message`` (at ``field`` when given); the script goes on."""
        if len(self.errors) >= 100:
            return
        self.errors.append([None if field is None else str(field)[:100], str(message)[:1000]])

    def query(self, object: Any = None, *args: Any, **kwargs: Any) -> Any:  # noqa: A002
        if args:
            raise ScriptApiError("ctx.query takes the object, then keyword arguments "
                                 "(filter=, fields=, order=, limit=)")
        return self._call("query", {"object": object, **kwargs})

    def get(self, object: Any = None, id: Any = None, **kwargs: Any) -> Any:  # noqa: A002
        return self._call("get", {"object": object, "id": id, **kwargs})

    def create(self, object: Any = None, values: Any = None, **kwargs: Any) -> Any:  # noqa: A002
        return self._call("create", {"object": object, "values": values, **kwargs})

    def update(self, object: Any = None, id: Any = None, values: Any = None, **kwargs: Any) -> Any:  # noqa: A002
        return self._call("update", {"object": object, "id": id, "values": values, **kwargs})

    def log(self, *parts: Any) -> None:
        METER.write_log(" ".join(str(p) for p in parts) + "\n")

    def now(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self._run["now"])

    def today(self) -> dt.date:
        return dt.date.fromisoformat(self._run["today"])

    @property
    def budget(self) -> dict[str, Any]:
        limits = self._run["limits"]
        return {"limits": dict(limits), "used": {
            "steps": METER.steps, "wall_ms": int((time.monotonic() - self._started) * 1000),
            "output_bytes": METER.log_bytes}}


# -- one run -------------------------------------------------------------------------

_CODE_CACHE: OrderedDict[str, Any] = OrderedDict()
_PAGE = os.sysconf("SC_PAGE_SIZE")
_BASE_AS = 0


def _code(name: str, source: str, digest: str) -> Any:
    code = _CODE_CACHE.get(digest)
    if code is None:
        code = compile_script(source, name).code
        _CODE_CACHE[digest] = code
        if len(_CODE_CACHE) > 256:
            _CODE_CACHE.popitem(last=False)
    else:
        _CODE_CACHE.move_to_end(digest)
    return code


_DECIMALS = decimal.Context(prec=28, Emax=999_999, Emin=-999_999,
                            traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])
_HARD_AS: int = resource.RLIM_INFINITY
#: CPU seconds a worker may use in its life (it is replaced long before).
_CPU_HARD = 24 * 3600
_soft_as: int = resource.RLIM_INFINITY


def _set_soft_as(soft: int) -> None:
    """The address-space cap of the coming runs (a script may ask for less memory)."""
    global _soft_as
    resource.setrlimit(resource.RLIMIT_AS, (soft, _HARD_AS))
    _soft_as = soft


def _address_space() -> int:
    """This process's address-space size now (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[0]) * _PAGE
    except OSError:
        return 0


def _on_alarm(signum: int, frame: Any) -> None:
    METER.stop("wall_ms")


def _line_of(exc: BaseException, name: str) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == f"<{name}>":
            line = lineno
    return line


def run(message: dict[str, Any]) -> dict[str, Any]:
    limits = message["limits"]
    name = str(message.get("name") or "script")
    started = time.monotonic()
    cpu_start = time.process_time()
    try:
        code = _code(name, message["source"], message["digest"])
    except ScriptCompileError as exc:
        return {"op": "done", "status": "error", "message": "; ".join(exc.errors)}
    except Exception as exc:  # the compiler itself failed on hostile input: refuse, do not die
        return {"op": "done", "status": "error", "message": f"the script cannot be compiled: {type(exc).__name__}"}
    METER.reset(limits)
    types = message.get("types") or {}
    record = typed(dict(message["record"]), types) if message.get("record") is not None else None
    old = typed(dict(message["old"]), types) if message.get("old") is not None else None
    if old is not None:
        old = MappingProxyType(old)
    writable = message.get("record_writable", True)
    if record is not None and not writable:  # after_* scripts: the record is saved already
        record = MappingProxyType(record)
    ctx = ScriptContext(message, started)
    scope: dict[str, Any] = {
        "__builtins__": SAFE_BUILTINS, "__name__": "script", "__metaclass__": None,
        "_getattr_": _getattr_, "_getitem_": _getitem_, "_getiter_": _getiter_, "_write_": _write_,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence, "_unpack_sequence_": guarded_unpack_sequence,
        "_inplacevar_": _inplacevar_, "_apply_": _apply_, "_print_": _Printer, "_tick_": _tick_,
        "_binop_": _binop_, "_caught_": _caught_,
        "record": record, "old": old, "ctx": ctx, "params": message.get("params") or {},
        "Decimal": Decimal, "date": dt.date, "datetime": dt.datetime, "timedelta": dt.timedelta,
        "math": MATH, "regex": REGEX, "json_loads": json_loads, "json_dumps": json_dumps,
        "parse_date": parse_date, "parse_datetime": parse_datetime, "add_months": add_months,
        "days_between": days_between, "result": None,
    }
    memory = int(limits["memory_mib"]) * 1024 * 1024
    hard = _HARD_AS
    soft = min(_BASE_AS + memory, hard) if hard != resource.RLIM_INFINITY else resource.RLIM_INFINITY
    status: dict[str, Any] = {"status": "ok"}
    out: dict[str, Any] = {}
    decimal.setcontext(_DECIMALS.copy())
    seconds = max(int(limits["wall_ms"]), 1) / 1000
    # A CPU-seconds cap as a backstop to the alarm (a C call the alarm cannot interrupt):
    # past it the kernel stops the process and the host starts another.
    cpu_cap = int(time.process_time() + seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_cap, _CPU_HARD))
    try:
        if soft != _soft_as:
            _set_soft_as(soft)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            exec(code, scope)  # noqa: S102  (RestrictedPython code, our guards)
            room = int(limits["output_bytes"])
            if record is not None and writable:
                out["record"] = plain(record, tick=METER.tick, max_size=room)
            out["result"] = plain(scope.get("result"), tick=METER.tick, max_size=room)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Stop as exc:
        status = {"status": "limit", "limit": exc.limit}
    except MemoryError:
        status = {"status": "limit", "limit": "memory_mib"}
    except RecursionError:
        status = {"status": "limit", "limit": "steps"}
    except TooLarge:
        status = {"status": "limit", "limit": "output_bytes"}
    except PlainError as exc:
        status = {"status": "error", "message": f"the result cannot be returned: {exc}"}
    except Exception as exc:  # the script's own error: reported with its line, never raised here
        status = {"status": "error", "message": f"{type(exc).__name__}: {_text_of(exc)}",
                  "line": _line_of(exc, name)}
    if METER.stopped and status["status"] != "limit":
        # A limit was reached and the script carried on anyway (a finally: that raised
        # something else): the limit stands.
        status = {"status": "limit", "limit": METER.stopped}
    if POISONED:
        status = {"status": "limit", "limit": status.get("limit") or "wall_ms"}
    if status["status"] != "ok":
        out = {}
    reply = {"op": "done", **status, **out, "errors": [[_clean(f) if f is not None else None, _clean(m)]
                                                       for f, m in ctx.errors],
             "log": _clean("".join(METER.log)[:limits["output_bytes"]]),
             "used": {"steps": max(METER.steps, 0), "cpu_ms": int((time.process_time() - cpu_start) * 1000)}}
    # What goes back counts against the output budget; and it must be encodable.
    try:
        size = len(orjson.dumps(reply))
    except MemoryError:
        return {"op": "done", "status": "limit", "limit": "memory_mib", "errors": [], "log": "",
                "used": reply["used"]}
    except (TypeError, ValueError) as exc:
        return {"op": "done", "status": "error", "message": f"the result cannot be returned: {exc}",
                "errors": [], "log": "", "used": reply["used"]}
    if size > int(limits["output_bytes"]) + 65536:
        return {"op": "done", "status": "limit", "limit": "output_bytes", "errors": [], "log": "",
                "used": reply["used"]}
    return reply


def _clean(text: str) -> str:
    """``text`` safe to encode (a lone surrogate becomes "?")."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _text_of(exc: BaseException) -> str:
    """An error's message, short and encodable, however hostile its arguments."""
    try:
        return _clean(str(exc)[:500])
    except (RecursionError, MemoryError, ValueError, TypeError):
        return "(the message cannot be shown)"


def run_batch(message: dict[str, Any]) -> dict[str, Any]:
    """The script once per ``{record, old}`` of ``message["batch"]`` (a bulk write sends
    its records in one round trip), each with the whole budget; a limit ends the batch."""
    items = []
    status = "ok"
    for index, item in enumerate(message["batch"]):
        reply = run({**message, "record": item.get("record"), "old": item.get("old"), "item": index})
        reply.pop("op", None)
        items.append(reply)
        if reply["status"] == "limit":
            status = "limit"
            break
    return {"op": "done", "status": status, "items": items}


# -- start-up ------------------------------------------------------------------------

def lock_down(ceiling_mib: int) -> None:
    """Resource limits for the rest of this process's life (see the module docstring)."""
    global _BASE_AS, _HARD_AS, _soft_as
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    _BASE_AS = _address_space()
    if _BASE_AS:
        _HARD_AS = _soft_as = _BASE_AS + ceiling_mib * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (_HARD_AS, _HARD_AS))
    for limit, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NPROC, 0)):
        resource.setrlimit(limit, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (_CPU_HARD, _CPU_HARD))
    # Only the three pipes are open; no more may be.
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, 3))
    sys.setrecursionlimit(300)


def main() -> None:
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    hello = read_frame(IN)
    lock_down(int(hello.get("memory_ceiling_mib", 512)))
    # Warm the compiler and guards once, so the first real run is not slower.
    compile_script("x = [i * 2 for i in range(3)]\n", "warm-up")
    # Everything loaded so far lives as long as the process: keep the cycle collector
    # from walking it again on every collection (halves the cost of a batch).
    gc.freeze()
    write_frame(OUT, {"op": "ready", "pid": os.getpid()})
    while True:
        try:
            message = read_frame(IN)
        except Exception:  # the host closed the pipe or sent garbage: nothing more to do
            return
        if message.get("op") != "run":
            return
        try:
            reply = run_batch(message) if "batch" in message else run(message)
        except BaseException as exc:  # noqa: BLE001  (whatever broke, the host gets an answer, then a fresh worker)
            reply = {"op": "done", "status": "limit", "limit": "steps",
                     "message": f"the sandbox failed: {type(exc).__name__}"}
        write_frame(OUT, reply)


if __name__ == "__main__":
    main()
