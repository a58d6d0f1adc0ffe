"""Model endpoints and credentials: which provider needs which key and client library, what
stops a model from working (``model_problem``), the secret-free reasons of model failures,
and the address guard applied when a model connects (``EndpointGuard``).

Credentials never live in a definition. A provider's key comes from the node's environment:
the provider's own variable (``PROVIDERS``: ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ...)
or the variable a definition names with ``config.api_key_env``. With a ``base_url`` chosen by
the definition, only a variable the definition names is sent (the node's ``OPENAI_API_KEY``
never goes to a URL it did not choose implicitly).

``EndpointGuard(is_forbidden, allow)`` is the node's policy for model URLs taken from stored
definitions: every request (retries included) resolves the host, refuses it when any address
is loopback, private, link-local or reserved (``is_forbidden``, the webhook guard's
predicate) unless ``(host, port)`` is on the operator's allow-list, and connects to the
address it checked (the Host header and TLS server name stay the URL's), so a name re-pointed
after the check (DNS rebinding) cannot redirect the request.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx2

from netsuke.store import key_env_problem

from ._errors import AgentConfigError

__all__ = [
    "PROVIDERS",
    "EndpointGuard",
    "EndpointRefusedError",
    "GuardedTransport",
    "ProviderInfo",
    "key_env_for",
    "model_problem",
    "parse_allow_hosts",
    "redact_secrets",
    "safe_url",
]


@dataclass(frozen=True, slots=True)
class ProviderInfo:
    """What a provider needs: ``key_env`` (its key's default variable, or None), whether a key
    is ``required``, the client ``module`` and how to ``install`` it, ``base_url_env``, and
    whether a definition may set ``config.base_url`` (``custom_url``)."""

    key_env: str | None
    required: bool
    module: str
    install: str
    base_url_env: str | None = None
    custom_url: bool = False


def _slim(extra: str) -> str:
    return f"pip install 'pydantic-ai-slim[{extra}]'"


_OPENAI = ProviderInfo(
    "OPENAI_API_KEY", True, "openai", _slim("openai"), "OPENAI_BASE_URL", custom_url=True
)
PROVIDERS: Mapping[str, ProviderInfo] = {
    "openai": _OPENAI,
    "openai-chat": _OPENAI,
    "openai-responses": _OPENAI,
    "openai-compatible": ProviderInfo(None, False, "openai", _slim("openai"), custom_url=True),
    "ollama": ProviderInfo(
        "OLLAMA_API_KEY", False, "openai", _slim("openai"), "OLLAMA_BASE_URL", custom_url=True
    ),
    "anthropic": ProviderInfo(
        "ANTHROPIC_API_KEY", True, "anthropic", "pip install 'netsuke[anthropic]'", custom_url=True
    ),
    "groq": ProviderInfo("GROQ_API_KEY", True, "groq", _slim("groq")),
    "mistral": ProviderInfo("MISTRAL_API_KEY", True, "mistralai", _slim("mistral")),
    "cohere": ProviderInfo("CO_API_KEY", True, "cohere", _slim("cohere")),
    "deepseek": ProviderInfo("DEEPSEEK_API_KEY", True, "openai", _slim("openai")),
    "openrouter": ProviderInfo("OPENROUTER_API_KEY", True, "openai", _slim("openai")),
    "huggingface": ProviderInfo("HF_TOKEN", True, "huggingface_hub", _slim("huggingface")),
    "google-gla": ProviderInfo("GOOGLE_API_KEY", True, "google.genai", _slim("google")),
    "google-vertex": ProviderInfo(None, False, "google.genai", _slim("google")),
    "bedrock": ProviderInfo(None, False, "boto3", _slim("bedrock")),
    "grok": ProviderInfo("XAI_API_KEY", True, "xai_sdk", _slim("xai")),
}
"""Providers netsuke checks before the first turn (others are left to pydantic-ai)."""


class EndpointRefusedError(ConnectionError):
    """A model endpoint the node's guard refuses; ``reason`` says why (no secret in it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def provider_of(model: str) -> str:
    return model.partition(":")[0] if ":" in model else model


def key_env_for(model: Any, base_url: str | None, api_key_env: str | None) -> str | None:
    """The variable the key of ``model`` is read from: ``api_key_env`` when given; else the
    provider's own variable, except for a custom ``base_url`` (then no key is sent)."""
    if api_key_env:
        return api_key_env
    if not isinstance(model, str) or base_url:
        return None
    info = PROVIDERS.get(provider_of(model))
    return info.key_env if info is not None else None


def _has_module(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def model_problem(
    model: Any,
    *,
    base_url: str | None = None,
    api_key_env: str | None = None,
    api_key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str] | None:
    """``(field, reason)`` when ``model`` cannot work on this node (unknown provider, client
    library missing, key or base URL missing), else None. The reason names the model and the
    variable, never a value: ``("model", "model openai-chat:gpt-4o: OPENAI_API_KEY is not
    set")``."""
    if not isinstance(model, str) or model in ("offline", "test"):
        return None
    env = os.environ if environ is None else environ
    provider = provider_of(model)
    label = f"model {model}"
    info = PROVIDERS.get(provider)
    if provider != "openai-compatible":
        from pydantic_ai.providers import infer_provider_class

        try:
            infer_provider_class(provider)
        except ImportError:
            hint = info.install if info is not None else _slim(provider)
            return ("model", f"{label}: the provider's client library is missing ({hint})")
        except ValueError:
            return ("model", f"{label}: the installed pydantic-ai knows no provider {provider!r}")
    if info is None:
        return None  # pydantic-ai decides (resolve_model reports what it says)
    if not _has_module(info.module):
        return ("model", f"{label}: the {info.module} client library is missing ({info.install})")
    if base_url and not info.custom_url:
        return ("config.base_url", f"{label}: provider {provider} does not take a base_url")
    if provider == "openai-compatible" and not base_url:
        return ("config.base_url", f"{label}: an openai-compatible model needs config.base_url")
    if provider == "ollama" and not base_url and not env.get("OLLAMA_BASE_URL"):
        return ("config.base_url", f"{label}: set config.base_url or OLLAMA_BASE_URL")
    if api_key_env:
        bad = key_env_problem(api_key_env)
        if bad is not None:
            return ("config.api_key_env", f"{label}: api_key_env {bad}")
        if not env.get(api_key_env):
            return ("config.api_key_env", f"{label}: {api_key_env} is not set")
        return None
    if api_key or base_url or not info.required or info.key_env is None:
        return None
    if env.get(info.key_env) or (provider == "google-gla" and env.get("GEMINI_API_KEY")):
        return None
    return ("model", f"{label}: {info.key_env} is not set")


def check_model(
    model: Any, *, base_url: str | None, api_key_env: str | None, api_key: str | None
) -> None:
    """``model_problem`` as an ``AgentConfigError`` (field, reason)."""
    problem = model_problem(model, base_url=base_url, api_key_env=api_key_env, api_key=api_key)
    if problem is not None:
        raise AgentConfigError(*problem)


def read_key(api_key_env: str | None) -> str | None:
    """The key in ``api_key_env`` (None when no variable is named)."""
    if not api_key_env:
        return None
    return os.environ.get(api_key_env) or None


def safe_url(url: str | None) -> str:
    """``url`` without credentials, query or fragment (for messages and logs)."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


_SECRET_SHAPES = re.compile(
    r"(?i)(bearer\s+\S+|sk-[A-Za-z0-9_\-*]{6,}|nsk_\S+|(?:api[_-]?key|token|secret|password)"
    r"\s*[=:]\s*\S+)"
)
_SECRET_NAMES = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def redact_secrets(text: str, *, limit: int = 300) -> str:
    """``text`` cut to one line of at most ``limit`` characters, with every value of a
    secret-named environment variable and every key-shaped word replaced by ``[redacted]``."""
    out = " ".join(text.split())
    for name, value in os.environ.items():
        if len(value) >= 8 and any(w in name.upper() for w in _SECRET_NAMES) and value in out:
            out = out.replace(value, "[redacted]")
    out = _SECRET_SHAPES.sub("[redacted]", out)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def parse_allow_hosts(entries: Iterable[str]) -> frozenset[tuple[str, int | None]]:
    """``["127.0.0.1:11434", "localhost", "[::1]:8000"]`` as ``(host, port)`` pairs (port
    None: any port). Raises ``ValueError`` naming a bad entry."""
    out: set[tuple[str, int | None]] = set()
    for entry in entries:
        raw = entry.strip()
        try:
            parts = urlsplit(f"//{raw}")
            host, port = parts.hostname, parts.port
        except ValueError:
            host = None
            port = None
        if not raw or not host or parts.path or parts.username is not None:
            raise ValueError(f"{entry!r} is not host or host:port")
        out.add((host.lower(), port))
    return frozenset(out)


@dataclass(frozen=True)
class EndpointGuard:
    """The node's policy for model URLs of stored definitions (see the module documentation).
    ``is_forbidden(address) -> bool`` judges one IP address; ``allow`` holds the operator's
    ``(host, port)`` pairs (port None: any) that may be private."""

    is_forbidden: Callable[[str], bool]
    allow: frozenset[tuple[str, int | None]] = frozenset()

    def allowed(self, host: str, port: int | None) -> bool:
        host = host.lower().strip("[]")
        return (host, port) in self.allow or (host, None) in self.allow

    async def resolve(self, host: str, port: int) -> str:
        """The address to connect to for ``host``; ``EndpointRefusedError`` when any address
        it resolves to is forbidden (or it resolves to none)."""
        bare = host.strip("[]")
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                bare, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError):
            raise EndpointRefusedError(f"cannot resolve model host {bare!r}") from None
        addresses = [str(info[4][0]) for info in infos]
        if not addresses:
            raise EndpointRefusedError(f"model host {bare!r} has no address")
        for address in addresses:
            try:
                forbidden = self.is_forbidden(address)
            except ValueError:
                forbidden = True
            if forbidden:
                raise EndpointRefusedError(
                    f"model host {bare!r} resolves to {address}, a loopback, private or "
                    "reserved address (an operator may allow it with model_allow_hosts)"
                )
        return addresses[0]

    async def check_url(self, url: str) -> None:
        """Refuse (``EndpointRefusedError``) a malformed URL or one the guard refuses."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise EndpointRefusedError("the model URL is not valid") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EndpointRefusedError("the model URL must be http(s)://host...")
        if parts.username is not None or parts.password is not None:
            raise EndpointRefusedError("credentials in the model URL are not accepted")
        if self.allowed(parts.hostname, port):
            return
        await self.resolve(parts.hostname, port or (443 if parts.scheme == "https" else 80))

    def client(self) -> httpx2.AsyncClient:
        """An HTTP client whose every request goes through this guard."""
        return httpx2.AsyncClient(
            transport=GuardedTransport(self),
            timeout=httpx2.Timeout(600.0, connect=10.0),
            follow_redirects=False,
        )


class GuardedTransport(httpx2.AsyncHTTPTransport):
    """Checks each request's host with an ``EndpointGuard`` and connects to the checked
    address (Host header and TLS server name unchanged)."""

    def __init__(self, guard: EndpointGuard) -> None:
        super().__init__(trust_env=False)
        self.guard = guard

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        url = request.url
        host = url.host
        port = url.port or (443 if url.scheme == "https" else 80)
        if not self.guard.allowed(host, url.port):
            address = await self.guard.resolve(host, port)
            if address != host.strip("[]"):
                request.url = url.copy_with(host=address)
                if url.scheme == "https":
                    request.extensions = {**request.extensions, "sni_hostname": host}
        return await super().handle_async_request(request)
