"""The store as a supervised actor: a closed message set, the actor, and a client.

``StoreActor`` serves the :class:`~northstar.storage.base.VersionedStore` it is given (up to
``max_concurrency`` requests at once: SQLite serialises writes itself, reads run in parallel).
Deliberate errors (``Conflict``, ``ValidationFailed``, ``StoreUnavailable`` ...) are replies, not
crashes: they travel back as :class:`Failed` and the client re-raises them. Anything else is a
bug and crashes the actor, so its supervisor restarts it.

Every message checks its fields when it is constructed (the same checks the backends run,
:mod:`.core`), so a value out of range raises ``ValidationFailed`` in the caller's task and
never reaches the actor: what a client sends cannot crash the shared store.

``StoreClient`` implements ``VersionedStore`` over an :class:`actors.ActorRef`; the runtime's
errors (``Busy``, ``CallTimeout``, ``ActorCrashed``, ``ActorStopped``) become
``StoreUnavailable(retry_after=1)``. A write whose call timed out may still commit (the
store never abandons a write half-way): read it back to learn the outcome.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import actors
from northstar.common.errors import NorthstarError, StoreUnavailable

from .base import VersionedStore
from .core import check_changes_args, check_get_args, check_key, check_list_args, check_save_args
from .records import ChangeEvent, Record


@dataclass(frozen=True, slots=True)
class Save:
    tenant: str
    kind: str
    resource_id: str
    data: dict[str, Any] | None
    expected_version: int | None = None
    actor: str | None = None

    def __post_init__(self) -> None:
        check_save_args(self.tenant, self.kind, self.resource_id, self.expected_version, self.actor)


@dataclass(frozen=True, slots=True)
class Get:
    tenant: str
    kind: str
    resource_id: str
    version: int | None = None

    def __post_init__(self) -> None:
        check_get_args(self.tenant, self.kind, self.resource_id, self.version)


@dataclass(frozen=True, slots=True)
class List:
    tenant: str
    kind: str
    prefix: str | None = None
    after: str | None = None
    limit: int = 100
    include_deleted: bool = False

    def __post_init__(self) -> None:
        check_list_args(self.tenant, self.kind, self.prefix, self.after, self.limit)


@dataclass(frozen=True, slots=True)
class History:
    tenant: str
    kind: str
    resource_id: str

    def __post_init__(self) -> None:
        check_key(self.tenant, self.kind, self.resource_id)


@dataclass(frozen=True, slots=True)
class ChangesSince:
    change_id: int
    kinds: tuple[str, ...] | None = None
    limit: int = 1000

    def __post_init__(self) -> None:
        check_changes_args(self.change_id, self.kinds, self.limit)


@dataclass(frozen=True, slots=True)
class Check:
    pass


StoreMessage = Save | Get | List | History | ChangesSince | Check


@dataclass(frozen=True, slots=True)
class Failed:
    """A deliberate error, carried back as a reply so the actor does not crash."""

    error: NorthstarError


class StoreActor(actors.Actor[StoreMessage, Any]):
    name = "store"
    max_concurrency = 16

    def __init__(self, store: VersionedStore, name: str | None = None) -> None:
        super().__init__(name)
        self.store = store

    async def handle(self, msg: StoreMessage) -> Any:
        try:
            return await self._dispatch(msg)
        except NorthstarError as exc:
            return Failed(exc)

    async def _dispatch(self, msg: StoreMessage) -> Any:
        store = self.store
        match msg:
            case Save(tenant, kind, resource_id, data, expected_version, actor):
                return await store.save(tenant, kind, resource_id, data,
                                        expected_version=expected_version, actor=actor)
            case Get(tenant, kind, resource_id, version):
                return await store.get(tenant, kind, resource_id, version)
            case List(tenant, kind, prefix, after, limit, include_deleted):
                return await store.list(tenant, kind, prefix=prefix, after=after, limit=limit,
                                        include_deleted=include_deleted)
            case History(tenant, kind, resource_id):
                return await store.history(tenant, kind, resource_id)
            case ChangesSince(change_id, kinds, limit):
                return await store.changes_since(change_id, kinds, limit)
            case Check():
                return await store.check()
        raise TypeError(f"StoreActor cannot handle {type(msg).__name__}")


class StoreClient:
    """:class:`~northstar.storage.base.VersionedStore` by messages to a :class:`StoreActor`."""

    def __init__(self, ref: actors.ActorRef[StoreMessage, Any], *, timeout: float = 15.0) -> None:
        self.ref = ref
        self.timeout = timeout

    async def _call(self, msg: StoreMessage) -> Any:
        try:
            reply = await self.ref.call(msg, timeout=self.timeout)
        except (actors.Busy, actors.CallTimeout, actors.ActorCrashed, actors.ActorStopped) as exc:
            # The runtime's message names the actor and an exception type: internals, not an answer.
            raise StoreUnavailable(retry_after=1) from exc
        if isinstance(reply, Failed):
            raise reply.error
        return reply

    async def save(self, tenant: str, kind: str, resource_id: str, data: dict[str, Any] | None, *,
                   expected_version: int | None = None, actor: str | None = None) -> Record:
        result: Record = await self._call(Save(tenant, kind, resource_id, data, expected_version, actor))
        return result

    async def get(self, tenant: str, kind: str, resource_id: str,
                  version: int | None = None) -> Record | None:
        result: Record | None = await self._call(Get(tenant, kind, resource_id, version))
        return result

    async def list(self, tenant: str, kind: str, *, prefix: str | None = None, after: str | None = None,
                   limit: int = 100, include_deleted: bool = False) -> builtins.list[Record]:
        result: builtins.list[Record] = await self._call(
            List(tenant, kind, prefix, after, limit, include_deleted)
        )
        return result

    async def history(self, tenant: str, kind: str, resource_id: str) -> builtins.list[Record]:
        result: builtins.list[Record] = await self._call(History(tenant, kind, resource_id))
        return result

    async def changes_since(self, change_id: int, kinds: Sequence[str] | None = None,
                            limit: int = 1000) -> builtins.list[ChangeEvent]:
        frozen = None if kinds is None else tuple(kinds)
        result: builtins.list[ChangeEvent] = await self._call(ChangesSince(change_id, frozen, limit))
        return result

    async def check(self) -> None:
        await self._call(Check())

    async def close(self) -> None:
        """The client owns nothing: the store is closed by whoever opened it."""
