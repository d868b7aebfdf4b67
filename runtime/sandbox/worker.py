"""The program a sandbox worker process runs: ``python -I -m loomwork.runtime.sandbox.worker``.

The host starts it with an empty environment, ``/`` as its directory and only its
three standard pipes open. Before it reads a script it imports everything it will
need (and warms up on a script that uses what loads lazily: a non-ASCII name, a
``\\N{…}`` escape), drops root if it has it, and locks itself down with resource
limits (no new files, no file writes, no child processes, no core dumps, an
address-space cap). Then it serves one request at a time: a run (compile, cached by
hash; execute with the guards below; convert the results to plain data inside the
budget; answer) or a check (compile only, for a publish).

After each request it settles: it lets go of everything the request made and tells
the host whether it is as good as new (:func:`settle`); if not, the host replaces it
before another run (another tenant's, perhaps) can find it used.

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
import unicodedata  # noqa: F401  (the parser loads it for non-ASCII names and \N{…}; no file opens later)
from collections import OrderedDict
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import orjson
import re2
from RestrictedPython.Guards import guarded_iter_unpack_sequence, guarded_unpack_sequence

from .policy import COMPILE_WALL_MS, ScriptCompileError, compile_script, digest
from .protocol import PlainError, TooLarge, plain, read_frame, typed, write_frame
from .shown import (
    SafeStr,
    formatted_value,
    percent_format,
    shown_repr,
    shown_str,
    without_addresses,
)

#: The host's requests arrive on stdin (buffered: a frame is one read), answers go to stdout.
IN = open(0, "rb", buffering=1 << 16, closefd=False)  # noqa: SIM115  (lives as long as the process)
OUT = 1
#: Sizes a single operation may produce (elements of a string/list, bits of an int).
MAX_SEQUENCE = 10_000_000
MAX_INT_BITS = 100_000
MAX_RANGE = 10_000_000
MAX_REGEX_PATTERN = 1_000
MAX_JSON = 1024 * 1024
#: Source kept compiled (by digest) for later runs; compiled code takes ~25 times the
#: memory of its source, so this keeps the cache to some ten MiB.
CODE_CACHE_SOURCE_BYTES = 512 * 1024
CODE_CACHE_ENTRIES = 256
#: A worker whose address space stays this far above what it was when it started,
#: once a request has let go of everything, is replaced (the cache of compiled code
#: takes some of it). Every run therefore starts within this of a fresh worker, and
#: has its whole memory limit on top of what it starts with.
RETIRE_SLACK_MIB = 64
#: Memory blocks a request may leave behind (cycles the collector has yet to find)
#: before the worker collects them itself, instead of the next run paying for it;
#: past the second number, collecting would take long: the worker is replaced.
COLLECT_BLOCKS = 20_000
RETIRE_BLOCKS = 200_000


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
    if symbol == "%":
        if type(left) is str or type(left) is bytes:
            return percent_format(left, right)
        return left % right
    if type(left) is int and type(right) is int and right > MAX_INT_BITS:  # <<
        raise MemoryError(f"the result would have more than {MAX_INT_BITS} bits")
    return left << right


_INPLACE = {"+=": operator.add, "-=": operator.sub, "/=": operator.truediv, "//=": operator.floordiv,
            "%=": operator.mod, ">>=": operator.rshift, "&=": operator.and_, "|=": operator.or_,
            "^=": operator.xor, "@=": operator.matmul}


def _inplacevar_(op: str, x: Any, y: Any) -> Any:
    if op in ("*=", "**=", "<<=", "%="):
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


def _list_index(items: list, value: Any, *args: Any) -> int:
    try:
        return items.index(value, *args)
    except ValueError:
        # CPython's message shows the value's representation, address and all.
        raise ValueError(f"{shown_repr(value, METER.tick)} is not in list") from None


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
    elif kind is list and name == "index":
        return lambda *a: _list_index(obj, *a)
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
        METER.write_log(_text(sep).join(_text(o) for o in objects) + _text(end))

    def __call__(self) -> str:
        return ""


def _range(*args: Any) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise ValueError(f"a range of more than {MAX_RANGE} numbers")
    return r


def _pow(base: Any, exp: Any, mod: Any = None) -> Any:
    return pow(base, exp, mod) if mod is not None else _binop_("**", base, exp)


def _text(value: Any) -> str:
    """``str(value)`` as a script may see it (see :mod:`.shown`)."""
    return shown_str(value, METER.tick)


def _repr(value: Any) -> str:
    return shown_repr(value, METER.tick)


_repr.__name__ = _repr.__qualname__ = "repr"


def _shown_value_(value: Any, conversion: int) -> Any:
    return formatted_value(value, conversion)


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
    "sub": lambda p, r, t, count=0: _regex(p, t).sub(_text(r).replace("\\", "\\\\"), t, count=count),
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
    return dt.date.fromisoformat(_text(text))


def parse_datetime(text: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(_text(text))


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
    "range": _range, "repr": _repr, "reversed": reversed, "round": round, "set": set, "sorted": sorted,
    "str": SafeStr, "sum": sum, "tuple": tuple, "zip": zip, "iter": iter, "next": next, "pow": _pow,
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
        self.errors.append([None if field is None else _text(field)[:100], _text(message)[:1000]])

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
        METER.write_log(" ".join(_text(p) for p in parts) + "\n")

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


# -- memory ------------------------------------------------------------------------

_PAGE = os.sysconf("SC_PAGE_SIZE")
_MIB = 1024 * 1024
#: /proc/self/statm, opened before the lock-down (no file opens after it); -1 without /proc.
_STATM = -1
#: The address space of this worker when it was ready, before any script.
_BASE_AS = 0
_HARD_AS: int = resource.RLIM_INFINITY
_soft_as: int = resource.RLIM_INFINITY
#: Memory blocks in use when the last request had settled.
_settled_blocks = 0


def _set_soft_as(soft: int) -> None:
    """The address-space cap of what comes next (a run's own, or a compile's)."""
    global _soft_as
    if soft != _soft_as:
        resource.setrlimit(resource.RLIMIT_AS, (soft, _HARD_AS))
        _soft_as = soft


def _address_space() -> int:
    """This process's address-space size now (0 where /proc is missing)."""
    if _STATM < 0:
        return 0
    try:
        return int(os.pread(_STATM, 128, 0).split()[0]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def settle() -> bool:
    """After a request: let go of what it left (collect its cycles, unless there are so
    many that collecting would take long), and say whether this worker is as good as
    new: close to its own first address space, no pile of garbage for the next run to
    pay for. The host replaces a worker that is not."""
    global _settled_blocks
    left = sys.getallocatedblocks() - _settled_blocks
    if left > RETIRE_BLOCKS:
        return False
    if left > COLLECT_BLOCKS:
        gc.collect()
    _settled_blocks = sys.getallocatedblocks()
    return not _BASE_AS or _address_space() <= _BASE_AS + RETIRE_SLACK_MIB * _MIB


# -- compiling ---------------------------------------------------------------------

#: digest and name -> (code, bytes of source): the most recently used first out.
_CODE_CACHE: OrderedDict[str, tuple[Any, int]] = OrderedDict()
_cache_bytes = 0


class CompileTimeout(ScriptCompileError):
    """Compiling went past its time limit (:data:`~.policy.COMPILE_WALL_MS`)."""

    def __init__(self, seconds: float) -> None:
        super().__init__([f"the script took longer than {seconds:g} s to compile; make it shorter or simpler"])


def _cache_key(name: str, message: dict[str, Any]) -> str:
    # The name too: the code names its script, and an error's line is found by that name.
    return f"{message.get('digest')}:{name}"


def _cached(key: str) -> Any | None:
    hit = _CODE_CACHE.get(key)
    if hit is None:
        return None
    _CODE_CACHE.move_to_end(key)
    return hit[0]


def _compile(name: str, source: str, key: str, limit_ms: int = COMPILE_WALL_MS) -> Any:
    """Compile and cache ``source`` within a time of its own (an alarm, and a CPU cap
    behind it), with the whole memory ceiling: never the run's budget.
    :raises ScriptCompileError: (:class:`CompileTimeout` for the time limit)"""
    global _cache_bytes
    seconds = max(int(limit_ms), 1) / 1000
    resource.setrlimit(resource.RLIMIT_CPU, (int(time.process_time() + seconds) + 2, _CPU_HARD))
    _set_soft_as(_HARD_AS)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            code = compile_script(source, name).code
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except Stop:
        raise CompileTimeout(seconds) from None
    size = len(source.encode("utf-8", "surrogatepass"))
    _CODE_CACHE[key] = (code, size)
    _cache_bytes += size
    while len(_CODE_CACHE) > 1 and (len(_CODE_CACHE) > CODE_CACHE_ENTRIES or _cache_bytes > CODE_CACHE_SOURCE_BYTES):
        _cache_bytes -= _CODE_CACHE.popitem(last=False)[1][1]
    return code


def check(message: dict[str, Any]) -> dict[str, Any]:
    """Compile one script for the host's publish check (and keep it for its runs)."""
    name = str(message.get("name") or "script")
    key = _cache_key(name, message)
    if _cached(key) is not None:
        return {"op": "done", "status": "ok", "errors": []}
    try:
        _compile(name, message["source"], key, int(message.get("limit_ms") or COMPILE_WALL_MS))
    except CompileTimeout as exc:
        return {"op": "done", "status": "limit", "limit": "compile", "errors": exc.errors}
    except ScriptCompileError as exc:
        return {"op": "done", "status": "error", "errors": [_clean(e) for e in exc.errors]}
    except Exception as exc:  # the compiler itself failed on hostile input: refuse, do not die
        return {"op": "done", "status": "error", "errors": [f"the script cannot be compiled: {type(exc).__name__}"]}
    return {"op": "done", "status": "ok", "errors": []}


# -- one run -------------------------------------------------------------------------

_DECIMALS = decimal.Context(prec=28, Emax=999_999, Emin=-999_999,
                            traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])
#: CPU seconds a worker may use in its life (it is replaced long before).
_CPU_HARD = 24 * 3600


def _on_alarm(signum: int, frame: Any) -> None:
    METER.stop("wall_ms")


def _line_of(exc: BaseException, name: str) -> int | None:
    line = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_filename == f"<{name}>":
            line = lineno
    return line


_CONTAINER_VALUES = (list, dict)


def _changes(record: dict[str, Any], given: dict[str, Any], given_json: dict[str, Any]) -> dict[str, Any]:
    """What the script set in ``record``: only that goes back (an untouched long text
    must not count against the output budget). A list or dictionary value is compared
    with what came, the rest by identity (the script got its own copies)."""
    changed = {}
    for key, value in record.items():
        if key not in given or value is not given[key] or (
                type(value) in _CONTAINER_VALUES and value != given_json.get(key)):
            changed[key] = value
    return changed


def run(message: dict[str, Any]) -> dict[str, Any]:
    limits = message["limits"]
    name = str(message.get("name") or "script")
    key = _cache_key(name, message)
    try:
        code = _cached(key)
        if code is None:
            # The host gives the compile a time of its own, from "compiling" to "compiled".
            write_frame(OUT, {"op": "compiling"})
            code = _compile(name, message["source"], key)
            write_frame(OUT, {"op": "compiled"})
    except ScriptCompileError as exc:
        return {"op": "done", "status": "error", "message": _clean("; ".join(exc.errors))}
    except Exception as exc:  # the compiler itself failed on hostile input: refuse, do not die
        return {"op": "done", "status": "error", "message": f"the script cannot be compiled: {type(exc).__name__}"}
    started = time.monotonic()
    cpu_start = time.process_time()
    METER.reset(limits)
    types = message.get("types") or {}
    writable = message.get("record_writable", True)
    given_json = message.get("record")
    record: Any = None
    given: dict[str, Any] = {}
    if given_json is not None:
        record = typed(dict(given_json), types)
        if writable:
            for key, value in record.items():
                if type(value) in _CONTAINER_VALUES:  # the script's own copy, to compare with what came
                    record[key] = orjson.loads(orjson.dumps(value))
            given = dict(record)
        else:  # after_* scripts: the record is saved already
            record = MappingProxyType(record)
    old = typed(dict(message["old"]), types) if message.get("old") is not None else None
    if old is not None:
        old = MappingProxyType(old)
    ctx = ScriptContext(message, started)
    scope: dict[str, Any] = {
        "__builtins__": SAFE_BUILTINS, "__name__": "script", "__metaclass__": None,
        "_getattr_": _getattr_, "_getitem_": _getitem_, "_getiter_": _getiter_, "_write_": _write_,
        "_iter_unpack_sequence_": guarded_iter_unpack_sequence, "_unpack_sequence_": guarded_unpack_sequence,
        "_inplacevar_": _inplacevar_, "_apply_": _apply_, "_print_": _Printer, "_tick_": _tick_,
        "_binop_": _binop_, "_caught_": _caught_, "_shown_value_": _shown_value_,
        "record": record, "old": old, "ctx": ctx, "params": message.get("params") or {},
        "Decimal": Decimal, "date": dt.date, "datetime": dt.datetime, "timedelta": dt.timedelta,
        "math": MATH, "regex": REGEX, "json_loads": json_loads, "json_dumps": json_dumps,
        "parse_date": parse_date, "parse_datetime": parse_datetime, "add_months": add_months,
        "days_between": days_between, "result": None,
    }
    # Memory is measured per run: what it may use comes on top of what the worker
    # holds as it starts (which settle() keeps close to a fresh worker's).
    memory = int(limits["memory_mib"]) * _MIB
    at_start = _address_space()
    soft = min(at_start + memory, _HARD_AS) if _HARD_AS != resource.RLIM_INFINITY and at_start \
        else resource.RLIM_INFINITY
    status: dict[str, Any] = {"status": "ok"}
    out: dict[str, Any] = {}
    decimal.setcontext(_DECIMALS.copy())
    seconds = max(int(limits["wall_ms"]), 1) / 1000
    # A CPU-seconds cap as a backstop to the alarm (a C call the alarm cannot interrupt):
    # past it the kernel stops the process and the host starts another.
    cpu_cap = int(time.process_time() + seconds) + 2
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_cap, _CPU_HARD))
    try:
        _set_soft_as(soft)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            exec(code, scope)  # noqa: S102  (RestrictedPython code, our guards)
            room = int(limits["output_bytes"])
            if record is not None and writable:
                out["record"] = plain(_changes(record, given, given_json), tick=METER.tick, max_size=room)
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
    # What the script defined refers to the scope (a function's globals): clearing it
    # breaks that cycle, so its data goes now rather than at some later collection.
    scope.clear()
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
    """An error's message, short and encodable, however hostile its arguments (and
    never with an address, should some message of CPython's still show one)."""
    try:
        return _clean(without_addresses(shown_str(exc)[:500]))
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


def serve(message: dict[str, Any]) -> dict[str, Any]:
    if message.get("op") == "check":
        return check(message)
    return run_batch(message) if "batch" in message else run(message)


# -- start-up ------------------------------------------------------------------------

#: Run once before the lock-down, so everything a script may use is loaded while the
#: worker can still open files (the parser loads ``unicodedata`` on first need).
WARM_UP = ("名 = '\\N{BULLET}'\nx = [i * 2 for i in range(3)]\n"
           "result = f'{名}{x!r}{Decimal(\"1.5\"):.2f}' + '%s' % (x,) + repr(record) + str(len(x))\n")


def warm_up() -> None:
    message = {"name": "warm-up", "source": WARM_UP, "digest": digest(WARM_UP), "record": {"a": "1"}, "types": {},
               "limits": {"steps": 10_000, "wall_ms": 5_000, "memory_mib": 64, "output_bytes": 10_000},
               "now": "2026-01-01T00:00:00+00:00", "today": "2026-01-01"}
    _compile("warm-up", WARM_UP, _cache_key("warm-up", message))  # compiled here: run() announces no compile
    reply = run(message)
    if reply["status"] != "ok":
        raise RuntimeError(f"the sandbox's warm-up failed: {reply.get('message')}")


def lock_down(ceiling_mib: int) -> None:
    """Resource limits for the rest of this process's life (see the module docstring)."""
    global _BASE_AS, _HARD_AS, _soft_as, _STATM
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    try:
        _STATM = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        _STATM = -1
    _BASE_AS = _address_space()
    if _BASE_AS:
        _HARD_AS = _soft_as = _BASE_AS + (ceiling_mib + RETIRE_SLACK_MIB) * _MIB
        resource.setrlimit(resource.RLIMIT_AS, (_HARD_AS, _HARD_AS))
    for limit, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_FSIZE, 0), (resource.RLIMIT_NPROC, 0)):
        resource.setrlimit(limit, (value, value))
    resource.setrlimit(resource.RLIMIT_CPU, (_CPU_HARD, _CPU_HARD))
    # Only the three pipes (and the memory gauge) are open; no more may be.
    files = max(3, _STATM + 1)
    resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
    sys.setrecursionlimit(300)


def main() -> None:
    global _settled_blocks
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    hello = read_frame(IN)
    warm_up()
    # Everything loaded so far lives as long as the process: keep the cycle collector
    # from walking it again on every collection (halves the cost of a batch).
    gc.collect()
    gc.freeze()
    lock_down(int(hello.get("memory_ceiling_mib", 512)))
    _settled_blocks = sys.getallocatedblocks()
    write_frame(OUT, {"op": "ready", "pid": os.getpid()})
    while True:
        try:
            message = read_frame(IN)
        except Exception:  # the host closed the pipe or sent garbage: nothing more to do
            return
        if message.get("op") not in ("run", "check"):
            return
        try:
            reply = serve(message)
        except BaseException as exc:  # noqa: BLE001  (whatever broke, the host gets an answer, then a fresh worker)
            reply = {"op": "done", "status": "limit", "limit": "steps",
                     "message": f"the sandbox failed: {type(exc).__name__}"}
        write_frame(OUT, reply)
        del message, reply  # nothing of this request may outlive it
        write_frame(OUT, {"op": "settled", "fresh": settle()})


if __name__ == "__main__":
    main()
