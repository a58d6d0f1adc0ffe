from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netsuke.store import (
    AgentDraft,
    DefinitionFileError,
    ModelSettings,
    Store,
    dump_agent_yaml,
    export_agents,
    is_secret_config_key,
    load_agent_file,
    sync_agents,
)

from .helpers import agent

SEARCH = """\
name: search
description: Handles search queries
model: openai:gpt-4o
model_settings: {temperature: 0.2, max_tokens: 1024}
system_prompt: |
  You are a search assistant.
  Be brief.
capabilities: [search, filter]
tools: [web_search]
delegates: [summarizer]
input_schema:
  type: object
  properties: {query: {type: string}}
  required: [query]
"""
SUMMARIZER = """\
name: summarizer
model: anthropic:claude-sonnet-4-5
delegates: [search]
"""


def _write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_text(content)
    return folder


async def test_sync_creates_then_is_idempotent_then_versions_changes(
    store: Store, tmp_path: Path
) -> None:
    folder = _write(tmp_path / "agents", {"search.yaml": SEARCH, "summarizer.yml": SUMMARIZER})
    first = await sync_agents(store.agents, folder, actor="git")
    assert sorted(first["created"]) == ["search", "summarizer"]
    search = await store.agents.get("search")
    assert search.system_prompt == "You are a search assistant.\nBe brief.\n"
    assert search.delegates == ["summarizer"]
    assert search.input_schema is not None
    assert search.input_schema["required"] == ["query"]

    again = await sync_agents(store.agents, folder)
    assert sorted(again["unchanged"]) == ["search", "summarizer"]
    assert again["created"] == again["updated"] == []
    assert len(await store.agents.versions("search")) == 1

    (folder / "search.yaml").write_text(SEARCH.replace("Be brief.", "Be thorough."))
    third = await sync_agents(store.agents, folder)
    assert third["updated"] == ["search"]
    assert third["unchanged"] == ["summarizer"]
    assert (await store.agents.get("search")).version == 2
    assert (await store.agents.get("search")).created_by is None


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ("name: bad\nmodel: nobody:knows\n", "model"),
        ("name: bad\ncapabilities: [Not-Valid]\n", "capabilities[0]"),
        ("name: bad\ninput_schema: {type: 12}\n", "input_schema"),
        ("name: bad\nmodel_settings: {temperature: hot}\n", "model_settings.temperature"),
        ("name: bad\nsurprise: 1\n", "surprise"),
        ("name: bad\ndelegates: [nobody]\n", "delegates[0]"),
        ("- just\n- a list\n", "(root)"),
        ("name: [unclosed\n", "(file)"),
        ("description: no name\n", "name"),
    ],
)
async def test_a_bad_file_is_reported_with_path_and_field_and_nothing_is_written(
    store: Store, tmp_path: Path, content: str, field: str
) -> None:
    folder = _write(
        tmp_path / "agents",
        {"search.yaml": SEARCH, "summarizer.yaml": SUMMARIZER, "zz_bad.yaml": content},
    )
    with pytest.raises(DefinitionFileError) as caught:
        await sync_agents(store.agents, folder)
    assert caught.value.path == str(folder / "zz_bad.yaml")
    assert caught.value.field == field
    assert str(folder / "zz_bad.yaml") in str(caught.value)
    assert await store.agents.count() == 0


async def test_two_files_defining_one_agent_are_refused(store: Store, tmp_path: Path) -> None:
    folder = _write(
        tmp_path / "agents",
        {
            "a.yaml": SUMMARIZER.replace("[search]", "[]"),
            "b.yaml": SUMMARIZER.replace("[search]", "[]"),
        },
    )
    with pytest.raises(DefinitionFileError) as caught:
        await sync_agents(store.agents, folder)
    assert caught.value.path.endswith("b.yaml")
    assert caught.value.field == "name"


async def test_export_then_sync_into_another_store_reproduces_the_definitions(
    store: Store, tmp_path: Path, db_url: str
) -> None:
    await store.agents.create(agent("helper", system_prompt="line one\nline two\n"))
    await store.agents.create(
        agent("boss", delegates=["helper"], config={"x": {"y": [1]}}, model_settings={})
    )
    paths = await export_agents(store.agents, tmp_path / "agents")
    assert sorted(p.name for p in paths) == ["boss.yaml", "helper.yaml"]
    assert "line one\n  line two" in (tmp_path / "agents" / "helper.yaml").read_text()
    for path in paths:
        draft = load_agent_file(path)
        assert draft.fingerprint() == (await store.agents.get(draft.name)).content_hash
    # Syncing the export back changes nothing.
    result = await sync_agents(store.agents, tmp_path / "agents")
    assert sorted(result["unchanged"]) == ["boss", "helper"]
    # Syncing it into another, empty store reproduces the same content.
    async with Store.open(db_url, migrate=True) as other:
        created = await sync_agents(other.agents, tmp_path / "agents")
        assert sorted(created["created"]) == ["boss", "helper"]
        for name in ("boss", "helper"):
            theirs = await other.agents.get(name)
            ours = await store.agents.get(name)
            assert theirs.content_hash == ours.content_hash
            assert theirs.draft() == ours.draft()


def test_dump_omits_defaults_and_starts_with_the_name() -> None:
    text = dump_agent_yaml(AgentDraft(name="tiny", model="test"))
    assert text == "name: tiny\nmodel: test\n"


_item = st.from_regex(r"\A[a-z][a-z0-9_.-]{0,20}\Z")
_drafts = st.builds(
    AgentDraft,
    name=st.from_regex(r"\A[A-Za-z][A-Za-z0-9_.-]{0,30}\Z"),
    description=st.text(max_size=200),
    system_prompt=st.text(max_size=500),
    model=st.sampled_from(["test", "offline", "openai:gpt-4o", "ollama:llama3.2:3b"]),
    model_settings=st.builds(
        ModelSettings,
        temperature=st.none() | st.floats(0, 2),
        top_p=st.none() | st.floats(0, 1),
        max_tokens=st.none() | st.integers(1, 1_000_000),
    ),
    capabilities=st.lists(_item, max_size=4, unique=True),
    tools=st.lists(_item, max_size=4, unique=True),
    max_chain_depth=st.integers(0, 32),
    chain_strategy=st.sampled_from(["sequential", "parallel", "router"]),
    config=st.dictionaries(
        st.text(max_size=10).filter(
            lambda k: not is_secret_config_key(k) and k not in ("base_url", "api_key_env")
        ),
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        max_size=3,
    ),
)


@settings(max_examples=150, deadline=None)
@given(draft=_drafts)
def test_yaml_round_trip_through_a_file_keeps_the_content_exactly(draft: AgentDraft) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{draft.name}.yaml"
        path.write_text(dump_agent_yaml(draft), encoding="utf-8")
        loaded = load_agent_file(path)
    assert loaded.fingerprint() == draft.fingerprint()
    assert loaded.name == draft.name
