"""Models: names to pydantic-ai models, and retries of transient model errors.

``resolve_model(model, base_url=, api_key=, api_key_env=, retries=, guard=)`` accepts:

* ``None`` or ``"offline"``: the ``OfflineModel`` (the default; no network, no key);
* ``"test"``: pydantic-ai's ``TestModel``;
* a ``pydantic_ai.models.Model`` object, used as is (``FunctionModel`` in tests);
* ``"openai-compatible:<model>"`` with ``base_url``: a chat-completions server (vLLM, llama.cpp
  server, a local proxy), through ``OpenAIChatModel`` and an ``AsyncOpenAI`` client;
  ``"openai-chat:"``/``"openai:"`` with ``base_url`` the same; ``"openai-responses:"`` with
  ``base_url`` the Responses API there;
* ``"ollama:<model>"`` (base URL from ``base_url`` or ``OLLAMA_BASE_URL``) and
  ``"anthropic:<model>"`` (optional ``base_url``; an ``AsyncAnthropic`` client without the
  SDK's own retries);
* any other pydantic-ai string (``"openai-chat:gpt-4o"``, ``"groq:..."``), through
  ``infer_model``. In current pydantic-ai ``"openai:"`` is the Responses API.

The key: ``api_key`` (code only), else the variable ``api_key_env`` names, else the provider's
own variable, which is never sent to a ``base_url`` (see ``_endpoints``). Before anything is
built, ``model_problem`` refuses a model that cannot work (``AgentConfigError``: no key, no
client library, no base URL). With ``guard`` every request to ``base_url`` goes through the
node's ``EndpointGuard``.

Every model but the local ones (offline, test, function) is wrapped in ``RetryingModel``:
transient failures (connection errors, timeouts, HTTP 408/409/425/429/5xx) are retried with
exponential backoff and jitter [``attempts=3``, ``base_delay=0.5`` s, ``max_delay=8`` s];
other errors go to the caller at once (a request the guard refused is never retried). A
streamed request is retried only while opening. ``failure_reason`` turns a model error into
the safe one-line reason a failed turn carries.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from pydantic_ai.exceptions import ModelAPIError, ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse, infer_model
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.models.test import TestModel
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings

from netsuke.observability import get_logger

from ._endpoints import (
    PROVIDERS,
    EndpointGuard,
    EndpointRefusedError,
    check_model,
    read_key,
    redact_secrets,
    safe_url,
)
from ._errors import AgentConfigError
from ._offline import OfflineModel

__all__ = [
    "RetryingModel",
    "failure_reason",
    "is_transient",
    "model_label",
    "refused_cause",
    "resolve_model",
]

log = get_logger("netsuke.agents")

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def refused_cause(error: BaseException | None) -> EndpointRefusedError | None:
    """The ``EndpointRefusedError`` behind ``error`` (its cause or context chain), if any."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, EndpointRefusedError):
            return error
        error = error.__cause__ or error.__context__
        seen += 1
    return None


def is_transient(error: BaseException) -> bool:
    """Whether a model error is worth retrying (see the module documentation). A request the
    endpoint guard refused is not."""
    if refused_cause(error) is not None:
        return False
    if isinstance(error, ModelHTTPError):
        return error.status_code in TRANSIENT_STATUS
    if isinstance(error, ModelAPIError):
        name = type(error).__name__
        return name in {
            "ModelConnectionError",
            "ModelTimeoutError",
            "ModelRateLimitError",
            "ModelUnavailableError",
            "ModelOverloadedError",
            "ModelServerError",
        }
    return isinstance(error, ConnectionError | TimeoutError)


class RetryingModel(WrapperModel):
    """Retries transient errors of ``wrapped`` with exponential backoff and full jitter."""

    def __init__(
        self,
        wrapped: Model,
        *,
        attempts: int = 3,
        base_delay: float = 0.5,
        max_delay: float = 8.0,
    ) -> None:
        super().__init__(wrapped)
        if attempts < 1:
            raise AgentConfigError("model_retries", "must be >= 1")
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.retried = 0

    def _delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))

    async def _backoff(self, attempt: int, error: BaseException) -> None:
        self.retried += 1
        delay = self._delay(attempt)
        log.info(
            "agent_model_retry",
            model=self.wrapped.model_name,
            attempt=attempt + 1,
            delay=round(delay, 3),
            error=type(error).__name__,
        )
        await asyncio.sleep(delay)

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        for attempt in range(self.attempts):
            try:
                return await self.wrapped.request(
                    messages, model_settings, model_request_parameters
                )
            except Exception as e:
                if attempt + 1 >= self.attempts or not is_transient(e):
                    raise
                await self._backoff(attempt, e)
        raise AssertionError("unreachable")  # pragma: no cover

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: Any = None,
    ) -> AsyncGenerator[StreamedResponse]:
        attempt = 0
        while True:
            cm = self.wrapped.request_stream(
                messages, model_settings, model_request_parameters, run_context
            )
            try:
                stream = await cm.__aenter__()
            except Exception as e:
                if attempt + 1 >= self.attempts or not is_transient(e):
                    raise
                await self._backoff(attempt, e)
                attempt += 1
                continue
            break
        try:
            yield stream
        except BaseException as e:
            if not await cm.__aexit__(type(e), e, e.__traceback__):
                raise
        else:
            await cm.__aexit__(None, None, None)


def failure_reason(
    error: BaseException,
    *,
    model: str,
    base_url: str | None = None,
    key_env: str | None = None,
    attempts: int = 1,
) -> str:
    """A safe, actionable line for a failed model call: the model (and endpoint), what went
    wrong and what to check; never the key, the prompt or the provider's raw answer."""
    label = f"model {model}" + (f" at {safe_url(base_url)}" if base_url else "")
    refused = refused_cause(error)
    if refused is not None:
        return f"{label}: {refused.reason}"
    status = getattr(error, "status_code", None)
    kind = {c.__name__ for c in type(error).__mro__}
    tries = f" (after {attempts} attempts)" if attempts > 1 and is_transient(error) else ""
    if "ModelAuthenticationError" in kind or status in (401, 403):
        where = (
            f"check {key_env}"
            if key_env
            else "the server wants a key: name its environment variable with config.api_key_env"
        )
        return f"{label}: the provider refused the credentials (HTTP {status}); {where}"
    if "ModelNotFoundError" in kind or status == 404:
        return f"{label}: not found (HTTP 404); check the model name and the base URL"
    if "ModelQuotaExceededError" in kind:
        return f"{label}: the account's quota or credits are exhausted (HTTP {status})"
    if "ModelContextWindowExceededError" in kind:
        return f"{label}: the conversation exceeds the model's context window"
    if "ModelRateLimitError" in kind or status == 429:
        return f"{label}: rate limited by the provider (HTTP 429){tries}"
    if "ModelTimeoutError" in kind or isinstance(error, TimeoutError):
        return f"{label}: the request timed out{tries}"
    if "ModelConnectionError" in kind or isinstance(error, ConnectionError):
        return f"{label}: cannot connect to the model server{tries}"
    if isinstance(status, int):
        body = getattr(error, "body", None)
        said = ""
        if isinstance(body, dict):
            inner = body.get("error", body)
            msg = inner.get("message") if isinstance(inner, dict) else None
            if isinstance(msg, str):
                said = ": " + redact_secrets(msg, limit=160)
        return f"{label}: the provider answered HTTP {status}{said}{tries}"
    return f"{label}: {type(error).__name__}: {redact_secrets(str(error), limit=200)}"


def _is_local(model: Model) -> bool:
    return isinstance(model, FunctionModel | TestModel)


def resolve_model(
    model: str | Model | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    api_key_env: str | None = None,
    retries: int = 3,
    guard: EndpointGuard | None = None,
) -> Model:
    """The pydantic-ai model for ``model`` (see the module documentation). The key is
    ``api_key`` (code only), else the variable ``api_key_env`` names, else the provider's own
    variable (never sent to a custom ``base_url``). ``guard`` checks every request to
    ``base_url``. Raises ``AgentConfigError`` (field, reason) for a model that cannot work:
    an unknown provider, a missing client library, key or base URL (``model_problem``)."""
    if model is None or model == "offline":
        return OfflineModel()
    if isinstance(model, Model):
        return (
            model
            if _is_local(model) or isinstance(model, RetryingModel)
            else RetryingModel(model, attempts=retries)
        )
    if not isinstance(model, str):
        raise AgentConfigError("model", f"a model name or a pydantic-ai Model, not {model!r}")
    check_model(model, base_url=base_url, api_key_env=api_key_env, api_key=api_key)
    key = api_key or read_key(api_key_env)
    provider = model.partition(":")[0]
    try:
        if provider == "openai-compatible" or (
            base_url is not None and provider in ("openai-chat", "openai")
        ):
            resolved = _openai_compatible(model.split(":", 1)[1], base_url, key, guard)
        elif provider == "openai-responses" and base_url is not None:
            from pydantic_ai.models.openai import OpenAIResponsesModel
            from pydantic_ai.providers.openai import OpenAIProvider

            client = _openai_client(base_url, key, guard)
            resolved = OpenAIResponsesModel(
                model.split(":", 1)[1], provider=OpenAIProvider(openai_client=client)
            )
        elif provider == "ollama" and (base_url is not None or key is not None):
            from pydantic_ai.models.openai import OpenAIChatModel
            from pydantic_ai.providers.ollama import OllamaProvider

            # a definition's base_url gets only the key it names (not OLLAMA_API_KEY)
            resolved = OpenAIChatModel(
                model.split(":", 1)[1],
                provider=OllamaProvider(
                    base_url=base_url,
                    api_key=key or ("api-key-not-set" if base_url else None),
                    http_client=guard.client() if guard is not None and base_url else None,
                ),
            )
        elif provider == "anthropic":
            resolved = _anthropic(model.split(":", 1)[1], base_url, key, guard)
        elif key is not None and provider in ("openai-responses", "openai-chat", "openai"):
            from pydantic_ai.providers.openai import OpenAIProvider

            resolved = infer_model(model, provider_factory=lambda _: OpenAIProvider(api_key=key))
        else:
            resolved = infer_model(model)
    except ImportError:
        info = PROVIDERS.get(provider)
        hint = info.install if info is not None else "install the provider's client library"
        raise AgentConfigError(
            "model", f"model {model}: its client library is missing ({hint})"
        ) from None
    except AgentConfigError:
        raise
    except Exception as e:
        # Never echo a key: the provider's message may mention environment variables only.
        raise AgentConfigError(
            "model", f"model {model}: {type(e).__name__}: {redact_secrets(str(e))}"
        ) from None
    if _is_local(resolved):
        return resolved
    return RetryingModel(resolved, attempts=retries)


def _openai_compatible(
    name: str, base_url: str | None, api_key: str | None, guard: EndpointGuard | None
) -> Model:
    if not base_url:
        raise AgentConfigError("base_url", "an openai-compatible model needs a base URL")
    if not base_url.startswith(("http://", "https://")):
        raise AgentConfigError("base_url", "must be an http(s) URL")
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    client = _openai_client(base_url, api_key, guard)
    return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client))


def _openai_client(base_url: str, api_key: str | None, guard: EndpointGuard | None) -> Any:
    from openai import AsyncOpenAI

    # Our RetryingModel retries transient errors; the SDK's own retries would multiply them.
    # A keyless server still needs a non-empty key for the SDK: "not-needed" is sent then.
    return AsyncOpenAI(
        base_url=base_url,
        api_key=api_key or "not-needed",
        max_retries=0,
        http_client=guard.client() if guard is not None else None,
    )


def _anthropic(
    name: str, base_url: str | None, api_key: str | None, guard: EndpointGuard | None
) -> Model:
    from anthropic import AsyncAnthropic
    from pydantic_ai.models.anthropic import AnthropicModel
    from pydantic_ai.providers.anthropic import AnthropicProvider

    # As for OpenAI: the SDK's own retries (2 by default) would multiply RetryingModel's.
    # A definition's base_url gets only the key it names (never ANTHROPIC_API_KEY); with
    # neither, the SDK reads ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL from the environment.
    client = AsyncAnthropic(
        api_key=api_key or ("not-needed" if base_url else None),
        base_url=base_url,
        max_retries=0,
        http_client=guard.client() if guard is not None and base_url else None,
    )
    return AnthropicModel(name, provider=AnthropicProvider(anthropic_client=client))


def model_label(model: str | Model | None) -> str:
    """A short, secret-free label for logs and registry metadata."""
    if model is None:
        return "offline"
    if isinstance(model, str):
        return model
    if isinstance(model, OfflineModel):
        return "offline"
    inner = model.wrapped if isinstance(model, WrapperModel) else model
    return f"{inner.system}:{inner.model_name}"
