"""Sandbox worker processes, kept ready, and the watchdog that kills one that overruns.

A worker is a fresh interpreter (``python -I -m loomwork.runtime.sandbox.worker``),
not a fork of the host: it inherits no memory, no database connections, no secrets,
no environment. It is started before it is needed (pre-spawned), used by one run at
a time, and replaced after any limit, crash or protocol error, and every
``max_runs`` runs.

The caller's thread is the watchdog: it waits for each frame with ``select`` until
the run's deadline, and kills the process when the deadline passes.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from loomwork.metadata.errors import LoomworkError

from .budget import BudgetExceeded
from .protocol import FrameReader, ProtocolError, encode, write_frame

#: Time a worker gets after its own wall-time alarm to say so before it is killed.
GRACE_S = 0.25
#: Time a new worker gets to start.
START_TIMEOUT_S = 20.0


class WorkerCrashed(Exception):
    """The worker died or broke the protocol."""


class SandboxBusy(LoomworkError):
    """Every worker stayed busy for as long as a caller may wait."""

    status = 503
    title = "Busy"


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
            env={"LANG": "C.UTF-8"}, cwd="/", close_fds=True, start_new_session=True)
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

    def wait_ready(self) -> None:
        if self.ready:
            return
        hello = self.receive(time.monotonic() + START_TIMEOUT_S)
        if not hello or hello.get("op") != "ready":
            raise WorkerCrashed("the worker did not start")
        self.ready = True

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
    """Up to ``size`` workers; a run takes an idle one (or waits for one)."""

    def __init__(self, size: int = 2, max_runs: int = 1000, memory_ceiling_mib: int = 512,
                 wait_s: float = 30.0) -> None:
        self.size = max(1, size)
        self.wait_s = wait_s
        self.max_runs = max_runs
        self.memory_ceiling_mib = memory_ceiling_mib
        self._idle: list[Worker] = []
        self._count = 0
        self._cond = threading.Condition()
        self.started = 0  # workers ever started (tests and benchmarks read it)

    def _spawn(self) -> Worker:
        self.started += 1
        return Worker(self.memory_ceiling_mib)

    def warm(self) -> None:
        """Start every worker now, so the first runs do not wait for a start."""
        with self._cond:
            while self._count < self.size:
                self._idle.append(self._spawn())
                self._count += 1

    def _take(self) -> Worker:
        """An idle worker (a dead one is replaced), or a new one while there is room.
        :raises SandboxBusy: when none frees up within ``wait_s``."""
        until = time.monotonic() + self.wait_s
        with self._cond:
            while True:
                if self._idle:
                    worker = self._idle.pop()
                    if worker.proc.poll() is None:
                        return worker
                    worker.kill()  # died while idle: make room for a fresh one
                    self._count -= 1
                    continue
                if self._count < self.size:
                    self._count += 1
                    break
                left = until - time.monotonic()
                if left <= 0:
                    raise SandboxBusy("every script worker is busy; try again in a moment")
                self._cond.wait(left)
        try:
            return self._spawn()
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _give_back(self, worker: Worker, healthy: bool) -> None:
        worker.runs += 1
        if healthy and worker.runs < self.max_runs:
            with self._cond:
                self._idle.append(worker)
                self._cond.notify()
            return
        worker.kill()
        # Start the replacement now: the next run finds it ready.
        try:
            fresh = self._spawn()
        except OSError:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise
        with self._cond:
            self._idle.append(fresh)
            self._cond.notify()

    def run(self, request: dict[str, Any], on_call: Callable[[str, dict[str, Any], int], dict[str, Any]],
            wall_ms: int, script: str | None = None) -> dict[str, Any]:
        """Run one script; ``on_call(name, args, item)`` answers its ``ctx`` requests
        (``item``: which record of a batch is asking).

        :raises BudgetExceeded: when the deadline passes (the worker is killed).
        :raises WorkerCrashed: when the worker dies or breaks the protocol.
        """
        try:
            frame = encode({"op": "run", **request})
        except TypeError as exc:
            raise Unsendable(str(exc)) from None
        worker = self._take()
        healthy = False
        try:
            worker.wait_ready()
            started = time.monotonic()
            deadline = started + wall_ms / 1000 + GRACE_S
            worker.send_frame(frame)
            while True:
                message = worker.receive(deadline)
                if message is None:
                    raise BudgetExceeded("wall_ms", int((time.monotonic() - started) * 1000), wall_ms, script)
                if message.get("op") == "done":
                    _enforce(message, request.get("limits") or {}, time.monotonic() - started)
                    healthy = message.get("status") != "limit"
                    message["wall_ms"] = int((time.monotonic() - started) * 1000)
                    return message
                if message.get("op") != "call":
                    raise WorkerCrashed(f"unexpected message {message.get('op')!r}")
                item = message.get("item")
                answer = on_call(str(message.get("name")), message.get("args") or {}, item if type(item) is int else 0)
                try:
                    frame = encode(answer)
                except (ProtocolError, TypeError):
                    frame = encode({"error": f"ctx.{message.get('name')}: the answer is too large to pass to a "
                                             f"script; ask for fewer records or fields"})
                worker.send_frame(frame)
        finally:
            self._give_back(worker, healthy)

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        for worker in idle:
            worker.kill()
