"""The ``echo`` built-in tool: a liveness probe that returns what it was sent.

One scope, ``utility``, with one operation, ``ping``. It does no I/O and needs no services,
so it is the cheapest way to check the whole call path (transport, gates, tool actor).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from northstar.mcp_gateway.tools.model import Annotations, Operation, Scope, ToolContext, ToolDefinition

MAX_MESSAGE_CHARS = 4096


class PingInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(default="ping", max_length=MAX_MESSAGE_CHARS, description="Text to echo back.")
    data: dict[str, Any] | None = Field(default=None, description="Any JSON object to echo back.")


class PingOutput(BaseModel):
    pong: bool = True
    message: str
    data: dict[str, Any] | None = None
    received_at: str = Field(description="When the call was handled (ISO 8601, UTC).")


def utc_now_iso() -> str:
    """The current time as ISO 8601 in UTC with a ``Z`` suffix (millisecond precision)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ping_now(tctx: ToolContext, inputs: PingInput) -> PingOutput:
    """Return the message and data unchanged, stamped with the time of receipt."""
    return PingOutput(message=inputs.message, data=inputs.data, received_at=utc_now_iso())


async def ping(tctx: ToolContext, inputs: PingInput) -> PingOutput:
    """:func:`ping_now`, as the async handler every operation has."""
    return ping_now(tctx, inputs)


PING = Operation(
    name="ping",
    title="Ping",
    description="Echo a message (and optional JSON data) back, with the time it was received.",
    input_model=PingInput,
    output_model=PingOutput,
    handler=ping,
    sync_handler=ping_now,
    annotations=Annotations(read_only=True, idempotent=True),
)

ECHO = ToolDefinition(
    tool_id="echo",
    title="Echo",
    description="Returns what it was sent; a liveness probe for the whole call path.",
    version="1.0.0",
    scopes=(Scope(name="utility", description="Harmless utilities that read and change nothing.",
                  operations=(PING,)),),
)


def echo_tool() -> ToolDefinition:
    """The ``echo`` tool definition (immutable; shared)."""
    return ECHO
