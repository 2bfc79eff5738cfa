"""Workbench CLI commands: drafts, sandbox runs, publishing, the registry and rollback.

    northstar drafts put ID --spec-file F [--expected-version N] | get ID [--version N] | list
    northstar sandbox run TOOL --args JSON [--mock-policy JSON] [--draft ID [--version N]]
    northstar publish DRAFT_ID --version N
    northstar registry list TOOL_ID
    northstar rollback TOOL_ID VERSION
    northstar unpublish TOOL_ID

All take ``--tenant`` (default ``default``) where drafts are involved. Like the admin
commands they work on the store directly: a running gateway picks a publish, rollback or
unpublish up through its registry watcher (within about a second). ``sandbox run`` starts
an in-process gateway runtime on the same store so the call goes through the real gate
chain; its side effects are isolated and deleted as usual.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from northstar.cli.admin import opened, operator, run_async
from northstar.common import errors as E
from northstar.common.config import Settings
from northstar.common.identity import RequestContext, Transport, new_request_id


async def in_store(settings: Settings, action: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run ``action(storage)`` on the opened store; its NorthstarError is raised after the
    store is closed, so it never leaves the store's nursery as an exception group."""
    failure: E.NorthstarError | None = None
    async with opened(settings) as storage:
        try:
            result = await action(storage)
        except E.NorthstarError as exc:
            failure = exc
    if failure is not None:
        raise failure
    return result


def _json_arg(name: str, raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise E.ValidationFailed(f"{name} is not valid JSON", field=name) from None


def admin_context(tenant: str) -> RequestContext:
    return RequestContext(request_id=new_request_id(), tenant=tenant, user=operator(), is_admin=True,
                          transport=Transport.INTERNAL, authenticated_by="cli")


def builtin_catalog() -> Any:
    from northstar.mcp_gateway.tools.builtin import builtin_tools
    from northstar.mcp_gateway.tools.catalog import Catalog

    catalog = Catalog()
    for tool in builtin_tools():
        catalog.add(tool, None)
    return catalog


async def direct_publisher(storage: Any) -> Any:
    """A PublisherService on the store itself (no live catalogue: gateways follow the overlays)."""
    from northstar.kpi.service import KpiService
    from northstar.policy.firearms import FirearmsService
    from northstar.workbench.drafts.service import DraftService
    from northstar.workbench.publisher.service import PublisherService
    from northstar.workbench.registry import ComponentRegistry, OverlayStore

    firearms = FirearmsService(storage.store)
    await firearms.load()
    return PublisherService(
        drafts=DraftService(storage.store), registry=ComponentRegistry(storage.store),
        overlays=OverlayStore(storage.store), catalog=builtin_catalog(), firearms=firearms,
        kpi=KpiService(storage.store), audit=storage.audit, live=None,
    )


async def _drafts(settings: Settings, args: argparse.Namespace) -> Any:
    spec: Any = None
    if args.action == "put":
        spec = _json_arg("spec-file", await trio.Path(args.spec_file).read_text(encoding="utf-8"))
        spec = spec.get("spec", spec) if isinstance(spec, dict) else spec
    return await in_store(settings, lambda storage: _drafts_in(storage, args, spec))


async def _drafts_in(storage: Any, args: argparse.Namespace, spec: Any) -> Any:
    from northstar.policy.firearms import FirearmsService
    from northstar.workbench.definition import validate_spec
    from northstar.workbench.drafts.service import DraftService

    firearms = FirearmsService(storage.store)
    await firearms.load()
    catalog = builtin_catalog()

    def validate(raw: dict[str, Any]) -> dict[str, Any]:
        validate_spec(raw, catalog, bindings=firearms.bindings())
        return raw

    drafts = DraftService(storage.store, validate=validate)
    match args.action:
        case "put":
            rec = await drafts.save_draft(args.tenant, args.draft_id, spec,
                                          expected_version=args.expected_version, actor=operator())
            return rec.to_dict()
        case "get":
            return (await drafts.get_draft(args.tenant, args.draft_id, args.version)).to_dict()
        case _:
            return {"drafts": [r.to_dict() for r in await drafts.list_drafts(args.tenant, limit=500)]}


async def _sandbox(settings: Settings, args: argparse.Namespace) -> Any:
    from northstar.runtime import Runtime

    arguments = _json_arg("args", args.args) or {}
    mock = _json_arg("mock-policy", args.mock_policy)
    if not isinstance(arguments, dict) or (mock is not None and not isinstance(mock, dict)):
        raise E.ValidationFailed("--args and --mock-policy must be JSON objects")
    ctx = RequestContext(request_id=new_request_id(), tenant=args.tenant, user=args.user,
                         transport=Transport.INTERNAL, authenticated_by="cli")
    runtime = Runtime(settings)
    failure: E.NorthstarError | None = None
    async with runtime.running() as services:  # its registry watcher has loaded the published tools
        try:
            result = await services.sandbox.run(ctx, args.tool, arguments, mock, draft_id=args.draft,
                                                draft_version=args.version)
        except E.NorthstarError as exc:
            failure = exc
    if failure is not None:
        raise failure
    return result.to_dict()


async def _publish(settings: Settings, args: argparse.Namespace) -> Any:
    async def action(storage: Any) -> Any:
        publisher = await direct_publisher(storage)
        return await publisher.publish(admin_context(args.tenant), args.draft_id, args.version)

    return await in_store(settings, action)


async def _registry(settings: Settings, args: argparse.Namespace) -> Any:
    from northstar.workbench.registry import ComponentRegistry, package_summary

    async def action(storage: Any) -> Any:
        versions = await ComponentRegistry(storage.store).list_versions(args.tool_id)
        if not versions:
            raise E.NotFound(f"no packages for {args.tool_id}")
        return {"tool_id": args.tool_id, "packages": [package_summary(p) for p in versions]}

    return await in_store(settings, action)


async def _rollback(settings: Settings, args: argparse.Namespace) -> Any:
    async def action(storage: Any) -> Any:
        publisher = await direct_publisher(storage)
        return await publisher.rollback(admin_context(args.tenant), args.tool_id, args.version)

    return await in_store(settings, action)


async def _unpublish(settings: Settings, args: argparse.Namespace) -> Any:
    async def action(storage: Any) -> Any:
        publisher = await direct_publisher(storage)
        return await publisher.unpublish(admin_context(args.tenant), args.tool_id)

    return await in_store(settings, action)


def _tenant(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", default="default", help="the tenant whose drafts are used (default: default)")


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    dr = sub.add_parser("drafts", help="workbench drafts of tool definitions")
    dr.set_defaults(handler=run_async(_drafts))
    dsub = dr.add_subparsers(dest="action", required=True)
    p = dsub.add_parser("put", help="save a spec (JSON file) as the draft's next version")
    p.add_argument("draft_id")
    p.add_argument("--spec-file", required=True)
    p.add_argument("--expected-version", type=int)
    p = dsub.add_parser("get")
    p.add_argument("draft_id")
    p.add_argument("--version", type=int)
    dsub.add_parser("list")
    for p in dsub.choices.values():
        common(p)
        _tenant(p)

    sb = sub.add_parser("sandbox", help="dry-run a tool through the real gate chain, side effects isolated")
    sb.set_defaults(handler=run_async(_sandbox))
    ssub = sb.add_subparsers(dest="action", required=True)
    p = ssub.add_parser("run")
    p.add_argument("tool", help="canonical (tool.op) or wire (tool__op) name")
    p.add_argument("--args", default="{}", help="the arguments, a JSON object")
    p.add_argument("--mock-policy", help='what-if policy, e.g. {"grants": ["firearm.media.write"]}')
    p.add_argument("--draft", help="run this (unpublished) draft instead of the catalogue's tool")
    p.add_argument("--version", type=int, help="the draft version (default: latest)")
    p.add_argument("--user", default="anonymous")
    common(p)
    _tenant(p)

    p = sub.add_parser("publish", help="publish a draft version as an immutable package and make it live")
    p.add_argument("draft_id")
    p.add_argument("--version", type=int, required=True, help="the draft version to publish")
    p.set_defaults(handler=run_async(_publish))
    common(p)
    _tenant(p)

    rg = sub.add_parser("registry", help="published packages")
    rg.set_defaults(handler=run_async(_registry))
    rsub = rg.add_subparsers(dest="action", required=True)
    p = rsub.add_parser("list")
    p.add_argument("tool_id")
    common(p)

    p = sub.add_parser("rollback", help="make an older package version live again (one step)")
    p.add_argument("tool_id")
    p.add_argument("version")
    p.set_defaults(handler=run_async(_rollback))
    common(p)
    _tenant(p)

    p = sub.add_parser("unpublish", help="take a published tool out of the catalogue (packages are kept)")
    p.add_argument("tool_id")
    p.set_defaults(handler=run_async(_unpublish))
    common(p)
    _tenant(p)
