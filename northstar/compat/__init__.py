"""Other libraries' internals, in one pinned place.

northstar depends on a few names its libraries do not publish: methods it overrides, module
globals it replaces, attributes it reads. Each library has one module here, and nothing else
in northstar touches such a name (``tests/compat/test_private_names.py`` scans the source):

* :mod:`northstar.compat.hypercorn`: the per-connection server of Hypercorn's trio worker.
* :mod:`northstar.compat.mcp_sdk`: the MCP SDK's session ids, session table and connections,
  and the bytes of its stdio answers.
* :mod:`northstar.compat.sse_starlette`: the keep-alive ping interval of the SDK's SSE streams.

Each module declares the versions it was verified against (``VERIFIED``) and says, for every
private name it uses, why no public way exists. ``pyproject.toml`` bounds those libraries to
the verified range, so an upgrade fails at install, and ``tests/compat`` exercises every hook,
so a behaviour change fails the tests, not production. Upgrading one of them: raise the bound,
run ``tests/compat``, fix what they name, then update ``VERIFIED``.

Only the doors (``northstar.mcp_gateway.transports``) and ``northstar.mcp_gateway.server``
import this package; it imports nothing else of northstar (import-linter contracts). This
``__init__`` imports nothing, so the stdio door can ask for the SDK's verified version
before the SDK is loaded.
"""
