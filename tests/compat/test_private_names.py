"""Other libraries' private names are used in ``northstar/compat/`` and nowhere else, and each
compat module's docstring names every one it uses."""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import pytest

from tests.compat.private_names import Finding, scan_source, scan_tree

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "northstar"
COMPAT = "northstar/compat/"


def test_no_private_name_of_another_library_outside_compat() -> None:
    found = [str(f) for f in scan_tree(SOURCE, skip=(COMPAT,))]
    assert not found, (
        "other libraries' internals used outside northstar/compat/ (add a named function there, "
        "documented and tested, and call it instead):\n" + "\n".join(found)
    )


def compat_findings() -> dict[str, list[Finding]]:
    by_module: dict[str, list[Finding]] = {}
    for finding in scan_tree(SOURCE):
        if finding.path.startswith(COMPAT):
            by_module.setdefault(finding.path, []).append(finding)
    return by_module


def test_the_scan_sees_what_compat_does() -> None:
    """The scan is not blind: it finds the hooks compat is there to hold."""
    found = {f"{Path(path).stem}: {f.what}" for path, findings in compat_findings().items() for f in findings}
    for expected in ("hypercorn: GuardedTCPServer overrides the private hypercorn.trio.tcp_server.TCPServer._read_data",
                     "hypercorn: monkeypatches hypercorn.trio.run.TCPServer",
                     "mcp_sdk: monkeypatches mcp.server.sse.uuid4",
                     "mcp_sdk: uses the private name ._session_owners of another object",
                     "sse_starlette: monkeypatches sse_starlette.EventSourceResponse.DEFAULT_PING_INTERVAL"):
        assert expected in found, sorted(found)


def test_each_compat_module_names_the_internals_it_uses() -> None:
    for path, findings in compat_findings().items():
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        doc = module.__doc__ or ""
        for finding in findings:
            assert finding.name in doc, f"{path}: its docstring does not say why it uses {finding.name} ({finding})"


def test_each_compat_module_declares_its_verified_versions() -> None:
    for path in sorted((SOURCE / "compat").glob("*.py")):
        if path.stem in ("__init__", "versions"):
            continue
        module = importlib.import_module(f"northstar.compat.{path.stem}")
        verified = getattr(module, "VERIFIED", None)
        assert isinstance(verified, dict) and verified, f"{path} declares no VERIFIED versions"
        assert callable(getattr(module, "unverified", None)), f"{path} has no unverified()"


# -- the scanner itself ------------------------------------------------------------------------
FLAGGED = {
    "private import": "from hypercorn.trio.task_group import _handle",
    "private module": "from mcp.shared._context_streams import create_context_streams",
    "private module import": "import mcp.shared._compat",
    "private attribute": "def f(manager):\n    return manager._server_instances",
    "private attribute of a module": "import sse_starlette\nx = sse_starlette.sse._ping",
    "getattr with a private name": "def f(s):\n    return getattr(s, '_connection', None)",
    "module monkeypatch": "from mcp.server import sse\nsse.uuid4 = object",
    "class monkeypatch": "from sse_starlette import EventSourceResponse\nEventSourceResponse.DEFAULT_PING_INTERVAL = 3",
    "setattr monkeypatch": "import hypercorn.trio.run as r\nsetattr(r, 'TCPServer', object)",
    "nested monkeypatch": "import hypercorn\nhypercorn.trio.run.TCPServer = object",
    "override of a private hook": """
        from hypercorn.trio.tcp_server import TCPServer
        class S(TCPServer):
            async def _close(self):
                pass
    """,
    "inherited private attribute": """
        from hypercorn.trio.tcp_server import TCPServer
        class S(TCPServer):
            async def run(self):
                await self._initiate_server_close()
    """,
    "super private call": """
        from hypercorn.trio.tcp_server import TCPServer
        class S(TCPServer):
            async def close(self):
                await super()._close()
    """,
}

CLEAN = {
    "own private names": """
        class A:
            def __init__(self):
                self._x = 1
            def _y(self):
                return self._x
    """,
    "own subclass of a library class": """
        from hypercorn.trio.tcp_server import TCPServer
        class S(TCPServer):
            def __init__(self, *args):
                super().__init__(*args)
                self._mine = 1
            def _helper(self):
                return self._mine
    """,
    "northstar's own private names": "from northstar.mcp_gateway.protocol.jsonrpc import _valid_id\n_valid_id(1)",
    "dunder names": "import trio\nx = trio.__version__\ny = object().__class__",
    "attributes of an instance": "from quart import g\ng.ctx = 1",
    "attributes of a local object": "from hypercorn.config import Config\nc = Config()\nc.bind = ['x']",
}


@pytest.mark.parametrize("source", FLAGGED.values(), ids=list(FLAGGED))
def test_the_scanner_flags(source: str) -> None:
    assert scan_source(textwrap.dedent(source)), source


@pytest.mark.parametrize("source", CLEAN.values(), ids=list(CLEAN))
def test_the_scanner_leaves_alone(source: str) -> None:
    assert not scan_source(textwrap.dedent(source)), source
