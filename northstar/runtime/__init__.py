"""The composition root: builds the gateway's supervision tree (see ``root.py``)."""

from northstar.runtime.root import Runtime as Runtime
from northstar.runtime.root import Services as Services

__all__ = ["Runtime", "Services"]
