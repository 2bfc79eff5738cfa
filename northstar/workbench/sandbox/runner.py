"""Sandbox dry runs: the real gate chain, a what-if policy, and throwaway side effects.

A sandbox run is an ordinary call through :meth:`Gateway.call_tool` with three changes:

* the context is ``ctx.as_sandbox()``: same user and tenant, ``sandbox=True``, transport
  ``sandbox`` (so its audit records say so);
* an optional mock policy (:class:`~northstar.policy.gates.MockPolicy`: extra ``grants``,
  ``bindings`` overrides, ``force_deny``) decides instead of the live one, gate by gate;
* side effects are isolated: each run gets its own :class:`MediaServices` on a temporary
  SQLite store and blob directory, deleted when the run ends. A sandbox ``create_asset``
  therefore never shows in live reads, and nothing of it stays on disk.

Built-in and published tools resolve from the catalogue. A draft (``draft_id`` and
optionally ``draft_version``) is validated, built with :func:`build_tool` and served by a
temporary :class:`ToolActor` spawned in a nursery owned by the run; its scopes' firearms
(from the draft) are applied through the mock policy unless the caller's mock overrides them.

A denial is a normal result: ``ok=false`` with the error's envelope fields and the trace
that shows which gate said no.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

import actors
from northstar.common import errors as E
from northstar.common.error_envelope import envelope
from northstar.common.identity import RequestContext
from northstar.mcp_gateway.facade.gateway import Gateway
from northstar.mcp_gateway.tools import naming
from northstar.mcp_gateway.tools.actor import ToolActor
from northstar.mcp_gateway.tools.blobs import BlobStore
from northstar.mcp_gateway.tools.catalog import Catalog, Resolved
from northstar.mcp_gateway.tools.media_v2 import DEFAULT_MAX_BYTES, MediaServices
from northstar.mcp_gateway.tools.model import ToolDefinition, UpstreamDirectory
from northstar.policy.gates import MockPolicy
from northstar.storage import open_store
from northstar.workbench.definition import build_tool, validate_spec
from northstar.workbench.drafts.service import DraftService

CLEANUP_TIMEOUT_S = 10.0
log = logging.getLogger("northstar.workbench.sandbox")


@dataclass(frozen=True, slots=True)
class SandboxResult:
    ok: bool
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    trace: list[dict[str, Any]] = field(default_factory=list)
    audit_seq: int | None = None
    tool: str | None = None
    request_id: str | None = None
    sandbox: bool = True
    # An upstream operation: what was contacted ("live" | "sandbox" | "none"), the upstream and
    # tool, and the upstream's MCP result when it was contacted (docs/upstreams.md, Sandbox rules).
    upstream: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def merged_mock(raw: Mapping[str, Any] | None, draft_bindings: Mapping[str, str | None] | None) -> MockPolicy | None:
    """The caller's mock policy, with the draft's scope bindings underneath it."""
    mock = MockPolicy.from_dict(raw)
    if not draft_bindings:
        return mock
    if mock is None:
        return MockPolicy(bindings=dict(draft_bindings))
    return MockPolicy(grants=mock.grants, bindings={**draft_bindings, **mock.bindings},
                      force_deny=mock.force_deny, replace_grants=mock.replace_grants, approval=mock.approval)


class SandboxRunner:
    """Runs sandbox calls through the gateway: drafts from ``drafts``, tools from ``catalog``;
    each run's throwaway side effects live under ``tmp_root``."""

    def __init__(self, gateway: Gateway, catalog: Catalog, drafts: DraftService, *, tmp_root: Path,
                 max_bytes: int = DEFAULT_MAX_BYTES, upstreams: UpstreamDirectory | None = None) -> None:
        self.upstreams = upstreams
        self.gateway = gateway
        self.catalog = catalog
        self.drafts = drafts
        self.tmp_root = tmp_root
        self.max_bytes = max_bytes

    @contextlib.asynccontextmanager
    async def isolated(self) -> AsyncIterator[MediaServices]:
        """Throwaway media services (temporary SQLite store and blob dir), removed afterwards."""
        tmp = self.tmp_root / f"run-{secrets.token_hex(8)}"
        await trio.to_thread.run_sync(lambda: tmp.mkdir(parents=True, exist_ok=False))
        try:
            async with open_store(f"sqlite:///{tmp.resolve().as_posix()}/sandbox.db") as storage:
                yield MediaServices(storage.store, BlobStore(tmp / "blobs"), self.max_bytes)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(CLEANUP_TIMEOUT_S):
                await trio.to_thread.run_sync(lambda: shutil.rmtree(tmp, ignore_errors=True))

    async def run(
        self,
        ctx: RequestContext,
        tool_name: str,
        inputs: dict[str, Any] | None,
        mock_policy: Mapping[str, Any] | None = None,
        *,
        draft_id: str | None = None,
        draft_version: int | None = None,
    ) -> SandboxResult:
        if not isinstance(tool_name, str) or not tool_name:
            raise E.ValidationFailed("tool must be a tool name", field="tool")
        sctx = ctx.as_sandbox()
        if draft_id is None:
            draft, mock = None, MockPolicy.from_dict(mock_policy)
        else:
            draft = await self._draft_tool(sctx, tool_name, draft_id, draft_version)
            mock = merged_mock(mock_policy, draft[1])
        failure: E.NorthstarError | None = None
        async with self.isolated() as media:
            try:  # errors must not cross the temporary store's nursery (no exception groups)
                result = await self._call(sctx, tool_name, inputs, mock, media, draft and draft[0])
            except E.NorthstarError as exc:
                failure = exc
        if failure is not None:
            raise failure
        return self._result(sctx, tool_name, result)

    async def _draft_tool(
        self, sctx: RequestContext, tool_name: str, draft_id: str, draft_version: int | None
    ) -> tuple[ToolDefinition, dict[str, str | None]]:
        draft = await self.drafts.get_draft(sctx.tenant, draft_id, draft_version)
        spec = validate_spec(draft.spec, self.catalog)
        tool = build_tool(spec, self.catalog, upstreams=self.upstreams)
        _find(tool, tool_name)
        return tool, spec.firearm_bindings()

    async def _call(
        self,
        sctx: RequestContext,
        tool_name: str,
        inputs: dict[str, Any] | None,
        mock: MockPolicy | None,
        media: MediaServices,
        draft: ToolDefinition | None,
    ) -> Any:
        gateway = self.gateway
        if draft is None:
            return await gateway.call_tool(sctx, tool_name, inputs, mock=mock, services=media)
        scope, op = _find(draft, tool_name)
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(_serve, draft)
            try:
                resolved = Resolved(draft, scope, op, ref, media)
                return await gateway.call_tool(sctx, tool_name, inputs, mock=mock, services=media, resolved=resolved)
            finally:
                nursery.cancel_scope.cancel()

    @staticmethod
    def _result(sctx: RequestContext, tool_name: str, result: Any) -> SandboxResult:
        error = envelope(result.error, sctx.request_id)["error"] if result.error is not None else None
        return SandboxResult(
            ok=bool(result.ok),
            output=result.output,
            error=error,
            trace=list(result.trace),
            audit_seq=result.audit_seq,
            tool=(result.target or {}).get("canonical_name") or naming.to_canonical(tool_name),
            request_id=sctx.request_id,
            upstream=None if result.upstream is None else {**result.upstream, "result": result.mcp},
        )


async def _serve(tool: ToolDefinition, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    """A draft's temporary tool actor. A crash was already answered to the caller
    (``ActorCrashed`` -> ``tool_error``), so it ends here instead of becoming a group."""
    try:
        await actors.spawn(lambda: ToolActor(tool), 64, task_status=task_status)
    except Exception:
        log.warning("a draft tool crashed in the sandbox", extra={"tool": tool.tool_id}, exc_info=True)


def _find(tool: ToolDefinition, name: str) -> tuple[Any, Any]:
    canonical = naming.to_canonical(name)
    tool_id, _, op_name = canonical.partition(".")
    found = tool.find(op_name) if tool_id == tool.tool_id else None
    if found is None:
        raise E.UnknownTool(f"the draft has no operation {name}", name=name)
    return found
