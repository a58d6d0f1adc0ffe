"""Agent package manifests: ``agent.yaml`` in each package folder.

::

    name: echo                # the agent id on NATS (agent.{name}.command); [a-z0-9_-], required
    type: echo                # AGENT_TYPE [name]
    version: 1.0.0            # AGENT_VERSION [0.0.0]
    entry_point: agent.py     # run with the manager's Python; relative to the folder; required
    autostart: true           # start on discovery [true]
    environment: {KEY: val}   # extra environment variables
    restart:
      policy: transient       # permanent | transient | temporary [transient]
      max_restarts: 5         # restart intensity: at most this many restarts ... [5]
      max_seconds: 60         # ... within this many seconds, else ``failed`` [60]
      backoff_initial: 0.5    # first delay before a restart, doubled each time [0.5 s]
      backoff_max: 30         # ceiling of the delay [30 s]
      reset_after: 60         # this long running resets the backoff [60 s]
    limits:
      memory_mb: 512          # RLIMIT_AS [none]
      cpu_seconds: 3600       # RLIMIT_CPU [none]
      open_files: 1024        # RLIMIT_NOFILE [none]
    heartbeat_timeout: 60     # no heartbeat this long -> ``inactive`` [service.heartbeat_timeout]
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import ManifestError

MANIFEST_NAME = "agent.yaml"


class RestartPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["permanent", "transient", "temporary"] = "transient"
    max_restarts: int = Field(default=5, ge=0)
    max_seconds: float = Field(default=60.0, gt=0)
    backoff_initial: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=30.0, ge=0)
    reset_after: float = Field(default=60.0, gt=0)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before restart number ``attempt`` (1-based) of a failure streak."""
        return float(min(self.backoff_max, self.backoff_initial * 2 ** max(0, attempt - 1)))


class ResourceLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: int | None = Field(default=None, gt=0)
    cpu_seconds: int | None = Field(default=None, gt=0)
    open_files: int | None = Field(default=None, gt=0)


class PackageManifest(BaseModel):
    """One agent package as declared by its ``agent.yaml``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    type: str = ""
    version: str = "0.0.0"
    entry_point: str
    autostart: bool = True
    environment: dict[str, str] = {}
    restart: RestartPolicy = RestartPolicy()
    limits: ResourceLimits = ResourceLimits()
    heartbeat_timeout: float | None = Field(default=None, gt=0)
    # Filled by the loader, not by the file:
    folder: Path = Path()
    digest: str = ""

    @property
    def agent_id(self) -> str:
        return self.name

    @property
    def agent_type(self) -> str:
        return self.type or self.name

    @property
    def script(self) -> Path:
        return self.folder / self.entry_point


def load_manifest(folder: Path) -> PackageManifest:
    """Parse ``folder/agent.yaml``; raise :class:`ManifestError` naming file and field."""
    path = folder / MANIFEST_NAME
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ManifestError(path, "(file)", f"cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ManifestError(path, "(file)", f"invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(path, "(file)", "expected a mapping")
    for reserved in ("folder", "digest"):
        if reserved in data:
            raise ManifestError(path, reserved, "reserved, not allowed in a manifest")
    if isinstance(data.get("environment"), dict):
        data["environment"] = {str(k): str(v) for k, v in data["environment"].items()}
    digest = hashlib.sha256(raw).hexdigest()
    script = folder / str(data.get("entry_point", ""))
    try:
        digest = hashlib.sha256(raw + script.read_bytes()).hexdigest()
    except OSError:
        pass
    try:
        manifest = PackageManifest.model_validate({**data, "folder": folder, "digest": digest})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        raise ManifestError(path, field, err["msg"]) from None
    entry = Path(manifest.entry_point)
    if entry.is_absolute() or ".." in entry.parts:
        raise ManifestError(path, "entry_point", "must be a path inside the package folder")
    if not manifest.script.is_file():
        raise ManifestError(path, "entry_point", f"no such file: {manifest.entry_point}")
    return manifest
