"""Held calls' approvals from the command line: the twins of ``/v1/approvals``.

    northstar approvals list [--state S] | show ID
    northstar approvals approve ID --tenant T --user U [--reason R]
    northstar approvals reject ID --tenant T --user U [--reason R]

They work on the store directly (like every admin command). Listing and showing are an
operator's view (every approval); deciding names the approver: the same rules as over REST
(a holder of the scope's approver firearm in the caller's tenant, never the caller itself), and
the same audit records (``event: approval``, ``transport: cli``). A running gateway's waiting
call learns of the decision within about a second, on every replica.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from northstar.cli.admin import opened, run_async
from northstar.common.config import Settings


async def _approvals(settings: Settings, args: argparse.Namespace) -> Any:
    from northstar.common.identity import RequestContext, Transport, new_request_id
    from northstar.policy.approvals import ApprovalDesk
    from northstar.policy.firearms import FirearmsService

    async with opened(settings) as storage:
        firearms = FirearmsService(storage.store)
        await firearms.load()
        desk = ApprovalDesk(storage.store, storage.audit, firearms, ttl_s=settings.approval_ttl_s)
        operator = RequestContext(request_id=new_request_id(), transport=Transport.INTERNAL, is_admin=True,
                                  authenticated_by="cli")
        match args.action:
            case "list":
                return {"approvals": await desk.list(operator, args.state, args.limit)}
            case "show":
                return await desk.get(operator, args.approval_id)
        who = RequestContext(request_id=new_request_id(), tenant=args.tenant, user=args.user,
                             transport=Transport.INTERNAL, authenticated_by="cli")
        return await desk.decide(who, args.approval_id, approve=args.action == "approve", reason=args.reason)


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    ap = sub.add_parser("approvals", help="held calls waiting for a human approval")
    ap.set_defaults(handler=run_async(_approvals))
    asub = ap.add_subparsers(dest="action", required=True)
    p = asub.add_parser("list")
    p.add_argument("--state", choices=("pending", "approved", "rejected", "expired", "consumed"))
    p.add_argument("--limit", type=int, default=100, choices=range(1, 1001), metavar="1..1000")
    p = asub.add_parser("show")
    p.add_argument("approval_id")
    for name in ("approve", "reject"):
        p = asub.add_parser(name)
        p.add_argument("approval_id")
        p.add_argument("--tenant", required=True, help="the approver's tenant (the caller's)")
        p.add_argument("--user", required=True, help="the approver, a holder of the scope's approver firearm")
        p.add_argument("--reason")
    for p in asub.choices.values():
        common(p)
