"""The text a script gets for a value: what Python shows, without memory addresses.

CPython's default representation of an object names where it lives
(``<function f at 0x7f3a…>``). An address tells whoever hunts for a memory bug in the
interpreter where the heap is, and it is the one thing in a script's output that
differs between two runs of the same script. So every way a script turns a value
into text goes through :func:`shown_repr` or :func:`shown_str`: the builtins ``repr``
and ``str`` (see :data:`SafeStr`), f-strings and ``%`` formatting (the compiler routes
them here, see :mod:`.policy`), ``print``, ``ctx.log``, ``ctx.error`` and the messages
of a script's errors.

Plain data keeps exactly the text Python gives it (a text that happens to contain
"at 0x" included); anything else is shown by its kind and name (``<function f>``,
``<built-in method get of dict object>``, ``<map object>``).
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from decimal import Decimal
from types import BuiltinFunctionType, FunctionType, MappingProxyType, MethodType
from typing import Any

#: What CPython writes where it shows an object's address.
_ADDRESS_MARK = " at 0x"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")

#: Types whose representation is data only (no address, ever).
PLAIN = frozenset({type(None), bool, int, float, complex, str, bytes, Decimal, dt.date, dt.datetime, dt.time,
                   dt.timedelta, range})
#: Types f-strings and ``%`` format as themselves (their format specs mean something).
FORMATTABLE = frozenset({type(None), bool, int, float, str, Decimal, dt.date, dt.datetime, dt.time, dt.timedelta})

_VIEWS = {type({}.keys()): "dict_keys", type({}.values()): "dict_values", type({}.items()): "dict_items"}


def shown_repr(value: Any, tick: Callable[[], None] | None = None) -> str:
    """``repr(value)`` without addresses. ``tick`` is called per element when a
    container has to be walked (the step budget pays for a big one)."""
    text = repr(value)
    if _ADDRESS_MARK not in text:
        return text  # plain data, and most containers: C speed
    return _Render(tick).repr(value)


def shown_str(value: Any, tick: Callable[[], None] | None = None) -> str:
    """``str(value)`` without addresses."""
    if type(value) is str:
        return value
    text = str(value)
    if _ADDRESS_MARK not in text:
        return text
    return _Render(tick).str(value)


def without_addresses(text: str) -> str:
    """``text`` with what looks like an object's address taken out: for messages only
    (a last line of defence), never for data."""
    return _ADDRESS.sub("", text) if _ADDRESS_MARK in text else text


class _Render:
    """Python's representations rebuilt in Python, for the rare value that holds an
    object whose own representation names its address."""

    def __init__(self, tick: Callable[[], None] | None) -> None:
        self.tick = tick
        self.open: set[int] = set()  # containers being shown: a cycle shows as [...]

    def str(self, value: Any) -> str:
        kind = type(value)
        if kind in PLAIN:
            return str(value)
        if isinstance(value, BaseException):
            args = value.args
            if kind is KeyError and len(args) == 1:
                return self.repr(args[0])
            if not args:
                return ""
            return self.str(args[0]) if len(args) == 1 else self.repr(args)
        return self.repr(value)

    def repr(self, value: Any) -> str:
        if self.tick is not None:
            self.tick()
        kind = type(value)
        if kind in PLAIN:
            return repr(value)
        if kind in (list, tuple, dict, set, frozenset, MappingProxyType) or kind in _VIEWS:
            if id(value) in self.open:
                return "[...]" if kind is list else "{...}"
            self.open.add(id(value))
            try:
                return self._container(value, kind)
            finally:
                self.open.discard(id(value))
        if kind is slice:
            return f"slice({self.repr(value.start)}, {self.repr(value.stop)}, {self.repr(value.step)})"
        if isinstance(value, BaseException):
            return f"{kind.__name__}({', '.join(self.repr(a) for a in value.args)})"
        if kind is FunctionType:
            return f"<function {value.__qualname__}>"
        if kind is MethodType:
            return f"<bound method {value.__func__.__qualname__} of {self.repr(value.__self__)}>"
        if kind is BuiltinFunctionType:
            owner = getattr(value, "__self__", None)
            if owner is None or type(owner).__name__ == "module":
                return f"<built-in function {value.__name__}>"
            return f"<built-in method {value.__name__} of {type(owner).__name__} object>"
        # Iterators, generators, the sandbox's own objects: their representation holds
        # no data of the script's, only a kind and perhaps a name.
        return without_addresses(repr(value))

    def _items(self, values: Any) -> str:
        return ", ".join(self.repr(v) for v in values)

    def _container(self, value: Any, kind: type) -> str:
        if kind is list:
            return f"[{self._items(value)}]"
        if kind is tuple:
            return f"({self.repr(value[0])},)" if len(value) == 1 else f"({self._items(value)})"
        if kind is dict:
            return "{" + ", ".join(f"{self.repr(k)}: {self.repr(v)}" for k, v in value.items()) + "}"
        if kind is MappingProxyType:
            return f"mappingproxy({self._container(dict(value), dict)})"
        if kind in _VIEWS:
            return f"{_VIEWS[kind]}([{self._items(value)}])"
        if not value:
            return f"{kind.__name__}()"
        inner = "{" + self._items(value) + "}"
        return inner if kind is set else f"frozenset({inner})"


class _AsText:
    """A value in a ``%`` format: ``%s`` and ``%r`` show it without addresses."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __str__(self) -> str:
        return shown_str(self.value)

    def __repr__(self) -> str:
        return shown_repr(self.value)


def _format_arg(value: Any) -> Any:
    return value if type(value) in FORMATTABLE else _AsText(value)


def percent_format(template: str | bytes, values: Any) -> Any:
    """``template % values`` with every value shown without addresses."""
    kind = type(values)
    if kind is tuple:
        wrapped: Any = tuple(_format_arg(v) for v in values)
    elif kind is dict or kind is MappingProxyType:
        wrapped = {k: _format_arg(v) for k, v in values.items()}
    else:
        wrapped = _format_arg(values)
    try:
        return template % wrapped
    except TypeError:
        template % values  # the message Python gives for the values themselves (%d of a list…)
        raise


def formatted_value(value: Any, conversion: int) -> Any:
    """The value an f-string's ``{value!conversion}`` formats (see :mod:`.policy`)."""
    if conversion == ord("r"):
        return shown_repr(value)
    if conversion == ord("a"):
        return shown_repr(value).encode("ascii", "backslashreplace").decode("ascii")
    if conversion == ord("s") or type(value) not in FORMATTABLE:
        return shown_str(value)
    return value


class _StrType(type):
    """The metaclass of :class:`SafeStr`: ``isinstance(x, str)`` holds for text, and
    calling it is ``str()`` without addresses."""

    def __instancecheck__(cls, value: Any) -> bool:
        return isinstance(value, str)

    def __subclasscheck__(cls, kind: type) -> bool:
        return issubclass(kind, str)

    def __call__(cls, value: Any = "", encoding: str | None = None, errors: str | None = None) -> str:  # noqa: N805
        if encoding is None and errors is None:
            return shown_str(value)
        return str(value, encoding or "utf-8", errors or "strict")

    def __repr__(cls) -> str:  # noqa: N805
        return "<class 'str'>"


_StrType.__name__ = _StrType.__qualname__ = "type"


class SafeStr(metaclass=_StrType):
    """What scripts know as ``str``: ``str(x)``, ``isinstance(x, str)``, ``map(str, xs)``."""
