"""The resource kinds stored in the versioned store: one constant per kind, one place to look."""

from __future__ import annotations

from typing import Final

WORKBENCH_DRAFTS: Final = "workbench_drafts"
KPI_BINDINGS: Final = "kpi_bindings"
FIREARM_BINDINGS: Final = "firearm_bindings"
FIREARM_GRANTS: Final = "firearm_grants"
APPROVAL_RULES: Final = "approval_rules"  # scopes whose calls wait for a human approval
APPROVALS: Final = "approvals"  # held calls and their approval state (one record per approval id)
COMPONENT_REGISTRY: Final = "component_registry"
ACTIVATION_OVERLAYS: Final = "activation_overlays"
MEDIA_ASSETS: Final = "media_assets"
API_KEYS: Final = "api_keys"
UPSTREAMS: Final = "upstreams"  # registered upstream MCP servers (secrets sealed)
UPSTREAM_DRIFT: Final = "upstream_drift"  # the drifted tools' pins as a replica last listed them
BOOTSTRAP: Final = "bootstrap"

ALL_KINDS: Final[frozenset[str]] = frozenset(
    {
        WORKBENCH_DRAFTS,
        KPI_BINDINGS,
        FIREARM_BINDINGS,
        FIREARM_GRANTS,
        APPROVAL_RULES,
        APPROVALS,
        COMPONENT_REGISTRY,
        ACTIVATION_OVERLAYS,
        MEDIA_ASSETS,
        API_KEYS,
        UPSTREAMS,
        UPSTREAM_DRIFT,
        BOOTSTRAP,
    }
)
