"""Upstream MCP servers from the command line: the twins of ``/v1/upstreams``.

    northstar upstreams add --spec-file F [--replace | --expected-version N]
    northstar upstreams list | show NAME | tools NAME | remove NAME
    northstar upstreams draft NAME [--tenant T]

They work on the store directly, secrets sealed with the same key file as the gateway
(``secrets_key_file``); a running gateway picks a registration or removal up through its
``upstreams.watcher`` (within about a second), on every replica. ``tools`` and ``draft``
connect to the upstream themselves (a short-lived unit, stopped afterwards); ``draft``
saves the generated workbench draft, named after the upstream, in ``--tenant``.
Every change is audited like its REST twin (``event: upstream``, ``transport: cli``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import trio

from northstar.cli.admin import operator, run_async
from northstar.cli.workbench import in_store
from northstar.common import errors as E
from northstar.common.config import Settings


def _hub(settings: Settings, storage: Any) -> Any:
    from northstar.upstreams.hub import UpstreamHub
    from northstar.upstreams.registry import UpstreamRegistry
    from northstar.upstreams.secrets import SecretBox

    box = SecretBox.from_file(settings.resolved_secrets_key_file)
    return UpstreamHub(UpstreamRegistry(storage.store, box), storage.audit)


async def _listed(hub: Any, name: str) -> dict[str, Any]:
    """Connect to ``name`` with a short-lived unit and list its tools."""
    import actors
    from northstar.upstreams.host import UpstreamHost

    spec = await hub.registry.load(name)
    sup = actors.Supervisor("upstreams.cli", [], max_restarts=5, period=60.0)
    failure: E.NorthstarError | None = None
    result: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        try:
            handle = await UpstreamHost(lambda: sup).start(spec)
            reply = await handle.tools(wait_s=spec.connect_timeout_s)
            result = {"tools": dict(reply.unwrap().tools), "problems": list(reply.problems)}
        except E.NorthstarError as err:
            failure = err
        finally:
            with trio.move_on_after(30):
                await sup.stop()
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return result


async def _upstreams(settings: Settings, args: argparse.Namespace) -> Any:
    spec: Any = None
    if args.action == "add":
        raw = await trio.Path(args.spec_file).read_text(encoding="utf-8")
        try:
            spec = json.loads(raw)
        except ValueError:
            raise E.ValidationFailed("spec-file is not valid JSON", field="spec-file") from None
    return await in_store(settings, lambda storage: _in_store(settings, storage, args, spec))


async def _in_store(settings: Settings, storage: Any, args: argparse.Namespace, raw: Any) -> Any:
    from northstar.upstreams.hub import tool_view
    from northstar.upstreams.spec import parse_spec

    hub = _hub(settings, storage)
    match args.action:
        case "add":
            spec = parse_spec(raw)
            expected = args.expected_version if args.expected_version is not None else (None if args.replace else 0)
            stored = await hub.registry.register(spec, actor=operator(), expected_version=expected)
            await hub.audit_change("register", spec.name, operator(), "cli", stored.version)
            return hub.view(stored, admin=True)
        case "list":
            return {"upstreams": [hub.view(s, admin=True) for s in await hub.registry.list()]}
        case "show":
            return hub.view(await hub.stored(args.name), admin=True)
        case "remove":
            await hub.delete(args.name, actor=operator(), transport="cli")
            return {"deleted": args.name}
        case "tools":
            listed = await _listed(hub, args.name)
            return {"name": args.name, "tools": [tool_view(t) for _n, t in sorted(listed["tools"].items())],
                    "problems": listed["problems"]}
        case _:
            return await _draft(storage, hub, args)


async def _draft(storage: Any, hub: Any, args: argparse.Namespace) -> Any:
    from northstar.cli.workbench import builtin_catalog
    from northstar.policy.firearms import FirearmsService
    from northstar.upstreams.draft import generate_draft
    from northstar.workbench.definition import validate_spec
    from northstar.workbench.drafts.service import DraftService

    stored = await hub.stored(args.name)
    listed = await _listed(hub, args.name)
    generated = generate_draft(args.name, listed["tools"], title=stored.spec.get("title"),
                               description=stored.spec.get("description"))
    firearms = FirearmsService(storage.store)
    await firearms.load()
    catalog = builtin_catalog()

    def validate(raw: dict[str, Any]) -> dict[str, Any]:
        validate_spec(raw, catalog, bindings=firearms.bindings())
        return raw

    rec = await DraftService(storage.store, validate=validate).save_draft(args.tenant, args.name, generated.spec,
                                                                          actor=operator())
    return {"draft_id": rec.draft_id, "version": rec.version, "renamed": generated.renamed,
            "problems": generated.problems}


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    up = sub.add_parser("upstreams", help="upstream MCP servers behind northstar's governance")
    up.set_defaults(handler=run_async(_upstreams))
    usub = up.add_subparsers(dest="action", required=True)
    p = usub.add_parser("add", help="register an upstream (a JSON file: the body of POST /v1/upstreams)")
    p.add_argument("--spec-file", required=True)
    p.add_argument("--replace", action="store_true", help="replace a registration of the same name")
    p.add_argument("--expected-version", type=int, help="replace exactly this version (0: only if new)")
    usub.add_parser("list")
    for name in ("show", "tools", "remove", "draft"):
        p = usub.add_parser(name)
        p.add_argument("name")
        if name == "draft":
            p.add_argument("--tenant", default="default")
    for p in usub.choices.values():
        common(p)
