"""Which exporter the OTEL_* variables choose, and OTLP spans reaching a real collector endpoint."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from northstar.runtime.telemetry import exporter_choice, from_environment


@pytest.mark.parametrize(("environ", "choice"), [
    ({}, "none"),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, "none"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ({"OTEL_TRACES_EXPORTER": "zipkin,console"}, "console"),
    ({"OTEL_TRACES_EXPORTER": "jaeger"}, "none"),
    ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, "none"),
])
def test_the_variables_choose_the_exporter(environ: dict[str, str], choice: str) -> None:
    assert exporter_choice(environ) == choice


def test_off_by_default_builds_no_provider() -> None:
    telemetry = from_environment({})
    assert not telemetry.tracing.enabled and telemetry.provider is None
    with telemetry.tracing.span("anything") as span:
        assert span is None
    telemetry.close()


@pytest.fixture
def collector() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A real HTTP endpoint that keeps what OTLP/HTTP posts to it."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "type": self.headers["Content-Type"], "body": body})
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_spans_reach_the_endpoint(collector: tuple[str, list[dict[str, Any]]]) -> None:
    endpoint, received = collector
    telemetry = from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint})
    assert telemetry.tracing.enabled
    with telemetry.tracing.span("northstar.tool.call", attributes={"northstar.tool": "echo"}):
        pass
    telemetry.close()  # flushes the batch
    [post] = received
    assert post["path"] == "/v1/traces" and post["type"] == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(post["body"])
    [resource] = request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    assert service == "northstar"
    [span] = resource.scope_spans[0].spans
    assert span.name == "northstar.tool.call"


def test_a_missing_exporter_package_is_a_plain_configuration_error(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys

    from tests.harness import gateway_env

    if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.grpc") is not None:
        pytest.skip("the gRPC exporter is installed here")
    env = gateway_env(tmp_path, {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})
    done = subprocess.run([sys.executable, "-m", "northstar", "serve", "--port", "0"], env=env, cwd=os.getcwd(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert "opentelemetry-exporter-otlp-proto-grpc" in done.stderr and "Traceback" not in done.stderr
