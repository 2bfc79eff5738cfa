"""Pieces of an upstream call: the pin check, the progress relay, failure descriptions.

:func:`check_pin` refuses a call whose approved definition no longer matches what the
upstream lists (``upstream_drift``). :class:`ProgressRelay` hands upstream progress to the
caller's sink without ever holding the connection. :func:`describe` turns whatever a
transport or the SDK raised into a short, scrubbed sentence for errors and the status view.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import trio

from northstar.common.errors import UpstreamDrift
from northstar.upstreams import results
from northstar.upstreams.messages import Call, ProgressFn
from northstar.upstreams.pins import UpstreamTool
from northstar.upstreams.secrets import Redactor

log = logging.getLogger("northstar.upstreams")

PROGRESS_SEND_S = 1.0


def check_pin(upstream: str, tools: Mapping[str, UpstreamTool], msg: Call) -> UpstreamTool | None:
    """The listed tool a call goes to; ``UpstreamDrift`` when its pin no longer matches."""
    tool = tools.get(msg.tool)
    if msg.pin is None:
        return tool
    if tool is None:
        raise UpstreamDrift(f"upstream {upstream}: {msg.tool} is no longer listed; approve the change first",
                            upstream=upstream, changed=[], removed=[msg.tool], added=[])
    if tool.pin != msg.pin:
        raise UpstreamDrift(f"upstream {upstream}: the definition of {msg.tool} changed since it was "
                            "approved; approve the change first", upstream=upstream, changed=[msg.tool],
                            removed=[], added=[])
    return tool


def describe(exc: BaseException, redactor: Redactor) -> str:
    """A short, scrubbed description of why a connection or a call failed."""
    from mcp.shared.exceptions import MCPError

    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return describe(exc.exceptions[0], redactor)
    if isinstance(exc, MCPError):
        text = f"{exc.error.message} (code {exc.error.code})"
    elif type(exc).__name__ == "HTTPStatusError":
        text = f"HTTP {getattr(getattr(exc, 'response', None), 'status_code', '?')}"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{type(exc).__name__}: {exc.strerror}"
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return results.bounded(redactor.scrub(text), 500)


class ProgressRelay:
    """Hands upstream progress to the caller's sink: one at a time, bounded, scrubbed."""

    def __init__(self, sink: ProgressFn, redactor: Redactor) -> None:
        self._sink = sink
        self._redactor = redactor
        self._busy = False

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        if self._busy:
            return  # progress is lossy by nature: a slow sink drops, never piles up
        self._busy = True
        try:
            with trio.move_on_after(PROGRESS_SEND_S):
                await self._sink(progress, total, None if message is None else self._redactor.scrub(message)[:1000])
        except Exception as exc:
            log.warning("progress sink failed", extra={"error": type(exc).__name__})
        finally:
            self._busy = False
