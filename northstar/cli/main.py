"""The ``northstar`` command line.

    northstar serve [--host H] [--port P] [--auth-mode api_key|headers] [--data-dir D] [--store-url URL]
    northstar stdio [--tenant T] [--user U] [--mode M] [--data-dir D] [--store-url URL]
    northstar firearms bind SCOPE FIREARM | unbind SCOPE | grant TENANT USER FIREARM
                       [--expires-at TS] [--reason R] | revoke TENANT USER FIREARM | list
    northstar keys create --tenant T --user U [--admin] | list | revoke KEY_ID | adopt KEY_ID
    northstar audit tail [-n N] | verify | export [--since SEQ] [--format jsonl]
    northstar config show [--format text|json]
    northstar drafts ... / sandbox run ... / publish ...  (see ``northstar <cmd> --help``)
    northstar --version

Every command takes ``--config PATH`` (a TOML settings file; see
:mod:`northstar.common.config_file`). Administrative commands work on the store directly (no
running gateway needed); a running gateway picks the change up within its policy refresh
interval (1 s). Exit codes: 0 success, 1 operation failed, 2 usage error (a bad setting too).
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from northstar import __version__
from northstar.common.config import Settings
from northstar.common.config_file import ConfigError, LoadedSettings, load_settings

if TYPE_CHECKING:
    from northstar.common.identity import RequestContext
    from northstar.mcp_gateway.transports.stdio.handshake import FirstLine
    from northstar.mcp_gateway.transports.stdio.list_snapshot import ListSnapshots


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="a TOML settings file (default: $NORTHSTAR_CONFIG, else ./northstar.toml if there is one)")
    p.add_argument("--data-dir", help="directory for the embedded store and blobs (default ./data)")
    p.add_argument("--store-url", help="sqlite:///path.db or postgresql://... (default: SQLite in data dir)")
    p.add_argument("--log-level", default=None)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="northstar", description="A governed MCP gateway and tool workbench")
    ap.add_argument("--version", action="version", version=f"northstar {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve MCP (Streamable HTTP, SSE) and the REST API over HTTP")
    serve_flags(serve)
    _common(serve)
    serve.set_defaults(handler=cmd_serve)
    stdio = sub.add_parser("stdio", help="serve MCP over stdio (for Claude Desktop and other local clients)")
    stdio.add_argument("--tenant")
    stdio.add_argument("--user")
    stdio.add_argument("--mode")
    _common(stdio)
    stdio.set_defaults(handler=cmd_stdio)
    from northstar.cli import admin as cli_admin

    cli_admin.add_parsers(sub, _common)
    from northstar.cli import workbench as cli_workbench

    cli_workbench.add_parsers(sub, _common)
    from northstar.cli import approvals as cli_approvals

    cli_approvals.add_parsers(sub, _common)
    from northstar.cli import upstreams as cli_upstreams

    cli_upstreams.add_parsers(sub, _common)
    from northstar.cli import config as cli_config

    cli_config.add_parsers(sub, _common, serve_flags)
    return ap


def serve_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--auth-mode", choices=("api_key", "headers"), default=None,
                   help="api_key (default): a credential on every request; headers: trust X-Tenant-Id / "
                        "X-User-Id as sent (local development only; never admin)")


#: The settings a command-line option sets (each flag's ``dest`` is the setting's name).
FLAG_SETTINGS = ("host", "port", "data_dir", "store_url", "log_level", "auth_mode")


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings for ``args`` (flag > env > file > default); raises ConfigError."""
    return load_args(args).settings


def load_args(args: argparse.Namespace) -> LoadedSettings:
    flags = {name: getattr(args, name, None) for name in FLAG_SETTINGS}
    return load_settings(flags, config=getattr(args, "config", None))


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.loaded = load_args(args)
    except ConfigError as exc:
        sys.stderr.write(f"northstar: {exc}\n")
        return 2
    settings: Settings = args.loaded.settings
    from northstar.common import logs

    logs.configure(settings.log_level, settings.log_format)
    if getattr(args, "makes_data_dir", True):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    from northstar.storage.audit_seal import AuditSealError

    try:
        return handler(settings, args)
    except KeyboardInterrupt:
        return 0
    except (AuditSealError, ConfigError, BaseExceptionGroup) as exc:
        # The store cannot be opened with this audit key, or the OTEL_* variables ask for an
        # exporter that is not installed: a configuration problem, said plainly.
        plain = (AuditSealError, ConfigError)
        sealed: BaseException | None = exc if isinstance(exc, plain) else exc.split(plain)[0]
        if sealed is None:
            raise
        while isinstance(sealed, BaseExceptionGroup):
            sealed = sealed.exceptions[0]
        sys.stderr.write(f"northstar: {sealed}\n")
        return 1


# -- serve ----------------------------------------------------------------------------------
async def watch_signals(shutdown: trio.Event, cancel: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if shutdown.is_set():
                cancel.cancel()  # a second signal: stop waiting for graceful shutdown
                return
            shutdown.set()


def freeze_startup_heap() -> None:
    """Move everything allocated at start-up out of the cyclic collector's sight.

    The modules, schemas and actors built at start are never garbage, yet a full collection
    walks all of them: 60-80 ms here, a stall every few thousand requests that set the p99
    latency. ``gc.freeze`` parks them in the permanent generation, so later collections only
    walk what requests allocate (a full one drops to about 3 ms).
    """
    import gc

    gc.collect()
    gc.freeze()


async def serve_main(settings: Settings) -> None:
    import logging

    import actors
    from northstar.mcp_gateway.server import HttpFace, serve_http
    from northstar.mcp_gateway.transports.services import Services
    from northstar.policy.bootstrap import announce_identity
    from northstar.runtime import Runtime

    log = logging.getLogger("northstar")
    rt = Runtime(settings)
    stopped = trio.Event()
    announced = False

    def http_front(services: Services) -> actors.ChildSpec:
        async def start_http(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal announced
            if not announced:  # before the port opens: the admin key exists by the time anyone can call
                await announce_identity(settings, services.keys, audit=services.audit)
                announced = True
            face = HttpFace(services)
            bind = f"[{settings.host}]:{settings.port}" if ":" in settings.host else f"{settings.host}:{settings.port}"
            try:
                await serve_http(face, bind, rt.shutdown, task_status=task_status)
            finally:
                stopped.set()

        return actors.ChildSpec("http", start_http, restart=actors.Restart.TRANSIENT,
                                shutdown_timeout=settings.shutdown_grace_s)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals, rt.shutdown, nursery.cancel_scope)
        async with rt.running(http_front):
            assert rt.root is not None
            bound = rt.root.get("http")
            urls = [b if "://" in b else f"http://{b}" for b in bound]  # type: ignore[attr-defined]
            freeze_startup_heap()
            log.info("listening", extra={"urls": urls, "store": settings.resolved_store_url()})
            await rt.shutdown.wait()
            log.info("shutting down")
            with trio.move_on_after(settings.shutdown_grace_s + 1):
                await stopped.wait()
        nursery.cancel_scope.cancel()
    log.info("stopped")


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    if args.loaded.file is not None:
        import logging

        logging.getLogger("northstar").info("config file", extra={"path": str(args.loaded.file)})
    try:
        trio.run(serve_main, settings)
    except BaseException as exc:  # a failed start arrives wrapped in supervisors and nurseries
        problem = listen_problem(exc, settings.host, settings.port)
        if problem is None:
            raise
        print(f"northstar: {problem}", file=sys.stderr)
        return 1
    return 0


def listen_problem(exc: BaseException, host: str, port: int) -> str | None:
    """One line for a listening socket that could not be bound, found anywhere in ``exc``
    (exception groups, causes, contexts); None when the failure is something else."""
    stack, seen = [exc], set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.EADDRINUSE:
            return f"port {port} is in use on {host}: stop what uses it, or pass --port (0 picks a free one)"
        if isinstance(current, OSError) and current.errno == errno.EADDRNOTAVAIL:
            return f"cannot listen on {host}:{port}: that address is not on this machine (see --host)"
        if isinstance(current, BaseExceptionGroup):
            stack.extend(current.exceptions)
        stack.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return None


# -- stdio ----------------------------------------------------------------------------------
async def stdio_main(settings: Settings, identity: RequestContext, first: FirstLine | None = None,
                     snapshots: ListSnapshots | None = None) -> None:
    import actors
    from northstar.mcp_gateway.transports.mcp_face import McpFace
    from northstar.mcp_gateway.transports.services import Services
    from northstar.runtime import Runtime

    rt = Runtime(settings)

    def stdio_front(services: Services) -> actors.ChildSpec:
        async def start_stdio(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            import sys

            import anyio
            from mcp.server.stdio import stdio_server

            from northstar.mcp_gateway.transports.stdio.lines import (
                AnswerMalformedLines,
                CheckedLines,
                KeepToolsList,
                SkipEarlyAnswer,
            )

            face = McpFace(services.gateway, ready=rt.ready, stdio_context=identity, registry=services.sessions)
            lines = CheckedLines(sys.stdin.buffer, settings.max_body_bytes, max_json_depth=settings.max_json_depth,
                                 max_json_items=settings.max_json_items,
                                 already_read=b"" if first is None else first.read)
            try:
                async with stdio_server(stdin=anyio.wrap_file(lines)) as (read, write):  # type: ignore[arg-type]
                    task_status.started(face)
                    if first is not None and first.answer is not None and first.rpc_id is not None:
                        write = SkipEarlyAnswer(write, first.rpc_id, first.answer)
                    keep = None
                    if snapshots is not None:
                        keep = write = KeepToolsList(
                            write, snapshots, protocol_version=None if first is None else first.protocol_version,
                            early_id=None if first is None else first.list_id,
                            early_result=None if first is None else first.list_result)
                    await face.server.run(AnswerMalformedLines(read, write, lines, keep), write, face.init_options())
            finally:
                rt.shutdown.set()

        return actors.ChildSpec("stdio", start_stdio, restart=actors.Restart.TEMPORARY)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_signals, rt.shutdown, nursery.cancel_scope)
        async with rt.running(stdio_front, front_first=True):
            await rt.shutdown.wait()
        nursery.cancel_scope.cancel()


def stdio_list_snapshots(settings: Settings, identity: RequestContext) -> ListSnapshots:
    """Where the stdio door keeps this principal's last tools/list answer (see list_snapshot)."""
    from northstar.mcp_gateway.transports.stdio.list_snapshot import for_principal

    return for_principal(settings.data_dir / "stdio", identity.tenant, identity.user, str(identity.mode),
                         settings.unauthorized_tools)


def cmd_stdio(settings: Settings, args: argparse.Namespace) -> int:
    import logging
    import sys

    from northstar.common.identity import RequestContextBuilder
    from northstar.mcp_gateway.transports.stdio import handshake as stdio_handshake

    identity = RequestContextBuilder().from_stdio(tenant=args.tenant, user=args.user, mode=args.mode)
    # Claude Desktop writes initialize as soon as it spawns us: answer it before the SDK and
    # the runtime are loaded (the SDK session still handles it; see stdio_handshake).
    snapshots = stdio_list_snapshots(settings, identity) if settings.stdio_list_snapshot else None
    first = None
    if settings.stdio_first_line_wait_s > 0 and sys.stdin is not None and sys.stdout is not None:
        first = stdio_handshake.answer_early(sys.stdin.buffer, sys.stdout.buffer, max_bytes=settings.max_body_bytes,
                                             max_depth=settings.max_json_depth, max_items=settings.max_json_items,
                                             wait_s=settings.stdio_first_line_wait_s, snapshots=snapshots)
    if first is not None and first.answer is not None:
        logging.getLogger("northstar.stdio").debug("initialize answered before start-up",
                                                   extra={"tools_list_too": first.list_id is not None})
    trio.run(stdio_main, settings, identity, first, snapshots)
    return 0
