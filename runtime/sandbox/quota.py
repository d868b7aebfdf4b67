"""Who gets the next sandbox worker: per-tenant quotas and a fair queue.

The workers of an app process are shared by all its tenants. First come, first
served let one tenant with a handful of concurrent saves hold every worker and
queue ahead of everyone else (another tenant's ``before_save`` waited 5-6 s). So a
run first takes a *slot* of the pool: at most ``size`` slots are out, at most
``per_tenant`` to one tenant, and at most ``queue`` runs of one tenant wait. When a
slot frees, it goes to the waiting tenant served least recently (a tenant that has
not run for a while first), each tenant's own runs in the order they came. With
``per_tenant`` below ``size``, one tenant cannot hold the last worker: another
tenant's run starts at once.

A run started while the same thread holds a slot (a script's ``ctx.update`` that
sets off an approval whose action runs a script) is *nested*: it does not count
against its tenant's share and goes before every waiting run, since the run holding
the slot cannot end before it does.

The operator sets the numbers (``script_tenant_workers``, ``script_tenant_queue``,
``script_wait_ms``; see :mod:`loomwork.config`).
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Hashable, Iterator

from loomwork.metadata.errors import LoomworkError


class SandboxBusy(LoomworkError):
    """No worker could be had: the tenant's queue is full, or none freed up in time."""

    status = 503
    title = "Busy"


def default_per_tenant(size: int) -> int:
    """All workers but one (at least one): one tenant never holds the last worker."""
    return max(1, size - 1)


class _Waiter:
    __slots__ = ("granted", "wake", "tenant")

    def __init__(self, lock: threading.Lock, tenant: Hashable = None) -> None:
        self.granted = False
        self.wake = threading.Condition(lock)
        self.tenant = tenant


class Slots:
    """The slots of one pool (see the module docstring).

    :param size: slots in all (the pool's workers).
    :param per_tenant: slots one tenant may hold at once.
    :param queue: runs of one tenant that may wait for a slot; one more is refused at once.
    :param wait_s: how long a run may wait before it is refused.
    """

    def __init__(self, size: int, per_tenant: int | None = None, queue: int = 16, wait_s: float = 30.0) -> None:
        self.size = max(1, size)
        self.per_tenant = max(1, min(per_tenant or default_per_tenant(self.size), self.size))
        self.queue = max(0, queue)
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._out = 0
        self._held: dict[Hashable, int] = {}
        self._waiting: dict[Hashable, deque[_Waiter]] = {}
        #: When each tenant holding or waiting for a slot last got one (a count of grants).
        self._served: dict[Hashable, int] = {}
        self._grants = 0
        self._nested: deque[_Waiter] = deque()  # nested runs waiting: first of all
        self._local = threading.local()  # slots this thread holds

    def _free_for(self, tenant: Hashable) -> bool:
        return self._out < self.size and self._held.get(tenant, 0) < self.per_tenant

    def _grant(self, tenant: Hashable) -> None:
        self._out += 1
        self._held[tenant] = self._held.get(tenant, 0) + 1
        self._grants += 1
        self._served[tenant] = self._grants

    def acquire(self, tenant: Hashable, *, nested: bool = False) -> None:
        """Take a slot for ``tenant``, waiting in turn (a ``nested`` run: outside its
        tenant's share, before anyone else). :raises SandboxBusy:"""
        with self._lock:
            if nested:
                self._acquire_nested(tenant)
                return
            if self._free_for(tenant) and tenant not in self._waiting:
                self._grant(tenant)
                return
            waiting = self._waiting.get(tenant)
            if len(waiting or ()) >= self.queue:
                raise SandboxBusy("too many of this workspace's scripts are waiting to run; try again in a moment")
            if waiting is None:
                waiting = self._waiting[tenant] = deque()
            me = _Waiter(self._lock)
            waiting.append(me)
            until = time.monotonic() + self.wait_s
            while not me.granted:
                left = until - time.monotonic()
                if left <= 0:
                    self._leave(tenant, me)
                    raise SandboxBusy("every script worker is busy; try again in a moment")
                me.wake.wait(left)

    def _acquire_nested(self, tenant: Hashable) -> None:
        if self._out < self.size and not self._nested:
            self._grant(tenant)
            return
        me = _Waiter(self._lock, tenant)
        self._nested.append(me)
        until = time.monotonic() + self.wait_s
        while not me.granted:
            left = until - time.monotonic()
            if left <= 0:
                self._nested.remove(me)
                raise SandboxBusy("every script worker is busy; try again in a moment")
            me.wake.wait(left)

    def _leave(self, tenant: Hashable, waiter: _Waiter) -> None:
        waiting = self._waiting[tenant]
        waiting.remove(waiter)
        if not waiting:
            del self._waiting[tenant]
            self._forget(tenant)

    def _forget(self, tenant: Hashable) -> None:
        if tenant not in self._held and tenant not in self._waiting:
            self._served.pop(tenant, None)  # idle now: it counts as not served for a while

    def release(self, tenant: Hashable) -> None:
        """Give back a slot of ``tenant``'s; the next tenant in turn gets it."""
        with self._lock:
            self._out -= 1
            held = self._held[tenant] - 1
            if held:
                self._held[tenant] = held
            else:
                del self._held[tenant]
            self._hand_out()
            self._forget(tenant)

    def _hand_out(self) -> None:
        """Grant free slots to waiting runs: of the tenants below their quota, the one
        served least recently first (nested runs before all)."""
        while self._out < self.size and self._nested:
            waiter = self._nested.popleft()
            self._grant(waiter.tenant)
            waiter.granted = True
            waiter.wake.notify()
        while self._out < self.size:
            eligible = [t for t in self._waiting if self._held.get(t, 0) < self.per_tenant]
            if not eligible:
                return
            tenant = min(eligible, key=lambda t: self._served.get(t, 0))
            waiting = self._waiting[tenant]
            waiter = waiting.popleft()
            if not waiting:
                del self._waiting[tenant]
            self._grant(tenant)
            waiter.granted = True
            waiter.wake.notify()

    @contextlib.contextmanager
    def held(self, tenant: Hashable) -> Iterator[None]:
        """A slot for ``tenant`` while the block runs (nested if this thread holds one)."""
        depth = getattr(self._local, "depth", 0)
        self.acquire(tenant, nested=depth > 0)
        self._local.depth = depth + 1
        try:
            yield
        finally:
            self._local.depth = depth
            self.release(tenant)

    def state(self) -> dict[str, object]:
        """Slots out and runs waiting (for tests and the operator's eyes)."""
        with self._lock:
            return {"out": self._out, "held": dict(self._held),
                    "waiting": {t: len(w) for t, w in self._waiting.items()}, "nested": len(self._nested)}
