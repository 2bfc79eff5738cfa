"""Administrative CLI commands: firearms, API keys and the audit log.

They open the store directly, so they work whether or not a gateway is running; every
policy change is written to the audit log like its REST twin. ``audit export`` writes the log
as JSON lines (:mod:`northstar.storage.audit_export`), the same lines as ``GET /v1/audit/export``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import getpass
import json
import os
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from northstar.common.config import Settings


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def fail(message: str, code: int = 1) -> int:
    sys.stderr.write(f"northstar: {message}\n")
    return code


@contextlib.asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[Any]:
    # Not northstar.runtime's helper: importing the runtime pulls in the whole MCP and web
    # stack, which would cost every admin command about two seconds of start-up.
    from northstar.storage import open_store, options_for

    url = settings.resolved_store_url()
    async with contextlib.AsyncExitStack() as stack:
        if url.startswith(("postgres://", "postgresql://")):
            import trio_asyncio

            await stack.enter_async_context(trio_asyncio.open_loop())
        yield await stack.enter_async_context(open_store(url, **options_for(settings)))


def operator() -> str:
    try:
        return f"cli/{getpass.getuser()}"
    except Exception:
        return "cli/unknown"


async def audit_policy(storage: Any, action: str, **fields: Any) -> int:
    record = {"event": "policy", "action": action, "principal": operator(), "transport": "cli", **fields}
    return int((await storage.audit.append(record)).seq)


async def _firearms(settings: Settings, args: argparse.Namespace) -> Any:
    from northstar.policy.firearms import FirearmsService

    async with opened(settings) as storage:
        svc = FirearmsService(storage.store)
        await svc.load()
        who = operator()
        match args.action:
            case "bind":
                out: Any = await svc.bind(args.scope, args.firearm, actor=who)
                out["audit_seq"] = await audit_policy(storage, "bind", scope=args.scope, firearm=args.firearm)
            case "unbind":
                await svc.unbind(args.scope, actor=who)
                out = {"scope": args.scope, "firearm": None,
                       "audit_seq": await audit_policy(storage, "unbind", scope=args.scope)}
            case "grant":
                g = await svc.grant(args.tenant, args.user, args.firearm, granted_by=who,
                                    reason=args.reason, expires_at=args.expires_at)
                out = {**g.to_dict(), "audit_seq": await audit_policy(
                    storage, "grant", grant_tenant=args.tenant, grant_user=args.user, firearm=args.firearm,
                    reason=args.reason, expires_at=args.expires_at)}
            case "require-approval":
                out = await svc.require_approval(args.scope, approver_firearm=args.approver_firearm, actor=who)
                out["audit_seq"] = await audit_policy(storage, "require_approval", scope=args.scope,
                                                      approver_firearm=out["approver_firearm"])
            case "clear-approval":
                await svc.clear_approval(args.scope, actor=who)
                out = {"scope": args.scope, "approval": None,
                       "audit_seq": await audit_policy(storage, "clear_approval", scope=args.scope)}
            case "revoke":
                await svc.revoke(args.tenant, args.user, args.firearm, actor=who)
                out = {"revoked": True, "audit_seq": await audit_policy(
                    storage, "revoke", grant_tenant=args.tenant, grant_user=args.user, firearm=args.firearm)}
            case _:
                out = {"bindings": svc.list_bindings(), "grants": svc.list_grants(),
                       "approval_rules": svc.list_approval_rules()}
        return out


async def _keys(settings: Settings, args: argparse.Namespace) -> Any:
    from northstar.policy.auth import KeyService

    async with opened(settings) as storage:
        keys = KeyService(storage.store)
        match args.action:
            case "create":
                # An operator with access to the store: the credential behind the key is that access.
                secret, key = await keys.create(args.tenant, args.user, admin=args.admin, label=args.label,
                                                actor=operator(), provenance="cli")
                await audit_policy(storage, "key_create", key_id=key.key_id, key_tenant=args.tenant,
                                   key_user=args.user, admin=args.admin, provenance="cli")
                return {"key": secret, **key.public(), "note": "shown once: store it now"}
            case "adopt":
                adopted = await keys.adopt(args.key_id, actor=operator())
                await audit_policy(storage, "key_adopt", key_id=args.key_id)
                return adopted.public()
            case "revoke":
                await keys.revoke(args.key_id, actor=operator())
                await audit_policy(storage, "key_revoke", key_id=args.key_id)
                return {"key_id": args.key_id, "revoked": True}
            case _:
                return {"keys": await keys.list()}


async def _audit(settings: Settings, args: argparse.Namespace) -> Any:
    async with opened(settings) as storage:
        if args.action == "verify":
            return (await storage.audit.verify()).to_dict()
        # Page through the whole log (a query returns at most 100 000 entries) keeping the last n.
        tail: collections.deque[Any] = collections.deque(maxlen=args.n if args.n > 0 else None)
        after: int | None = None
        while batch := await storage.audit.query(tenant=None, after_seq=after, limit=100_000):
            tail.extend(batch)
            after = batch[-1].seq
        return {"entries": [{"seq": e.seq, "ts": e.ts, **e.record} for e in tail]}


async def _audit_export(settings: Settings, args: argparse.Namespace) -> int:
    """Write the entries after ``--since`` to stdout, a page at a time, up to the head at start."""
    from northstar.storage.audit_export import export_line, export_pages

    out = sys.stdout.buffer
    async with opened(settings) as storage:
        through = await storage.audit.head_seq()
        pages = export_pages(storage.audit, args.since, through)
        try:
            async for page in pages:
                out.write("".join(export_line(e) for e in page).encode("utf-8"))
                out.flush()
        except BrokenPipeError:
            # The reader went away (``| head``): stop quietly, and keep Python from failing
            # again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        finally:
            await pages.aclose()
    return 0


def export_handler(settings: Settings, args: argparse.Namespace) -> int:
    from northstar.common.errors import NorthstarError

    try:
        return int(trio.run(_audit_export, settings, args))
    except NorthstarError as err:
        return fail(f"{err.code}: {err.message}")
    except BaseExceptionGroup as group:
        only = _only_error(group)
        if only is None:
            raise
        return fail(f"{only.code}: {only.message}")


def run_async(fn: Callable[[Settings, argparse.Namespace], Any]) -> Callable[[Settings, argparse.Namespace], int]:
    def handler(settings: Settings, args: argparse.Namespace) -> int:
        from northstar.common.errors import NorthstarError

        try:
            result = trio.run(fn, settings, args)
        except NorthstarError as err:
            return fail(f"{err.code}: {err.message} {err.details or ''}".strip())
        except BaseExceptionGroup as group:
            # Errors raised inside the store's context (its nursery) arrive wrapped in a group.
            only = _only_error(group)
            if only is None:
                raise
            return fail(f"{only.code}: {only.message} {only.details or ''}".strip())
        emit(result)
        if isinstance(result, dict) and result.get("ok") is False:
            return 1
        return 0

    return handler


def _only_error(group: BaseExceptionGroup[Any]) -> Any:
    """The first NorthstarError of a group holding nothing else, or None."""
    from northstar.common.errors import NorthstarError

    matched, rest = group.split(NorthstarError)
    if matched is None or rest is not None:
        return None
    leaf: BaseException = matched
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def seq_arg(text: str) -> int:
    """A sequence number on the command line: ASCII digits, within 64 bits."""
    from northstar.common.limits import MAX_SEQ

    if not (text.isascii() and text.isdigit()) or int(text) > MAX_SEQ:
        raise argparse.ArgumentTypeError(f"not a sequence number (0 to {MAX_SEQ}): {text[:32]!r}")
    return int(text)


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    fa = sub.add_parser("firearms", help="firearm bindings and grants")
    fa.set_defaults(handler=run_async(_firearms))
    fsub = fa.add_subparsers(dest="action", required=True)
    p = fsub.add_parser("bind")
    p.add_argument("scope")
    p.add_argument("firearm")
    p = fsub.add_parser("unbind")
    p.add_argument("scope")
    p = fsub.add_parser("require-approval", help="hold the scope's calls until a human approves each")
    p.add_argument("scope")
    p.add_argument("--approver-firearm", help="who may approve (default firearm.approve)")
    p = fsub.add_parser("clear-approval", help="let the scope's calls run without approval")
    p.add_argument("scope")
    for name in ("grant", "revoke"):
        p = fsub.add_parser(name)
        p.add_argument("tenant")
        p.add_argument("user")
        p.add_argument("firearm")
        if name == "grant":
            p.add_argument("--expires-at")
            p.add_argument("--reason")
    fsub.add_parser("list")
    for p in fsub.choices.values():
        common(p)

    ks = sub.add_parser("keys", help="API keys")
    ks.set_defaults(handler=run_async(_keys))
    ksub = ks.add_subparsers(dest="action", required=True)
    p = ksub.add_parser("create")
    p.add_argument("--tenant", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--admin", action="store_true")
    p.add_argument("--label")
    p = ksub.add_parser("revoke")
    p.add_argument("key_id")
    p = ksub.add_parser("adopt", help="confirm an admin key minted before keys recorded their provenance")
    p.add_argument("key_id")
    ksub.add_parser("list")
    for p in ksub.choices.values():
        common(p)

    au = sub.add_parser("audit", help="the audit log")
    au.set_defaults(handler=run_async(_audit))
    asub = au.add_subparsers(dest="action", required=True)
    p = asub.add_parser("tail")
    p.add_argument("-n", type=int, default=20)
    asub.add_parser("verify")
    p = asub.add_parser("export", help="the log as JSON lines (seq, ts, prev_hash, hash, tenant_seq, record), "
                                       "for independent verification")
    p.add_argument("--since", type=seq_arg, default=0, metavar="SEQ",
                   help="only the entries after this seq (default 0: from the start); resume with the last seq got")
    p.add_argument("--format", choices=("jsonl",), default="jsonl", help="one JSON object a line (the only format)")
    p.set_defaults(handler=export_handler)
    for p in asub.choices.values():
        common(p)
