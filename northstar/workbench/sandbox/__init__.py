"""Sandbox dry runs of built-in, published and draft tools (see :mod:`.runner`)."""

from .runner import SandboxResult as SandboxResult
from .runner import SandboxRunner as SandboxRunner

__all__ = ["SandboxResult", "SandboxRunner"]
