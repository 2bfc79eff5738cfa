"""The REST API's answers, as documented in the OpenAPI document.

These models describe; handlers build plain dicts. They name the fields a client may rely
on and allow more (``extra="allow"``), so an added field is not a breaking change. The
fuzz suite checks every answer of a live gateway against them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from northstar.kpi.models import Comparison, Metric


class _Out(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    """The canonical error: the same fields on every REST error and in MCP error data."""

    model_config = ConfigDict(extra="forbid", title="ErrorBody")

    code: str = Field(description="stable machine code, e.g. validation_error, firearm_required")
    message: str
    http_status: int = Field(ge=400, le=599)
    request_id: str = Field(description="also in the X-Request-Id header")
    details: dict[str, Any] = Field(description="validation_error: errors[] of {path (JSON pointer), message, in?}")


class ErrorEnvelope(BaseModel):
    model_config = ConfigDict(extra="forbid", title="ErrorEnvelope")

    error: ErrorBody


class Health(_Out):
    status: Literal["ok", "degraded"]
    version: str
    store: Literal["ok", "unavailable"]
    audit: Literal["ok", "unavailable"]
    tools: int = Field(ge=0)


class OAuthMetadata(_Out):
    resource: str
    authorization_servers: list[str]
    bearer_methods_supported: list[str]
    scopes_supported: list[str]


class RuntimeCounts(_Out):
    tasks: int = Field(ge=0)
    audit: dict[str, Any] | None = None
    sessions: int | None = None
    sse_streams: int | None = None
    sessions_opening: int | None = None


class CallPhases(_Out):
    keep: int = Field(ge=1, description="the most recent calls kept per door and kind")
    doors: dict[str, Any] = Field(description="door (http: the fast path; other: every other door) -> kind "
                                              "(local, upstream) -> calls (ever) and phases: interval -> "
                                              "n, p50_us, p90_us, p99_us")


class ToolInventory(_Out):
    tools: list[dict[str, Any]] = Field(description="tool_id, title, description, version, builtin, package_hash, "
                                                    "scopes[] with their firearm and operations")


class ToolCallResult(_Out):
    tool: str | None
    output: Any = Field(description="the tool's output; for an upstream MCP server's tool its structuredContent")
    audit_seq: int | None
    request_id: str
    content: list[dict[str, Any]] | None = Field(default=None, description="upstream tools: the content blocks")
    is_error: bool | None = Field(default=None, description="upstream tools: the upstream's own isError")
    upstream: str | None = Field(default=None, description="upstream tools: the upstream's name")


class Draft(_Out):
    draft_id: str
    version: int = Field(ge=1)
    spec: dict[str, Any]
    schema_version: int
    created_at: str
    actor: str | None


class DraftList(_Out):
    drafts: list[Draft]
    next_after: str | None


class DraftHistory(_Out):
    draft_id: str
    versions: list[Draft]


class KpiBindingOut(_Out):
    tool_name: str
    kpi_id: str
    metric: Metric
    target: float
    comparison: Comparison
    window: str
    owner: str
    description: str | None = None


class KpiBindings(_Out):
    tool_name: str
    bindings: list[KpiBindingOut]


class KpiReplaced(KpiBindings):
    removed: list[str] = Field(description="kpi_ids that were bound before and are not any more")


class KpiDeleted(_Out):
    tool_name: str
    kpi_id: str
    deleted: bool


class KpiStatusEntry(_Out):
    kpi_id: str
    metric: Metric
    target: float
    comparison: Comparison
    window: str
    value: float | None
    status: Literal["ok", "breach", "no_data"]
    samples: int = Field(ge=0)
    series: list[float | None] = Field(default_factory=list, description="the metric over equal slices of the "
                                       "window, oldest first (null: no call in that slice)")
    bucket_s: float | None = Field(default=None, description="the length of one slice, in seconds")


class KpiStatus(_Out):
    tool_name: str
    kpis: list[KpiStatusEntry]


class Binding(_Out):
    scope: str
    firearm: str | None


class Bindings(_Out):
    bindings: list[Binding]


class AuditedBinding(Binding):
    audit_seq: int


class Grant(_Out):
    tenant: str
    user: str
    firearm: str
    granted_by: str | None
    reason: str | None
    granted_at: str
    expires_at: str | None = None


class GrantEntry(Grant):
    active: bool


class Grants(_Out):
    grants: list[GrantEntry]


class AuditedGrant(Grant):
    audit_seq: int


class Revoked(_Out):
    tenant: str
    user: str
    firearm: str
    revoked: bool
    audit_seq: int


class AuditEntry(_Out):
    """An admin sees ``hash``, ``prev_hash`` and ``tenant_seq`` beside the global ``seq``; a
    non-admin sees only its own records, ``seq`` being its tenant's number and no hashes."""

    seq: int
    ts: str
    hash: str | None = None
    prev_hash: str | None = None
    tenant_seq: int | None = None


class AuditPage(_Out):
    entries: list[AuditEntry]
    next_after_seq: int | None


class AuditReport(_Out):
    ok: bool
    count: int
    first_bad_seq: int | None
    reason: str | None
    sealed: bool = Field(description="the head's MAC was checked with the audit key and holds")
    anchors: int = Field(description="keyed anchors the chain was matched against")
    anchored_seq: int | None = Field(description="the newest anchor; later entries rest on the sealed head alone")


class ApiKey(_Out):
    key_id: str
    tenant: str
    user: str
    admin: bool
    created_at: str
    label: str | None
    provenance: str | None = Field(default=None, description="how the minting request was authenticated: "
                                   "bootstrap, cli, api_key, oauth or adopted")
    minted_by: str | None = None
    confirmed: bool = Field(default=True, description="false: an admin key that is not honoured until adopted")


class ApiKeys(_Out):
    keys: list[ApiKey] = Field(description="every live key, without its secret (that is shown once, at creation)")


class NewApiKey(ApiKey):
    key: str = Field(description="nsk_...: shown once, stored hashed")


class KeyRevoked(_Out):
    key_id: str
    revoked: bool


class SandboxResult(_Out):
    ok: bool
    output: dict[str, Any] | None
    error: dict[str, Any] | None
    trace: list[dict[str, Any]]
    audit_seq: int | None
    tool: str | None
    request_id: str | None
    sandbox: bool
    upstream: dict[str, Any] | None = Field(default=None, description="upstream tools: contacted (live, sandbox "
                                                                      "or none), name, tool, result")


class Published(_Out):
    package: dict[str, Any] = Field(description="id, tool_id, version, content_hash")
    overlay: dict[str, Any] = Field(description="id, tool_id, version, package_version, package_hash, active")
    audit_seq: int | None = None


class Packages(_Out):
    tool_id: str
    packages: list[dict[str, Any]]


class Package(_Out):
    tool_id: str
    version: str
    content_hash: str


class Overlays(_Out):
    tool_id: str
    current: dict[str, Any]
    history: list[dict[str, Any]]


class OverlayChange(_Out):
    overlay: dict[str, Any]
    audit_seq: int | None = None


class Approval(_Out):
    """A held call's approval: who called what, with exactly which arguments, and its state."""

    id: str
    state: Literal["pending", "approved", "rejected", "expired", "consumed"]
    tenant: str
    user: str
    principal: str
    tool: str | None
    scope: str | None
    operation: str | None
    approver_firearm: str
    arguments: dict[str, Any]
    args_hash: str = Field(description="sha256 of the arguments' canonical JSON (sorted keys, no spaces)")
    created_at: str
    expires_at: str
    decided_by: str | None = None
    decided_at: str | None = None
    reason: str | None = None
    consumed_at: str | None = None
    result_kept: bool = Field(False, description="the call ran while its caller was gone and its outcome is kept: "
                                                 "the first re-issue of the same call (same caller, tool and "
                                                 "arguments) before expires_at gets it without running the call "
                                                 "again (the outcome itself is never shown here)")


class DecidedApproval(Approval):
    audit_seq: int


class Approvals(_Out):
    approvals: list[Approval]


class ApprovalRule(_Out):
    scope: str
    approval: Literal["required"]
    approver_firearm: str


class AuditedApprovalRule(_Out):
    scope: str
    approval: Literal["required"] | None
    approver_firearm: str | None
    audit_seq: int


class ApprovalRules(_Out):
    rules: list[ApprovalRule]
