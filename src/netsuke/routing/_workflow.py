"""Workflow definitions: steps as a DAG, with dependencies, retry policies and a strategy.

::

    wf = Workflow("report", strategy="parallel")

    @wf.step()
    async def fetch(ctx: StepContext) -> dict: ...

    @wf.step(after=["fetch"], retry=RetryPolicy(max_attempts=3, base=0.5))
    async def summarise(ctx: StepContext) -> str:
        return await summarise_text(ctx.outputs["fetch"]["text"])

A step is a function of a ``StepContext`` (sync or async) returning a JSON value, its output.
``ctx.outputs`` holds the outputs of the steps it depends on (``after``), ``ctx.input`` the
run's input. Strategies: ``"parallel"`` [default] starts every step whose dependencies are done
(at most ``max_parallel`` [unbounded] at once); ``"sequential"`` runs one step at a time in
definition order among those ready. A step's ``retry`` [``None``: one attempt] retries it with
backoff; ``timeout`` [none] bounds each attempt.

Definition errors (duplicate or unknown step, a cycle) raise ``WorkflowDefinitionError`` when
the workflow is built or run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ._errors import WorkflowDefinitionError
from ._retry import RetryPolicy

__all__ = ["Step", "StepContext", "StepFn", "Strategy", "Workflow"]

Strategy = Literal["parallel", "sequential"]


@dataclass(frozen=True)
class StepContext:
    """What a running step sees."""

    workflow: str
    run_id: str
    step: str
    attempt: int
    input: Any
    outputs: Mapping[str, Any] = field(default_factory=dict)


StepFn = Callable[[StepContext], Awaitable[Any] | Any]


@dataclass(frozen=True)
class Step:
    name: str
    fn: StepFn
    after: tuple[str, ...] = ()
    retry: RetryPolicy | None = None
    timeout: float | None = None


class Workflow:
    """A named DAG of steps. See the module documentation."""

    def __init__(
        self,
        name: str,
        steps: Iterable[Step] = (),
        *,
        strategy: Strategy = "parallel",
        max_parallel: int | None = None,
    ) -> None:
        if not name or len(name) > 200:
            raise WorkflowDefinitionError(str(name), "name", "1..200 characters")
        if strategy not in ("parallel", "sequential"):
            raise WorkflowDefinitionError(name, "strategy", f"unknown strategy {strategy!r}")
        if max_parallel is not None and max_parallel < 1:
            raise WorkflowDefinitionError(name, "max_parallel", "must be >= 1")
        self.name = name
        self.strategy: Strategy = strategy
        self.max_parallel = max_parallel
        self.steps: dict[str, Step] = {}
        for s in steps:
            self.add(s)

    def add(self, step: Step) -> Step:
        if not step.name or len(step.name) > 200:
            raise WorkflowDefinitionError(self.name, "step", "a step name is 1..200 characters")
        if step.name in self.steps:
            raise WorkflowDefinitionError(self.name, step.name, "duplicate step name")
        self.steps[step.name] = step
        return step

    def step(
        self,
        name: str | None = None,
        *,
        after: Iterable[str] = (),
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
    ) -> Callable[[StepFn], StepFn]:
        """Decorator: add the function as a step (named after it by default)."""

        def register(fn: StepFn) -> StepFn:
            self.add(
                Step(
                    name or str(getattr(fn, "__name__", "step")),
                    fn,
                    after=tuple(after),
                    retry=retry,
                    timeout=timeout,
                )
            )
            return fn

        return register

    def order(self) -> list[str]:
        """The steps in a dependency order (definition order among equals); checks the DAG."""
        for s in self.steps.values():
            for dep in s.after:
                if dep not in self.steps:
                    raise WorkflowDefinitionError(self.name, s.name, f"unknown dependency {dep!r}")
                if dep == s.name:
                    raise WorkflowDefinitionError(self.name, s.name, "depends on itself")
        done: list[str] = []
        placed: set[str] = set()
        while len(done) < len(self.steps):
            progressed = False
            for s in self.steps.values():
                if s.name not in placed and all(d in placed for d in s.after):
                    done.append(s.name)
                    placed.add(s.name)
                    progressed = True
            if not progressed:
                stuck = sorted(set(self.steps) - placed)
                raise WorkflowDefinitionError(self.name, stuck[0], f"a cycle among {stuck}")
        if not done:
            raise WorkflowDefinitionError(self.name, "steps", "a workflow needs a step")
        return done
