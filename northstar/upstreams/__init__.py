"""Federation: any MCP server behind northstar's governance.

An admin registers an upstream MCP server (stdio command, Streamable HTTP URL or legacy SSE
URL, with headers, env and sealed secrets); northstar connects with the SDK's own client,
lists the upstream's tools and pins each definition; a workbench draft wrapping them
(``"wraps": "upstream:<name>/<tool>"``) is generated in one step. This package is the
self-contained core; the catalogue, gate chain, workbench and REST routes build on it.

Layers, as everywhere in northstar:

* pure core: :mod:`.spec` (the registration model), :mod:`.pins` (definitions, hashes,
  drift, lint), :mod:`.draft` (draft generation), :mod:`.state` (backoff, breaker, status),
  :mod:`.results` (size cap, output schema, redaction), :mod:`.secrets` (sealing, redaction);
* frozen messages: :mod:`.messages`;
* thin async shell: :mod:`.transport` (SDK transports, stderr), :mod:`.session` (the
  connection task and the call path), :mod:`.calls` (pin check, progress relay, failure
  descriptions), :mod:`.actor`, :mod:`.host` (supervised units),
  :mod:`.registry` (the versioned store).

Errors (``northstar.common.errors``): ``upstream_unavailable`` (503), ``upstream_timeout``
(504), ``upstream_error`` (502, the upstream's own text, scrubbed), ``upstream_drift`` (409).
"""

from northstar.common.errors import SecretsUnavailable as SecretsUnavailable
from northstar.upstreams.actor import UpstreamActor as UpstreamActor
from northstar.upstreams.draft import GeneratedDraft as GeneratedDraft
from northstar.upstreams.draft import generate_draft as generate_draft
from northstar.upstreams.draft import operation_name as operation_name
from northstar.upstreams.draft import parse_wraps as parse_wraps
from northstar.upstreams.draft import wraps_of as wraps_of
from northstar.upstreams.host import UpstreamHandle as UpstreamHandle
from northstar.upstreams.host import UpstreamHost as UpstreamHost
from northstar.upstreams.messages import Approve as Approve
from northstar.upstreams.messages import Call as Call
from northstar.upstreams.messages import CallReply as CallReply
from northstar.upstreams.messages import GetStatus as GetStatus
from northstar.upstreams.messages import ListTools as ListTools
from northstar.upstreams.messages import ProgressFn as ProgressFn
from northstar.upstreams.messages import Refresh as Refresh
from northstar.upstreams.messages import ToolsChanged as ToolsChanged
from northstar.upstreams.messages import ToolsReply as ToolsReply
from northstar.upstreams.pins import Drift as Drift
from northstar.upstreams.pins import UpstreamTool as UpstreamTool
from northstar.upstreams.pins import drift as drift
from northstar.upstreams.pins import lint_tools as lint_tools
from northstar.upstreams.pins import pin_of as pin_of
from northstar.upstreams.registry import StoredUpstream as StoredUpstream
from northstar.upstreams.registry import UpstreamRegistry as UpstreamRegistry
from northstar.upstreams.registry import UpstreamService as UpstreamService
from northstar.upstreams.secrets import Redactor as Redactor
from northstar.upstreams.secrets import SecretBox as SecretBox
from northstar.upstreams.secrets import key_path as key_path
from northstar.upstreams.session import UpstreamSession as UpstreamSession
from northstar.upstreams.spec import UpstreamSpec as UpstreamSpec
from northstar.upstreams.spec import parse_spec as parse_spec
from northstar.upstreams.state import UpstreamStatus as UpstreamStatus

__all__ = [
    "Approve",
    "Call",
    "CallReply",
    "Drift",
    "GeneratedDraft",
    "GetStatus",
    "ListTools",
    "ProgressFn",
    "Redactor",
    "Refresh",
    "SecretBox",
    "SecretsUnavailable",
    "StoredUpstream",
    "ToolsChanged",
    "ToolsReply",
    "UpstreamActor",
    "UpstreamHandle",
    "UpstreamHost",
    "UpstreamRegistry",
    "UpstreamService",
    "UpstreamSession",
    "UpstreamSpec",
    "UpstreamStatus",
    "UpstreamTool",
    "drift",
    "generate_draft",
    "key_path",
    "lint_tools",
    "operation_name",
    "parse_spec",
    "parse_wraps",
    "pin_of",
    "wraps_of",
]
