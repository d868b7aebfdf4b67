"""Sandbox worker processes, kept ready, and the watchdog that kills one that overruns.

A worker is a fresh interpreter (``python -I -m loomwork.runtime.sandbox.worker``),
not a fork of the host: it inherits no memory, no database connections, no secrets,
no environment. It is started before it is needed (pre-spawned), used by one run at
a time, and replaced after any limit, crash or protocol error, after a run that left
it not as good as new (the worker says so when it settles: memory it could not give
back, a pile of garbage), and every ``max_runs`` runs. The replacement is started
and waited for by the run that caused it, so the next run (another tenant's,
perhaps) finds a ready worker.

Runs take turns through :class:`~.quota.Slots`: per-tenant quotas and a fair queue.

The caller's thread is the watchdog: it waits for each frame with ``select`` until
the run's deadline, and kills the process when the deadline passes. Compiling a
script the worker has not seen has a time of its own (the worker says when it
starts and ends), so it never eats into the run's.
"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from .budget import BudgetExceeded
from .policy import COMPILE_WALL_MS, Inconclusive, digest
from .protocol import FrameReader, ProtocolError, encode, write_frame
from .quota import SandboxBusy, Slots

__all__ = ["Pool", "SandboxBusy", "Unsendable", "WorkerCrashed"]

log = logging.getLogger(__name__)

#: Time a worker gets after its own wall-time alarm to say so before it is killed.
GRACE_S = 0.25
#: Time a new worker gets to start.
START_TIMEOUT_S = 20.0
#: Time a worker gets to settle after a request (collecting a run's garbage).
SETTLE_S = 2.0
#: A worker's whole environment. A fixed mmap threshold makes glibc give large blocks
#: back to the system when they are freed (its default raises the threshold after the
#: first such free, and a heap it cannot trim keeps a finished run's memory).
WORKER_ENV = {"LANG": "C.UTF-8", "MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


class WorkerCrashed(Exception):
    """The worker died or broke the protocol."""


def _enforce(reply: dict[str, Any], limits: dict[str, int], elapsed_s: float) -> None:
    """Whatever the worker says, a run past its steps or wall time ended at that limit
    (and its worker is not trusted again)."""
    items = reply["items"] if "items" in reply else [reply]
    for item in items:
        if item.get("status") == "limit":
            continue
        steps = (item.get("used") or {}).get("steps", 0)
        if limits.get("steps") is not None and steps > limits["steps"]:
            item.update(status="limit", limit="steps")
            reply["status"] = "limit"
    if "items" not in reply and limits.get("wall_ms") is not None and elapsed_s * 1000 > limits["wall_ms"] + 50 \
            and reply.get("status") != "limit":
        reply.update(status="limit", limit="wall_ms")


class Unsendable(ValueError):
    """A request holding a value JSON cannot (a set, an integer over 64 bits…)."""


class Worker:
    def __init__(self, memory_ceiling_mib: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-m", "loomwork.runtime.sandbox.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=WORKER_ENV, cwd="/", close_fds=True, start_new_session=True)
        self.reader = FrameReader(self.proc.stdout.fileno())
        self.runs = 0
        self.ready = False
        self.memory_ceiling_mib = memory_ceiling_mib
        write_frame(self.proc.stdin.fileno(), {"op": "hello", "memory_ceiling_mib": memory_ceiling_mib})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, message: Any) -> None:
        self.send_frame(encode(message))

    def send_frame(self, frame: bytes) -> None:
        try:
            view = memoryview(frame)
            fd = self.proc.stdin.fileno()
            while view:
                view = view[os.write(fd, view):]
        except (BrokenPipeError, OSError) as exc:
            raise WorkerCrashed(f"the worker's pipe closed ({exc})") from None

    def receive(self, deadline: float) -> Any | None:
        """The next frame, or None if ``deadline`` passed first."""
        try:
            return self.reader.read(deadline)
        except ProtocolError as exc:
            raise WorkerCrashed(f"{exc} (worker exit code {self.proc.poll()})") from None

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Whether the worker has said it is ready, waiting up to ``timeout`` seconds.
        :raises WorkerCrashed: when it died or said something else."""
        if self.ready:
            return True
        hello = self.receive(time.monotonic() + timeout)
        if hello is None:
            if timeout >= START_TIMEOUT_S:
                raise WorkerCrashed("the worker did not start")
            return False
        if hello.get("op") != "ready":
            raise WorkerCrashed("the worker did not start")
        self.ready = True
        return True

    def settled(self) -> bool:
        """After a request: whether the worker says it is as good as new."""
        try:
            message = self.receive(time.monotonic() + SETTLE_S)
        except WorkerCrashed:
            return False
        return bool(message) and message.get("op") == "settled" and message.get("fresh") is True

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass  # a zombie the OS reaps with us; nothing else can be done from here
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass  # already closed by the dying process


class Pool:
    """Up to ``size`` workers, shared by tenants through per-tenant slots (see
    :mod:`.quota`): a run waits for a slot of its tenant, then takes a worker.

    :param tenant_workers: workers one tenant's runs may hold at once (default: all
        but one); :param tenant_queue: runs of one tenant that may wait;
        :param wait_s: how long a run may wait for a slot.
    """

    def __init__(self, size: int = 2, max_runs: int = 1000, memory_ceiling_mib: int = 512,
                 wait_s: float = 30.0, tenant_workers: int | None = None, tenant_queue: int = 16) -> None:
        self.size = max(1, size)
        self.max_runs = max_runs
        self.memory_ceiling_mib = memory_ceiling_mib
        self.slots = Slots(self.size, tenant_workers, tenant_queue, wait_s)
        self._idle: list[Worker] = []
        self._count = 0
        self._lock = threading.Lock()
        self.started = 0  # workers ever started (tests and benchmarks read it)

    @property
    def wait_s(self) -> float:
        return self.slots.wait_s

    def _spawn(self) -> Worker:
        self.started += 1
        return Worker(self.memory_ceiling_mib)

    def warm(self) -> None:
        """Start every worker now, so the first runs do not wait for a start."""
        with self._lock:
            while self._count < self.size:
                self._idle.append(self._spawn())
                self._count += 1

    def _pick(self) -> Worker | None:
        """An idle worker, a ready one first (a replacement may still be starting)."""
        for worker in reversed(self._idle):
            try:
                ready = worker.wait_ready(0)
            except WorkerCrashed:
                ready = True  # dead: taken, found dead and replaced below
            if ready:
                self._idle.remove(worker)
                return worker
        return self._idle.pop() if self._idle else None

    def _take(self) -> Worker:
        """A worker for the slot the caller holds (there is always an idle one or room
        for one more: no more slots than workers are out)."""
        while True:
            with self._lock:
                worker = self._pick()
                if worker is None:
                    self._count += 1
            if worker is None:
                try:
                    return self._spawn()
                except BaseException:
                    with self._lock:
                        self._count -= 1
                    raise
            if worker.proc.poll() is None:
                return worker
            worker.kill()  # died while idle: make room for a fresh one
            with self._lock:
                self._count -= 1

    def _give_back(self, worker: Worker, healthy: bool) -> None:
        worker.runs += 1
        if healthy and worker.runs < self.max_runs:
            with self._lock:
                self._idle.append(worker)
            return
        worker.kill()
        # The run that used this worker up starts its replacement and waits for it (it
        # holds its slot meanwhile), so the next run finds a ready worker.
        fresh = None
        try:
            fresh = self._spawn()
            fresh.wait_ready()
        except (OSError, WorkerCrashed) as exc:
            log.warning("a sandbox worker could not be started: %s", exc)
            if fresh is not None:
                fresh.kill()
            with self._lock:
                self._count -= 1  # the next run that needs one starts it
            return
        with self._lock:
            self._idle.append(fresh)

    def run(self, request: dict[str, Any], on_call: Callable[[str, dict[str, Any], int], dict[str, Any]],
            wall_ms: int, script: str | None = None, *, tenant: Hashable = None) -> dict[str, Any]:
        """Run one script for ``tenant``; ``on_call(name, args, item)`` answers its
        ``ctx`` requests (``item``: which record of a batch is asking).

        :raises BudgetExceeded: when the deadline passes (the worker is killed).
        :raises WorkerCrashed: when the worker dies or breaks the protocol.
        :raises SandboxBusy: when the tenant's queue is full or no slot frees in time.
        """
        try:
            frame = encode({"op": "run", **request})
        except TypeError as exc:
            raise Unsendable(str(exc)) from None
        with self.slots.held(tenant):
            worker = self._take()
            healthy = False
            try:
                worker.wait_ready()
                reply = self._exchange(worker, frame, on_call, wall_ms, request.get("limits") or {}, script)
                healthy = reply.get("status") != "limit"
                return reply
            finally:
                self._give_back(worker, healthy and worker.settled())

    @staticmethod
    def _exchange(worker: Worker, frame: bytes, on_call: Callable[[str, dict[str, Any], int], dict[str, Any]],
                  wall_ms: int, limits: dict[str, int], script: str | None) -> dict[str, Any]:
        started = time.monotonic()
        deadline = started + wall_ms / 1000 + GRACE_S
        compiling = False
        worker.send_frame(frame)
        while True:
            message = worker.receive(deadline)
            if message is None:
                if compiling:
                    raise WorkerCrashed(f"compiling took longer than {COMPILE_WALL_MS} ms")
                raise BudgetExceeded("wall_ms", int((time.monotonic() - started) * 1000), wall_ms, script)
            op = message.get("op")
            if op == "done":
                _enforce(message, limits, time.monotonic() - started)
                message["wall_ms"] = int((time.monotonic() - started) * 1000)
                return message
            if op == "compiling":  # its own time, not the run's
                compiling = True
                deadline = time.monotonic() + COMPILE_WALL_MS / 1000 + GRACE_S
                continue
            if op == "compiled":
                compiling = False
                started = time.monotonic()
                deadline = started + wall_ms / 1000 + GRACE_S
                continue
            if op != "call":
                raise WorkerCrashed(f"unexpected message {op!r}")
            item = message.get("item")
            answer = on_call(str(message.get("name")), message.get("args") or {}, item if type(item) is int else 0)
            try:
                frame = encode(answer)
            except (ProtocolError, TypeError):
                frame = encode({"error": f"ctx.{message.get('name')}: the answer is too large to pass to a "
                                         f"script; ask for fewer records or fields"})
            worker.send_frame(frame)

    def check(self, name: str, source: str, *, tenant: Hashable = None, limit_ms: int = COMPILE_WALL_MS) -> list[str]:
        """Compile ``source`` in a worker (within ``limit_ms``) and return its errors;
        the worker keeps the code for its runs.

        :raises Inconclusive: when compiling ran out of time or stopped the worker.
        :raises SandboxBusy: as :meth:`run`.
        """
        frame = encode({"op": "check", "name": name, "source": source, "digest": digest(source), "limit_ms": limit_ms})
        with self.slots.held(tenant):
            worker = self._take()
            healthy = False
            try:
                worker.wait_ready()
                worker.send_frame(frame)
                reply = worker.receive(time.monotonic() + limit_ms / 1000 + GRACE_S)
                if reply is None or reply.get("status") == "limit":
                    raise Inconclusive(f"the script took longer than {limit_ms / 1000:g} s to compile; "
                                       f"make it shorter or simpler")
                if reply.get("op") != "done":
                    raise WorkerCrashed(f"unexpected message {reply.get('op')!r}")
                healthy = True
                return [str(e) for e in reply.get("errors") or ()]
            except WorkerCrashed:
                raise Inconclusive("the script cannot be compiled: it stopped the sandbox process") from None
            finally:
                self._give_back(worker, healthy and worker.settled())

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.kill()
