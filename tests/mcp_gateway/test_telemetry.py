"""Traces and metrics of one in-process gateway on real ports: every door, one span tree per call.

The gateway runs with an in-memory span exporter (its own provider); each door is driven by a
real client (the SDK's, or plain HTTP) that sends a W3C ``traceparent``, and each call must be
one ``tools/call`` span whose parent is the client's span, with the gate chain's decision, the
tool and the audit commit as its children. ``/metrics`` (on the credential-free metrics port)
must parse with prometheus_client's own parser and count exactly the calls made.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import trio
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import actors
from northstar.common.config import Settings
from northstar.common.identity import RequestContext
from northstar.mcp_gateway.server import HttpFace, serve_http
from northstar.mcp_gateway.transports.services import Services
from northstar.runtime import Runtime
from northstar.runtime.telemetry import in_memory

IDENTITY = {"X-Tenant-Id": "acme", "X-User-Id": "alice"}
CHILDREN = {"northstar.gate_chain.decide", "northstar.tool.call", "northstar.audit.commit"}
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@dataclass
class Traced:
    url: str
    metrics_url: str
    exporter: InMemorySpanExporter
    services: Services


def client_parent() -> tuple[str, int, int]:
    """A client's traceparent, and its trace and span ids."""
    trace_id, span_id = secrets.randbits(128) | 1, secrets.randbits(64) | 1
    return f"00-{trace_id:032x}-{span_id:016x}-01", trace_id, span_id


@contextlib.asynccontextmanager
async def traced_gateway(tmp_path: Path) -> AsyncIterator[Traced]:
    exporter = InMemorySpanExporter()
    settings = Settings.from_values({"data_dir": tmp_path, "log_level": "WARNING", "auth_mode": "headers",
                                     "metrics_bind": "127.0.0.1:0"})
    runtime = Runtime(settings, telemetry=in_memory(exporter))
    faces: list[HttpFace] = []

    def front(services: Services) -> actors.ChildSpec:
        async def start(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            faces.append(HttpFace(services))
            await serve_http(faces[0], "127.0.0.1:0", runtime.shutdown, task_status=task_status)

        return actors.ChildSpec("http", start, restart=actors.Restart.TRANSIENT, shutdown_timeout=2.0)

    with trio.fail_after(60):
        async with runtime.running(front) as services:
            assert runtime.root is not None
            [bound] = runtime.root.get("http")  # type: ignore[attr-defined]
            [metrics_bound] = faces[0].metrics_bound
            try:
                yield Traced(url_of(bound), url_of(metrics_bound), exporter, services)
            finally:
                runtime.shutdown.set()


def url_of(bound: str) -> str:
    return bound if "://" in bound else f"http://{bound}"


def call_tree(exporter: InMemorySpanExporter, trace_id: int, parent_id: int) -> tuple[Any, dict[str, Any]]:
    """The door span of the call whose client span is (trace_id, parent_id), and its children by name."""
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]
    [door] = [s for s in spans if s.name == "tools/call"]
    assert door.parent is not None and door.parent.span_id == parent_id and door.parent.is_remote
    children = {s.name: s for s in spans if s.parent is not None and s.parent.span_id == door.context.span_id}
    return door, children


def check_tree(exporter: InMemorySpanExporter, trace_id: int, parent_id: int, door_name: str) -> None:
    door, children = call_tree(exporter, trace_id, parent_id)
    assert set(children) == CHILDREN, children
    attrs = door.attributes
    assert attrs["northstar.door"] == door_name
    assert (attrs["northstar.tenant"], attrs["northstar.user"]) == ("acme", "alice")
    assert (attrs["northstar.tool"], attrs["northstar.operation"], attrs["northstar.outcome"]) == ("echo", "ping", "ok")
    assert attrs["northstar.scope"]
    commit = children["northstar.audit.commit"]
    assert commit.attributes["northstar.audit_seq"] >= 1
    assert commit.attributes["northstar.audit_batch_size"] >= 1  # the group commit that carried it
    assert children["northstar.gate_chain.decide"].attributes["northstar.decision"] == "allowed"
    assert children["northstar.tool.call"].attributes["northstar.tool"] == "echo"
    assert not any("key" in name.lower() or "authorization" in name.lower()
                   for span in (door, *children.values()) for name in span.attributes)


def rpc(name: str, arguments: dict[str, Any], meta: dict[str, Any] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": name, "arguments": arguments}
    if meta:
        params["_meta"] = meta
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == name}


async def test_every_http_door_makes_one_span_tree_under_the_clients_traceparent(tmp_path: Path) -> None:
    async with traced_gateway(tmp_path) as gw, httpx2.AsyncClient(headers=IDENTITY, timeout=30) as http:
        # the fast path, stateless endpoint, parent in the header
        header, trace_id, span_id = client_parent()
        answer = await http.post(f"{gw.url}/mcp/stateless", json=rpc("echo__ping", {"message": "a"}),
                                 headers={**ACCEPT, "traceparent": header})
        assert answer.status_code == 200 and not answer.json()["result"]["isError"]
        check_tree(gw.exporter, trace_id, span_id, "streamable_http")

        # the SDK's path (a progress token keeps it off the fast path), parent in the header
        header, trace_id, span_id = client_parent()
        answer = await http.post(f"{gw.url}/mcp/stateless",
                                 json=rpc("echo__ping", {"message": "b"}, {"progressToken": "p1"}),
                                 headers={**ACCEPT, "traceparent": header})
        assert answer.status_code == 200, answer.text
        check_tree(gw.exporter, trace_id, span_id, "streamable_http")

        # a session (handshake era), parent in the header of every request
        header, trace_id, span_id = client_parent()
        async with httpx2.AsyncClient(headers={**IDENTITY, "traceparent": header}, timeout=30) as session_http, \
                Client(streamable_http_client(f"{gw.url}/mcp", http_client=session_http), mode="legacy",
                       cache=None) as client:
            assert not (await client.call_tool("echo__ping", {"message": "c"})).is_error
        check_tree(gw.exporter, trace_id, span_id, "streamable_http")

        # legacy SSE, parent in _meta
        header, trace_id, span_id = client_parent()
        async with Client(sse_client(f"{gw.url}/sse", headers=IDENTITY), mode="legacy", cache=None) as client:
            result = await client.call_tool("echo__ping", {"message": "d"}, meta={"traceparent": header})
            assert not result.is_error
        check_tree(gw.exporter, trace_id, span_id, "sse")

        # legacy SSE, parent in the header of the POST
        header, trace_id, span_id = client_parent()
        async with Client(sse_client(f"{gw.url}/sse", headers={**IDENTITY, "traceparent": header}), mode="legacy",
                          cache=None) as client:
            assert not (await client.call_tool("echo__ping", {"message": "d2"})).is_error
        check_tree(gw.exporter, trace_id, span_id, "sse")

        # REST, parent in the header
        header, trace_id, span_id = client_parent()
        answer = await http.post(f"{gw.url}/v1/tools/echo.ping/call", json={"arguments": {"message": "e"}},
                                 headers={"traceparent": header})
        assert answer.status_code == 200, answer.text
        check_tree(gw.exporter, trace_id, span_id, "http")


async def test_a_call_without_traceparent_starts_a_trace_and_a_denial_is_traced(tmp_path: Path) -> None:
    async with traced_gateway(tmp_path) as gw, httpx2.AsyncClient(headers=IDENTITY, timeout=30) as http:
        answer = await http.post(f"{gw.url}/mcp/stateless", json=rpc("echo__ping", {"message": "x"}),
                                 headers={**ACCEPT, "traceparent": "00-zz-not-a-traceparent"})
        assert answer.status_code == 200
        [door] = [s for s in gw.exporter.get_finished_spans() if s.name == "tools/call"]
        assert door.parent is None  # a malformed traceparent is ignored: a new trace
        gw.exporter.clear()
        header, trace_id, span_id = client_parent()
        denied = await http.post(f"{gw.url}/mcp/stateless", json=rpc("media_v2__create_asset", {"name": "x"}),
                                 headers={**ACCEPT, "traceparent": header})
        assert denied.json()["result"]["isError"]
        door, children = call_tree(gw.exporter, trace_id, span_id)
        assert door.attributes["northstar.outcome"] == "denied"
        assert door.attributes["northstar.error_code"]
        assert children["northstar.gate_chain.decide"].attributes["northstar.decision"] == "denied"
        assert "northstar.tool.call" not in children  # a denied call never ran
        assert "northstar.audit.commit" in children  # and its denial was committed


async def test_a_call_from_no_door_is_a_trace_of_its_own(tmp_path: Path) -> None:
    async with traced_gateway(tmp_path) as gw:
        ctx = RequestContext(request_id="internal-1", tenant="acme", user="alice")
        await gw.services.tools.call("echo.ping", {"message": "inside"}, ctx=ctx)
        [door] = [s for s in gw.exporter.get_finished_spans() if s.name == "tools/call"]
        assert door.parent is None and door.attributes["northstar.door"] == "internal"
        names = {s.name for s in gw.exporter.get_finished_spans()
                 if s.parent is not None and s.parent.span_id == door.context.span_id}
        assert names == CHILDREN


async def test_metrics_parse_and_count_the_calls_made(tmp_path: Path) -> None:
    async with traced_gateway(tmp_path) as gw, httpx2.AsyncClient(headers=IDENTITY, timeout=30) as http:
        for n in range(3):
            answer = await http.post(f"{gw.url}/mcp/stateless", json=rpc("echo__ping", {"message": str(n)}),
                                     headers=ACCEPT)
            assert answer.status_code == 200
        denied = await http.post(f"{gw.url}/v1/tools/media_v2.create_asset/call", json={"arguments": {"name": "x"}})
        assert denied.status_code == 403
        unknown = await http.post(f"{gw.url}/mcp/stateless", json=rpc("no_such__tool", {}), headers=ACCEPT)
        assert "error" in unknown.json()

        # the credential-free metrics port serves only /metrics; the main port's needs an admin
        async with httpx2.AsyncClient(timeout=30) as anonymous:
            assert (await anonymous.get(f"{gw.url}/metrics")).status_code in (401, 403)
            assert (await anonymous.get(f"{gw.metrics_url}/")).status_code == 404
            assert (await anonymous.post(f"{gw.metrics_url}/metrics")).status_code == 405
            scraped = await anonymous.get(f"{gw.metrics_url}/metrics")
        assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
        text = scraped.text

    calls = samples(text, "northstar_tool_calls_total")
    assert calls[(("door", "streamable_http"), ("operation", "ping"), ("outcome", "ok"), ("tool", "echo"))] == 3
    assert calls[(("door", "http"), ("operation", "create_asset"), ("outcome", "denied"),
                  ("tool", "media_v2"))] == 1
    assert calls[(("door", "streamable_http"), ("operation", "unknown"), ("outcome", "denied"),
                  ("tool", "unknown"))] == 1
    assert sum(calls.values()) == 5
    durations = samples(text, "northstar_request_duration_seconds_count")
    assert durations[(("door", "streamable_http"), ("outcome", "ok"), ("tool", "echo"))] == 3
    tool_latency = samples(text, "northstar_tool_call_duration_seconds_count")
    assert tool_latency == {(("operation", "ping"), ("outcome", "ok"), ("tool", "echo")): 3}
    decisions = samples(text, "northstar_gate_decisions_total")
    assert decisions[(("gate", "all"), ("outcome", "allowed"))] == 3
    assert sum(v for k, v in decisions.items() if ("outcome", "denied") in k) == 2
    batches = samples(text, "northstar_audit_commit_batch_size_sum")
    assert batches[()] >= 5  # every call's record(s) were committed
    assert samples(text, "northstar_audit_commit_seconds_count")[()] >= 1
    mailboxes = samples(text, "northstar_mailbox_capacity")
    assert mailboxes[(("actor", "gate_chain"), ("supervisor", "northstar"))] == 8192


async def test_tracing_off_builds_no_span_and_still_counts(tmp_path: Path) -> None:
    settings = Settings.from_values({"data_dir": tmp_path, "log_level": "WARNING"})
    runtime = Runtime(settings)  # no OTEL_* variables in the test environment: tracing is off
    with trio.fail_after(60):
        async with runtime.running() as services:
            assert not services.gateway.tracing.enabled
            assert runtime.telemetry is not None and runtime.telemetry.provider is None
            ctx = RequestContext(request_id="r-1", tenant="acme", user="alice")
            await services.tools.call("echo.ping", {"message": "quiet"}, ctx=ctx)
            text = services.metrics.prometheus()
    calls = samples(text, "northstar_tool_calls_total")
    assert sum(calls.values()) == 1


@pytest.fixture(autouse=True)
def _no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                 "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)

