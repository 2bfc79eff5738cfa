"""The REST API's request models: path parameters, query parameters and bodies.

Each route parses its input with these (:mod:`northstar.mcp_gateway.transports.rest.api`) and the
OpenAPI document is generated from them, so what the document promises is what is enforced.
Every number has a range, every string a length, and names that identify a tenant, user,
scope or firearm carry the same pattern as everywhere else (:mod:`northstar.common.limits`).
Bodies forbid unknown keys: a misspelt or misplaced field is an error, never silently dropped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag

from northstar.common import limits as L
from northstar.common import phases
from northstar.kpi.models import KPI_ID_PATTERN, TOOL_NAME_PATTERN, WINDOW_PATTERN, Comparison, Metric
from northstar.mcp_gateway.transports.rest.api import DIGITS
from northstar.policy.approval_core import APPROVAL_ID_PATTERN
from northstar.workbench.drafts.service import DRAFT_ID_PATTERN


def _parse_moment(value: str) -> tuple[datetime, bool]:
    """(moment, given as is); RFC 3339 also allows a lowercase "t" and "z"."""
    try:
        return datetime.fromisoformat(value), True
    except ValueError:
        return datetime.fromisoformat(value.upper().replace("Z", "+00:00")), False


def _iso_timestamp(value: str) -> str:
    """An ISO-8601 timestamp that UTC can hold; passed on as given when the services parse it as is."""
    try:
        moment, as_is = _parse_moment(value)
        utc = moment.astimezone(UTC) if moment.tzinfo is not None else moment
    except (ValueError, OverflowError):
        raise ValueError("must be an ISO-8601 timestamp between years 1 and 9999 UTC, "
                         "such as 2026-01-31T12:00:00Z") from None
    return value if as_is else utc.isoformat()


IsoTimestamp = Annotated[str, Field(min_length=1, max_length=L.MAX_TIMESTAMP_LEN, json_schema_extra={
    "format": "date-time"}), AfterValidator(_iso_timestamp)]
Tenant = Annotated[str, Field(pattern=L.TENANT_PATTERN, max_length=L.MAX_NAME_LEN, examples=["acme"])]
User = Annotated[str, Field(pattern=L.USER_PATTERN, max_length=L.MAX_NAME_LEN, examples=["alice"])]
Scope = Annotated[str, Field(pattern=L.SCOPE_PATTERN, max_length=L.MAX_NAME_LEN, examples=["media.write"])]
Firearm = Annotated[str, Field(pattern=L.FIREARM_PATTERN, max_length=L.MAX_NAME_LEN,
                                examples=["firearm.media.write"])]
ToolName = Annotated[str, Field(pattern=TOOL_NAME_PATTERN, max_length=L.MAX_NAME_LEN,
                                examples=["echo.ping", "media_v2__list_assets"],
                                description="canonical (media_v2.create_asset) or wire (media_v2__create_asset)")]
ToolId = Annotated[str, Field(pattern=L.TOOL_ID_PATTERN, max_length=64, examples=["media_v2"])]
DraftId = Annotated[str, Field(pattern=DRAFT_ID_PATTERN, max_length=64, examples=["notes"])]
KpiId = Annotated[str, Field(pattern=KPI_ID_PATTERN, max_length=64, examples=["p95"])]
PackageVersion = Annotated[str, Field(pattern=L.PACKAGE_VERSION_PATTERN, max_length=32, examples=["1.0.0"],
                                      description="MAJOR.MINOR.PATCH")]
Version = Annotated[int, Field(ge=1, le=L.MAX_VERSION, description="a version number, 1 for the first")]
Arguments = Annotated[dict[str, Any], Field(description="the tool's arguments (its inputSchema)",
                                             examples=[{"message": "hello"}])]


class _Params(BaseModel):
    """Path and query parameters: strings on the wire, unknown ones refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- path parameters ------------------------------------------------------------------------------
class ToolNamePath(_Params):
    name: ToolName


class DraftPath(_Params):
    draft_id: DraftId


class DraftVersionPath(_Params):
    draft_id: DraftId
    version: Annotated[int, Field(ge=1, le=L.MAX_VERSION), DIGITS]


class KpiToolPath(_Params):
    tool_name: ToolName


class KpiPath(_Params):
    tool_name: ToolName
    kpi_id: KpiId


class ScopePath(_Params):
    scope: Scope


class GrantPath(_Params):
    tenant: Tenant
    user: User
    firearm: Firearm


class KeyPath(_Params):
    key_id: Annotated[str, Field(pattern=L.KEY_ID_PATTERN, max_length=16, examples=["0123456789abcdef"])]


class ToolIdPath(_Params):
    tool_id: ToolId


class PackagePath(_Params):
    tool_id: ToolId
    version: PackageVersion


# -- query parameters -----------------------------------------------------------------------------
class DraftListQuery(_Params):
    after: DraftId | None = Field(default=None, description="the last draft_id of the previous page")
    limit: Annotated[int, Field(ge=1, le=500), DIGITS] = 100


class GrantsQuery(_Params):
    tenant: Tenant | None = Field(default=None, description="admins only: that tenant's grants (else all)")


class AuditQuery(_Params):
    tenant: Tenant | None = Field(default=None, description="admins only: that tenant's records (else all)")
    tool: ToolName | None = None
    user: User | None = None
    decision: Literal["allow", "deny"] | None = None
    since: IsoTimestamp | None = None
    until: IsoTimestamp | None = None
    after_seq: Annotated[int, Field(ge=0, le=L.MAX_SEQ), DIGITS] | None = Field(
        default=None, description="the next_after_seq of the previous page")
    limit: Annotated[int, Field(ge=1, le=1000), DIGITS] = 100


class AuditExportQuery(_Params):
    since: Annotated[int, Field(ge=0, le=L.MAX_SEQ), DIGITS] = Field(
        default=0, description="only the entries after this seq; to resume, the last seq received")
    format: Literal["jsonl"] = Field(default="jsonl", description="one JSON object a line (the only format)")


# -- bodies ---------------------------------------------------------------------------------------
class ToolCallBody(_Body):
    arguments: Arguments = Field(default_factory=dict)
    timeout_s: float | None = Field(default=None, gt=0, le=L.MAX_TOOL_TIMEOUT_S, allow_inf_nan=False,
                                    description="at most this long (the gateway's tool_timeout_max_s caps it)")


class DraftBody(_Body):
    spec: dict[str, Any] = Field(description="the tool definition (see workbench.md)")
    expected_version: int | None = Field(default=None, ge=0, le=L.MAX_VERSION,
                                         description="the version being replaced; 0: must not exist yet")


class KpiTarget(_Body):
    """A KPI binding without its names (they are in the path)."""

    metric: Metric
    target: float = Field(ge=0, allow_inf_nan=False, description="an error_rate target is between 0 and 1")
    comparison: Comparison | None = Field(default=None, description="default: gte for calls, lte otherwise")
    window: str = Field(default="5m", pattern=WINDOW_PATTERN, max_length=8, description="30s, 5m, 1h, 7d (<= 90d)")
    owner: str = Field(min_length=1, max_length=128)
    description: str | None = Field(default=None, max_length=2048)


class KpiBindingBody(KpiTarget):
    kpi_id: KpiId


class KpiBindingsBody(_Body):
    bindings: list[KpiBindingBody] = Field(min_length=1, max_length=100)


def _kpi_shape(value: Any) -> str:
    return "many" if isinstance(value, dict) and "bindings" in value else "one"


class KpiPutBody(RootModel[Annotated[Annotated[KpiBindingsBody, Tag("many")] | Annotated[KpiBindingBody, Tag("one")],
                                     Discriminator(_kpi_shape)]]):
    """One binding, or ``{"bindings": [...]}``: the tool's whole set."""

    union_tags: ClassVar[frozenset[str]] = frozenset({"many", "one"})

    def items(self) -> list[KpiBindingBody]:
        root = self.root
        return list(root.bindings) if isinstance(root, KpiBindingsBody) else [root]


class BindBody(_Body):
    firearm: Firearm


class GrantBody(_Body):
    tenant: Tenant
    user: User
    firearm: Firearm
    reason: str | None = Field(default=None, max_length=L.MAX_REASON_LEN)
    expires_at: IsoTimestamp | None = None


class KeyBody(_Body):
    tenant: Tenant
    user: User
    admin: bool = False
    label: str | None = Field(default=None, max_length=L.MAX_LABEL_LEN)


class MockPolicyBody(_Body):
    grants: list[Firearm] = Field(default_factory=list, max_length=100, description="firearms to pretend granted")
    bindings: dict[Scope, Firearm | None] = Field(default_factory=dict, max_length=100,
                                                  description="scope -> firearm (null: open)")
    force_deny: str | None = Field(default=None, max_length=L.MAX_REASON_LEN)
    replace_grants: bool = False
    approval: Literal["approved", "rejected", "pending"] | None = Field(
        default=None, description="simulate a human approval (the sandbox never holds a call): the call runs "
                                  "(approved), is refused approval_rejected, or would be held (pending)")


class SandboxBody(_Body):
    tool: ToolName
    arguments: Arguments = Field(default_factory=dict)
    mock_policy: MockPolicyBody | None = None
    draft_id: DraftId | None = None
    draft_version: Version | None = None


class PublishBody(_Body):
    version: Version | None = Field(default=None, description="the draft version to publish (default: the latest)")


class RollbackBody(_Body):
    version: PackageVersion


# -- approvals --------------------------------------------------------------------------------------
ApprovalId = Annotated[str, Field(pattern=APPROVAL_ID_PATTERN, max_length=40,
                                  examples=["ap_0123456789abcdef_0123456789abcdef"])]


class ApprovalPath(_Params):
    approval_id: ApprovalId


class PhasesQuery(_Params):
    recent: int | None = Field(default=None, ge=1, le=phases.DEFAULT_KEEP,
                               description="summarise only the most recent this many calls of each door and kind")


class ApprovalsQuery(_Params):
    state: Literal["pending", "approved", "rejected", "expired", "consumed"] | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class DecideBody(_Body):
    reason: str | None = Field(default=None, max_length=L.MAX_REASON_LEN)


class ApprovalRuleBody(_Body):
    approver_firearm: Firearm | None = Field(default=None, description="who may approve: holders of this "
                                                                       "firearm (default firearm.approve)")
