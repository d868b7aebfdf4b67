"""The runtime services of one process, wired together once."""
from __future__ import annotations

from .approvals import ApprovalService
from .compiled import Runtime
from .jobs import JobService
from .packages import PackageService
from .permissions import Permissions
from .publishing import MetadataService
from .query import QueryService
from .records import RecordService
from .scripts import ScriptService
from .users import UserService
from .views import ViewService
from .workflows import WorkflowService


class Services:
    """Everything a caller (API, CLI, jobs, tests) needs, sharing one compiled cache."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.permissions = Permissions()
        self.metadata = MetadataService(runtime)
        self.records = RecordService(runtime, self.permissions)
        self.query = QueryService(runtime, self.permissions)
        self.users = UserService()
        self.packages = PackageService(self.metadata)
        self.views = ViewService(runtime, self.permissions, self.query)
        self.scripts = ScriptService(runtime, self.permissions)
        self.scripts.records, self.scripts.query = self.records, self.query
        self.records.scripts = self.scripts
        self.jobs = JobService()
        self.approvals = ApprovalService(runtime, self.permissions, self.records, self.users, self.scripts,
                                         self.jobs)
        self.records.approvals = self.approvals
        self.workflows = WorkflowService(runtime, self.permissions, self.records)
        self.records.workflows = self.workflows
