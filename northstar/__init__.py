"""northstar: a governed MCP gateway and tool workbench.

``__version__`` is the one place the version is written: the package metadata takes it from
here (``pyproject.toml``: ``[tool.setuptools.dynamic]``), and ``northstar --version``,
``/health``, the OpenAPI document and the MCP ``serverInfo`` all read it.
"""

__version__ = "0.1.0"
