"""Setting up traces and measurements for one runtime: exporters from the standard ``OTEL_*`` variables.

Tracing is off unless asked for (unlike the OpenTelemetry SDK's own default, which is OTLP):

* ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``: off;
* ``OTEL_TRACES_EXPORTER=otlp``, or unset with ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) set: OTLP over HTTP/protobuf (the optional
  ``opentelemetry-exporter-otlp-proto-http`` package, ``pip install 'northstar[otlp]'``), or over
  gRPC when ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` is ``grpc``
  (``opentelemetry-exporter-otlp-proto-grpc``); the exporter reads its own ``OTEL_EXPORTER_OTLP_*``;
* ``OTEL_TRACES_EXPORTER=console``: one JSON span per line on stderr (never stdout, which is
  the stdio door's protocol stream);
* ``OTEL_TRACES_EXPORTER=discard`` (northstar's own): spans made and batched, then dropped, to
  measure what tracing costs the gateway without an exporter's I/O (the benchmark's A/B).

The provider is the runtime's own (not the process-global one); ``OTEL_SERVICE_NAME`` (default
``northstar``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER`` and ``OTEL_BSP_*`` apply as
the SDK defines them. Spans leave through a batch processor (its own thread): exporting never
waits in a request.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from northstar.common.config_file import ConfigError
from northstar.common.telemetry import Meters, Tracing

TRACER_NAME = "northstar"


@dataclass(frozen=True, slots=True)
class Telemetry:
    """The runtime's tracing and its metrics registry; ``close`` flushes and stops the exporter."""

    tracing: Tracing
    meters: Meters
    provider: Any = None  # the SDK TracerProvider when tracing is on

    def close(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def exporter_choice(environ: Mapping[str, str]) -> str:
    """``none``, ``otlp``, ``console`` or ``discard``, from the ``OTEL_*`` variables."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return "none"
    chosen = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if chosen:
        names = [name.strip() for name in chosen.split(",") if name.strip()]
        for name in ("otlp", "console", "discard"):
            if name in names:
                return name
        return "none"
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return "none"


def otlp_exporter(environ: Mapping[str, str]) -> Any:
    protocol = (environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip().lower()
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        package = "grpc" if protocol == "grpc" else "http"
        extra = " (pip install 'northstar[otlp]')" if package == "http" else ""
        raise ConfigError(f"OTLP traces need the opentelemetry-exporter-otlp-proto-{package} package{extra}: "
                          f"{exc}") from None
    return OTLPSpanExporter(endpoint=traces_endpoint(environ, protocol))


def traces_endpoint(environ: Mapping[str, str], protocol: str) -> str | None:
    """The traces endpoint the variables name (None: the exporter's default, localhost)."""
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
    base = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not base or protocol == "grpc":
        return base or None
    return base.rstrip("/") + "/v1/traces"  # as the specification appends it for OTLP/HTTP


def console_exporter() -> Any:
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    return ConsoleSpanExporter(out=sys.stderr, formatter=lambda span: span.to_json(indent=None) + "\n")


class DiscardExporter:
    """Accepts every batch and keeps nothing."""

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def tracing_with(exporter: Any, *, batch: bool = True) -> tuple[Tracing, Any]:
    """Tracing into ``exporter`` through the runtime's own provider (``batch=False``: each span
    exported as it ends, for tests and the in-memory exporter)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME") or "northstar"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter))
    from northstar import __version__

    return Tracing(provider.get_tracer(TRACER_NAME, __version__)), provider


def from_environment(environ: Mapping[str, str] | None = None) -> Telemetry:
    """Telemetry as the ``OTEL_*`` variables ask (tracing off when they ask for nothing)."""
    environ = os.environ if environ is None else environ
    choice = exporter_choice(environ)
    if choice == "none":
        return Telemetry(Tracing(), Meters())
    exporters = {"otlp": lambda: otlp_exporter(environ), "console": console_exporter, "discard": DiscardExporter}
    exporter = exporters[choice]()
    tracing, provider = tracing_with(exporter)
    return Telemetry(tracing, Meters(), provider)


def in_memory(exporter: Any) -> Telemetry:
    """Tracing into an ``InMemorySpanExporter`` (tests, the benchmark), each span as it ends."""
    tracing, provider = tracing_with(exporter, batch=False)
    return Telemetry(tracing, Meters(), provider)
