"""The manager's settings, shaped like the seed's ``config/agent_manager.yaml``.

Sections ``service``, ``database``, ``nats`` and ``packages``; every value has a default, a YAML
file overrides the defaults and ``NETSUKE_MANAGER_<SECTION>__<FIELD>`` environment variables
override the file. A bad value raises :class:`ConfigError` naming the dotted field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import ConfigError

ENV_PREFIX = "NETSUKE_MANAGER_"
#: Variables with the prefix that are not settings: the settings file, the API's NATS URL for
#: reaching a manager, and the switch that runs the manager inside ``netsuke serve``.
NOT_SETTINGS = frozenset(
    {"NETSUKE_MANAGER_CONFIG", "NETSUKE_MANAGER_NATS_URL", "NETSUKE_MANAGER_IN_SERVE"}
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServiceConfig(_Section):
    name: str = "netsuke-agent-manager"
    version: str = "1.0.0"
    log_level: str = "INFO"
    discovery_interval: float = Field(default=300.0, gt=0)
    monitoring_interval: float = Field(default=10.0, gt=0)
    cleanup_interval: float = Field(default=3600.0, gt=0)
    heartbeat_timeout: float = Field(default=60.0, gt=0)
    stop_timeout: float = Field(default=5.0, gt=0)


class DatabaseConfig(_Section):
    url: str | None = None
    pool_size: int = Field(default=5, ge=1)
    max_overflow: int = Field(default=10, ge=0)


class NatsConfig(_Section):
    url: str = "nats://localhost:4222"
    user: str | None = None
    password: str | None = Field(default=None, repr=False)
    tls_verify: bool = False


class PackagesConfig(_Section):
    dir: Path = Path("packages")
    logs_dir: Path = Path("logs")
    log_max_bytes: int = Field(default=1_000_000, ge=1024)
    log_backups: int = Field(default=3, ge=0)


class ManagerConfig(_Section):
    service: ServiceConfig = ServiceConfig()
    database: DatabaseConfig = DatabaseConfig()
    nats: NatsConfig = NatsConfig()
    packages: PackagesConfig = PackagesConfig()


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in NOT_SETTINGS:
            continue
        rest = key[len(ENV_PREFIX) :].lower()
        section, sep, field = rest.partition("__")
        if not sep or not field:
            raise ConfigError(key, "expected NETSUKE_MANAGER_<SECTION>__<FIELD>")
        out.setdefault(section, {})[field] = value
    return out


def load_config(
    path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> ManagerConfig:
    """Read defaults < YAML file < environment < ``overrides``; raise :class:`ConfigError`."""
    data: dict[str, dict[str, Any]] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(str(path), f"cannot read: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(str(path), "expected a mapping of sections")
        for section, values in loaded.items():
            if not isinstance(values, dict):
                raise ConfigError(str(section), "expected a mapping")
            data[str(section)] = dict(values)
    env = os.environ if environ is None else environ
    for layer in (_env_overrides(env), overrides or {}):
        for section, values in layer.items():
            data.setdefault(section, {}).update(values)
    try:
        return ManagerConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(field, err["msg"]) from None
