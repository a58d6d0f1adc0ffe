"""``netsuke serve``'s garbage collector settings (``tune_gc``): freeze and first threshold."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from netsuke.api import Settings
from netsuke.cli._gc import GC_FROZEN, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.timeout(60)
def test_serve_freezes_what_start_up_made_and_raises_the_first_threshold(
    restore_gc: None,
) -> None:
    second, third = gc.get_threshold()[1:]
    done = tune_gc(Settings(gc_threshold=4321))
    assert done["threshold"] == 4321
    assert gc.get_threshold() == (4321, second, third)  # the older generations' are kept
    assert done["frozen"] > 1000  # modules, classes, functions (freed ones leave the count)
    assert 0 < gc.get_freeze_count() <= done["frozen"]
    assert GC_FROZEN._value.get() == done["frozen"]
    made_after = [object(), [1], {"a": 1}]
    assert any(o is made_after[1] for o in gc.get_objects())  # new objects are still seen


@pytest.mark.timeout(60)
def test_gc_tuning_can_be_turned_off(restore_gc: None) -> None:
    before = gc.get_threshold()
    done = tune_gc(Settings(gc_freeze=False, gc_threshold=0))
    assert done == {"frozen": 0, "threshold": before[0]}
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


def test_gc_settings_are_checked() -> None:
    assert (Settings().gc_freeze, Settings().gc_threshold) == (True, 5000)
    with pytest.raises(ValueError, match="gc_threshold"):
        Settings(gc_threshold=-1)
