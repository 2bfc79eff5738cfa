"""KPI bindings: targets on tool metrics, stored per tenant in the versioned store."""

from .models import KpiBinding as KpiBinding
from .service import KpiService as KpiService

__all__ = ["KpiBinding", "KpiService"]
