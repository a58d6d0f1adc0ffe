"""A start result with extra information, OTP's ``{ok, Pid, Info}``.

``init`` may return ``StartInfo(info)``: the process starts as usual and a supervisor hands
``info`` to whoever asked it to start the child with ``with_info=True``
(``Supervisor.start_child``/``restart_child``, ``DynamicSupervisor.start_child``), as a
``StartResult(pid, info)``. Restarts drop it, as OTP's supervisor does. ``Runtime.start``
returns the pid alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from ._pid import Pid

__all__ = ["StartInfo", "StartResult"]


@dataclass(frozen=True, slots=True)
class StartInfo:
    """Return it from ``init`` to start and pass ``info`` back to the starter."""

    info: Any = None


class StartResult(NamedTuple):
    """What ``start_child(..., with_info=True)`` returns: ``pid`` (``None`` when ``init``
    returned ``IGNORE``) and the ``info`` of a ``StartInfo`` (``None`` when there was none)."""

    pid: Pid | None
    info: Any = None
