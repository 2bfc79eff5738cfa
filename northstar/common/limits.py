"""Ranges and shapes every number and name at the edge is held to.

The REST models, the OpenAPI document and the store share these, so a value the edge lets
through is one every layer below can hold: SQLite and PostgreSQL integers are signed 64-bit,
so versions, sequence numbers and cursors live in ``[0, MAX_INT64]``; names match the same
patterns whether they arrive in a header, a path, a query or a body.
"""

from __future__ import annotations

# -- integers -------------------------------------------------------------------------------------
MAX_INT64 = 2**63 - 1
MAX_VERSION = MAX_INT64  # a resource's version (1, 2, ...); 0 means "must not exist yet"
MAX_SEQ = MAX_INT64  # an audit sequence number or cursor

# -- time -----------------------------------------------------------------------------------------
# The longest tool timeout a caller may ask for; the gateway further clamps it to its
# ``tool_timeout_max_s`` setting.
MAX_TOOL_TIMEOUT_S = 3600.0

# -- names ----------------------------------------------------------------------------------------
MAX_NAME_LEN = 128
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$"
USER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"
SCOPE_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,127}$"
FIREARM_PATTERN = r"^firearm\.[a-z0-9][a-z0-9_.-]{0,126}$"
TOOL_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# A published package's version: MAJOR.MINOR.PATCH in ASCII digits.
PACKAGE_VERSION_PATTERN = r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$"
KEY_ID_PATTERN = r"^[0-9a-f]{16}$"

# -- free text ------------------------------------------------------------------------------------
MAX_REASON_LEN = 1024
MAX_LABEL_LEN = 200
MAX_TIMESTAMP_LEN = 64
MAX_CURSOR_LEN = 512
