"""Opening the SDK's client transports for an upstream spec, and the stdio child's stderr.

:func:`open_transport` returns the SDK's own transport context manager for the spec, with
secrets substituted into the headers or the environment (and nowhere else):

* ``stdio``: ``mcp.client.stdio.stdio_client`` running the command under the guardian
  (``_guardian.py``: it kills the upstream if the gateway dies), in the spec's ``cwd``,
  with the spec's ``env`` over the SDK's small default environment (the gateway's own
  environment, with its database URL and keys, is not passed on). Its stderr goes to a
  pipe that :class:`StderrPump` reads.
* ``streamable_http``: ``mcp.client.streamable_http.streamable_http_client`` over an
  ``httpx2.AsyncClient`` carrying the headers (the SDK's HTTP client is httpx2, not httpx);
  SSE events are capped at the upstream's ``max_result_bytes``.
* ``sse``: ``mcp.client.sse.sse_client`` with the headers.

:class:`StderrPump` logs each stderr line under ``northstar.upstreams.stderr`` with the
upstream's name, scrubbed of secrets, cut at ``MAX_LINE`` characters, at most
``LINES_PER_S`` lines a second on average (a burst of ``BURST``); what it drops it counts
and reports once the flood stops. It always drains the pipe, so a chatty upstream never
blocks on a full pipe.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections import deque
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, TextIO

import trio

from northstar.upstreams.lean import LeanSession
from northstar.upstreams.secrets import Redactor, render_all
from northstar.upstreams.spec import UpstreamSpec

GUARDIAN = str(Path(__file__).with_name("_guardian.py"))
MAX_LINE = 2000
LINES_PER_S = 20.0
BURST = 100
READ_CHUNK = 65536
SSE_READ_TIMEOUT_S = 300.0

stderr_log = logging.getLogger("northstar.upstreams.stderr")
_TRACEPARENT = re.compile(rb'"traceparent"\s*:\s*"(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})"')


def stdio_parameters(spec: UpstreamSpec, secrets: dict[str, str]) -> Any:
    from mcp.client.stdio import StdioServerParameters

    assert spec.command is not None
    return StdioServerParameters(
        command=sys.executable,
        args=["-I", GUARDIAN, spec.command, *spec.args],
        env=render_all(spec.env, secrets),
        cwd=spec.cwd,
    )


def open_transport(spec: UpstreamSpec, secrets: dict[str, str], *, errlog: TextIO | None = None,
                   lean: LeanSession | None = None) -> AbstractAsyncContextManager[Any]:
    """The SDK transport for ``spec`` (enter it to get the read and write streams); a Streamable
    HTTP transport records the session id the upstream assigns into ``lean``."""
    if spec.transport == "stdio":
        from mcp.client.stdio import stdio_client

        return stdio_client(stdio_parameters(spec, secrets), errlog=errlog or sys.stderr)
    headers = render_all(spec.headers, secrets)
    assert spec.url is not None
    if spec.transport == "sse":
        from mcp.client.sse import sse_client

        return sse_client(spec.url, headers=headers, timeout=spec.connect_timeout_s,
                          sse_read_timeout=SSE_READ_TIMEOUT_S)
    return _StreamableHttp(spec, headers, lean)


class _StreamableHttp:
    """The httpx2 client and the SDK transport, entered and left together."""

    def __init__(self, spec: UpstreamSpec, headers: dict[str, str], lean: LeanSession | None = None) -> None:
        import httpx2

        async def note_session(response: Any) -> None:
            if lean is not None and (session_id := response.headers.get("mcp-session-id")):
                lean.session_id = session_id

        # As many kept-alive connections as calls may be in flight: none is closed and reopened under load.
        limits = httpx2.Limits(max_connections=spec.max_concurrency + 4,
                               max_keepalive_connections=spec.max_concurrency + 4)
        self._client = httpx2.AsyncClient(headers=headers, follow_redirects=False, limits=limits,
                                          event_hooks={"request": [trace_header], "response": [note_session]},
                                          timeout=httpx2.Timeout(spec.connect_timeout_s, read=SSE_READ_TIMEOUT_S))
        self._url = spec.url
        self._max_event = spec.max_result_bytes + 64 * 1024
        self._transport: AbstractAsyncContextManager[Any] | None = None

    async def __aenter__(self) -> Any:
        from mcp.client.streamable_http import streamable_http_client

        await self._client.__aenter__()
        try:
            assert self._url is not None
            self._transport = streamable_http_client(self._url, http_client=self._client,
                                                     max_sse_event_size=self._max_event)
            return await self._transport.__aenter__()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._client.__aexit__(None, None, None)
            raise

    async def __aexit__(self, *exc: Any) -> bool | None:
        try:
            if self._transport is not None:
                return await self._transport.__aexit__(*exc)
            return None
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._client.__aexit__(None, None, None)


async def trace_header(request: Any) -> None:
    """Send a request's W3C trace context as the ``traceparent`` header too.

    The SDK puts the calling span's context in the request's ``_meta`` (it runs in the caller's
    task, where the span is current); the POST itself leaves from the transport's own task,
    which cannot see that span, so the header is taken from the body. Without tracing there is
    no span, nothing in ``_meta`` and nothing to add: one substring search.
    """
    if "traceparent" in request.headers:
        return
    try:
        content = request.content
    except Exception:  # a streamed body: nothing to look into
        return
    if b'"traceparent"' not in content:
        return
    found = _TRACEPARENT.search(content)
    if found is not None:
        request.headers["traceparent"] = found.group(1).decode()


def _streamable_http(spec: UpstreamSpec, headers: dict[str, str]) -> AbstractAsyncContextManager[Any]:
    return _StreamableHttp(spec, headers)


class StderrPump:
    """Reads a stdio upstream's stderr pipe into the log: scrubbed, bounded, rate-limited."""

    def __init__(self, upstream: str, redactor: Redactor, *, keep: int = 5) -> None:
        self.upstream = upstream
        self.redactor = redactor
        self.recent: deque[str] = deque(maxlen=keep)  # the last lines, scrubbed (for error messages)
        self.dropped = 0
        self.done = trio.Event()
        self._tokens = float(BURST)
        self._last = 0.0
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        self._read_fd = read_fd
        self.child_end: TextIO = os.fdopen(write_fd, "w")  # hand to the SDK as errlog; close once spawned

    def close_child_end(self) -> None:
        if not self.child_end.closed:
            self.child_end.close()

    async def run(self) -> None:
        """Until EOF (every holder of the write end is gone), then report what was dropped."""
        stream = trio.lowlevel.FdStream(self._read_fd)
        pending = b""
        skipping = False  # inside a line past MAX_LINE: drop until its end
        try:
            while chunk := await stream.receive_some(READ_CHUNK):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    if not skipping:
                        self._line(raw)
                    skipping = False
                if len(pending) > MAX_LINE * 4:  # a line without end: log its head, drop the rest
                    if not skipping:
                        self._line(pending)
                    pending, skipping = b"", True
            if pending and not skipping:
                self._line(pending)
        finally:
            self.close_child_end()
            with trio.CancelScope(shield=True):
                await stream.aclose()
            self._report_dropped()
            self.done.set()

    def _line(self, raw: bytes) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        if not text:
            return
        text = self.redactor.scrub(text)
        if len(text) > MAX_LINE:
            text = text[:MAX_LINE] + "…"
        self.recent.append(text)
        now = trio.current_time()
        self._tokens = min(float(BURST), self._tokens + (now - self._last) * LINES_PER_S)
        self._last = now
        if self._tokens < 1.0:
            self.dropped += 1
            return
        self._tokens -= 1.0
        self._report_dropped()
        stderr_log.info("%s", text, extra={"upstream": self.upstream})

    def _report_dropped(self) -> None:
        if self.dropped:
            stderr_log.warning("dropped %d stderr lines (rate limit)", self.dropped, extra={"upstream": self.upstream})
            self.dropped = 0
