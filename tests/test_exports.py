"""The public API is curated: ``__all__`` lists exactly the public names of each package."""

from __future__ import annotations

import subprocess
import sys
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
    for name in module.__all__:  # resolve lazily exported names (``netsuke`` itself)
        getattr(module, name)
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


def test_dir_lists_every_exported_name() -> None:
    assert set(netsuke.__all__) <= set(dir(netsuke))
    assert "__version__" in dir(netsuke)


def test_exported_names_are_the_kernels_objects() -> None:
    import netsuke.kernel

    for name in netsuke.__all__:
        assert getattr(netsuke, name) is getattr(netsuke.kernel, name)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = netsuke.no_such_name  # type: ignore[attr-defined]


def test_import_netsuke_is_light_and_names_load_on_first_use() -> None:
    """``import netsuke`` must not load the kernel or the observability stack (issue 18: an
    agent package's program pays for what it imports before its first heartbeat)."""
    heavy = ("netsuke.kernel", "structlog", "prometheus_client", "opentelemetry", "rich")
    code = (
        "import sys, netsuke\n"
        f"heavy = {heavy!r}\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
        "from netsuke import Supervisor\n"
        "print(Supervisor.__module__, 'netsuke.kernel' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "netsuke.kernel._supervisor True"]
