"""The workbench actors and their closed message sets, plus thin clients for the front ends.

* :class:`Publisher` serialises publish / rollback / unpublish (one change at a time) over a
  :class:`~.service.PublisherService`.
* :class:`DraftStoreActor` serves a :class:`~northstar.workbench.drafts.DraftService` by
  messages (``PutDraft``, ``GetDraft``, ``ListDrafts``).

Messages check their numbers when they are constructed (``ValidationFailed`` in the caller's
task), so an out-of-range version never reaches an actor. Deliberate errors
(``NorthstarError``) travel back as :class:`Failed` replies, so they never crash an actor;
the clients re-raise them and turn the runtime's own errors (busy, timeout,
crash, stopped) into ``ServiceUnavailable`` (503).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import actors
from northstar.common import errors as E
from northstar.common.identity import RequestContext
from northstar.common.limits import MAX_SEQ, MAX_VERSION, check_int, check_optional_int
from northstar.storage.core import check_expected

CALL_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Failed:
    error: E.NorthstarError


# -- publisher messages ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Publish:
    ctx: RequestContext
    draft_id: str
    version: int | None = None

    def __post_init__(self) -> None:
        check_optional_int("version", self.version, 1, MAX_VERSION)


@dataclass(frozen=True, slots=True)
class Rollback:
    ctx: RequestContext
    tool_id: str
    to_version: str


@dataclass(frozen=True, slots=True)
class Unpublish:
    ctx: RequestContext
    tool_id: str


PublisherMessage = Publish | Rollback | Unpublish


class Publisher(actors.Actor[PublisherMessage, Any]):
    name = "workbench.publisher"

    def __init__(self, service: Any) -> None:
        super().__init__()
        self.service = service

    async def handle(self, msg: PublisherMessage) -> Any:
        try:
            match msg:
                case Publish(ctx, draft_id, version):
                    return await self.service.publish(ctx, draft_id, version)
                case Rollback(ctx, tool_id, to_version):
                    return await self.service.rollback(ctx, tool_id, to_version)
                case Unpublish(ctx, tool_id):
                    return await self.service.unpublish(ctx, tool_id)
        except E.NorthstarError as err:
            return Failed(err)
        raise TypeError(f"{self.name} cannot handle {type(msg).__name__}")


# -- draft store messages ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PutDraft:
    tenant: str
    draft_id: str
    spec: dict[str, Any]
    expected_version: int | None = None
    actor: str | None = None

    def __post_init__(self) -> None:
        check_expected(self.expected_version)


@dataclass(frozen=True, slots=True)
class GetDraft:
    tenant: str
    draft_id: str
    version: int | None = None

    def __post_init__(self) -> None:
        check_optional_int("version", self.version, 1, MAX_VERSION)


@dataclass(frozen=True, slots=True)
class ListDrafts:
    tenant: str
    after: str | None = None
    limit: int = 100

    def __post_init__(self) -> None:
        check_int("limit", self.limit, 1, MAX_SEQ)


DraftMessage = PutDraft | GetDraft | ListDrafts


class DraftStoreActor(actors.Actor[DraftMessage, Any]):
    name = "workbench.drafts"
    max_concurrency = 16

    def __init__(self, drafts: Any) -> None:
        super().__init__()
        self.drafts = drafts

    async def handle(self, msg: DraftMessage) -> Any:
        try:
            match msg:
                case PutDraft(tenant, draft_id, spec, expected_version, actor):
                    return await self.drafts.save_draft(tenant, draft_id, spec,
                                                        expected_version=expected_version, actor=actor)
                case GetDraft(tenant, draft_id, version):
                    return await self.drafts.get_draft(tenant, draft_id, version)
                case ListDrafts(tenant, after, limit):
                    return await self.drafts.list_drafts(tenant, after=after, limit=limit)
        except E.NorthstarError as err:
            return Failed(err)
        raise TypeError(f"{self.name} cannot handle {type(msg).__name__}")


# -- clients -----------------------------------------------------------------------------------
RefSource = Callable[[], "actors.ActorRef[Any, Any]"]


class _Client:
    def __init__(self, ref: actors.ActorRef[Any, Any] | RefSource, *, timeout: float = CALL_TIMEOUT_S) -> None:
        self._ref = ref
        self.timeout = timeout

    def ref(self) -> actors.ActorRef[Any, Any]:
        if isinstance(self._ref, actors.ActorRef):
            return self._ref
        try:
            return self._ref()
        except KeyError:
            raise E.ServiceUnavailable("the workbench is not running", retry_after=1) from None

    async def _call(self, msg: Any) -> Any:
        try:
            reply = await self.ref().call(msg, timeout=self.timeout)
        except (actors.Busy, actors.CallTimeout, actors.ActorCrashed, actors.ActorStopped) as exc:
            raise E.ServiceUnavailable(f"the workbench is unavailable: {type(exc).__name__}", retry_after=1) from None
        if isinstance(reply, Failed):
            raise reply.error
        return reply


class PublisherClient(_Client):
    """``services.publisher``: the publisher actor's changes plus the service's reads."""

    def __init__(self, ref: actors.ActorRef[Any, Any] | RefSource, service: Any, **kw: Any) -> None:
        super().__init__(ref, **kw)
        self.service = service

    async def publish(self, ctx: RequestContext, draft_id: str, version: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(Publish(ctx, draft_id, version))
        return result

    async def rollback(self, ctx: RequestContext, tool_id: str, to_version: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(Rollback(ctx, tool_id, to_version))
        return result

    async def unpublish(self, ctx: RequestContext, tool_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call(Unpublish(ctx, tool_id))
        return result

    async def packages(self, tool_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.service.packages(tool_id)
        return result

    async def package(self, tool_id: str, version: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.service.package(tool_id, version)
        return result

    async def overlay(self, tool_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.service.overlay(tool_id)
        return result


class DraftStoreClient(_Client):
    """The DraftService surface the publisher needs, by messages to the draft store actor."""

    async def get_draft(self, tenant: str, draft_id: str, version: int | None = None) -> Any:
        return await self._call(GetDraft(tenant, draft_id, version))

    async def save_draft(self, tenant: str, draft_id: str, spec: dict[str, Any], *,
                         expected_version: int | None = None, actor: str | None = None) -> Any:
        return await self._call(PutDraft(tenant, draft_id, spec, expected_version, actor))

    async def list_drafts(self, tenant: str, *, after: str | None = None, limit: int = 100) -> Any:
        return await self._call(ListDrafts(tenant, after, limit))
