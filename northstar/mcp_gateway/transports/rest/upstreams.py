"""Upstream MCP servers over REST: register, list, inspect, import as a draft, remove.

Who may do what:

* ``POST``, ``DELETE``, ``/tools`` and ``/draft`` need an admin credential;
* ``GET /v1/upstreams`` and ``GET /v1/upstreams/{name}`` are open to every authenticated
  caller, who sees an upstream's name, transport, state, tool count and drift; an admin also
  sees the public registration (command, URL, header and env *templates*, secret *names*,
  limits), who registered it, and the full status (last error, connected since, ...).

No answer ever carries a secret value: registrations are stored sealed and shown by name.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from northstar.mcp_gateway.transports.rest.api import Api, Response
from northstar.mcp_gateway.transports.rest.common import ctx, services
from northstar.upstreams.hub import tool_view
from northstar.upstreams.spec import NAME_PATTERN, UpstreamSpec

api = Api("upstreams", "upstreams")
bp = api.blueprint

UpstreamName = Annotated[str, Field(pattern=NAME_PATTERN, max_length=32, examples=["notes"])]


class UpstreamPath(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: UpstreamName


class UpstreamBody(UpstreamSpec):
    """An upstream's registration (docs/upstreams.md), plus how to treat an existing one."""

    replace: bool = Field(default=False, description="replace a registration of the same name (else 409)")
    expected_version: int | None = Field(default=None, ge=0, le=2**31,
                                         description="replace exactly this version (0: only if new)")


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class UpstreamView(_Out):
    name: str
    transport: str | None
    state: str | None
    tool_count: int = Field(ge=0)
    drift: dict[str, list[str]] | None = Field(description="changed, removed, added (against the approved pins)")


class UpstreamList(_Out):
    upstreams: list[UpstreamView]


class UpstreamTools(_Out):
    name: str
    tools: list[dict[str, Any]] = Field(description="name, pin, title, description, inputSchema, outputSchema, "
                                                    "annotations, read_only, destructive")
    problems: list[dict[str, Any]]


class UpstreamDraft(_Out):
    draft_id: str
    version: int = Field(ge=1)
    renamed: dict[str, str] = Field(description="upstream tool -> operation name, where they differ")
    problems: list[dict[str, Any]] = Field(description="lint findings: publishing refuses them until fixed")


class UpstreamDeleted(_Out):
    deleted: str


@api.route("POST", "/v1/upstreams", summary="Register an upstream MCP server", body=UpstreamBody, admin=True,
           responses={201: Response(UpstreamView, "registered and starting"),
                      200: Response(UpstreamView, "replaced and restarting")},
           description="`transport` is `stdio` (`command`, `args`, `env`, `cwd`), `streamable_http` or `sse` "
                       "(`url`, `headers`). A header or env value refers to a secret as `{secret:NAME}`; "
                       "`secrets` are sealed at rest and never shown again. 409 `conflict` when the name is "
                       "taken, unless `replace` or `expected_version` says which registration to replace.")
async def register(body: UpstreamBody) -> tuple[dict[str, Any], int]:
    c = ctx()
    spec = UpstreamSpec.model_validate(body.model_dump(exclude={"replace", "expected_version"}))
    hub = services().upstreams
    stored = await hub.register(spec, actor=c.principal, replace=body.replace, expected_version=body.expected_version)
    return hub.view(stored, admin=True), 201 if stored.version == 1 else 200


@api.route("GET", "/v1/upstreams", summary="Registered upstream MCP servers and their state",
           responses={200: Response(UpstreamList)})
async def list_upstreams() -> dict[str, Any]:
    hub = services().upstreams
    admin = ctx().is_admin
    return {"upstreams": [hub.view(s, admin=admin) for s in await hub.registry.list()]}


@api.route("GET", "/v1/upstreams/{name}", summary="One upstream: state, last error, connected since, drift",
           path=UpstreamPath, responses={200: Response(UpstreamView)})
async def get_upstream(path: UpstreamPath) -> dict[str, Any]:
    hub = services().upstreams
    return hub.view(await hub.stored(path.name), admin=ctx().is_admin)


@api.route("GET", "/v1/upstreams/{name}/tools", summary="The upstream's tools, with a pin per definition",
           path=UpstreamPath, admin=True, responses={200: Response(UpstreamTools)},
           description="As last listed by the upstream (waits for a first listing within its connect timeout; "
                       "503 `upstream_unavailable` when it cannot be reached).")
async def upstream_tools(path: UpstreamPath) -> dict[str, Any]:
    hub = services().upstreams
    tools = await hub.tools(path.name)
    handle = hub.port(path.name)
    problems = list(handle.session.problems) if handle is not None else []
    return {"name": path.name, "tools": [tool_view(t) for _n, t in sorted(tools.items())], "problems": problems}


@api.route("POST", "/v1/upstreams/{name}/draft", summary="Import the upstream's tools as a workbench draft",
           path=UpstreamPath, admin=True, responses={200: Response(UpstreamDraft), 201: Response(UpstreamDraft)},
           description="Creates (201) or updates (200) the draft named after the upstream, in the caller's tenant: "
                       "one operation per upstream tool (`wraps: upstream:<name>/<tool>`), read-only tools in "
                       "`<name>.read`, the rest in `<name>.write` (guarded by `firearm.<name>.write`), the "
                       "definitions and their pins recorded. Edit, narrow, sandbox and publish it like any draft.")
async def import_draft(path: UpstreamPath) -> tuple[dict[str, Any], int]:
    c = ctx()
    generated = await services().upstreams.draft(path.name)
    rec = await services().drafts.save_draft(c.tenant, path.name, generated.spec, actor=c.principal)
    body = {"draft_id": rec.draft_id, "version": rec.version, "renamed": generated.renamed,
            "problems": generated.problems}
    return body, 201 if rec.version == 1 else 200


@api.route("DELETE", "/v1/upstreams/{name}", summary="Remove an upstream (its units stop)", path=UpstreamPath,
           admin=True, responses={200: Response(UpstreamDeleted)},
           description="Published tools wrapping it answer 503 `upstream_unavailable` until it is registered again.")
async def delete_upstream(path: UpstreamPath) -> dict[str, Any]:
    await services().upstreams.delete(path.name, actor=ctx().principal)
    return {"deleted": path.name}

