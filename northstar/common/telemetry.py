"""Traces and measurements: the small API every layer uses (set up by :mod:`northstar.runtime.telemetry`).

:class:`Tracing` makes OpenTelemetry spans. Off (the default: no exporter configured) it holds no
tracer and :meth:`Tracing.span` returns one shared, empty context manager that yields ``None``:
no span object, no attribute is built, so callers guard attribute work with ``if span is not
None``. On, it holds a tracer of the runtime's own ``TracerProvider`` (never the process-global
one, so two gateways in one process, or a test, keep their spans apart). Spans nest through
OpenTelemetry's context (a ``contextvars`` value: it follows a call within its trio task).

:class:`Meters` holds the Prometheus instruments that lower layers feed (gate decisions, audit
commits) on the runtime's private ``CollectorRegistry``; the call instruments and the
scrape-time gauges are :class:`northstar.kpi.measure.Metrics`'.

Span attributes name who and what (tenant, user, tool, scope, outcome, audit sequence), never
a credential, a secret or tool arguments.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Tracer, get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CollectorRegistry, Counter, Histogram

_NO_SPAN: AbstractContextManager[Any] = nullcontext(None)  # reusable: enters to None, every time
_W3C = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# Seconds: from a sub-millisecond in-process call to a slow upstream.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                   120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Tracing:
    """Spans, or nothing at all when off (``enabled`` is the one cheap check)."""

    __slots__ = ("enabled", "tracer")

    def __init__(self, tracer: Tracer | None = None) -> None:
        self.tracer = tracer
        self.enabled = tracer is not None

    def span(self, name: str, kind: SpanKind = SpanKind.INTERNAL,
             attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
        """A child of the current span (yields it), or the shared no-op (yields None) when off.
        Attributes known at the start go in ``attributes`` (one lock, not one per attribute)."""
        if self.tracer is None:
            return _NO_SPAN
        return self.tracer.start_as_current_span(name, kind=kind, attributes=attributes)

    def door(self, name: str, carrier: Mapping[str, Any] | None,
             attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
        """A request's span at a door: its parent is the client's W3C ``traceparent`` (from an
        HTTP header or ``_meta``) when it sent a valid one, else it starts a trace. Never the
        span current in the task: a session's tasks may have inherited another request's."""
        if self.tracer is None:
            return _NO_SPAN
        return self.tracer.start_as_current_span(name, context=parent_of(carrier) or Context(),
                                                 kind=SpanKind.SERVER, attributes=attributes)


def parent_of(carrier: Mapping[str, Any] | None) -> Context | None:
    """The trace context a client sent (``traceparent``, ``tracestate``), or None (a new trace)."""
    if not carrier or not isinstance(carrier.get(TRACEPARENT), str):
        return None
    fields = {TRACEPARENT: carrier[TRACEPARENT]}
    if isinstance(carrier.get(TRACESTATE), str):
        fields[TRACESTATE] = carrier[TRACESTATE]
    ctx = _W3C.extract(fields)
    return ctx if get_current_span(ctx).get_span_context().is_valid else None


def in_span() -> bool:
    """Whether a span is current (a call made inside a traced request)."""
    return bool(get_current_span().get_span_context().is_valid)


def traceparent_header(headers: Mapping[bytes, bytes]) -> dict[str, str] | None:
    """The trace context headers of an ASGI request, decoded (None: none sent)."""
    raw = headers.get(b"traceparent")
    if raw is None:
        return None
    out = {TRACEPARENT: raw.decode("latin-1")}
    state = headers.get(b"tracestate")
    if state is not None:
        out[TRACESTATE] = state.decode("latin-1")
    return out


def carrier_of(headers: Any, meta: Any) -> Mapping[str, Any] | None:
    """Where a request's trace context is: its HTTP headers (``traceparent``), else ``_meta``."""
    if headers is not None and headers.get(TRACEPARENT) is not None:
        return {TRACEPARENT: headers.get(TRACEPARENT), TRACESTATE: headers.get(TRACESTATE)}
    return meta if isinstance(meta, Mapping) else None


def current_traceparent() -> dict[str, str]:
    """The W3C headers of the current span (empty when there is none): for an outgoing request."""
    out: dict[str, str] = {}
    _W3C.inject(out)
    return out


def call_attributes(ctx: Any, door: str | None = None) -> dict[str, Any]:
    """Who is calling, through which door: tenant and user ids, the request id (no credential)."""
    return {"northstar.tenant": ctx.tenant or "", "northstar.user": ctx.user or "",
            "northstar.request_id": ctx.request_id, "northstar.door": door or ctx.transport.value}


def result_attributes(span: Any, result: Any) -> None:
    """What a call came to: tool, operation, scope, outcome, error code and audit sequence."""
    target = result.target or {}
    attributes = {f"northstar.{key}": target[key] for key in ("tool", "operation", "scope")
                  if isinstance(target.get(key), str)}
    attributes["northstar.outcome"] = outcome_of(result)
    if result.error is not None:
        attributes["northstar.error_code"] = result.error.code
    if result.audit_seq is not None:
        attributes["northstar.audit_seq"] = result.audit_seq
    span.set_attributes(attributes)


def outcome_of(result: Any) -> str:
    """``ok``, ``denied`` (refused before the tool ran), ``timeout`` or ``error``."""
    if result.ok:
        return "ok"
    if result.latency_ms is None:
        return "denied"
    return "timeout" if getattr(result.error, "code", None) == "tool_timeout" else "error"


@contextmanager
def recorded(span: Any) -> Iterator[Any]:
    """Mark a span failed when its block raises (``Cancelled`` included); yields the span."""
    try:
        yield span
    except BaseException as exc:
        if span is not None:
            span.set_attribute("error.type", type(exc).__name__)
        raise


class Meters:
    """The instruments lower layers feed, on a private registry (never the global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.gate_decisions = Counter(
            "northstar_gate_decisions", "Gate chain decisions by outcome (allowed, denied, unavailable, refused) "
            "and deciding gate.", ["outcome", "gate"], registry=self.registry)
        self.audit_commit_seconds = Histogram(
            "northstar_audit_commit_seconds", "Durable audit commits: time from taking a batch to its commit.",
            registry=self.registry, buckets=LATENCY_BUCKETS)
        self.audit_batch_size = Histogram(
            "northstar_audit_commit_batch_size", "Audit records per durable commit (group commit).",
            registry=self.registry, buckets=BATCH_BUCKETS)
        self._decided: dict[tuple[str, str], Any] = {}

    def decided(self, outcome: str, gate: str) -> None:
        child = self._decided.get((outcome, gate))
        if child is None:
            child = self._decided[(outcome, gate)] = self.gate_decisions.labels(outcome, gate)
        child.inc()

    def audit_committed(self, seconds: float, batch: int) -> None:
        self.audit_commit_seconds.observe(seconds)
        self.audit_batch_size.observe(batch)
