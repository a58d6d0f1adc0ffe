"""Pids, monitor references, via-names and exit reasons."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from ._errors import ArgumentError

if TYPE_CHECKING:
    from ._registry import Registry

__all__ = [
    "KILL",
    "KILLED",
    "NOPROC",
    "NORMAL",
    "SHUTDOWN",
    "ExitReason",
    "Pid",
    "Ref",
    "Shutdown",
    "Target",
    "Via",
    "is_abnormal",
    "is_normal_or_shutdown",
]


class Pid:
    """A process identifier that names its node: ``Pid(node, id)``.

    Pids are values: equal when node and id are equal, hashable, cheap to copy and safe to send
    to another node. Where the process runs is the node's business: every send goes through the
    node's transport, so code that holds a Pid never knows whether the process is local.
    """

    __slots__ = ("id", "node")

    def __init__(self, node: str, id: int) -> None:
        self.node = node
        self.id = id

    def __eq__(self, other: object) -> bool:
        return type(other) is Pid and self.id == other.id and self.node == other.node

    def __hash__(self) -> int:
        return hash((self.node, self.id))

    def __repr__(self) -> str:
        return f"<{self.node}.{self.id}>"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pid, (self.node, self.id))


class Ref:
    """A unique reference, as returned by ``monitor``; compare with ``==``."""

    __slots__ = ("id", "node")

    def __init__(self, node: str, id: int) -> None:
        self.node = node
        self.id = id

    def __eq__(self, other: object) -> bool:
        return type(other) is Ref and self.id == other.id and self.node == other.node

    def __hash__(self) -> int:
        return hash((self.node, self.id, "ref"))

    def __repr__(self) -> str:
        return f"#Ref<{self.node}.{self.id}>"


@dataclass(frozen=True, slots=True)
class Via:
    """Names a process through a registry, like Elixir's ``{:via, Registry, {reg, key}}``.

    ``Via(registry, key)`` resolves to the single process registered under ``key`` in a
    unique-keys ``registry``. A plain ``str`` target means ``Via(runtime.registry, name)``.
    Raises ``ArgumentError`` when ``registry`` is not a unique-keys ``Registry``.
    """

    registry: Registry
    key: Any

    def __post_init__(self) -> None:
        from ._registry import Registry

        reg = self.registry
        if type(reg) is not Registry and not isinstance(reg, Registry):
            raise ArgumentError(f"Via needs a Registry, not {reg!r}")
        if reg.keys_mode != "unique":
            raise ArgumentError(f"Via is not supported by duplicate registries ({reg.name})")


@dataclass(frozen=True, slots=True)
class Shutdown:
    """The exit reason ``{shutdown, detail}``: a clean stop that carries a detail.

    Supervisors treat it like ``"shutdown"``: a transient child that exits with it is not
    restarted, and its exit is not logged as an error.
    """

    detail: Any = None


NORMAL: Final = "normal"
"""The process finished its work. Linked processes that do not trap exits ignore it."""
SHUTDOWN: Final = "shutdown"
"""The process was asked to stop, usually by its supervisor. Linked processes exit with it."""
KILL: Final = "kill"
"""An exit *signal* that cannot be trapped. The target exits with reason ``killed``."""
KILLED: Final = "killed"
"""The reason of a process that received ``kill``. Linked processes may trap this one."""
NOPROC: Final = "noproc"
"""The reason in a ``Down`` message for a monitor set on a process that did not exist."""

ExitReason: TypeAlias = Any
"""An exit reason: ``"normal"``, ``"shutdown"``, ``Shutdown(detail)``, ``"killed"``, an
exception instance (a crash) or any other value (an abnormal exit)."""

Target: TypeAlias = "Pid | str | Via | tuple[str, str]"
"""Whatever names a process: a Pid, a name in the node's registry, a Via, or ``(name, node)``
(Erlang's ``{Name, Node}``: the name in that node's registry, this node or another)."""


def is_normal_or_shutdown(reason: ExitReason) -> bool:
    """True for ``normal``, ``shutdown`` and ``Shutdown(...)``: the exits that are not errors."""
    return (type(reason) is str and reason in (NORMAL, SHUTDOWN)) or type(reason) is Shutdown


def is_abnormal(reason: ExitReason) -> bool:
    """True for every exit that a transient child is restarted after."""
    return not is_normal_or_shutdown(reason)
