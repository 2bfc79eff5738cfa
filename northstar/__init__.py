"""northstar: a governed MCP gateway and tool workbench."""

__version__ = "0.1.0"
