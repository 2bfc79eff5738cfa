"""The composition root: builds the gateway's supervision tree (see ``root.py``)."""

from northstar.mcp_gateway.transports.services import Services as Services
from northstar.runtime.root import Runtime as Runtime

__all__ = ["Runtime", "Services"]
