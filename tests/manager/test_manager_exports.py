"""``netsuke.manager`` and its SDK export exactly their public names; the SDK stays light."""

from __future__ import annotations

import subprocess
import sys
import types

import netsuke.manager
import netsuke.manager.sdk


def test_manager_all_resolves_and_equals_dir() -> None:
    assert sorted(netsuke.manager.__all__) == dir(netsuke.manager)
    for name in netsuke.manager.__all__:
        assert getattr(netsuke.manager, name) is not None


def test_sdk_all_equals_its_public_names() -> None:
    module = netsuke.manager.sdk
    for name in module.__all__:  # ``host_definition`` loads on first use
        getattr(module, name)
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    }
    assert set(module.__all__) == public


def test_the_sdk_does_not_import_the_manager_or_the_store() -> None:
    code = (
        "import sys, netsuke.manager.sdk; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sqlalchemy', 'pydantic', 'alembic') or m.startswith('netsuke.store')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_sdk_does_not_import_the_kernel_or_the_observability_stack() -> None:
    """Issue 18: spawn to first heartbeat. A package program pays for every import before its
    first heartbeat, so ``netsuke.manager.sdk`` loads neither the kernel (through ``netsuke``)
    nor structlog, Prometheus, OpenTelemetry or a node (``host_definition`` loads on use)."""
    heavy = (
        "netsuke.kernel",
        "netsuke.node",
        "netsuke.manager._hosted",
        "structlog",
        "prometheus_client",
        "opentelemetry",
        "rich",
    )
    code = (
        "import sys\n"
        "from netsuke.manager.sdk import PackageAgent, CommandError\n"
        f"print(sorted(m for m in sys.modules if m.startswith({heavy!r})))\n"
        "from netsuke.manager.sdk import host_definition\n"
        "print(host_definition.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["[]", "netsuke.manager._hosted"]
