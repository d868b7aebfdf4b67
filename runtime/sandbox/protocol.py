"""What crosses between the host and a sandbox worker: JSON frames, never pickle.

A frame is a 4-byte big-endian length and that many bytes of JSON. Both sides cap
the size; values are converted to and from plain JSON data here, with a depth and
size cap, so nothing but dicts, lists, strings, numbers, booleans and null crosses.
"""
from __future__ import annotations

import datetime as dt
import math
import os
import select
import struct
import time
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import orjson

MAX_FRAME = 16 * 1024 * 1024
MAX_DEPTH = 32
_HEADER = struct.Struct(">I")


class ProtocolError(Exception):
    """A frame that is too big, not JSON, or cut short (the other side died)."""


def _default(value: Any) -> Any:
    if type(value) is Decimal:
        return str(value)
    raise TypeError(f"a {type(value).__name__} cannot be sent")


def encode(message: Any) -> bytes:
    """A frame of ``message``: JSON (decimals as text, dates in ISO form) with its length.
    :raises TypeError: for a value JSON cannot hold."""
    body = orjson.dumps(message, default=_default)
    if len(body) > MAX_FRAME:
        raise ProtocolError(f"a message of {len(body)} bytes is over the {MAX_FRAME}-byte cap")
    return _HEADER.pack(len(body)) + body


def write_frame(fd: int, message: Any) -> None:
    view = memoryview(encode(message))
    while view:
        written = os.write(fd, view)
        view = view[written:]


def read_frame(stream: Any) -> Any:
    """The next frame from a buffered binary ``stream`` (one read call for small frames)."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise ProtocolError("the other side closed the pipe")
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError(f"a message of {length} bytes is over the {MAX_FRAME}-byte cap")
    body = stream.read(length)
    if len(body) < length:
        raise ProtocolError("the other side closed the pipe")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"a message is not JSON: {exc}") from None


class FrameReader:
    """Frames from a pipe, waiting no longer than a deadline (the host's side)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self.buffer = bytearray()

    #: How long to poll before sleeping in select: a short script answers within it,
    #: and polling saves the wake-up of a sleeping thread (most of a hook's round trip).
    SPIN_S = 0.0005

    def _fill(self, deadline: float) -> bool:
        chunk = None
        spin_until = min(time.monotonic() + self.SPIN_S, deadline)
        while time.monotonic() < spin_until:
            try:
                chunk = os.read(self.fd, 1 << 16)
                break
            except BlockingIOError:
                continue
        if chunk is None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return False
            chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            raise ProtocolError("the other side closed the pipe")
        self.buffer += chunk
        return True

    def read(self, deadline: float) -> Any | None:
        """The next frame, or None when ``deadline`` (``time.monotonic()``) passes first."""
        while len(self.buffer) < _HEADER.size:
            if not self._fill(deadline):
                return None
        (length,) = _HEADER.unpack_from(self.buffer)
        if length > MAX_FRAME:
            raise ProtocolError(f"a message of {length} bytes is over the {MAX_FRAME}-byte cap")
        while len(self.buffer) < _HEADER.size + length:
            if not self._fill(deadline):
                return None
        body = bytes(self.buffer[_HEADER.size:_HEADER.size + length])
        del self.buffer[:_HEADER.size + length]
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"a message is not JSON: {exc}") from None


class PlainError(ValueError):
    """A value that is not plain data (or too deep) where plain data is needed."""


class TooLarge(PlainError):
    """A value bigger than the size it may have (a run's output budget)."""


_SCALARS = frozenset({type(None), bool, str, int, float, Decimal, dt.date, dt.datetime, dt.time})
_CONTAINERS = frozenset({list, tuple, dict, MappingProxyType})


def _scalar(item: Any) -> Any:
    """A scalar of a type in ``_SCALARS`` as JSON data. :raises PlainError:"""
    kind = type(item)
    if kind is str:
        if not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise PlainError("a text is not valid Unicode (it holds a lone surrogate)") from None
        return item
    if kind is int:
        if not -(1 << 63) <= item < (1 << 64):
            raise PlainError("a whole number is too large to pass on (use str() or Decimal)")
        return item
    if kind is float:
        if not math.isfinite(item):
            raise PlainError("a number is not finite")
        return item
    if kind is Decimal:
        if not item.is_finite():
            raise PlainError("a decimal is not finite")
        return str(item)
    if kind is dt.date or kind is dt.datetime or kind is dt.time:
        return item.isoformat()
    return item  # None, bool


def plain(value: Any, *, tick: Any = None, max_depth: int = MAX_DEPTH, max_size: int | None = None) -> Any:
    """``value`` as JSON-ready data: Decimal → str, dates → ISO text, tuples → lists.

    Only the exact built-in types are accepted (a subclass could lie in ``__eq__`` or
    ``__str__``), walked without recursion; ``tick`` is called per list or dictionary
    so a huge result is paid for in the caller's step budget; past ``max_size`` (about
    the bytes of its JSON) it raises :class:`TooLarge` before building more.
    """
    limit = max_size if max_size is not None else -1
    size = 0

    def convert(item: Any) -> Any:
        nonlocal size
        kind = type(item)
        if kind in _SCALARS:
            size += len(item) + 8 if kind is str else 8
            if size > limit >= 0:
                raise TooLarge(f"the value is larger than {max_size} bytes")
            return _scalar(item)
        raise PlainError(f"a {kind.__name__} cannot be passed on (only text, numbers, booleans, None, "
                         f"Decimal, dates, lists and dictionaries)")

    if type(value) not in _CONTAINERS:
        return convert(value)
    root: list[Any] = [None]
    stack: list[tuple[Any, Any, Any, int]] = [(value, root, 0, 0)]
    while stack:
        item, parent, key, depth = stack.pop()
        if tick is not None:
            tick()
        if depth >= max_depth:
            raise PlainError(f"a value is nested more than {max_depth} levels deep")
        kind = type(item)
        if kind is list or kind is tuple:
            out: Any = [None] * len(item)
            pairs: Any = enumerate(item)
        else:
            out = {}
            pairs = item.items()
        size += 8
        for k, child in pairs:
            if kind is not list and kind is not tuple and type(k) is not str:
                raise PlainError("dictionary keys must be text")
            if type(child) in _CONTAINERS:
                out[k] = None
                stack.append((child, out, k, depth + 1))
            else:
                out[k] = convert(child)
        parent[key] = out
    return root[0]


def typed(record: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """``record`` (JSON form) with decimals as Decimal and dates as date/datetime."""
    for name, kind in types.items():
        value = record.get(name)
        if value is None:
            continue
        try:
            if kind in ("decimal", "currency", "percent"):
                record[name] = Decimal(str(value))
            elif kind == "date":
                record[name] = dt.date.fromisoformat(value)
            elif kind == "datetime":
                record[name] = dt.datetime.fromisoformat(value)
        except (ValueError, TypeError, ArithmeticError):
            pass  # left as it came: the record service will say what is wrong with it
    return record
