"""``netsuke.manager`` and its SDK export exactly their public names."""

from __future__ import annotations

import types

import pytest

import netsuke.manager
import netsuke.manager.sdk


@pytest.mark.parametrize("module", [netsuke.manager, netsuke.manager.sdk])
def test_all_equals_the_public_names(module: types.ModuleType) -> None:
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name not in {"annotations", "Any", "TYPE_CHECKING"}
        and getattr(value, "__module__", module.__name__).startswith("netsuke.manager")
    }
    assert set(module.__all__) == public
