"""Agent discovery: scan the packages folder for ``*/agent.yaml`` (seed 1.2)."""

from __future__ import annotations

from pathlib import Path

import structlog

from ._errors import ManifestError
from ._manifest import MANIFEST_NAME, PackageManifest, load_manifest

log = structlog.get_logger("netsuke.manager")


class AgentDiscovery:
    """Finds packages in ``agents_dir``; skips ``__pycache__``, ``_template`` and ``test*``.

    A bad manifest is logged with its file and field, kept in :attr:`errors` and skipped; it
    never raises out of :meth:`discover_agents`.
    """

    def __init__(self, agents_dir: Path) -> None:
        self._agents_dir = agents_dir
        self._skip_patterns = {"__pycache__", "_template", "test"}
        self.errors: dict[Path, ManifestError] = {}

    def _should_skip(self, agent_dir: Path) -> bool:
        name = agent_dir.name
        return (
            not agent_dir.is_dir()
            or name.startswith(".")
            or name in {"__pycache__", "_template"}
            or name.startswith("test")
            or not (agent_dir / MANIFEST_NAME).exists()
        )

    async def discover_agents(self) -> list[PackageManifest]:
        """Discover available agents, sorted by name; a duplicate name keeps the first folder."""
        agents: dict[str, PackageManifest] = {}
        errors: dict[Path, ManifestError] = {}
        try:
            folders = sorted(self._agents_dir.iterdir())
        except OSError as exc:
            log.warning("manager.discovery_failed", dir=str(self._agents_dir), error=str(exc))
            return []
        for agent_dir in folders:
            if self._should_skip(agent_dir):
                continue
            try:
                config = load_manifest(agent_dir)
            except ManifestError as exc:
                errors[exc.path] = exc
                if self.errors.get(exc.path) is None or str(self.errors[exc.path]) != str(exc):
                    log.error(
                        "manager.bad_manifest",
                        file=str(exc.path),
                        field=exc.field,
                        error=exc.message,
                    )
                continue
            if config.name in agents:
                path = agent_dir / MANIFEST_NAME
                errors[path] = ManifestError(path, "name", f"duplicate agent name {config.name!r}")
                log.error("manager.bad_manifest", file=str(path), field="name", error="duplicate")
                continue
            agents[config.name] = config
        self.errors = errors
        return list(agents.values())
