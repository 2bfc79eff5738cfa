"""The approval desk: held calls, their approval records, the wait, and the approvers' decisions.

Approval records are their own resource kind (``approvals``) in the versioned store, all under
the gateway-wide tenant (each record names its caller's tenant), so they survive restarts and
every replica sees them. Each change of state is a conditional save (``expected_version``):
two approvers, two replicas or a re-issued call racing on one approval cannot both win, and
an approved call is consumed (run) exactly once.

* :meth:`ApprovalDesk.hold` opens an approval for a :class:`~northstar.policy.calls.Held` call,
  or finds one of the same call (same principal, tool and argument hash: the id prefix), and
  either answers at once (``approval_pending``, doors that do not wait) or waits for it,
  bounded by its expiry, relaying progress; it returns the approved ticket or the error.
* :meth:`ApprovalDesk.decide` is an approver's approve / reject: a principal granted the
  scope's approver firearm in the caller's tenant, never the caller.
* :meth:`ApprovalDesk.consume` marks the approval used, just before the call runs;
  :meth:`ApprovalDesk.keep_result` then keeps the call's outcome in it where the wait outlives
  the caller's connection (the Streamable HTTP session), so a caller that went away while its
  call ran gets that outcome, once, by re-issuing the same call before the approval's expiry
  (audited ``redeliver``): the call is never run twice for one approval.

A waiting call learns of a decision made in this process at once (an event per approval) and of
one made on another replica within ``poll_s``. Every step is audited: the held call's
``decision: pending`` record, then ``event: approval`` records (``approve``, ``reject``,
``expire``, ``consume``, ``redeliver``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import trio

from northstar.common import errors as E
from northstar.common.identity import RequestContext
from northstar.mcp_gateway.tools.model import ProgressFn
from northstar.policy import approval_core as C
from northstar.policy.calls import CallResult, Held, seen_seq
from northstar.policy.firearms import GLOBAL_TENANT, FirearmsService
from northstar.storage import kinds
from northstar.storage.base import AuditLog

log = logging.getLogger("northstar.approvals")
PAGE = 1000
MAX_SCAN = 100_000  # records a listing reads at most
#: Held calls of one principal waiting at once in this process; beyond it a held call is
#: answered ``approval_pending`` at once (and re-issued later), whatever its door.
MAX_WAITING_PER_PRINCIPAL = 64


class ApprovalDesk:
    def __init__(self, store: Any, audit: AuditLog, firearms: FirearmsService, *, ttl_s: float = 600.0,
                 poll_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.audit = audit
        self.firearms = firearms
        self.ttl_s = ttl_s
        self.poll_s = poll_s
        self.clock = clock
        self._events: dict[str, trio.Event] = {}
        self._waiting: dict[str, int] = {}

    # -- records ----------------------------------------------------------------------------
    async def _load(self, approval_id: str) -> tuple[dict[str, Any], int]:
        rec = await self.store.get(GLOBAL_TENANT, kinds.APPROVALS, approval_id)
        if rec is None or rec.data is None:
            raise E.NotFound("no such approval", approval_id=approval_id)
        return dict(rec.data), int(rec.version)

    async def _save(self, data: dict[str, Any], expected: int, actor: str) -> None:
        try:
            await self.store.save(GLOBAL_TENANT, kinds.APPROVALS, data["id"], data, expected_version=expected,
                                  actor=actor)
        except E.Conflict as exc:
            raise E.ApprovalState("the approval changed meanwhile; read it again", approval_id=data["id"]) from exc
        self._wake(data["id"])

    def _wake(self, approval_id: str) -> None:
        event = self._events.pop(approval_id, None)
        if event is not None:
            event.set()

    async def _audit(self, ctx: RequestContext, action: str, data: dict[str, Any], **extra: Any) -> Any:
        record = {"event": "approval", "action": action, "approval_id": data["id"], "request_id": ctx.request_id,
                  "tenant": data["tenant"], "user": ctx.user, "principal": ctx.principal,
                  "transport": ctx.transport.value, "caller": data["principal"], "tool": data["tool"],
                  "scope": data["scope"], "operation": data["operation"], "args_hash": data["args_hash"], **extra}
        return await self.audit.append(record)

    async def _expire(self, ctx: RequestContext, data: dict[str, Any], version: int) -> dict[str, Any]:
        """Record the expiry of an approval whose time ran out (once; a lost race is fine)."""
        was = data["state"]
        data = {**data, "state": "expired"}
        try:
            await self._save(data, version, "northstar:approvals")
        except E.ApprovalState:
            return (await self._load(data["id"]))[0]
        await self._audit(ctx, "expire", data, was=was)
        return data

    # -- the held call ----------------------------------------------------------------------
    async def hold(self, held: Held) -> C.ApprovalTicket | CallResult:
        """Open or find the approval of ``held``; the approved ticket, or the call's answer."""
        ctx = held.call.ctx
        data, version, seq = await self.open(held)
        if C.redeliverable(data, self.clock()):
            redelivered = await self.redeliver(ctx, data, version, held)
            if redelivered is not None:
                return redelivered
            data, version, seq = await self.open(held)  # taken meanwhile by another re-issue
        state = C.state_at(data, self.clock())
        room = self._waiting.get(ctx.principal, 0) < MAX_WAITING_PER_PRINCIPAL
        if state == "pending" and held.call.wait_approval and room:
            self._waiting[ctx.principal] = self._waiting.get(ctx.principal, 0) + 1
            try:
                with held.call.abandon() if held.call.abandon is not None else contextlib.nullcontext():
                    data, version = await self.wait(data, version, held.call.progress)
            finally:
                self._release(ctx.principal)
            state = C.state_at(data, self.clock())
        if state == "approved":
            return C.ApprovalTicket(data["id"], data["args_hash"])
        if state == "expired" and data["state"] != "expired":
            data = await self._expire(ctx, data, version)
        err = (E.ApprovalPending(approval_id=data["id"], expires_at=data["expires_at"]) if state == "pending"
               else C.outcome_error(data, state))
        return CallResult(ok=False, error=err, audit_seq=seq, trace=held.trace, target=held.target)

    async def redeliver(self, ctx: RequestContext, data: dict[str, Any], version: int,
                        held: Held) -> CallResult | None:
        """The kept outcome of the same call, approved and run already while its caller was gone;
        given once (None: another re-issue took it first)."""
        kept = data["result"]
        try:
            await self._save({**data, "result": None, "redelivered_at": C.iso(self.clock())}, version, ctx.principal)
        except E.ApprovalState:
            return None
        await self._audit(ctx, "redeliver", data, audit_seq=kept.get("audit_seq"))
        return CallResult(ok=bool(kept["ok"]), output=kept.get("output"), mcp=kept.get("mcp"),
                          upstream=kept.get("upstream"), audit_seq=kept.get("audit_seq"), trace=held.trace,
                          target=held.target)

    async def keep_result(self, ctx: RequestContext, ticket: C.ApprovalTicket, result: CallResult) -> None:
        """Keep the outcome of the call ``ticket`` approved, for a re-issue by a caller that went
        away while it ran. Best effort: the call's own answer never waits on or fails for it."""
        kept = C.kept_outcome(result.ok, result.output, result.mcp, result.upstream, result.audit_seq)
        if kept is None:
            return
        try:
            data, version = await self._load(ticket.approval_id)
            if data["state"] != "consumed" or data["principal"] != ctx.principal or data.get("result") is not None:
                return
            await self._save({**data, "result": kept}, version, ctx.principal)
        except E.NorthstarError as err:
            log.warning("a held call's outcome was not kept for a re-issue",
                        extra={"approval_id": ticket.approval_id, "code": err.code})

    def waiting(self) -> dict[str, int]:
        """Held calls waiting in this process, per principal."""
        return dict(self._waiting)

    def _release(self, principal: str) -> None:
        left = self._waiting.get(principal, 0) - 1
        if left > 0:
            self._waiting[principal] = left
        else:
            self._waiting.pop(principal, None)

    async def open(self, held: Held) -> tuple[dict[str, Any], int, int | None]:
        """The live approval of this exact call (approved first, then pending), else a new one."""
        ctx = held.call.ctx
        prefix = C.match_prefix(ctx.principal, str(held.target.get("canonical_name")), held.args_hash)
        found = await self.store.list(GLOBAL_TENANT, kinds.APPROVALS, prefix=prefix, limit=PAGE)
        now = self.clock()
        live = [(C.state_at(r.data, now), r) for r in found if r.data is not None]
        for wanted in ("approved", "kept", "pending"):
            for state, rec in live:
                if rec.data["args_hash"] != held.args_hash:
                    continue
                if state == wanted or (wanted == "kept" and C.redeliverable(rec.data, now)):
                    return dict(rec.data), int(rec.version), None
        data = C.new_record(approval_id=C.new_id(prefix), ctx=ctx, target=held.target, approver=held.approver,
                            arguments=held.arguments, digest=held.args_hash, now=now, ttl_s=self.ttl_s)
        record = {**held.base, **held.target, "event": "decision", "decision": "pending", "gate": "approval",
                  "code": "approval_pending", "reason": f"held for approval {data['id']}", "approval_id": data["id"],
                  "args_hash": held.args_hash, "expires_at": data["expires_at"], "trace": held.trace}
        # The record first: no approval an approver could act on exists without its audit record.
        entry = await self.audit.append(record)
        await self.store.save(GLOBAL_TENANT, kinds.APPROVALS, data["id"], data, expected_version=0,
                              actor=ctx.principal)
        return data, 1, seen_seq(ctx, entry)

    async def wait(self, data: dict[str, Any], version: int, progress: ProgressFn | None) -> tuple[dict[str, Any], int]:
        """Wait until the approval is decided or expires; relay progress while waiting."""
        started = self.clock()
        try:
            while C.state_at(data, self.clock()) == "pending":
                if progress is not None:
                    await self._progress(progress, self.clock() - started, data)
                remaining = float(data["expires_ts"]) - self.clock()
                event = self._events.setdefault(data["id"], trio.Event())
                with trio.move_on_after(max(0.0, min(self.poll_s, remaining))):
                    await event.wait()
                data, version = await self._load(data["id"])
        finally:
            # No event outlives its waiters (another waiter of the same call polls on).
            self._events.pop(data["id"], None)
        return data, version

    async def _progress(self, progress: ProgressFn, elapsed: float, data: dict[str, Any]) -> None:
        try:
            await progress(round(elapsed, 3), self.ttl_s, f"waiting for approval {data['id']}")
        except trio.Cancelled:
            raise
        except Exception:  # a client that cannot hear progress still gets its answer
            log.debug("progress notification failed", exc_info=True)

    async def consume(self, ctx: RequestContext, ticket: C.ApprovalTicket) -> None:
        """Mark the approval used by this run of the call; raises when it cannot be (again)."""
        data, version = await self._load(ticket.approval_id)
        state = C.state_at(data, self.clock())
        if data["principal"] != ctx.principal or data["args_hash"] != ticket.args_hash:
            raise E.ApprovalState("the approval is for another call", approval_id=data["id"])
        if state != "approved":
            raise C.outcome_error(data, state)
        data = {**data, "state": "consumed", "consumed_at": C.iso(self.clock())}
        await self._save(data, version, ctx.principal)
        await self._audit(ctx, "consume", data)

    # -- approvers --------------------------------------------------------------------------
    def visible(self, ctx: RequestContext, data: dict[str, Any]) -> bool:
        """Admins see every approval; others those of their tenant they made or may decide."""
        if ctx.is_admin:
            return True
        if data["tenant"] != ctx.tenant:
            return False
        return data["user"] == ctx.user or self.firearms.may_approve(ctx.tenant, ctx.user, data["scope"])

    async def get(self, ctx: RequestContext, approval_id: str) -> dict[str, Any]:
        data, _ = await self._load(approval_id)
        if not self.visible(ctx, data):  # another's approval is not found, rather than forbidden
            raise E.NotFound("no such approval", approval_id=approval_id)
        return C.public_view(data, self.clock())

    async def list(self, ctx: RequestContext, state: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after: str | None = None
        scanned = 0
        now = self.clock()
        while scanned < MAX_SCAN:
            page = await self.store.list(GLOBAL_TENANT, kinds.APPROVALS, after=after, limit=PAGE)
            for rec in page:
                if rec.data is not None and self.visible(ctx, rec.data):
                    view = C.public_view(rec.data, now)
                    if state is None or view["state"] == state:
                        out.append(view)
            scanned += len(page)
            if len(page) < PAGE:
                break
            after = page[-1].resource_id
        out.sort(key=lambda v: v["created_at"], reverse=True)
        return out[:limit]

    async def decide(self, ctx: RequestContext, approval_id: str, *, approve: bool,
                     reason: str | None = None) -> dict[str, Any]:
        """An approver's approve or reject of a pending approval."""
        data, version = await self._load(approval_id)
        if not self.visible(ctx, data):
            raise E.NotFound("no such approval", approval_id=approval_id)
        if data["principal"] == ctx.principal:
            raise E.ApprovalSelf(approval_id=approval_id)
        if data["tenant"] != ctx.tenant or not self.firearms.may_approve(ctx.tenant, ctx.user, data["scope"]):
            raise E.FirearmRequired(f"approving calls to {data['scope']} requires firearm {data['approver_firearm']}",
                                    scope=data["scope"], firearm=data["approver_firearm"])
        state = C.state_at(data, self.clock())
        if state != "pending":
            if state == "expired" and data["state"] != "expired":
                await self._expire(ctx, data, version)
            raise E.ApprovalState(f"the approval is {state}", approval_id=approval_id, state=state)
        data = {**data, "state": "approved" if approve else "rejected", "decided_by": ctx.principal,
                "decided_at": C.iso(self.clock()), "reason": reason}
        await self._save(data, version, ctx.principal)
        entry = await self._audit(ctx, "approve" if approve else "reject", data, reason=reason)
        return {**C.public_view(data, self.clock()), "audit_seq": seen_seq(ctx, entry)}
