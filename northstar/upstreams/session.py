"""One upstream's connection: the task that owns its MCP client session, and the call path.

:meth:`UpstreamSession.run` is a long-lived task (the ``session`` child of the upstream's
supervisor). It loops: open the SDK transport, run the ``initialize`` handshake (the
2025-era handshake every server speaks: one stateful session, ``notifications/cancelled``
and ``notifications/tools/list_changed`` on the wire), list the tools, then serve until the
connection ends; then wait as :class:`~northstar.upstreams.state.UpstreamState` says
(backoff, or the open breaker) and connect again. Connecting (transport, handshake,
listing) is bounded by ``connect_timeout_s``.

Between the transport and the SDK's ``ClientSession`` sits a small pump (anyio memory
streams, as the SDK wants): it notices the end of the connection at once, and ends a
connection that keeps sending garbage (more than ``MAX_GARBAGE`` unparsable messages).

:meth:`UpstreamSession.call` is what the actor runs per ``Call``: wait until ready (within
the call's deadline; refused at once while the breaker is open), check the pin, take a
slot of the upstream's ``max_concurrency``, send ``tools/call`` with the progress relay,
and map every outcome to a result or a deliberate error. A caller that is cancelled or
times out makes the SDK send ``notifications/cancelled`` upstream. On a Streamable HTTP
upstream that answers JSON, a call without a progress relay takes the lean lane
(:mod:`.lean`: a pooled kept-alive HTTP/1.1 POST in the caller's task, the same checks and
error mapping); everything else goes through the SDK's session.

Everything that leaves this module as text is scrubbed of the upstream's secrets.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import trio

from northstar.common import phases
from northstar.common.errors import NorthstarError, UpstreamTimeout, UpstreamUnavailable
from northstar.common.telemetry import current_traceparent, in_span
from northstar.upstreams import results
from northstar.upstreams import secrets as secret_mod
from northstar.upstreams.calls import ProgressRelay, check_pin, describe
from northstar.upstreams.lean import (
    LeanLost,
    LeanPool,
    LeanRefused,
    LeanSession,
    LeanTooLarge,
    call_body,
    proxied,
    reply_of,
)
from northstar.upstreams.messages import Call, CallReply, EventSink, ToolsChanged, ToolsReply
from northstar.upstreams.pins import UpstreamTool, check_listing
from northstar.upstreams.secrets import Redactor, render_all
from northstar.upstreams.spec import UpstreamSpec
from northstar.upstreams.state import State, UpstreamState, UpstreamStatus
from northstar.upstreams.transport import StderrPump, open_transport

log = logging.getLogger("northstar.upstreams")

MAX_GARBAGE = 20  # unparsable messages one connection may send before it is dropped
MAX_LIST_PAGES = 100
STDERR_DRAIN_S = 1.0
CLIENT_NAME = "northstar"
CANCEL_NOTIFY_S = 2.0  # to tell the upstream a lean call was cancelled


class UpstreamSession:
    """The connection of one upstream: state, client session, limits, and its serving task."""

    def __init__(self, spec: UpstreamSpec, *, pins: Mapping[str, str] | None = None,
                 on_event: EventSink | None = None, rng: random.Random | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self._secrets = spec.secret_values()
        self.redactor = Redactor(self._secrets.values())
        self.state = UpstreamState(spec.name, spec.transport, spec.retry, spec.breaker,
                                   approved=dict(pins) if pins is not None else None, rng=rng or random.Random())
        self.problems: tuple[dict[str, str], ...] = ()
        self._on_event = on_event
        self._client: Any = None  # the SDK ClientSession while ready
        self._limiter = trio.CapacityLimiter(spec.max_concurrency)
        self._changed = trio.Event()  # set (and replaced) at every state change
        self._wake = trio.Event()  # wakes the serving loop
        self._relist: str | None = None  # why a re-listing is wanted
        self._end: str | None = None  # why the serving loop must end
        self._listings = 0
        self._validators: dict[str, tuple[Any, Any]] = {}
        self._stderr: StderrPump | None = None
        self._lean: tuple[Any, LeanPool] | None = None  # (the client it belongs to, the pool) while usable
        self._lean_ids = 0

    # ------------------------------------------------------------------ the serving task

    async def run(self, *, task_status: trio.TaskStatus[UpstreamSession] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, serve, reconnect, until cancelled (the supervisor stops it by cancelling)."""
        token = secret_mod.register(self.redactor) if self.redactor else None
        try:
            task_status.started(self)
            while True:
                wait = await self._round()
                self._changed_now()
                await trio.sleep(wait)
        finally:
            self._client = None
            self.state.stopped()
            self._changed_now()
            if token is not None:
                secret_mod.unregister(token)

    async def _round(self) -> float:
        """One connection from start to end; returns how long to wait before the next."""
        self.state.connect_started()
        self._end, self._relist = None, None
        self._stderr = None
        self._changed_now()
        outcome: str | Exception
        ended: str | None = None  # why the pump ended the connection, if it did before the failure
        async with trio.open_nursery() as nursery:
            try:
                outcome = await self._connect_and_serve(nursery)
            except Exception as exc:  # whatever the upstream or its transport did: a failed connection
                outcome, ended = exc, self._end
            finally:
                await self._drain_stderr()
                nursery.cancel_scope.cancel()
        if isinstance(outcome, str):
            return self._lost(outcome)
        reason = ended or describe(outcome, self.redactor)
        if self.state.state is State.READY:
            return self._lost(reason)
        error = self._with_stderr(reason)
        log.warning("upstream connect failed", extra={"upstream": self.name, "error": error})
        return self.state.connect_failed(trio.current_time(), error)

    async def _drain_stderr(self) -> None:
        """Let the stderr pump read what a dying upstream said last (it ends at EOF)."""
        if self._stderr is not None:
            self._stderr.close_child_end()
            with trio.move_on_after(STDERR_DRAIN_S):
                await self._stderr.done.wait()

    def _lost(self, error: str) -> float:
        self._client = None
        if self.state.state is State.OPEN:  # the breaker opened on call failures: honour its wait
            return max(0.0, self.state.wait_until - trio.current_time())
        log.warning("upstream connection lost", extra={"upstream": self.name, "error": error})
        return self.state.connection_lost(trio.current_time(), self._with_stderr(error))

    def _with_stderr(self, error: str) -> str:
        if self._stderr is not None and self._stderr.recent:
            return f"{error}; stderr: {self._stderr.recent[-1][:300]}"
        return error

    async def _connect_and_serve(self, nursery: trio.Nursery) -> str:
        """Connect, list, serve; returns why the connection ended (errors while connecting raise)."""
        from mcp.client.session import ClientSession
        from mcp_types import Implementation

        errlog = None
        if self.spec.transport == "stdio":
            self._stderr = StderrPump(self.name, self.redactor)
            nursery.start_soon(self._stderr.run)
            errlog = self._stderr.child_end
        lean = LeanSession() if self.spec.transport == "streamable_http" else None
        with trio.CancelScope(deadline=trio.current_time() + self.spec.connect_timeout_s) as connecting:
            async with open_transport(self.spec, self._secrets, errlog=errlog, lean=lean) as (read, write):
                if self._stderr is not None:
                    self._stderr.close_child_end()  # the child holds its own copy now
                inbound, to_session = anyio.create_memory_object_stream[Any](0)
                nursery.start_soon(self._pump, read, inbound)
                async with ClientSession(to_session, write, message_handler=self._on_message,
                                         client_info=Implementation(name=CLIENT_NAME, version="1")) as client:
                    init = await client.initialize()
                    tools = await self._list(client)
                    connecting.deadline = math.inf
                    pool = self._lean_pool(lean, init)
                    self._lean = (client, pool) if pool is not None else None
                    self._ready(client, init, tools)
                    try:
                        reason = await self._serve(client)
                    finally:
                        self._lean = None
                        if pool is not None:
                            await pool.aclose()
        if connecting.cancelled_caught:
            raise TimeoutError(f"connecting took longer than {self.spec.connect_timeout_s}s")
        return reason

    def _lean_pool(self, lean: LeanSession | None, init: Any) -> LeanPool | None:
        """The lean lane's pool for a Streamable HTTP upstream, on the session just opened."""
        if lean is None or self.spec.url is None or proxied(self.spec.url):
            return None  # a proxy the environment names is the SDK's client's to use
        lean.protocol_version = str(init.protocol_version)
        try:
            return LeanPool(self.spec.url, render_all(self.spec.headers, self._secrets), lean,
                            max_idle=self.spec.max_concurrency, max_body=self.spec.max_result_bytes)
        except ValueError:  # a header the lane cannot write as is: the SDK's client decides what to send
            log.info("upstream headers do not suit the lean lane; calls take the SDK path",
                     extra={"upstream": self.name})
            return None

    def _ready(self, client: Any, init: Any, tools: dict[str, UpstreamTool]) -> None:
        info = init.server_info
        server = {"name": str(info.name)[:200], "version": str(info.version)[:100]} if info is not None else None
        drift = self.state.connected(tools, server, init.protocol_version)
        self._client = client
        self._listings += 1
        log.info("upstream ready", extra={"upstream": self.name, "tools": len(tools)})
        self._changed_now()
        self._emit(ToolsChanged(self.name, dict(tools), drift, "connect"))

    async def _pump(self, read: Any, inbound: Any) -> None:
        """Transport -> session; ends the connection at EOF or after too much garbage."""
        garbage = 0
        reason = "the upstream closed the connection"
        try:
            async with inbound:
                async for item in read:
                    if isinstance(item, Exception):
                        garbage += 1
                        if garbage > MAX_GARBAGE:
                            reason = f"the upstream sent more than {MAX_GARBAGE} unparsable messages"
                            break
                        continue
                    await inbound.send(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        finally:
            self._stop_serving(reason)

    async def _on_message(self, message: Any) -> None:
        from mcp_types import ToolListChangedNotification

        if isinstance(message, ToolListChangedNotification):
            self._relist = "list_changed"
            self._wake.set()

    def _stop_serving(self, reason: str) -> None:
        if self._end is None:
            self._end = reason
        self._client = None  # no new call may start on a connection that is ending
        self._lean = None
        self._wake.set()

    async def _serve(self, client: Any) -> str:
        """Re-list on request until the connection must end; returns why."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            if self._end is not None:
                return self._end
            if self._relist is not None:
                reason, self._relist = self._relist, None
                await self._list_again(client, reason)

    async def _list(self, client: Any) -> dict[str, UpstreamTool]:
        from mcp_types import PaginatedRequestParams

        wire: list[dict[str, Any]] = []
        cursor: str | None = None
        for _page in range(MAX_LIST_PAGES):
            params = PaginatedRequestParams(cursor=cursor) if cursor is not None else None
            result = await client.list_tools(params=params)
            wire += [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in result.tools]
            cursor = result.next_cursor
            if not cursor:
                break
        tools, problems = check_listing(wire)
        self.problems = tuple(problems)
        return tools

    async def _list_again(self, client: Any, reason: str) -> None:
        with trio.move_on_after(self.spec.connect_timeout_s) as scope:
            try:
                tools = await self._list(client)
            except Exception as exc:
                self.state.last_error = f"listing tools failed: {describe(exc, self.redactor)}"
                self._stop_serving(self.state.last_error)
                return
        if scope.cancelled_caught:
            self.state.last_error = f"listing tools took longer than {self.spec.connect_timeout_s}s"
            return
        drift = self.state.listed_tools(tools)
        self._listings += 1
        if not drift.clean:
            log.warning("upstream drift", extra={"upstream": self.name, **drift.to_dict()})
        self._changed_now()
        self._emit(ToolsChanged(self.name, dict(tools), drift, reason))

    def _emit(self, event: ToolsChanged) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception as exc:  # a listener's bug must not take the connection down
            log.error("upstream event listener failed", extra={"upstream": self.name, "error": type(exc).__name__})

    def _changed_now(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ------------------------------------------------------------------ what the actor asks

    def status(self) -> UpstreamStatus:
        return self.state.status(trio.current_time())

    async def wait_until(self, predicate: Callable[[UpstreamStatus], bool]) -> UpstreamStatus:
        """Wait (under the caller's deadline) until the status satisfies ``predicate``."""
        while not predicate(status := self.status()):
            await self._changed.wait()
        return status

    def tools_reply(self, error: NorthstarError | None = None) -> ToolsReply:
        return ToolsReply(dict(self.state.tools), self.state.drift(), self.problems, error)

    def approve(self, pins: Mapping[str, str]) -> ToolsReply:
        self.state.approve(pins)
        self._changed_now()
        return self.tools_reply()

    def _unavailable(self, message: str, retry_after: float | None = None) -> UpstreamUnavailable:
        retry = 1 if retry_after is None or math.isinf(retry_after) else max(1, math.ceil(retry_after))
        return UpstreamUnavailable(f"upstream {self.name}: {message}", upstream=self.name, retry_after=retry)

    async def _ready_client(self) -> Any:
        """The client once ready; refused at once while the breaker is open or stopped."""
        while True:
            if self.state.state is State.READY and self._client is not None:
                return self._client
            retry = self.state.refusal(trio.current_time())
            if retry is not None:
                why = "stopped" if math.isinf(retry) else "its circuit breaker is open"
                raise self._unavailable(f"{why} ({self.state.last_error or 'no error recorded'})", retry)
            await self._changed.wait()

    async def list_tools(self, wait_s: float) -> ToolsReply:
        with trio.move_on_after(wait_s):
            while not self.state.listed:
                if self.state.refusal(trio.current_time()) is not None:
                    break
                await self._changed.wait()
        if self.state.listed:
            return self.tools_reply()
        return self.tools_reply(self._unavailable(f"not connected ({self.state.last_error or 'connecting'})"))

    async def refresh(self, wait_s: float) -> ToolsReply:
        """Re-list now (when connected) and wait up to ``wait_s`` for it."""
        seen = self._listings
        if self.state.state is State.READY:
            self._relist = "refresh"
            self._wake.set()
        with trio.move_on_after(wait_s):
            while self._listings == seen:
                await self._changed.wait()
        if self._listings == seen:
            return self.tools_reply(self._unavailable("the tools could not be listed again in time"))
        return self.tools_reply()

    async def call(self, msg: Call) -> CallReply:
        """Run one ``tools/call``; every failure is an answer (never raised), cancellation aside."""
        timeout = self.spec.call_timeout_s if msg.timeout_s is None else min(msg.timeout_s, self.spec.call_timeout_s)
        retry = self.state.refusal(trio.current_time())
        if retry is not None:
            why = "stopped" if math.isinf(retry) else "its circuit breaker is open"
            return CallReply(None, self._unavailable(why, retry))
        self.state.in_flight += 1
        try:
            return await self._call(msg, timeout)
        except NorthstarError as err:
            return CallReply(None, err)
        finally:
            self.state.in_flight -= 1

    async def _call(self, msg: Call, timeout: float) -> CallReply:
        from mcp.shared.exceptions import MCPError

        started = False
        with trio.move_on_after(timeout) as deadline:
            client = await self._ready_client()
            tool = check_pin(self.name, self.state.tools, msg)
            async with self._limiter:
                started = True
                try:
                    wire = await self._send(client, msg)
                except MCPError as exc:
                    return CallReply(None, self._mcp_error(client, msg.tool, exc))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                    raise self._call_lost(client, describe(exc, self.redactor)) from None
                except NorthstarError:
                    raise
                except Exception as exc:  # an answer the SDK could not parse: the upstream's fault
                    return CallReply(None, results.upstream_error(
                        self.name, f"{msg.tool} answered with an invalid result ({type(exc).__name__})",
                        self.redactor, tool=msg.tool))
        if deadline.cancelled_caught:
            if not started:
                raise self._unavailable(f"not connected within {timeout}s ({self.state.last_error or 'connecting'})")
            log.warning("upstream call timed out", extra={"upstream": self.name, "tool": msg.tool,
                                                          "request_id": msg.request_id, "timeout_s": timeout})
            self._count_failure(f"{msg.tool} timed out after {timeout}s")
            return CallReply(None, UpstreamTimeout(f"upstream {self.name}: {msg.tool} did not answer within "
                                                   f"{timeout}s; it was cancelled", upstream=self.name,
                                                   tool=msg.tool, timeout_s=timeout))
        self.state.call_succeeded()
        validator, fast = self._validator(tool)
        checked = results.check_result(self.name, msg.tool, wire, max_bytes=self.spec.max_result_bytes,
                                       validator=validator, redactor=self.redactor, fast=fast)
        return CallReply(checked)

    async def _send(self, client: Any, msg: Call) -> dict[str, Any]:
        """The call's result as wire JSON: through the lean lane when it can, else the SDK's session."""
        import mcp_types as types

        lean = self._lean
        if lean is not None and lean[0] is client and msg.progress is None:
            try:
                return await self._send_lean(client, lean[1], msg)
            except LeanRefused:
                log.info("upstream refused the lean lane; calls take the SDK path", extra={"upstream": self.name})
                self._lean = None
        relay = ProgressRelay(msg.progress, self.redactor) if msg.progress is not None else None
        params = types.CallToolRequestParams(name=msg.tool, arguments=dict(msg.arguments))
        request = types.CallToolRequest(params=params)
        phases.mark("sent")  # the SDK's client layers count as the upstream's time on this path
        result = await client.send_request(request, types.CallToolResult, progress_callback=relay)
        phases.mark("answered")
        wire: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_unset=True, exclude_none=True)
        return wire

    async def _send_lean(self, client: Any, pool: LeanPool, msg: Call) -> dict[str, Any]:
        """One ``tools/call`` on the lean lane; errors as the SDK path maps them."""
        self._lean_ids += 1
        request_id = f"northstar-{self._lean_ids}"
        try:
            # A traced call carries its span's context, in _meta and as headers, as the SDK path does.
            trace = current_traceparent() if in_span() else {}
            answer = await pool.post(call_body(request_id, msg.tool, msg.arguments, trace), tuple(trace.items()))
        except trio.Cancelled:
            with trio.CancelScope(shield=True), trio.move_on_after(CANCEL_NOTIFY_S):
                await self._notify_cancelled(client, request_id)
            raise
        except LeanLost as exc:
            raise self._call_lost(client, str(exc)) from None
        except LeanTooLarge:
            raise results.upstream_error(self.name, f"{msg.tool} answered more than the "
                                         f"{self.spec.max_result_bytes} bytes allowed", self.redactor,
                                         tool=msg.tool, limit=self.spec.max_result_bytes) from None
        if answer.status in (406, 415):
            raise LeanRefused(str(answer.status))
        if answer.status == 404:
            raise self._call_lost(client, "the upstream no longer knows the session (HTTP 404)")
        if answer.content_type.startswith("text/event-stream"):
            self._lean = None  # it answers SSE whatever is asked: the SDK reads that best
        reply = reply_of(answer, request_id) if answer.status == 200 else None
        if reply is None:
            raise results.upstream_error(self.name, f"{msg.tool}: HTTP {answer.status} without a reply to the call",
                                         self.redactor, tool=msg.tool)
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            raise results.upstream_error(self.name, str(error.get("message", "")), self.redactor, tool=msg.tool,
                                         upstream_code=error.get("code"))
        return self._wire_result(reply["result"])

    @staticmethod
    def _wire_result(raw: Any) -> dict[str, Any]:
        """A result checked against the protocol's ``CallToolResult`` and written as the SDK path writes it."""
        import mcp_types as types

        result = types.CallToolResult.model_validate(raw)
        wire: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_unset=True, exclude_none=True)
        return wire

    async def _notify_cancelled(self, client: Any, request_id: str) -> None:
        import mcp_types as types

        params = types.CancelledNotificationParams(request_id=request_id, reason="the caller cancelled the call")
        try:
            await client.send_notification(types.CancelledNotification(params=params))
        except Exception as exc:  # the connection may be going: the upstream then cancels on its own
            log.info("could not tell the upstream a call was cancelled",
                     extra={"upstream": self.name, "error": type(exc).__name__})

    def _validator(self, tool: UpstreamTool | None) -> tuple[Any, Any]:
        """(the reference validator, its fast check) of the tool's output schema; (None, None) without one."""
        if tool is None or tool.output_schema is None:
            return None, None
        if tool.pin not in self._validators:
            try:
                reference = results.output_validator(tool.output_schema)
            except ValueError as exc:
                raise results.upstream_error(self.name, f"{tool.name}: {exc}", self.redactor, tool=tool.name) from None
            self._validators[tool.pin] = (reference, results.fast_check(tool.output_schema))
        return self._validators[tool.pin]

    def _mcp_error(self, client: Any, tool: str, exc: Any) -> NorthstarError:
        from mcp_types import CONNECTION_CLOSED

        if exc.error.code == CONNECTION_CLOSED:
            return self._call_lost(client, exc.error.message)
        return results.upstream_error(self.name, exc.error.message, self.redactor, tool=tool,
                                      upstream_code=exc.error.code)

    def _call_lost(self, client: Any, error: str) -> UpstreamUnavailable:
        # The serving loop counts the lost connection (once); a call on an older connection
        # must not end a newer one.
        if client is self._client:
            self._stop_serving(f"the connection was lost during a call: {error}")
        return self._unavailable(f"the connection was lost during the call ({self.redactor.scrub(error)[:300]})")

    def _count_failure(self, error: str) -> None:
        if self.state.call_failed(trio.current_time(), error):
            log.warning("upstream circuit breaker opened", extra={"upstream": self.name, "error": error})
            self._client = None
            self._stop_serving("the circuit breaker opened")
            self._changed_now()
