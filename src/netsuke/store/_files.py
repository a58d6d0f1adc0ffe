"""Agent definitions as files: ``agents/<name>.yaml``, one agent per file.

A file is a YAML mapping with the fields of ``AgentDraft``::

    name: search
    description: Handles search queries
    model: openai:gpt-4o
    model_settings: {temperature: 0.2, max_tokens: 1024}
    system_prompt: |
      You are a search assistant.
    capabilities: [search, filter]
    tools: [web_search]
    delegates: [summarizer]
    max_chain_depth: 3
    chain_strategy: sequential
    input_schema: {type: object, properties: {query: {type: string}}}

``sync_agents`` reads every ``*.yaml``/``*.yml`` file of a folder, checks them all, and applies
them in one transaction: a new name creates an agent, changed content adds a version, an
unchanged file adds nothing (a repeated sync is a no-op). A bad file raises
``DefinitionFileError`` with its path and field, and nothing is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ._agents import AgentRepository, SyncResult
from ._definitions import AgentDefinition, AgentDraft
from ._errors import DefinitionFileError, ValidationError
from ._validation import parse_model, validate_agent

__all__ = ["dump_agent_yaml", "export_agents", "load_agent_file", "sync_agents"]


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_agent_yaml(definition: AgentDraft) -> str:
    """The YAML text of a definition: ``name`` first, fields left at their defaults omitted."""
    data: dict[str, Any] = {"name": definition.name}
    defaults = AgentDraft(name=definition.name).content()
    for key, value in definition.content().items():
        if value != defaults[key]:
            data[key] = value
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def load_agent_file(path: str | Path) -> AgentDraft:
    """Parse and check one file; ``DefinitionFileError`` names the path and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DefinitionFileError(str(path), "(file)", f"cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionFileError(str(path), "(file)", f"invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise DefinitionFileError(str(path), "(root)", "must be a mapping of fields")
    try:
        return validate_agent(parse_model(AgentDraft, data))
    except ValidationError as exc:
        raise DefinitionFileError(str(path), exc.field, exc.reason) from None


def _files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


async def sync_agents(
    agents: AgentRepository, directory: str | Path, *, actor: str | None = None
) -> SyncResult:
    """Apply every definition file in ``directory`` (all or nothing). Durable on return."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DefinitionFileError(str(directory), "(file)", "not a directory")
    paths = _files(directory)
    drafts: list[AgentDraft] = []
    seen: dict[str, Path] = {}
    for path in paths:
        draft = load_agent_file(path)
        if draft.name in seen:
            raise DefinitionFileError(
                str(path), "name", f"{draft.name!r} is also defined in {seen[draft.name]}"
            )
        seen[draft.name] = path
        drafts.append(draft)
    return await agents.sync(
        drafts, actor=actor, comment=f"sync from {directory}", sources=[str(p) for p in paths]
    )


async def export_agents(agents: AgentRepository, directory: str | Path) -> list[Path]:
    """Write the current version of every agent to ``directory/<name>.yaml``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    cursor: str | None = None
    while True:
        page = await agents.list(limit=500, cursor=cursor)
        for definition in page.items:
            written.append(_write(directory, definition))
        if page.next_cursor is None:
            return written
        cursor = page.next_cursor


def _write(directory: Path, definition: AgentDefinition) -> Path:
    path = directory / f"{definition.name}.yaml"
    path.write_text(dump_agent_yaml(definition), encoding="utf-8")
    return path
