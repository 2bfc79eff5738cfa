"""The ``diagnostics`` tool: operations that misbehave on purpose, for fault drills.

Off by default; enabled with ``NORTHSTAR_ENABLE_DIAGNOSTICS=true`` (the reliability tests
and the soak turn it on). Scope ``diagnostics`` is bound to no firearm, but the tool only
exists when an operator enabled it.

* ``diagnostics.sleep(seconds)``: waits (cancellably), to exercise timeouts, cancellation
  and disconnects;
* ``diagnostics.crash(message)``: raises an unexpected exception, which crashes the tool
  actor (the supervisor restarts it; the caller gets a clean ``tool_error``).
"""

from __future__ import annotations

import trio
from pydantic import BaseModel, ConfigDict, Field

from northstar.mcp_gateway.tools.model import Annotations, Operation, Scope, ToolContext, ToolDefinition


class SleepInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(ge=0, le=600, description="How long to wait.")


class SleepOutput(BaseModel):
    slept: float


class CrashInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message: str = Field(default="diagnostics crash", max_length=200)


class CrashOutput(BaseModel):
    crashed: bool


class DiagnosticsCrash(RuntimeError):
    """Raised on purpose by ``diagnostics.crash``."""


async def sleep(tctx: ToolContext, inputs: SleepInput) -> SleepOutput:
    await trio.sleep(inputs.seconds)
    return SleepOutput(slept=inputs.seconds)


async def crash(tctx: ToolContext, inputs: CrashInput) -> CrashOutput:
    raise DiagnosticsCrash(inputs.message)


DIAGNOSTICS = ToolDefinition(
    tool_id="diagnostics",
    title="Diagnostics",
    description="Operations that misbehave on purpose (sleep, crash) for fault drills.",
    version="1.0.0",
    scopes=(
        Scope(
            name="diagnostics",
            description="Fault drills: only present when an operator enabled them.",
            operations=(
                Operation("sleep", "Wait for the given number of seconds.", SleepInput, SleepOutput, sleep,
                          Annotations(read_only=True, idempotent=True), title="Sleep"),
                Operation("crash", "Crash the tool actor (it is restarted by its supervisor).", CrashInput,
                          CrashOutput, crash, Annotations(read_only=True), title="Crash"),
            ),
        ),
    ),
)
