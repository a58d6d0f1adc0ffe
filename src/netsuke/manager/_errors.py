"""Errors of the AgentManager.

::

    ManagerError
    ├── ConfigError        a bad setting (``field`` names it); raised at start
    ├── ManifestError      a bad package manifest (``path`` and ``field``); the package is skipped
    └── CommandError       a command the manager refuses (``code``, ``agent_id``); sent back as
                           an error response, never raised out of the manager
"""

from __future__ import annotations

from pathlib import Path


class ManagerError(Exception):
    """Base of every AgentManager error."""


class ConfigError(ManagerError):
    """A setting of the manager is invalid; ``field`` is its dotted name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ManifestError(ManagerError):
    """A package manifest is invalid: ``path`` is the file, ``field`` the offending key."""

    def __init__(self, path: Path, field: str, message: str) -> None:
        super().__init__(f"{path}: {field}: {message}")
        self.path = path
        self.field = field
        self.message = message


class CommandError(ManagerError):
    """A command was refused; ``code`` is machine readable (``unknown_agent``, ...)."""

    def __init__(self, code: str, message: str, *, agent_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.agent_id = agent_id

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}
