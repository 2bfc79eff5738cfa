"""Versioned drafts of tool definitions, per tenant, on the versioned store."""

from .service import DRAFT_ID_PATTERN as DRAFT_ID_PATTERN
from .service import MAX_SPEC_BYTES as MAX_SPEC_BYTES
from .service import DraftRecord as DraftRecord
from .service import DraftService as DraftService

__all__ = ["DRAFT_ID_PATTERN", "MAX_SPEC_BYTES", "DraftRecord", "DraftService"]
