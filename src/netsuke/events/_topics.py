"""The topics Netsuke publishes, with the fields each event carries.

Every layer publishes through these constants so the catalogue stays the single list that the
API documents and the dashboard filters on. ``data`` values are JSON-compatible.
"""

from __future__ import annotations

from typing import Final

__all__ = ["TOPICS"]

# kernel
PROCESS_RESTARTED: Final = "process.restarted"
SUPERVISOR_GAVE_UP: Final = "supervisor.gave_up"
# agents
AGENT_STARTED: Final = "agent.started"
AGENT_STOPPED: Final = "agent.stopped"
AGENT_CRASHED: Final = "agent.crashed"
AGENT_RESTARTED: Final = "agent.restarted"
AGENT_HIBERNATED: Final = "agent.hibernated"
AGENT_EVICTED: Final = "agent.evicted"
TURN_STARTED: Final = "turn.started"
TURN_FINISHED: Final = "turn.finished"
# routing
TASK_QUEUED: Final = "task.queued"
TASK_STARTED: Final = "task.started"
TASK_SUCCEEDED: Final = "task.succeeded"
TASK_RETRIED: Final = "task.retried"
TASK_FAILED: Final = "task.failed"
TASK_DEAD_LETTERED: Final = "task.dead_lettered"
WORKFLOW_STARTED: Final = "workflow.started"
WORKFLOW_STEP_FINISHED: Final = "workflow.step_finished"
WORKFLOW_FINISHED: Final = "workflow.finished"
# sandbox
FUNCTION_EXECUTED: Final = "function.executed"
# api
DEFINITION_CHANGED: Final = "definition.changed"
WEBHOOK_FAILED: Final = "webhook.failed"
# cluster
CLUSTER_NODE_FENCED: Final = "cluster.node_fenced"
CLUSTER_NODE_JOINED: Final = "cluster.node_joined"
CLUSTER_NODE_LEFT: Final = "cluster.node_left"
CLUSTER_NODE_DOWN: Final = "cluster.node_down"
CLUSTER_SESSIONS_MOVED: Final = "cluster.sessions_moved"

TOPICS: Final[dict[str, str]] = {
    PROCESS_RESTARTED: "a supervisor restarted a child: supervisor, child, reason",
    SUPERVISOR_GAVE_UP: "a supervisor exceeded its restart intensity: supervisor, child",
    AGENT_STARTED: "an agent server started: agent, session, user, pid, restarts",
    AGENT_STOPPED: "an agent server stopped normally: agent, session, pid, reason",
    AGENT_CRASHED: "an agent server exited abnormally: agent, session, pid, reason",
    AGENT_RESTARTED: "an agent server came back after a crash: agent, session, pid",
    AGENT_HIBERNATED: "an idle agent hibernated (state kept): agent, session",
    AGENT_EVICTED: "an idle agent left memory (state in the store): agent, session",
    TURN_STARTED: "a turn began: agent, session, user, execution",
    TURN_FINISHED: "a turn ended: agent, session, user, execution, status, duration, tokens_in, "
    "tokens_out, error (the error class), reason (a failed turn's safe one-line reason)",
    TASK_QUEUED: "a task was accepted: task, kind, capabilities, priority, run_at",
    TASK_STARTED: "a worker leased a task: task, worker, attempt",
    TASK_SUCCEEDED: "a task was acked: task, worker, attempt, duration, fallback",
    TASK_RETRIED: "a failed attempt was rescheduled: task, attempt, delay, error",
    TASK_FAILED: "a task failed its last attempt: task, attempt, error",
    TASK_DEAD_LETTERED: "a task moved to the dead-letter queue: task, error",
    WORKFLOW_STARTED: "a workflow run began (or resumed): workflow, run, resumed",
    WORKFLOW_STEP_FINISHED: "a workflow step ended: workflow, run, step, status "
    "(succeeded, retrying, failed), attempt, error",
    WORKFLOW_FINISHED: "a workflow run ended: workflow, run, status",
    FUNCTION_EXECUTED: "a sandboxed function ran: function, version, sha256, status, duration",
    DEFINITION_CHANGED: "an agent definition was created, updated, rolled back or deleted: "
    "kind, name, version, action, actor",
    WEBHOOK_FAILED: "a webhook delivery gave up after its last attempt: webhook, delivery, "
    "event, attempts, error",
    CLUSTER_NODE_FENCED: "this node could not renew its membership lease and stopped acting as "
    "a member: node, reason, names (how many global names it dropped)",
    CLUSTER_NODE_JOINED: "this node heard another member for the first time (a new node, or a "
    "new incarnation of a restarted one): node (this node), peer (the member's id)",
    CLUSTER_NODE_LEFT: "another member said goodbye (a clean stop): node, peer",
    CLUSTER_NODE_DOWN: "this node judged another member gone without a goodbye: node, peer, "
    "cause (heartbeat_timeout, no_responders, disconnected, replaced, peer_declared_down)",
    CLUSTER_SESSIONS_MOVED: "this node restarted sessions of a gone member (failover): node, "
    "from (the gone member's id), to (this node), count, cause",
}
