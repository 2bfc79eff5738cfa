"""The runner's upstream span is what an HTTP upstream sees as its parent (``traceparent``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from northstar.common.identity import RequestContext
from northstar.mcp_gateway.tools.catalog import Resolved
from northstar.mcp_gateway.tools.model import Scope, ToolDefinition
from northstar.policy.audit_records import base_record
from northstar.policy.call_runner import CallRunner
from northstar.policy.calls import Allowed, CallTool, target_of
from northstar.policy.gates import Verdict
from northstar.runtime.telemetry import tracing_with
from northstar.workbench.upstream_ops import upstream_operation
from tests.upstreams.kit import LOWLEVEL, http_server, http_spec, ready, running_host, text_of


@dataclass
class Entry:
    seq: int
    tenant_seq: int | None = None


class Audit:
    """Commits at once (the runner's audit is not what this test is about)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def append(self, record: dict[str, Any]) -> Entry:
        self.records.append(record)
        return Entry(len(self.records))


class Admission:
    def give_back(self, principal: str) -> None:
        pass


async def test_the_upstream_span_is_the_parent_the_upstream_receives() -> None:
    exporter = InMemorySpanExporter()
    tracing, provider = tracing_with(exporter, batch=False)
    async with http_server(LOWLEVEL, "http") as server, running_host() as host:
        handle = await host.start(http_spec("remote", f"http://127.0.0.1:{server.port}/mcp"))
        await ready(handle)

        class Directory:
            def port(self, name: str) -> Any:
                return handle

            def sandbox_port(self, name: str) -> Any:
                return None

            def shared_drift(self, name: str, tool: str, pin: str) -> Any:
                return None  # no replica saw a change

        listed = handle.session.state.tools["header_hash"]
        op = upstream_operation("remote", listed.definition, listed.pin, Directory())  # type: ignore[arg-type]
        scope = Scope("remote_read", "reads", (op,))
        tool = ToolDefinition("remote_tools", "Remote", "remote tools", "1.0.0", (scope,), builtin=False)
        resolved = Resolved(tool, scope, op, None, None)
        ctx = RequestContext(request_id="r-1", tenant="acme", user="alice")
        arguments = {"name": "traceparent"}
        call = CallTool(ctx, "remote_tools.header_hash", arguments, None, None, None, resolved, None)
        allowed = Allowed(call, resolved, base_record(ctx, call.name), target_of(resolved, None),
                          Verdict("all", True, validated=arguments), [])
        runner = CallRunner(Audit(), Admission(), tracing=tracing)  # type: ignore[arg-type]
        with tracing.span("tools/call"):
            result = await runner.allowed(allowed)
    provider.shutdown()
    assert result.ok, result.error
    [upstream_span] = [s for s in exporter.get_finished_spans() if s.name == "northstar.upstream.call"]
    [door] = [s for s in exporter.get_finished_spans() if s.name == "tools/call"]
    assert upstream_span.parent is not None and upstream_span.parent.span_id == door.context.span_id
    assert upstream_span.attributes["northstar.upstream"] == "remote"
    assert upstream_span.attributes["northstar.outcome"] == "ok"
    sent = upstream_span.context
    expected = f"00-{sent.trace_id:032x}-{sent.span_id:016x}-{int(sent.trace_flags):02x}"
    assert text_of(result.mcp or {}) == hashlib.sha256(expected.encode()).hexdigest()
