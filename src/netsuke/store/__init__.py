"""Netsuke's store: agents as data, conversations and executions in SQL.

SQLite by default (an embedded file, migrated on open), PostgreSQL by URL
(``postgresql+asyncpg://...``). Open a ``Store`` and use its repositories; they return plain
pydantic models, never ORM rows::

    async with Store.open() as store:
        agent = await store.agents.create({"name": "search", "model": "openai:gpt-4o"})
        spec = await store.factory.spec("search")

Errors form one tree under ``StoreError`` (see ``_errors``). Durability of each operation is
stated in its docstring and in ``docs/store.md``.
"""

from ._agents import AgentRepository, SyncResult
from ._api_keys import ApiKeyRepository
from ._audit import AuditRepository, AuditValues, audit_values
from ._conversations import (
    REQUEST_KEY_MAX,
    ConversationRepository,
    check_request_key,
    dump_messages,
    load_messages,
)
from ._definitions import (
    AgentDefinition,
    AgentDraft,
    FunctionDefinition,
    FunctionDraft,
    FunctionLimits,
    ModelSettings,
)
from ._engine import DEFAULT_URL, ENV_URL, Database, resolve_url
from ._errors import (
    AlreadyExistsError,
    ConflictError,
    DefinitionFileError,
    DuplicateRequestError,
    FencedError,
    NotFoundError,
    SchemaError,
    SchemaOutdatedError,
    SchemaTooNewError,
    SessionOwnedError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
    ValidationError,
)
from ._executions import ExecutionRepository
from ._factory import AgentFactory, AgentSpec, build_spec
from ._files import dump_agent_yaml, export_agents, load_agent_file, sync_agents
from ._functions import FunctionRepository
from ._group_commit import GroupCommitter
from ._health import probe_writable, unavailable_reason
from ._ids import new_id
from ._json_values import MAX_JSON_DEPTH, check_json, json_problem, sanitize_json
from ._manager_state import ManagerStateRepository
from ._migrate import current_revision, downgrade, head_revision, known_revisions, upgrade
from ._ownership import LivenessPolicy, NodeIdentity, OnlySelfLive, local_node
from ._records import (
    ApiKey,
    AuditEntry,
    Conversation,
    Execution,
    ExecutionKind,
    ExecutionStatus,
    IssuedApiKey,
    Page,
    Role,
    TurnReceipt,
    TurnRequest,
)
from ._store import Store
from ._tasks import CAPABLE_ONLY, TaskDraft, TaskRecord, TaskRepository, TaskStatus
from ._validation import (
    KNOWN_PROVIDERS,
    is_secret_config_key,
    key_env_problem,
    validate_agent,
    validate_model_string,
)
from ._webhooks import (
    DeliveryStatus,
    IssuedWebhook,
    Webhook,
    WebhookDelivery,
    WebhookRepository,
    WebhookTarget,
)
from ._workflows import (
    RunStatus,
    StepStatus,
    WorkflowRepository,
    WorkflowRunRecord,
    WorkflowStepRecord,
)

__all__ = [
    "CAPABLE_ONLY",
    "DEFAULT_URL",
    "ENV_URL",
    "KNOWN_PROVIDERS",
    "MAX_JSON_DEPTH",
    "REQUEST_KEY_MAX",
    "AgentDefinition",
    "AgentDraft",
    "AgentFactory",
    "AgentRepository",
    "AgentSpec",
    "AlreadyExistsError",
    "ApiKey",
    "ApiKeyRepository",
    "AuditEntry",
    "AuditRepository",
    "AuditValues",
    "ConflictError",
    "Conversation",
    "ConversationRepository",
    "Database",
    "DefinitionFileError",
    "DeliveryStatus",
    "DuplicateRequestError",
    "Execution",
    "ExecutionKind",
    "ExecutionRepository",
    "ExecutionStatus",
    "FencedError",
    "FunctionDefinition",
    "FunctionDraft",
    "FunctionLimits",
    "FunctionRepository",
    "GroupCommitter",
    "IssuedApiKey",
    "IssuedWebhook",
    "LivenessPolicy",
    "ManagerStateRepository",
    "ModelSettings",
    "NodeIdentity",
    "NotFoundError",
    "OnlySelfLive",
    "Page",
    "Role",
    "RunStatus",
    "SchemaError",
    "SchemaOutdatedError",
    "SchemaTooNewError",
    "SessionOwnedError",
    "StepStatus",
    "Store",
    "StoreClosedError",
    "StoreError",
    "StoreUnavailableError",
    "SyncResult",
    "TaskDraft",
    "TaskRecord",
    "TaskRepository",
    "TaskStatus",
    "TurnReceipt",
    "TurnRequest",
    "ValidationError",
    "Webhook",
    "WebhookDelivery",
    "WebhookRepository",
    "WebhookTarget",
    "WorkflowRepository",
    "WorkflowRunRecord",
    "WorkflowStepRecord",
    "audit_values",
    "build_spec",
    "check_json",
    "check_request_key",
    "current_revision",
    "downgrade",
    "dump_agent_yaml",
    "dump_messages",
    "export_agents",
    "head_revision",
    "is_secret_config_key",
    "json_problem",
    "key_env_problem",
    "known_revisions",
    "load_agent_file",
    "load_messages",
    "local_node",
    "new_id",
    "probe_writable",
    "resolve_url",
    "sanitize_json",
    "sync_agents",
    "unavailable_reason",
    "upgrade",
    "validate_agent",
    "validate_model_string",
]
