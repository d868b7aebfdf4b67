"""The runtime services of one process, wired together once."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from .abilities import AbilityService
from .approvals import ApprovalService
from .compiled import Runtime
from .jobs import JobService
from .packages import PackageService
from .participants import builtin_participants
from .permissions import Permissions
from .pipeline import Participant
from .publishing import MetadataService
from .query import QueryService
from .records import RecordService
from .scripts import ScriptService
from .users import UserService
from .views import ViewService
from .workflows import WorkflowService

#: Builds the write pipeline's participants once every service exists (they call back
#: into scripts, approvals and workflows). The app passes the plugin hook's results.
ParticipantFactory = Callable[["Services"], Iterable[Participant]]


class Services:
    """Everything a caller (API, CLI, jobs, tests) needs, sharing one compiled cache.

    :param participants: the write pipeline's participants; by default the built-ins
        (an app gets them, and plugins', from ``loomwork_write_participants``).
    """

    def __init__(self, runtime: Runtime, participants: ParticipantFactory = builtin_participants) -> None:
        self.runtime = runtime
        self.permissions = Permissions()
        self.jobs = JobService()
        self.metadata = MetadataService(runtime, self.permissions, self.jobs)
        self.query = QueryService(runtime, self.permissions)
        self.records = RecordService(runtime, self.permissions)
        self.users = UserService()
        self.packages = PackageService(self.metadata)
        self.views = ViewService(runtime, self.permissions, self.query)
        self.scripts = ScriptService(runtime, self.permissions, self.records, self.query)
        # Publishing compiles scripts in a sandbox worker, not in this process.
        runtime.check_scripts = self.scripts.check_sources
        self.approvals = ApprovalService(runtime, self.permissions, self.records, self.users, self.scripts,
                                         self.jobs)
        self.workflows = WorkflowService(runtime, self.permissions, self.records)
        #: What an actor may do with a record now, and why not (pages ask here).
        self.abilities = AbilityService(runtime, self.permissions, self.approvals, self.workflows)
        # The pipeline is the record service's registry of participants, filled once
        # here: the built-ins need the services above, which need the record service.
        for p in participants(self):
            self.records.pipeline.add(p)
