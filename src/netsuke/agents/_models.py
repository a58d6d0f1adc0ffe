"""Models: names to pydantic-ai models, and retries of transient model errors.

``resolve_model(model, base_url=None, api_key=None)`` accepts:

* ``None`` or ``"offline"``: the ``OfflineModel`` (the default; no network, no key);
* ``"test"``: pydantic-ai's ``TestModel``;
* a ``pydantic_ai.models.Model`` object, used as is (``FunctionModel`` in tests);
* ``"openai-compatible:<model>"`` with ``base_url``: a chat-completions server (vLLM, llama.cpp
  server, a local proxy), through ``OpenAIChatModel`` and ``OpenAIProvider(base_url)``;
* any pydantic-ai string: ``"anthropic:claude-sonnet-4-5"``, ``"openai-chat:gpt-4o"``,
  ``"ollama:llama3.2"`` (base URL from ``base_url`` or ``OLLAMA_BASE_URL``). In current
  pydantic-ai ``"openai:"`` is the Responses API; servers that speak only chat completions need
  ``"openai-chat:"`` (with ``base_url``) or ``"ollama:"``.

Every model but the local ones (offline, test, function) is wrapped in ``RetryingModel``:
transient failures (connection errors, timeouts, HTTP 408/409/425/429/5xx) are retried with
exponential backoff and jitter [``attempts=3``, ``base_delay=0.5`` s, ``max_delay=8`` s];
other errors go to the caller at once. A streamed request is retried only while opening.
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

from ._errors import AgentConfigError
from ._offline import OfflineModel

__all__ = ["RetryingModel", "is_transient", "model_label", "resolve_model"]

log = get_logger("netsuke.agents")

TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


def is_transient(error: BaseException) -> bool:
    """Whether a model error is worth retrying (see the module documentation)."""
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


def _is_local(model: Model) -> bool:
    return isinstance(model, FunctionModel | TestModel)


def resolve_model(
    model: str | Model | None,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    retries: int = 3,
) -> Model:
    """The pydantic-ai model for ``model`` (see the module documentation). Raises
    ``AgentConfigError(field="model")`` for a name pydantic-ai does not know or whose client
    library is missing (the message says which extra to install)."""
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
    try:
        if model.startswith("openai-compatible:") or (
            base_url is not None and model.startswith(("openai-chat:", "openai:"))
        ):
            resolved = _openai_compatible(model.split(":", 1)[1], base_url, api_key)
        elif model.startswith("ollama:") and base_url is not None:
            from pydantic_ai.models.openai import OpenAIChatModel
            from pydantic_ai.providers.ollama import OllamaProvider

            resolved = OpenAIChatModel(
                model.split(":", 1)[1], provider=OllamaProvider(base_url=base_url, api_key=api_key)
            )
        else:
            resolved = infer_model(model)
    except ImportError as e:
        raise AgentConfigError(
            "model", f"{model!r} needs a client library: pip install 'pydantic-ai-slim[...]' ({e})"
        ) from None
    except AgentConfigError:
        raise
    except Exception as e:
        # Never echo a key: the provider's message may mention environment variables only.
        raise AgentConfigError("model", f"cannot use {model!r}: {type(e).__name__}: {e}") from None
    if _is_local(resolved):
        return resolved
    return RetryingModel(resolved, attempts=retries)


def _openai_compatible(name: str, base_url: str | None, api_key: str | None) -> Model:
    if not base_url:
        raise AgentConfigError("base_url", "an openai-compatible model needs a base URL")
    if not base_url.startswith(("http://", "https://")):
        raise AgentConfigError("base_url", "must be an http(s) URL")
    from openai import AsyncOpenAI
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    # Our RetryingModel retries transient errors; the SDK's own retries would multiply them.
    client = AsyncOpenAI(base_url=base_url, api_key=api_key or "not-needed", max_retries=0)
    return OpenAIChatModel(name, provider=OpenAIProvider(openai_client=client))


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
