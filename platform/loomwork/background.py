"""Background work of an installation: the due jobs and scheduled scripts of every tenant.

``loomwork worker`` runs :func:`run_once` in a loop. A one-process installation (the
embedded demo, ``loomwork serve``) runs the same loop in a daemon thread of the server
(:func:`start`), so deadlines, notifications and a recompute job a crash interrupted go
on there too without a second process. Several such loops may run side by side over one
database: each job and each scheduled run happens once (runtime/jobs.py, D40, D47).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from loomwork.runtime.context import Actor, Context
from loomwork.runtime.scripts import SCRIPTS_FLAG

from .state import AppState

log = logging.getLogger(__name__)

#: Seconds between two rounds, by default.
INTERVAL = 15.0

#: Told each line worth reporting, and whether it is an error.
Say = Callable[[str, bool], None]


def run_once(st: AppState, say: Say) -> None:
    """One round over every tenant: run its due jobs, then its scheduled scripts (where
    scripts are on). One tenant's trouble (a dropped schema, say) does not stop the rest."""
    for t in st.platform.tenants():
        try:
            ctx = Context(st.platform.tenant(t["name"]), Actor.system())
            for job in st.services.jobs.run_due(ctx):
                if job["status"] != "done":
                    say(f"{t['name']}: job {job['job']} ({job['kind']}) {job['status']}: {job.get('error', '')}",
                        False)
            runs = st.services.scripts.run_schedules(ctx) if st.platform.flag(t["name"], SCRIPTS_FLAG) else []
        except Exception as exc:  # noqa: BLE001 - reported, and the next tenant goes on
            say(f"{t['name']}: background work not done: {type(exc).__name__}: {exc}", True)
            continue
        for run in runs:
            say(f"{t['name']}: {run['script']} {run['status']} {run.get('error') or ''}".rstrip(), False)


def _logged(line: str, error: bool) -> None:
    (log.error if error else log.info)("%s", line)


def start(st: AppState, interval: float = INTERVAL) -> threading.Event:
    """Run :func:`run_once` every ``interval`` seconds in a daemon thread, the first
    round at once (work left by a process that stopped goes on); set the returned event
    to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                run_once(st, _logged)
            except Exception:  # noqa: BLE001 - the platform registry unreachable, say: try again later
                log.exception("background work failed; trying again in %s s", interval)
            stop.wait(interval)

    threading.Thread(target=loop, name="loomwork-background", daemon=True).start()
    return stop
