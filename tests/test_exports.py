"""The public API is curated: ``__all__`` lists exactly the public names of each package."""

from __future__ import annotations

import types

import pytest

import netsuke
import netsuke.agents
import netsuke.kernel
import netsuke.node
import netsuke.observability
import netsuke.routing


@pytest.mark.parametrize(
    "module",
    [netsuke, netsuke.agents, netsuke.kernel, netsuke.node, netsuke.observability, netsuke.routing],
)
def test_all_equals_the_public_names(module: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "Any"}
    }
    assert set(module.__all__) == public
    assert len(module.__all__) == len(set(module.__all__))


def test_every_exported_name_resolves() -> None:
    for name in netsuke.__all__:
        assert getattr(netsuke, name) is not None


def test_sandbox_all_equals_its_public_names() -> None:
    import netsuke.sandbox

    public = {
        name
        for name, value in vars(netsuke.sandbox).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(netsuke.sandbox.__all__) == public
