"""A stored function as a pydantic-ai ``Tool``.

The tool's name and description are the function's; its JSON schema is the function's input
schema (``Tool.from_schema``). Calling it runs ``FunctionStore.execute`` in the sandbox. Errors
never escape to crash the agent's run: arguments that do not fit the schema raise
``ModelRetry`` (the model is asked to fix them); any other sandbox failure (timeout, memory,
violation, the function's own exception, a deleted function) comes back as the tool's result,
``{"error": {"type": ..., "message": ...}}``, for the model to read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic_ai import ModelRetry, Tool

from netsuke.store import FunctionDefinition, StoreError

from ._errors import InvalidArgumentsError, SandboxError

if TYPE_CHECKING:
    from ._functions import FunctionStore

__all__ = ["function_tool"]


def function_tool(
    functions: FunctionStore,
    definition: FunctionDefinition,
    *,
    pin_version: bool = False,
    parent: Callable[[], Awaitable[str | None]] | None = None,
) -> Tool[Any]:
    """A ``Tool`` running ``definition``'s function: the current version at each call, or
    always ``definition.version`` when ``pin_version``. ``parent()``, when given, returns the
    execution id the call is recorded under (the calling agent turn's), or ``None``."""
    name = definition.name
    version = definition.version if pin_version else None

    async def call(**kwargs: Any) -> Any:
        try:
            parent_id = await parent() if parent is not None else None
            return await functions.execute_function(
                name, kwargs, version=version, parent_id=parent_id
            )
        except InvalidArgumentsError as exc:
            raise ModelRetry(f"invalid arguments for {name} at {exc.path}: {exc.reason}") from None
        except (SandboxError, StoreError) as exc:
            kind = getattr(exc, "status", None) or type(exc).__name__
            return {"error": {"type": kind, "message": str(exc)}}

    schema = definition.input_schema or {"type": "object", "properties": {}}
    return Tool.from_schema(
        call,
        name=name,
        description=definition.description or f"Run the stored function {name}.",
        json_schema=schema,
    )
