"""The routing layer's exceptions: one tree, every node carrying fields a caller can act on.

```
RoutingError                               anything this layer refuses or fails to do
├── NoRouteError(capabilities)             no live agent offers every capability asked for
├── DelegationError(agent, target, chain)  a delegation refused; nothing ran
│   ├── DelegationNotAllowedError          target is not among the agent's allowed delegates
│   ├── ChainDepthError(depth, max_depth)  the chain would exceed max_chain_depth
│   └── DelegationCycleError               target is already in the chain
├── TaskError                              the task queue
│   ├── TaskValidationError(field, reason) bad task input; nothing was queued
│   ├── TaskNotFoundError(task_id)         no such task (or not in the state asked for)
│   └── TaskTimeoutError(task_id, timeout) an attempt ran past the task's timeout
└── WorkflowError(workflow)                workflows
    ├── WorkflowDefinitionError(field, reason)  a bad DAG: unknown dependency, cycle, ...
    └── WorkflowMismatchError(run_id)           resuming a run with a different workflow
```

Refusals (``NoRouteError``, ``DelegationError``, ``TaskValidationError``) are usage errors that
change nothing; an API layer maps them to 404/403/422 without looking inside.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ChainDepthError",
    "DelegationCycleError",
    "DelegationError",
    "DelegationNotAllowedError",
    "NoRouteError",
    "RoutingError",
    "TaskError",
    "TaskNotFoundError",
    "TaskTimeoutError",
    "TaskValidationError",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowMismatchError",
    "check_page",
]


class RoutingError(Exception):
    """Base of every error the routing layer raises on purpose."""


class NoRouteError(RoutingError):
    """No live agent offers all of ``capabilities`` (and no fallback agent is configured)."""

    def __init__(self, capabilities: Sequence[str]) -> None:
        self.capabilities = tuple(capabilities)
        super().__init__(f"no live agent offers {sorted(self.capabilities)}")


class DelegationError(RoutingError):
    """A delegation from ``agent`` to ``target`` was refused; ``chain`` is the chain of agent
    names so far (root first, ``agent`` last)."""

    def __init__(self, agent: str, target: str, chain: Sequence[str], reason: str) -> None:
        self.agent = agent
        self.target = target
        self.chain = tuple(chain)
        self.reason = reason
        super().__init__(f"{agent} -> {target} refused: {reason} (chain {' > '.join(chain)})")


class DelegationNotAllowedError(DelegationError):
    """``target`` is not among the delegates ``agent``'s definition allows."""

    def __init__(self, agent: str, target: str, chain: Sequence[str]) -> None:
        super().__init__(agent, target, chain, f"{target!r} is not an allowed delegate")


class ChainDepthError(DelegationError):
    """The delegation would make the chain ``depth`` deep, beyond ``max_depth``."""

    def __init__(
        self, agent: str, target: str, chain: Sequence[str], depth: int, max_depth: int
    ) -> None:
        self.depth = depth
        self.max_depth = max_depth
        super().__init__(agent, target, chain, f"depth {depth} exceeds max_chain_depth {max_depth}")


class DelegationCycleError(DelegationError):
    """``target`` already runs higher up in the chain."""

    def __init__(self, agent: str, target: str, chain: Sequence[str]) -> None:
        super().__init__(agent, target, chain, f"{target!r} is already in the chain (a cycle)")


class TaskError(RoutingError):
    """Base of the task queue's errors."""


class TaskValidationError(TaskError):
    """Task input refused before anything was queued."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class TaskNotFoundError(TaskError):
    """No task ``task_id`` (in the state the operation needs, e.g. dead for a requeue)."""

    def __init__(self, task_id: str, state: str | None = None) -> None:
        self.task_id = task_id
        self.state = state
        super().__init__(f"no {state + ' ' if state else ''}task {task_id!r}")


class TaskTimeoutError(TaskError):
    """An attempt of ``task_id`` ran past its ``timeout`` seconds and was cancelled."""

    def __init__(self, task_id: str, timeout: float) -> None:
        self.task_id = task_id
        self.timeout = timeout
        super().__init__(f"task {task_id} timed out after {timeout}s")


class WorkflowError(RoutingError):
    """Base of the workflow errors."""

    def __init__(self, workflow: str, message: str) -> None:
        self.workflow = workflow
        super().__init__(f"workflow {workflow!r}: {message}")


class WorkflowDefinitionError(WorkflowError):
    """A workflow that cannot run: ``field`` names the step or option, ``reason`` says why."""

    def __init__(self, workflow: str, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(workflow, f"{field}: {reason}")


class WorkflowMismatchError(WorkflowError):
    """Run ``run_id`` was started by another workflow, or with other steps."""

    def __init__(self, workflow: str, run_id: str, reason: str) -> None:
        self.run_id = run_id
        super().__init__(workflow, f"cannot resume run {run_id}: {reason}")


def check_page(limit: int, offset: int) -> None:
    """The paging arguments of every backend's ``list``: ``limit`` within 1..1000, ``offset``
    >= 0, else ``TaskValidationError`` naming the field (nothing is read)."""
    if not 1 <= limit <= 1000:
        raise TaskValidationError("limit", "must be within 1..1000")
    if offset < 0:
        raise TaskValidationError("offset", "must be >= 0")
