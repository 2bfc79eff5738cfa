"""The upstream actor's closed message set and its answers (frozen dataclasses).

Requests::

    Call(tool, arguments, pin=None, timeout_s=None, progress=None)  -> CallReply
    ListTools(wait_s=0.0)                                           -> ToolsReply
    Refresh()                                                       -> ToolsReply (re-list now)
    Approve(pins)                                                   -> ToolsReply (the new baseline)
    GetStatus()                                                     -> UpstreamStatus

Refusals are answers: a reply carries a :class:`~northstar.common.errors.NorthstarError`
(``upstream_unavailable``, ``upstream_timeout``, ``upstream_error``, ``upstream_drift``)
instead of a value; :meth:`CallReply.unwrap` raises it.

Events (for the integration: catalogue refresh, drift alarms) go to the ``on_event``
callback given when the upstream is started: :class:`ToolsChanged` after every listing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from northstar.common.errors import NorthstarError
from northstar.upstreams.pins import Drift, UpstreamTool
from northstar.upstreams.state import UpstreamStatus

#: ``progress(progress, total, message)``: relayed upstream progress for one call. It is
#: awaited with a short deadline and at most once at a time per call (extra notifications
#: are dropped, as progress may be), so a slow sink never holds the upstream connection.
ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``tool`` (the upstream's own name) with ``arguments``.

    ``pin``: the approved definition hash; a call to a tool whose current definition hashes
    differently is refused (``upstream_drift``). ``timeout_s`` is capped by the upstream's
    ``call_timeout_s``. ``request_id`` (the gateway's) rides along into the upstream's log lines.
    """

    tool: str
    arguments: Mapping[str, Any] = field(default_factory=dict)
    pin: str | None = None
    timeout_s: float | None = None
    progress: ProgressFn | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ListTools:
    """The tools as last listed; waits up to ``wait_s`` for a first listing."""

    wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Refresh:
    """List the upstream's tools again now and check them against the approved pins."""

    wait_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Approve:
    """Make ``pins`` the approved baseline drift is measured against (after a publish)."""

    pins: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class GetStatus:
    pass


UpstreamMessage = Call | ListTools | Refresh | Approve | GetStatus


@dataclass(frozen=True, slots=True)
class CallReply:
    """A call's answer: the upstream's result (MCP wire form) or a deliberate error."""

    result: dict[str, Any] | None
    error: NorthstarError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def is_error(self) -> bool:
        """The upstream answered with a tool-level error (``isError: true``)."""
        return bool(self.result and self.result.get("isError"))

    def unwrap(self) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


@dataclass(frozen=True, slots=True)
class ToolsReply:
    """The tools by upstream name, the approved pins' drift, or the error that prevented listing."""

    tools: Mapping[str, UpstreamTool]
    drift: Drift
    problems: tuple[dict[str, str], ...] = ()
    error: NorthstarError | None = None

    def unwrap(self) -> ToolsReply:
        if self.error is not None:
            raise self.error
        return self


@dataclass(frozen=True, slots=True)
class ToolsChanged:
    """Event: the upstream's tools were listed (at connect, on ``list_changed``, on Refresh)."""

    upstream: str
    tools: Mapping[str, UpstreamTool]
    drift: Drift
    reason: str  # "connect" | "list_changed" | "refresh"


UpstreamEvent = ToolsChanged
EventSink = Callable[[UpstreamEvent], None]

__all__ = [
    "Approve",
    "Call",
    "CallReply",
    "EventSink",
    "GetStatus",
    "ListTools",
    "ProgressFn",
    "Refresh",
    "ToolsChanged",
    "ToolsReply",
    "UpstreamEvent",
    "UpstreamMessage",
    "UpstreamStatus",
]
