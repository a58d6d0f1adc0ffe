"""Typed settings for a node serving the API: environment (``NETSUKE_*``), then ``netsuke.toml``.

Precedence, highest first: values passed to ``load_settings`` (command-line options), the
environment (``NETSUKE_PORT=9000``), the TOML file (``netsuke.toml`` in the working directory,
or the file named by ``$NETSUKE_CONFIG`` / ``--config``), then the defaults below. A value of
the wrong type or out of range is refused with ``SettingsError`` naming every bad field and
where it came from; an unknown key in the TOML file is refused too (a typo never passes
silently). Unknown ``NETSUKE_*`` environment variables are ignored (the CLI uses
``NETSUKE_URL`` and ``NETSUKE_API_KEY`` as a client).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from netsuke.agents import parse_allow_hosts
from netsuke.cluster._config import NODE_NAME, check_cluster_url, connect_options
from netsuke.routing import WorkerSpec, check_queue_url

from ._cache_layer import check_cache_url

__all__ = ["CONFIG_ENV", "DEFAULT_CONFIG", "Settings", "SettingsError", "load_settings"]

DEFAULT_CONFIG = "netsuke.toml"
CONFIG_ENV = "NETSUKE_CONFIG"

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
Exporter = Literal["none", "console", "otlp"]


class SettingsError(ValueError):
    """Settings refused: ``problems`` lists ``(field, reason)``; ``source`` names the file."""

    def __init__(self, problems: list[tuple[str, str]], source: str | None) -> None:
        self.problems = problems
        self.source = source
        where = f" (environment NETSUKE_*, {source})" if source else " (environment NETSUKE_*)"
        details = "; ".join(f"{field}: {reason}" for field, reason in problems)
        super().__init__(f"bad settings{where}: {details}")


class Settings(BaseSettings):
    """Everything ``netsuke serve`` and ``create_app`` read. Each field's default is shown."""

    model_config = SettingsConfigDict(
        env_prefix="NETSUKE_", extra="forbid", validate_default=True, frozen=True
    )

    host: str = "127.0.0.1"
    """Interface to listen on."""
    port: int = Field(default=8000, ge=0, le=65535)
    """TCP port (0: any free port; the URL printed names the one chosen)."""
    node: str = Field(default="local", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """Node name carried by every pid of this node."""
    database_url: str | None = None
    """Store URL; default ``$NETSUKE_DATABASE_URL`` or the embedded SQLite file."""
    agents_dir: Path | None = None
    """Folder of ``*.yaml`` agent definitions synced into the store at start."""
    log_level: LogLevel = "info"
    json_logs: bool = False
    """Log JSON lines (with request and trace ids) instead of console text."""
    shutdown_timeout: float = Field(default=30.0, gt=0)
    rate_limit_per_minute: int = Field(default=1200, ge=0)
    """Requests per minute per API key (0: no limit); excess gets 429 with Retry-After."""
    rate_limit_burst: int = Field(default=100, ge=1)
    """Requests a key may make at once before the per-minute rate applies."""
    anonymous_rate_limit_per_minute: int = Field(default=60, ge=0)
    """Failed authentications (no key, unknown or revoked key) per minute per client address
    (0: no limit); beyond, such requests get 429 with Retry-After instead of 401."""
    anonymous_rate_limit_burst: int = Field(default=30, ge=1)
    """Failed authentications a client address may make at once before the rate applies."""
    readyz_min_free_mb: int = Field(default=16, ge=0)
    """``/readyz`` reports not ready when the SQLite store's file system has less free space."""
    access_log_sample: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of successful requests that get an ``api.request`` log line (failed and slow
    requests always do): 1.0 logs every request, 0.1 one in ten, 0 none."""
    access_log_slow_ms: float = Field(default=1000.0, ge=0.0)
    """A request slower than this always gets its access log line."""
    gc_freeze: bool = True
    """``netsuke serve`` only: once started (store open, app built), collect once and move every
    object made so far (modules, classes, the app and its routes: about 200,000) out of the
    cyclic garbage collector's sight (``gc.freeze()``), so its full collections walk only what
    was made since. Those objects live as long as the process; any of them that later became
    cyclic garbage would never be collected (a bounded, one-time amount)."""
    gc_threshold: int = Field(default=5000, ge=0, le=1_000_000)
    """``netsuke serve`` only: the cyclic garbage collector's first threshold (Python's default
    is 700; 0 keeps it): net container allocations between young collections. Fewer young
    collections move fewer objects of the requests in flight into the older generations,
    whose collections cost the most under load; the price is up to this many more objects
    waiting for the collector (about 1 MB)."""
    switch_interval_ms: float = Field(default=0.0, ge=0.0, le=100.0)
    """``netsuke serve`` only: how long a thread waiting for the GIL waits before the running
    one must hand it over (``sys.setswitchinterval``; 0 keeps Python's 5 ms). The store's
    writer thread takes the GIL back after each SQLite statement of a group commit: 1 ms
    about halves a loaded node's commit time (so the replies' wait), at the price of smaller
    batches, so more commits (an fsync each) per request (docs/benchmarks-api.md)."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest request body accepted (413 beyond)."""
    function_max_timeout_s_user: float = Field(default=60.0, gt=0, le=3600)
    """Largest ``timeout_s`` a ``user`` key may give a function (422 beyond); also caps every
    call a user key makes."""
    function_max_timeout_s_operator: float = Field(default=600.0, gt=0, le=3600)
    function_max_timeout_s_admin: float = Field(default=3600.0, gt=0, le=3600)
    function_max_memory_mb_user: int = Field(default=512, ge=16, le=65536)
    """Largest ``memory_mb`` a ``user`` key may give a function (422 beyond); also caps every
    call a user key makes."""
    function_max_memory_mb_operator: int = Field(default=4096, ge=16, le=65536)
    function_max_memory_mb_admin: int = Field(default=65536, ge=16, le=65536)
    executions_max_running: int = Field(default=8, ge=1, le=1024)
    """Function calls running at once on this node (API and agent tools together)."""
    executions_per_caller: int = Field(default=2, ge=1, le=1024)
    """Function calls one API key may have running or queued at once (429 beyond)."""
    executions_max_waiting: int = Field(default=32, ge=0, le=100_000)
    """Calls queued for a free slot when all are busy (429 beyond)."""
    executions_max_wait_s: float = Field(default=30.0, gt=0, le=3600)
    """Longest a queued call waits for a slot before it gets 429."""
    allow_private_webhooks: bool = False
    """Allow webhook targets on loopback, private, link-local or reserved addresses."""
    model_allow_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Model servers on loopback, private or reserved addresses that stored agents may use, as
    ``host:port`` (or ``host`` for any port), e.g. ``127.0.0.1:11434`` for a local Ollama;
    in the environment a comma-separated list (``NETSUKE_MODEL_ALLOW_HOSTS``). Every other
    model URL must resolve to public addresses only."""
    webhook_max_attempts: int = Field(default=6, ge=1, le=50)
    webhook_backoff_s: float = Field(default=1.0, gt=0)
    """First retry delay; each next one doubles (with jitter), capped at 10 minutes."""
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    otel_exporter: Exporter = "none"
    """OpenTelemetry exporter: ``none`` (no-op tracer: near-zero cost), ``console``, ``otlp``."""
    metrics_public: bool = True
    """Serve ``/metrics`` without a key (for a Prometheus scraper)."""
    bootstrap_admin: bool = True
    """Issue (and print once) an admin key when the store has none."""
    workers: list[WorkerSpec] = Field(default_factory=list)
    """Task handlers and workflows the node loads and runs (``[[workers]]`` tables: ``handler =
    "module:name"``, optional ``capabilities``, ``kinds``, ``concurrency``, ``lease``,
    ``fallback``; ``netsuke serve --worker module:name`` adds one). See docs/routing.md."""
    queue_url: str = "sql"
    """The task queue's backend: ``sql`` (the store's tasks table) or ``redis://host:port/db``
    (Redis Streams; ``?durability=warn`` accepts a server without ``appendfsync always``)."""
    cache_url: str | None = None
    """The shared cache of API keys and agent definitions: unset [default] (each node caches
    verified keys 5 s on its own) or ``redis://host:port/db`` (cached in Redis, invalidated on
    every node at once through pub/sub; ``?prefix=`` sets the key prefix). See docs/api.md."""
    cache_ttl_s: float = Field(default=60.0, gt=0, le=3600)
    """How long the shared cache keeps an entry (in Redis and in each node's memory)."""
    agent_tasks: bool = True
    """Agents whose definitions declare capabilities take the queued tasks asking for them."""
    cluster: str | None = None
    """NATS URL(s) to join a cluster (``nats://HOST:PORT``, comma-separated; ``tls://`` too):
    the node's name (``node``, letters, digits, ``_``, ``-``) must then be unique among live
    nodes; its lease is kept in the store (``database_url``, shared by the cluster). Unset:
    the node is alone. See docs/cluster.md."""
    cluster_lease_s: float = Field(default=5.0, ge=0.5, le=600)
    """Seconds a lease renewal keeps the node a member (judged by the database's clock); the
    node renews every fifth of it and fences itself after 60 % without a renewal."""
    cluster_prefix: str = Field(default="netsuke", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    """First token of every NATS subject (separates clusters sharing a NATS server)."""
    cluster_creds: Path | None = None
    """NATS credentials file (``.creds``: JWT and NKey seed)."""
    cluster_user: str | None = None
    cluster_password: SecretStr | None = None
    cluster_token: SecretStr | None = None
    cluster_tls_ca: Path | None = None
    """CA bundle to verify the NATS server (with a ``tls://`` URL or a server requiring TLS)."""
    cluster_tls_cert: Path | None = None
    """Client certificate for NATS mutual TLS (with ``cluster_tls_key``)."""
    cluster_tls_key: Path | None = None
    cluster_tls_hostname: str | None = None
    """Host name to verify the NATS server's certificate against (default: the URL's)."""
    nodes: int | Literal["auto"] | None = None
    """``netsuke serve --nodes``: run this many node processes on this machine (``auto``: one
    per usable core), supervised by the ``serve`` process, joined through an embedded
    nats-server (or ``cluster``), all serving one port. Unset: one node, in this process. See
    docs/cluster.md, "One node per core"."""
    nodes_max_restarts: int = Field(default=3, ge=0, le=1000)
    """With ``nodes``: restarts of crashed nodes allowed within ``nodes_restart_period_s``;
    one more and every node is stopped and ``serve`` exits 1 (OTP's restart intensity)."""
    nodes_restart_period_s: float = Field(default=5.0, gt=0, le=3600)
    nodes_pin: bool = False
    """With ``nodes``: pin each node process (every thread of it) to a core of its own, the
    ``i``-th node to the ``i``-th usable core (round robin past them). For a machine given to
    Netsuke: a node's SQLite writer thread then never wakes on another node's core; on a
    shared machine a pinned node cannot move off a busy core. See docs/cluster.md."""

    @field_validator("nodes", mode="before")
    @classmethod
    def _nodes(cls, value: Any) -> Any:
        if value is None:
            return None
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
            raise ValueError(f"{value!r} is not a number of nodes: an integer >= 1, or 'auto'")
        return int(text)

    placement: Literal["least-loaded", "rendezvous", "local"] = "least-loaded"
    """Where a new session starts in a cluster: ``least-loaded`` (the live node owning the
    fewest sessions, preferring the receiving node within a tolerance), ``rendezvous`` (HRW
    hashing of the session id over live nodes) or ``local``. See docs/cluster.md."""
    node_labels: str | None = None
    """This node's labels, ``k=v`` comma-separated (``--label k=v``), stored with its lease;
    agent definitions may require labels (``node_labels``) to be placed here."""

    @field_validator("node_labels")
    @classmethod
    def _labels(cls, value: str | None) -> str | None:
        from netsuke.cluster._placement import parse_labels

        parse_labels(value)
        return value

    @field_validator("cluster")
    @classmethod
    def _cluster_url(cls, value: str | None) -> str | None:
        return check_cluster_url(value)

    @model_validator(mode="after")
    def _cluster_node_name(self) -> Settings:
        if self.cluster is not None:
            if not NODE_NAME.match(self.node):
                raise ValueError(
                    f"node {self.node!r}: a cluster node name is 1-64 letters, digits, '_' or '-'"
                )
            from netsuke.cluster._member_node import settings_connect_args

            connect_options(**settings_connect_args(self))  # unreadable files: refused here
        return self

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        return check_queue_url(value)

    @field_validator("cache_url")
    @classmethod
    def _cache_url(cls, value: str | None) -> str | None:
        return check_cache_url(value)

    @field_validator("model_allow_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v for v in (p.strip() for p in value.split(",")) if v]
        if isinstance(value, list):
            parse_allow_hosts(str(v) for v in value)  # ValueError names a bad entry
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = _TOML_FILE.get("path")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    def function_ceilings(self, role: str) -> tuple[float, int]:
        """The largest ``timeout_s`` and ``memory_mb`` a key of ``role`` may use."""
        if role == "admin":
            return self.function_max_timeout_s_admin, self.function_max_memory_mb_admin
        if role == "operator":
            return self.function_max_timeout_s_operator, self.function_max_memory_mb_operator
        return self.function_max_timeout_s_user, self.function_max_memory_mb_user

    @property
    def url(self) -> str:
        """The base URL clients use (before a port 0 is resolved)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


_TOML_FILE: dict[str, Path | None] = {"path": None}


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from ``overrides`` > environment > TOML file > defaults.

    ``config``: the TOML file; default ``$NETSUKE_CONFIG``, else ``./netsuke.toml`` when it
    exists. A named file that is missing is an error. ``None`` overrides are ignored."""
    named = config or os.environ.get(CONFIG_ENV)
    path = Path(named) if named else Path(DEFAULT_CONFIG)
    if named and not path.is_file():
        raise SettingsError([("config", f"no such file {str(path)!r}")], None)
    source = str(path) if path.is_file() else None
    _TOML_FILE["path"] = path if source else None
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except pydantic.ValidationError as exc:
        problems = [
            (".".join(str(p) for p in err["loc"]) or "(root)", err["msg"]) for err in exc.errors()
        ]
        raise SettingsError(problems, source) from None
    except ValueError as exc:  # a TOML file that does not parse
        raise SettingsError([("(file)", str(exc))], source) from None
    finally:
        _TOML_FILE["path"] = None
