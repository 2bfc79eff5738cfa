"""Registered upstreams in the versioned store (kind ``upstreams``), secrets sealed.

One resource per upstream (tenant ``_global``: an upstream's name is a gateway-wide tool
id), one version per change, so registrations survive restarts and reach replicas through
``changes_since``. The stored document::

    {"spec": <UpstreamSpec.public(): every field, "secrets": [names only]>,
     "sealed": {"alg": "A256GCM", "kid", "nonce", "ct"} | null,
     "registered_by", "registered_at"}

Secret values exist in clear only in memory, on their way to the connection: the store,
the listings and :class:`StoredUpstream` never hold them. :meth:`UpstreamRegistry.load`
opens them with the key file (``SecretsUnavailable`` when the key does not match).
:class:`UpstreamService` ties the registry to an :class:`~northstar.upstreams.host.UpstreamHost`:
register and the upstream (re)starts, delete and it stops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from northstar.common.errors import NotFound, SecretsUnavailable
from northstar.storage.core import utc_now_iso
from northstar.storage.kinds import UPSTREAMS
from northstar.upstreams.host import UpstreamHandle, UpstreamHost
from northstar.upstreams.messages import EventSink
from northstar.upstreams.secrets import SecretBox
from northstar.upstreams.spec import UpstreamSpec

GLOBAL_TENANT = "_global"  # the same tenant the component registry uses
_PAGE = 500


@dataclass(frozen=True, slots=True)
class StoredUpstream:
    """A registered upstream as anyone may see it: the public spec, never a secret value."""

    name: str
    version: int
    spec: dict[str, Any]
    registered_by: str | None
    registered_at: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "spec": self.spec,
                "registered_by": self.registered_by, "registered_at": self.registered_at}


def _stored(record: Any) -> StoredUpstream:
    data = record.data
    return StoredUpstream(name=record.resource_id, version=record.version, spec=data["spec"],
                          registered_by=data.get("registered_by"), registered_at=data.get("registered_at"))


class UpstreamRegistry:
    """Registration documents in the versioned store (any ``VersionedStore``)."""

    kind = UPSTREAMS

    def __init__(self, store: Any, box: SecretBox) -> None:
        self.store = store
        self.box = box

    async def register(self, spec: UpstreamSpec, *, actor: str, expected_version: int | None = None) -> StoredUpstream:
        """Save ``spec`` as the next version (``expected_version``: 0 = new, N = replace N)."""
        values = spec.secret_values()
        document = {
            "spec": spec.public(),
            "sealed": self.box.seal(spec.name, values) if values else None,
            "registered_by": actor,
            "registered_at": utc_now_iso(),
        }
        record = await self.store.save(GLOBAL_TENANT, self.kind, spec.name, document,
                                       expected_version=expected_version, actor=actor)
        return _stored(record)

    async def get(self, name: str) -> StoredUpstream | None:
        record = await self.store.get(GLOBAL_TENANT, self.kind, name)
        return None if record is None or record.data is None else _stored(record)

    async def list(self) -> list[StoredUpstream]:
        out: list[StoredUpstream] = []
        after: str | None = None
        while True:
            page = await self.store.list(GLOBAL_TENANT, self.kind, after=after, limit=_PAGE)
            out += [_stored(r) for r in page if r.data is not None]
            if len(page) < _PAGE:
                return out
            after = page[-1].resource_id

    async def load(self, name: str) -> UpstreamSpec:
        """The full spec, secrets opened (for starting the connection only)."""
        record = await self.store.get(GLOBAL_TENANT, self.kind, name)
        if record is None or record.data is None:
            raise NotFound(f"no upstream named {name!r}")
        public = dict(record.data["spec"])
        names = sorted(public.pop("secrets", []))
        sealed = record.data.get("sealed")
        values = self.box.open(name, sealed) if sealed else {}
        if sorted(values) != names:
            raise SecretsUnavailable(f"upstream {name}: its sealed secrets do not match its registration")
        return UpstreamSpec.model_validate({**public, "secrets": values})

    async def delete(self, name: str, *, actor: str, expected_version: int | None = None) -> bool:
        """Tombstone the registration (its history stays); False if there was none."""
        current = await self.get(name)
        if current is None:
            return False
        await self.store.save(GLOBAL_TENANT, self.kind, name, None, expected_version=expected_version, actor=actor)
        return True


class UpstreamService:
    """Registrations and running upstreams kept in step: what the REST layer will call."""

    def __init__(self, registry: UpstreamRegistry, host: UpstreamHost, *, on_event: EventSink | None = None) -> None:
        self.registry = registry
        self.host = host
        self.on_event = on_event

    async def register(self, spec: UpstreamSpec, *, actor: str,
                       expected_version: int | None = None) -> tuple[StoredUpstream, UpstreamHandle]:
        stored = await self.registry.register(spec, actor=actor, expected_version=expected_version)
        handle = await self.host.start(spec, on_event=self.on_event)
        return stored, handle

    async def delete(self, name: str, *, actor: str, expected_version: int | None = None) -> bool:
        await self.host.stop(name)
        return await self.registry.delete(name, actor=actor, expected_version=expected_version)

    async def start_all(self) -> list[str]:
        """Start every registered upstream (at boot, or on a replica); returns their names."""
        started = []
        for stored in await self.registry.list():
            spec = await self.registry.load(stored.name)
            await self.host.start(spec, on_event=self.on_event)
            started.append(stored.name)
        return started
