"""The upstream actor: the thin shell that serves the closed message set of one upstream.

Status and approvals never wait: they are answered in the serving loop
(:meth:`UpstreamActor.answer_now`), so an operator sees the state of an upstream even while
all its call slots are busy. Calls, listings and refreshes run concurrently, each in its own
cancel scope: a caller that gives up cancels exactly its own call (and the SDK tells the
upstream with ``notifications/cancelled``). Arguments a caller got wrong are answered with
``validation_error``; nothing a caller sends crashes the actor.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import actors
from northstar.common.errors import ValidationFailed
from northstar.upstreams.messages import Approve, Call, CallReply, GetStatus, ListTools, Refresh, ToolsReply
from northstar.upstreams.messages import UpstreamMessage as UpstreamMessage
from northstar.upstreams.pins import MAX_TOOL_NAME
from northstar.upstreams.session import UpstreamSession

MAX_WAIT_S = 120.0
DEFAULT_SLOTS = 256  # concurrent handlers; the upstream's own max_concurrency limits its calls


def bad_call(msg: Call) -> ValidationFailed | None:
    problems = []
    if not isinstance(msg.tool, str) or not 0 < len(msg.tool) <= MAX_TOOL_NAME:
        problems.append({"path": "/tool", "message": f"must be 1-{MAX_TOOL_NAME} characters"})
    if not isinstance(msg.arguments, Mapping):
        problems.append({"path": "/arguments", "message": "must be a JSON object"})
    if msg.timeout_s is not None and not (isinstance(msg.timeout_s, int | float) and 0 < msg.timeout_s < math.inf):
        problems.append({"path": "/timeout_s", "message": "must be a positive number"})
    if msg.pin is not None and (not isinstance(msg.pin, str) or len(msg.pin) != 64):
        problems.append({"path": "/pin", "message": "must be a SHA-256 hex digest"})
    return ValidationFailed("invalid upstream call", errors=problems) if problems else None


def _wait(value: Any) -> float:
    if isinstance(value, int | float) and 0 <= value < math.inf:
        return min(float(value), MAX_WAIT_S)
    return 0.0


class UpstreamActor(actors.Actor[UpstreamMessage, Any]):
    """Serves one upstream's messages over its :class:`UpstreamSession`."""

    def __init__(self, session: UpstreamSession, *, slots: int = DEFAULT_SLOTS) -> None:
        super().__init__(f"upstream:{session.name}")
        self.session = session
        self.max_concurrency = slots

    def answer_now(self, msg: UpstreamMessage) -> Any:
        match msg:
            case GetStatus():
                return self.session.status()
            case Approve(pins=pins):
                if not isinstance(pins, Mapping) or not all(isinstance(v, str) for v in pins.values()):
                    return ToolsReply({}, self.session.state.drift(), error=ValidationFailed("pins must map names to "
                                                                                             "hashes"))
                return self.session.approve(pins)
            case Call() if (bad := bad_call(msg)) is not None:
                return CallReply(None, bad)
            case _:
                return actors.NOT_NOW

    async def handle(self, msg: UpstreamMessage) -> Any:
        match msg:
            case Call():
                return await self.session.call(msg)
            case ListTools(wait_s=wait_s):
                return await self.session.list_tools(_wait(wait_s))
            case Refresh(wait_s=wait_s):
                return await self.session.refresh(_wait(wait_s))
            case GetStatus() | Approve():
                return self.answer_now(msg)
            case _:
                raise TypeError(f"{self.name} got a message it does not understand: {type(msg).__name__}")
