"""Netsuke's work distribution: capability routing, delegation, workflows, a durable task queue.

* ``CapabilityRouter``: the least-loaded live agent offering every capability a task needs.
* ``Delegation`` / ``delegation_tool``: agents calling agents within allowed delegates,
  ``max_chain_depth`` and no cycles, each chain recorded in the execution history.
* ``Workflow`` / ``WorkflowRunner``: DAGs of steps that resume after a crash.
* ``TaskQueue`` / ``Worker``: submit with idempotency keys, leases and acks, retries with
  exponential backoff and full jitter, timeouts, a fallback, a dead-letter queue; backends
  ``SqlTaskBackend`` (embedded, the store) and ``MemoryTaskBackend`` (tests).

Errors form one tree under ``RoutingError`` (``_errors``). See ``docs/routing.md``.
"""

from netsuke.store import TaskRecord

from ._agent_tasks import AgentTaskWorkers, agent_input
from ._agents import agents_runner
from ._backend import Settle, TaskBackend
from ._delegation import ChainContext, Delegation, Runner, TurnLike, current_chain
from ._errors import (
    ChainDepthError,
    DelegationCycleError,
    DelegationError,
    DelegationNotAllowedError,
    NoRouteError,
    RoutingError,
    TaskError,
    TaskNotFoundError,
    TaskTimeoutError,
    TaskValidationError,
    WorkflowDefinitionError,
    WorkflowError,
    WorkflowMismatchError,
)
from ._hosting import TaskHosting, takes
from ._jetstream_backend import JetStreamTaskBackend
from ._loading import LoadedWorkers, WorkerLoadError, WorkerSpec, load_object, load_workers
from ._memory_backend import MemoryTaskBackend
from ._queue import TaskQueue
from ._queue_url import check_queue_url, open_queue
from ._redis_backend import QueueDurabilityError, QueueUnavailableError, RedisTaskBackend
from ._retry import RetryPolicy, Uniform, backoff_bound
from ._router import CapabilityRouter, LoadFn, process_load
from ._runner import WorkflowResult, WorkflowRunner
from ._sql_backend import SqlTaskBackend
from ._tool import delegation_tool
from ._worker import Fallback, Handler, Worker
from ._workflow import Step, StepContext, StepFn, Strategy, Workflow

__all__ = [
    "AgentTaskWorkers",
    "CapabilityRouter",
    "ChainContext",
    "ChainDepthError",
    "Delegation",
    "DelegationCycleError",
    "DelegationError",
    "DelegationNotAllowedError",
    "Fallback",
    "Handler",
    "JetStreamTaskBackend",
    "LoadFn",
    "LoadedWorkers",
    "MemoryTaskBackend",
    "NoRouteError",
    "QueueDurabilityError",
    "QueueUnavailableError",
    "RedisTaskBackend",
    "RetryPolicy",
    "RoutingError",
    "Runner",
    "Settle",
    "SqlTaskBackend",
    "Step",
    "StepContext",
    "StepFn",
    "Strategy",
    "TaskBackend",
    "TaskError",
    "TaskHosting",
    "TaskNotFoundError",
    "TaskQueue",
    "TaskRecord",
    "TaskTimeoutError",
    "TaskValidationError",
    "TurnLike",
    "Uniform",
    "Worker",
    "WorkerLoadError",
    "WorkerSpec",
    "Workflow",
    "WorkflowDefinitionError",
    "WorkflowError",
    "WorkflowMismatchError",
    "WorkflowResult",
    "WorkflowRunner",
    "agent_input",
    "agents_runner",
    "backoff_bound",
    "check_queue_url",
    "current_chain",
    "delegation_tool",
    "load_object",
    "load_workers",
    "open_queue",
    "process_load",
    "takes",
]
