"""``netsuke serve``'s interpreter settings (``tune_process``): collector freeze and
threshold, GIL switch interval."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator

import pytest

from netsuke.api import Settings
from netsuke.cli._tuning import GC_FROZEN, tune_process


@pytest.fixture
def restore() -> Iterator[None]:
    threshold = gc.get_threshold()
    interval = sys.getswitchinterval()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    sys.setswitchinterval(interval)


@pytest.mark.timeout(60)
def test_serve_freezes_what_start_up_made_and_sets_threshold_and_switch_interval(
    restore: None,
) -> None:
    second, third = gc.get_threshold()[1:]
    done = tune_process(Settings(gc_threshold=4321, switch_interval_ms=2.5))
    assert (done["threshold"], done["switch_interval_ms"]) == (4321, 2.5)
    assert gc.get_threshold() == (4321, second, third)  # the older generations' are kept
    assert sys.getswitchinterval() == pytest.approx(0.0025)
    assert done["frozen"] > 1000  # modules, classes, functions (freed ones leave the count)
    assert 0 < gc.get_freeze_count() <= done["frozen"]
    assert GC_FROZEN._value.get() == done["frozen"]
    made_after = [object(), [1], {"a": 1}]
    assert any(o is made_after[1] for o in gc.get_objects())  # new objects are still seen


@pytest.mark.timeout(60)
def test_process_tuning_can_be_turned_off(restore: None) -> None:
    before = gc.get_threshold()
    interval = sys.getswitchinterval()
    done = tune_process(Settings(gc_freeze=False, gc_threshold=0, switch_interval_ms=0))
    assert done["frozen"] == 0 and done["threshold"] == before[0]
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0
    assert sys.getswitchinterval() == interval


@pytest.mark.timeout(60)
def test_process_settings_have_defaults_and_are_checked() -> None:
    s = Settings()
    assert (s.gc_freeze, s.gc_threshold, s.switch_interval_ms) == (True, 5000, 0.0)
    with pytest.raises(ValueError, match="gc_threshold"):
        Settings(gc_threshold=-1)
    with pytest.raises(ValueError, match="switch_interval_ms"):
        Settings(switch_interval_ms=-1)
