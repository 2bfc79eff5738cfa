"""What every door is built with: the typed handles of a running gateway.

The composition root (:mod:`northstar.runtime`) builds one :class:`Services` before the
supervision tree starts, from parts it constructs in dependency order; each door (the HTTP
face, the REST app, stdio) takes it when it is built. Every field is set once and never
replaced: an actor that restarts keeps its :class:`actors.ActorRef`, so the clients here stay
valid through restarts and outages.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from northstar.common.config import Settings
from northstar.kpi.measure import Metrics
from northstar.kpi.service import KpiService
from northstar.mcp_gateway.facade.gateway import Gateway
from northstar.mcp_gateway.facade.tools_client import ToolsClient
from northstar.mcp_gateway.tools.catalog import Catalog
from northstar.mcp_gateway.tools.media_v2 import MediaServices
from northstar.mcp_gateway.transports.mcp_face import SessionRegistry
from northstar.policy.approvals import ApprovalDesk
from northstar.policy.auth import Authenticator, KeyService
from northstar.policy.firearms import FirearmsService
from northstar.policy.shared_limits import SharedLimits
from northstar.storage import Storage
from northstar.storage.actor import StoreClient
from northstar.storage.audit import GroupCommitAuditLog
from northstar.upstreams.hub import UpstreamHub
from northstar.workbench.drafts.service import DraftService
from northstar.workbench.publisher.actor import PublisherClient
from northstar.workbench.sandbox.runner import SandboxRunner


@dataclass(frozen=True, slots=True, kw_only=True)
class Services:
    """Handles to the running system, given to the doors when they are built."""

    settings: Settings
    storage: Storage  # the opened store: its audit log and versioned store, for the stdio door and CLI
    audit: GroupCommitAuditLog
    store: StoreClient  # the versioned store, by messages to the store actor
    catalog: Catalog
    firearms: FirearmsService
    keys: KeyService
    authenticator: Authenticator
    gateway: Gateway
    tools: ToolsClient
    drafts: DraftService
    kpi: KpiService
    media: MediaServices
    metrics: Metrics
    sandbox: SandboxRunner
    publisher: PublisherClient
    sessions: SessionRegistry
    health: Callable[[], dict[str, Any]]  # each subsystem up or down, tools down, upstreams: for /health
    upstreams: UpstreamHub  # federation: registered upstream MCP servers and their running units
    approvals: ApprovalDesk  # held calls waiting for a human approval
    # The limits every replica shares (Redis), or per-process only: sessions per principal here.
    limits: SharedLimits = field(default_factory=SharedLimits)
