"""The AgentManager (seed 003): agent packages run as supervised OS processes over NATS.

A packages folder holds one folder per agent with an ``agent.yaml`` manifest; the manager
discovers them, runs each as its own process group with heartbeats, restarts crashed ones with
exponential backoff up to a restart intensity, and answers the seed's commands and queries on
``agent.manager.command`` / ``agent.manager.query``. ``netsuke.manager.sdk`` is the agent
side. See ``docs/manager.md``.
"""

from ._client import MANAGER_NATS_ENV, ManagerClient, ManagerUnavailableError
from ._config import (
    DatabaseConfig,
    ManagerConfig,
    NatsConfig,
    PackagesConfig,
    ServiceConfig,
    load_config,
)
from ._discovery import AgentDiscovery
from ._errors import CommandError, ConfigError, ManagerError, ManifestError
from ._manager import AgentManager
from ._manifest import PackageManifest, ResourceLimits, RestartPolicy, load_manifest
from ._protocol import (
    AGENT_COMMAND,
    AGENT_MANAGER_COMMAND,
    AGENT_MANAGER_QUERY,
    AGENT_MANAGER_RESPONSE,
    AGENT_METRICS,
    AGENT_QUERY,
    AGENT_RESPONSE,
    AGENT_STATUS,
    Command,
)
from ._registry import AgentRecord, AgentRegistry, AgentStatus
from ._sql_state import SqlStateStore
from ._state import MemoryStateStore, StateStore, StoredAgent

__all__ = [
    "AGENT_COMMAND",
    "AGENT_MANAGER_COMMAND",
    "AGENT_MANAGER_QUERY",
    "AGENT_MANAGER_RESPONSE",
    "AGENT_METRICS",
    "AGENT_QUERY",
    "AGENT_RESPONSE",
    "AGENT_STATUS",
    "MANAGER_NATS_ENV",
    "AgentDiscovery",
    "AgentManager",
    "AgentRecord",
    "AgentRegistry",
    "AgentStatus",
    "Command",
    "CommandError",
    "ConfigError",
    "DatabaseConfig",
    "ManagerClient",
    "ManagerConfig",
    "ManagerError",
    "ManagerUnavailableError",
    "ManifestError",
    "MemoryStateStore",
    "NatsConfig",
    "PackageManifest",
    "PackagesConfig",
    "ResourceLimits",
    "RestartPolicy",
    "ServiceConfig",
    "SqlStateStore",
    "StateStore",
    "StoredAgent",
    "load_config",
    "load_manifest",
]
