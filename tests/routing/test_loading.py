"""Workers and workflows loaded by name: ``[[workers]]`` in the settings file, ``module:name``
targets, their capabilities and kinds, and one clear error for a target that cannot load."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from netsuke.api import SettingsError, load_settings
from netsuke.routing import (
    MemoryTaskBackend,
    TaskQueue,
    WorkerLoadError,
    WorkerSpec,
    load_workers,
)

MODULE = """
from netsuke.routing import Workflow

def summarise(task):
    return "ok"

summarise.capabilities = ["summarise"]

flow = Workflow("nightly")

@flow.step()
async def one(ctx):
    return 1

NOT_CALLABLE = 3
"""


@pytest.fixture
def handlers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    (tmp_path / "loading_19.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "loading_19"
    sys.modules.pop("loading_19", None)


def test_workers_tables_in_the_settings_file(tmp_path: Path) -> None:
    toml = tmp_path / "netsuke.toml"
    toml.write_text(
        '[[workers]]\nhandler = "a.b:c"\nkinds = ["x"]\nconcurrency = 4\n\n'
        '[[workers]]\nhandler = "a:flow"\n'
    )
    settings = load_settings(toml)
    assert [w.handler for w in settings.workers] == ["a.b:c", "a:flow"]
    assert settings.workers[0].concurrency == 4 and settings.workers[0].kinds == ["x"]
    toml.write_text('[[workers]]\nhandler = "no colon"\n')
    with pytest.raises(SettingsError, match=r"workers\.0\.handler"):
        load_settings(toml)
    toml.write_text('[[workers]]\nhandler = "a:b"\nconcurency = 2\n')
    with pytest.raises(SettingsError, match="concurency"):
        load_settings(toml)


async def test_targets_load_as_workers_or_workflows(handlers: str) -> None:
    queue = TaskQueue(MemoryTaskBackend())
    loaded = load_workers(
        [WorkerSpec.parse(f"{handlers}:summarise"), WorkerSpec(handler=f"{handlers}:flow")],
        queue,
    )
    [worker] = loaded.workers
    assert worker.capabilities == frozenset({"summarise"}) and worker.kinds is None
    assert [w.name for w in loaded.workflows] == ["nightly"]
    spec = WorkerSpec(handler=f"{handlers}:summarise", capabilities=["other"], kinds=["k"])
    [narrowed] = load_workers([spec], queue).workers
    assert narrowed.capabilities == frozenset({"other"}) and narrowed.kinds == ["k"]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("no_such_module_19:fn", "cannot import 'no_such_module_19'"),
        ("loading_19:missing", "has no attribute 'missing'"),
        ("loading_19:NOT_CALLABLE", "neither a Workflow nor a callable"),
    ],
)
def test_a_target_that_cannot_load_is_one_error(handlers: str, target: str, reason: str) -> None:
    with pytest.raises(WorkerLoadError) as ei:
        load_workers([WorkerSpec(handler=target)], TaskQueue(MemoryTaskBackend()))
    assert ei.value.target == target and reason in str(ei.value)
    with pytest.raises(WorkerLoadError, match="expected module:name"):
        WorkerSpec.parse("spaces are not targets")
