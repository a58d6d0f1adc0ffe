"""Netsuke: a runtime for supervised, named, stateful AI agents.

The public API is re-exported here; ``netsuke.kernel`` holds the OTP-style kernel.
"""

from .kernel import *  # noqa: F403
from .kernel import __all__ as _kernel_all

__version__ = "0.1.0"

__all__ = [*_kernel_all, "__version__"]
