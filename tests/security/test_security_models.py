"""Model endpoints and model keys as an attacker and an operator meet them (issue 14, items 5
and 6), against a real node on 127.0.0.1 and a fake OpenAI-compatible server that checks its
key: SSRF through ``config.base_url`` is refused at definition time and at connect time unless
the operator allow-lists the host; ``config.api_key`` is refused, never stored, never served;
no key reaches a log line or an error."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic_ai import models
from sqlalchemy import text

from netsuke.agents import AgentConfig, Agents, EndpointGuard, ModelConfigError
from netsuke.api import Settings
from netsuke.api._ssrf import is_forbidden_address
from tests.agents.fake_openai import FakeOpenAI, fake_openai_server
from tests.api.conftest import Live, serve

KEY = "sk-fake-0123456789abcdef"
Factory = Callable[..., AbstractAsyncContextManager[Live]]


@pytest.fixture
def live_factory(tmp_path: Path) -> Factory:
    def make(**overrides: Any) -> AbstractAsyncContextManager[Live]:
        values: dict[str, Any] = {
            "database_url": f"sqlite+aiosqlite:///{tmp_path / 'sec.db'}",
            "port": 0,
            "rate_limit_per_minute": 0,
            **overrides,
        }
        return serve(Settings(**values))

    return make


@pytest.fixture
async def live(live_factory: Factory) -> AsyncIterator[Live]:
    async with live_factory() as running:
        yield running


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAI]:
    monkeypatch.setenv("VLLM_API_KEY", KEY)
    with fake_openai_server(api_key=KEY) as f, models.override_allow_model_requests(True):
        yield f


def _agent(base_url: str, **config: Any) -> dict[str, Any]:
    return {
        "name": "ssrf",
        "model": "openai-compatible:m",
        "config": {"base_url": base_url, **config},
    }


# ---------------------------------------------------------------- SSRF (14.5)


@pytest.mark.parametrize(
    "base_url",
    [
        "http://127.0.0.1:18251/v1",
        "http://localhost:11434/v1",
        "http://169.254.169.254/latest",
        "http://10.0.0.8/v1",
        "http://192.168.1.10:8000/v1",
        "http://[::1]:8000/v1",
        "http://[::ffff:127.0.0.1]/v1",
        "http://2130706433/v1",
        "http://0.0.0.0:8000/v1",
    ],
)
async def test_a_private_model_url_is_refused_when_the_agent_is_defined(
    live: Live, base_url: str
) -> None:
    operator = live.client(await live.key("operator", "op1"))
    r = await operator.post("/api/v1/agents", json=_agent(base_url))
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    errors = r.json()["errors"]
    assert errors[0]["field"] == "config.base_url"
    assert "model_allow_hosts" in errors[0]["reason"]
    assert (await operator.get("/api/v1/agents/ssrf")).status_code == 404
    # replacing a good definition with a private URL is refused the same way
    await operator.post("/api/v1/agents", json={"name": "fine"})
    r = await operator.put(
        "/api/v1/agents/fine",
        json={"model": "openai-compatible:m", "config": {"base_url": base_url}},
        headers={"If-Match": "*"},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config.base_url"


async def test_a_private_model_url_is_refused_at_connect_time(
    live: Live, keyed: FakeOpenAI
) -> None:
    """A definition that reached the store without the API's check (an older node, a file, a
    name that resolved elsewhere when it was defined) is refused when the model connects:
    nothing reaches the private address."""
    await live.node.store.agents.create(_agent(keyed.url, api_key_env="VLLM_API_KEY"))
    alice = live.client(await live.key("user", "alice"))
    await alice.post("/api/v1/sessions", json={"agent": "ssrf"})
    r = await alice.post("/api/v1/sessions/ssrf-alice/messages", json={"message": "hello"})
    assert r.status_code == 502, r.text
    body = r.json()
    assert body["type"].endswith("/model-unavailable") and body["field"] == "config.base_url"
    assert "resolves to 127.0.0.1" in body["detail"] and "model_allow_hosts" in body["detail"]
    assert keyed.requests == [] and keyed.auth == []


async def test_the_operator_allow_list_lets_a_local_model_server_in(
    live_factory: Factory, keyed: FakeOpenAI
) -> None:
    port = int(keyed.url.split(":")[2].split("/")[0])
    async with live_factory(model_allow_hosts=[f"127.0.0.1:{port}"]) as live:
        operator = live.client(await live.key("operator", "op1"))
        r = await operator.post(
            "/api/v1/agents", json=_agent(keyed.url, api_key_env="VLLM_API_KEY")
        )
        assert r.status_code == 201, r.text
        # another port on the same host is still refused
        other = _agent(f"http://127.0.0.1:{port + 1}/v1") | {"name": "other"}
        assert (await operator.post("/api/v1/agents", json=other)).status_code == 422
        alice = live.client(await live.key("user", "alice"))
        await alice.post("/api/v1/sessions", json={"agent": "ssrf"})
        r = await alice.post("/api/v1/sessions/ssrf-alice/messages", json={"message": "hello"})
        assert r.status_code == 200, r.text
        assert r.json()["output"].startswith("echo: hello")
        assert keyed.auth == [f"Bearer {KEY}"]


async def test_every_request_is_checked_and_goes_to_the_address_checked(
    store_agents: Agents, keyed: FakeOpenAI
) -> None:
    """Connect time, not definition time: the guard judges each request (a name re-pointed
    after the definition was accepted is refused then), and the connection goes to the
    address it judged, with the URL's Host header."""
    verdicts: list[bool] = []

    def judge(address: str) -> bool:
        verdicts.append(address == "127.0.0.1")
        return len(verdicts) > 1 and is_forbidden_address(address)  # "re-pointed" later

    url = keyed.url.replace("127.0.0.1", "localhost")
    cfg = AgentConfig(
        name="g",
        model="openai-compatible:m",
        base_url=url,
        api_key_env="VLLM_API_KEY",
        endpoint_guard=EndpointGuard(judge),
    )
    await store_agents.start_agent("g", cfg)
    assert (await store_agents.run("g", "one")).startswith("echo: one")
    assert keyed.hosts == [url.split("/")[2]]  # Host: localhost:<port>, not the address
    with pytest.raises(ModelConfigError) as e:
        await store_agents.run("g", "two")
    assert "resolves to 127.0.0.1" in e.value.reason
    assert len(keyed.requests) == 1


@pytest.fixture
async def store_agents(tmp_path: Path) -> AsyncIterator[Agents]:
    from netsuke import Runtime
    from netsuke.store import Store

    async with (
        Store.open(f"sqlite+aiosqlite:///{tmp_path / 'g.db'}") as store,
        Runtime(shutdown_timeout=5.0) as rt,
    ):
        yield await Agents.start(rt, store)


# ------------------------------------------------------- secrets (14.6)


@pytest.mark.parametrize("field", ["api_key", "apiKey", "token", "client_secret"])
async def test_a_key_in_a_definition_is_refused_and_never_stored(live: Live, field: str) -> None:
    operator = live.client(await live.key("operator", "op1"))
    body = {"name": "leaky", "model": "offline", "config": {field: KEY}}
    with structlog.testing.capture_logs() as logs:
        r = await operator.post("/api/v1/agents", json=body)
    assert r.status_code == 422, r.text
    problem = r.json()
    assert problem["errors"][0]["field"] == f"config.{field}"
    assert "api_key_env" in problem["errors"][0]["reason"]
    assert KEY not in r.text and KEY not in json.dumps(logs, default=str)
    assert (await operator.get("/api/v1/agents/leaky")).status_code == 404
    await operator.post("/api/v1/agents", json={"name": "leaky"})
    r = await operator.put(
        "/api/v1/agents/leaky",
        json={"model": "offline", "config": {field: KEY}},
        headers={"If-Match": "*"},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == f"config.{field}"
    assert KEY not in (await operator.get("/api/v1/agents/leaky")).text


@pytest.mark.parametrize(
    "name", ["AWS_SECRET_ACCESS_KEY", "NETSUKE_API_KEY", "DATABASE_URL", "lower_api_key", ""]
)
async def test_api_key_env_may_only_name_a_model_key_variable(live: Live, name: str) -> None:
    r = await live.admin.post(
        "/api/v1/agents",
        json=_agent("https://api.example.com/v1", api_key_env=name) | {"model": "openai-chat:m"},
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "config.api_key_env"


async def test_a_key_stored_before_the_refusal_is_never_served(
    live: Live, keyed: FakeOpenAI
) -> None:
    store = live.node.store
    await store.agents.create({"name": "old", "model": "offline"})
    # an older node stored the key in plain text (bypass today's validation)
    async with store.database.write() as conn:
        await conn.execute(
            text("UPDATE agent_versions SET config = :c"),
            {"c": json.dumps({"api_key": KEY, "base_url": keyed.url})},
        )
    r = await live.admin.get("/api/v1/agents")
    assert KEY not in r.text and "api_key" not in r.text
    for path in (
        "/api/v1/agents/old",
        "/api/v1/agents/old/versions",
        "/api/v1/agents/old/versions/1",
    ):
        r = await live.admin.get(path)
        assert r.status_code == 200 and KEY not in r.text, path
    assert "api_key" not in (await store.agents.get("old")).config
    assert "api_key" not in (await store.factory.spec("old")).config


async def test_no_key_reaches_a_log_line_or_an_error(
    live_factory: Factory, keyed: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong key: the provider's 401 (which quotes the key it got) becomes a reason naming
    the variable; neither the key in the environment nor the one sent appears anywhere."""
    wrong = "sk-wrong-key-987654321fedcba"
    monkeypatch.setenv("VLLM_API_KEY", wrong)
    port = int(keyed.url.split(":")[2].split("/")[0])
    async with live_factory(model_allow_hosts=[f"127.0.0.1:{port}"]) as live:
        r = await live.admin.post(
            "/api/v1/agents", json=_agent(keyed.url, api_key_env="VLLM_API_KEY")
        )
        assert r.status_code == 201
        await live.admin.post("/api/v1/sessions", json={"agent": "ssrf", "user": "ann"})
        with structlog.testing.capture_logs() as logs:
            r = await live.admin.post("/api/v1/sessions/ssrf-ann/messages", json={"message": "x"})
            stream = await live.admin.post(
                "/api/v1/sessions/ssrf-ann/messages", json={"message": "x"}, params={"stream": "1"}
            )
        assert r.status_code == 502 and stream.status_code == 502
        assert "check VLLM_API_KEY" in r.json()["detail"]
        execution = await live.admin.get(f"/api/v1/executions/{r.json()['execution_id']}")
        agent_logs = await live.admin.get("/api/v1/agents/ssrf/logs")
        everything = " ".join(
            [r.text, stream.text, execution.text, agent_logs.text, json.dumps(logs, default=str)]
        )
        assert wrong not in everything and "sk-wrong" not in everything
        assert keyed.auth and all(a == f"Bearer {wrong}" for a in keyed.auth)
