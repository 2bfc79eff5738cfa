"""Sandbox dry runs of built-in, published and draft tools (see :mod:`.runner`)."""

from .runner import SandboxResult as SandboxResult
from .runner import SandboxRunner as SandboxRunner
from .runner import run_sandbox_tool as run_sandbox_tool

__all__ = ["SandboxResult", "SandboxRunner", "run_sandbox_tool"]
