"""The multi-scope tool model.

A :class:`ToolDefinition` has one or more :class:`Scope` objects; a scope groups the
:class:`Operation` objects it permits. An operation has pydantic input and output models
(its JSON Schemas are derived from them in :mod:`northstar.mcp_gateway.schema_gen`),
annotations and an async handler ``handler(tctx, inputs) -> output`` (plus, for handlers that never
wait, the same as a plain function, ``sync_handler``).

An operation that wraps a tool of an upstream MCP server (federation) is described by JSON
Schemas instead of models: :attr:`Operation.upstream` (an :class:`UpstreamOp`) carries the
upstream's name and tool, the approved pin, the schemas shown to clients and how to reach
the running upstream (an :class:`UpstreamDirectory`). Its input is checked by the JSON
Schema in ``argument_check``; its result is the upstream's MCP result, passed through.
Such operations are never run by a tool actor: the call runner sends them to the upstream
directly. Their ``input_model`` / ``output_model`` are the marker :class:`UpstreamModel`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from northstar.common.identity import RequestContext
from northstar.mcp_gateway.tools import naming


@dataclass(frozen=True, slots=True)
class Annotations:
    read_only: bool = False
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False

    def to_mcp(self, title: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "readOnlyHint": self.read_only,
            "destructiveHint": self.destructive,
            "idempotentHint": self.idempotent,
            "openWorldHint": self.open_world,
        }
        if title:
            out["title"] = title
        return out


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a handler sees: who calls, and the services its tool was built with."""

    request: RequestContext
    services: Any = None
    package: dict[str, Any] | None = None


Handler = Callable[[ToolContext, Any], Awaitable[BaseModel]]

#: ``progress(progress, total, message)``: progress of a running call, relayed to its caller.
ProgressFn = Callable[[float, "float | None", "str | None"], Awaitable[None]]


class UpstreamReply(Protocol):
    """An upstream's answer: its MCP result (wire form), or a deliberate error."""

    @property
    def result(self) -> dict[str, Any] | None: ...

    @property
    def error(self) -> Any: ...  # a NorthstarError, or None


class UpstreamPort(Protocol):
    """One running upstream, as a call sees it (``northstar.upstreams.UpstreamHandle``)."""

    @property
    def max_concurrency(self) -> int: ...  # its calls in flight at once, on every replica together

    async def call_inline(self, tool: str, arguments: Mapping[str, Any], *, pin: str | None,
                          timeout_s: float | None, progress: ProgressFn | None,
                          request_id: str | None) -> UpstreamReply: ...


class UpstreamDirectory(Protocol):
    """Where running upstreams are found by name: live, and their declared sandbox targets."""

    def port(self, name: str) -> UpstreamPort | None: ...

    def sandbox_port(self, name: str) -> UpstreamPort | None: ...

    def shared_drift(self, name: str, tool: str, pin: str) -> Any:
        """An ``upstream_drift`` error when any replica listed ``tool`` with another pin than
        ``pin`` (the shared record, kind ``upstream_drift``), else None."""
        ...


@dataclass(frozen=True, slots=True)
class UpstreamOp:
    """What an operation wrapping ``upstream:<upstream>/<tool>`` calls, and how it looks."""

    upstream: str
    tool: str  # the upstream's own tool name, verbatim
    pin: str  # the approved definition hash: a call is refused (upstream_drift) when it changed
    input_schema: dict[str, Any]  # as shown to clients (narrowed)
    output_schema: dict[str, Any] | None
    directory: UpstreamDirectory | None = None  # None: not callable here (validation only)


class UpstreamModel(BaseModel):
    """The model slot of an upstream operation: its schemas are JSON Schemas (``Operation.upstream``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
SyncHandler = Callable[[ToolContext, Any], BaseModel]


@dataclass(frozen=True, slots=True)
class Operation:
    name: str
    description: str
    input_model: type[BaseModel]
    output_model: type[BaseModel]
    handler: Handler
    annotations: Annotations = Annotations()
    title: str | None = None
    # For published (workbench) operations: the JSON Schema shown on the wire when it is
    # narrower than the input model's, plus presets merged into every call.
    input_schema_override: dict[str, Any] | None = None
    presets: dict[str, Any] = field(default_factory=dict)
    # A pure check of the caller's raw arguments against the narrowed schema and presets
    # (list of {"path", "message"}); the input gate runs it, so a violation is a deny.
    argument_check: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    # The same operation as a plain function, for handlers that never wait (no I/O, no
    # awaits): the tool actor answers such calls inline, in arrival order, with no task or
    # cancel scope per call. It must not block; ``handler`` must do exactly what it does.
    sync_handler: SyncHandler | None = None
    # Set for an operation wrapping an upstream MCP server's tool (see the module docstring).
    upstream: UpstreamOp | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    name: str
    description: str
    operations: tuple[Operation, ...]


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    tool_id: str
    title: str
    description: str
    version: str
    scopes: tuple[Scope, ...]
    builtin: bool = True
    package_hash: str | None = None

    def __post_init__(self) -> None:
        naming.check_part("tool id", self.tool_id)
        seen: set[str] = set()
        for scope, op in self.operations():
            naming.to_wire(f"{self.tool_id}.{op.name}")
            if op.name in seen:
                raise ValueError(f"operation {op.name!r} appears twice in tool {self.tool_id!r}")
            seen.add(op.name)
            if not scope.name:
                raise ValueError("scope names must not be empty")

    def operations(self) -> Iterator[tuple[Scope, Operation]]:
        for scope in self.scopes:
            for op in scope.operations:
                yield scope, op

    def find(self, op_name: str) -> tuple[Scope, Operation] | None:
        for scope, op in self.operations():
            if op.name == op_name:
                return scope, op
        return None
