"""Trace context reaches an HTTP upstream: the calling span's ``traceparent``, as a header."""

from __future__ import annotations

import hashlib

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from northstar.runtime.telemetry import tracing_with
from tests.upstreams.kit import LOWLEVEL, http_server, http_spec, ready, running_host, text_of


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_an_http_upstream_receives_the_calling_spans_traceparent() -> None:
    exporter = InMemorySpanExporter()
    tracing, provider = tracing_with(exporter, batch=False)
    try:
        async with http_server(LOWLEVEL, "http") as server, running_host() as host:
            handle = await host.start(http_spec("remote", f"http://127.0.0.1:{server.port}/mcp"))
            await ready(handle)
            with tracing.span("northstar.upstream.call") as span:
                reply = await handle.call_inline("header_hash", {"name": "traceparent"})
            ctx = span.get_span_context()
            expected = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"
            assert text_of(reply.unwrap()) == sha(expected)
            # No span, no trace context: nothing is made up.
            untraced = await handle.call_inline("header_hash", {"name": "traceparent"})
            assert text_of(untraced.unwrap()) == "None"
    finally:
        provider.shutdown()
    [finished] = exporter.get_finished_spans()
    assert finished.name == "northstar.upstream.call"
