"""The AgentManager (seed 003): agent packages run as supervised OS processes over NATS.

A packages folder holds one folder per agent with an ``agent.yaml`` manifest; the manager
discovers them, runs each as its own process group with heartbeats, restarts crashed ones with
exponential backoff up to a restart intensity, and answers the seed's commands and queries on
``agent.manager.command`` / ``agent.manager.query``. ``netsuke.manager.sdk`` is the agent
side. See ``docs/manager.md``.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Imported on first use, so an agent process importing ``netsuke.manager.sdk`` does not pay
# for the manager's dependencies (pydantic models, the store, SQLAlchemy).
_LAZY = {
    "AGENT_COMMAND": "._protocol",
    "AGENT_MANAGER_COMMAND": "._protocol",
    "AGENT_MANAGER_QUERY": "._protocol",
    "AGENT_MANAGER_RESPONSE": "._protocol",
    "AGENT_METRICS": "._protocol",
    "AGENT_QUERY": "._protocol",
    "AGENT_RESPONSE": "._protocol",
    "AGENT_STATUS": "._protocol",
    "AgentDiscovery": "._discovery",
    "AgentManager": "._manager",
    "AgentRecord": "._registry",
    "AgentRegistry": "._registry",
    "AgentStatus": "._registry",
    "Command": "._protocol",
    "CommandError": "._errors",
    "ConfigError": "._errors",
    "DatabaseConfig": "._config",
    "MANAGER_NATS_ENV": "._client",
    "ManagerClient": "._client",
    "ManagerConfig": "._config",
    "ManagerError": "._errors",
    "ManagerUnavailableError": "._client",
    "ManifestError": "._errors",
    "MemoryStateStore": "._state",
    "NatsConfig": "._config",
    "PackageManifest": "._manifest",
    "PackagesConfig": "._config",
    "ResourceLimits": "._manifest",
    "RestartPolicy": "._manifest",
    "ServiceConfig": "._config",
    "SqlStateStore": "._sql_state",
    "StateStore": "._state",
    "StoredAgent": "._state",
    "load_config": "._config",
    "load_manifest": "._manifest",
}


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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
