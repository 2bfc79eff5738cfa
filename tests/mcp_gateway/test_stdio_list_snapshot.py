"""``northstar stdio`` answers a launch's first ``tools/list`` from the last answer its principal
got, before the SDK is loaded; when the catalogue changed since, ``list_changed`` follows.

Real processes: each launch is ``northstar stdio`` spawned with pipes, driven line by line.
"""

from __future__ import annotations

import json
import queue
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

from northstar.mcp_gateway.transports.stdio import list_snapshot
from tests.harness import gateway_env

SPAWN_TIMEOUT_S = 60
STDIO_ENV = {"NORTHSTAR_LOG_LEVEL": "DEBUG", "NORTHSTAR_STDIO_FIRST_LINE_WAIT_S": "30"}
INIT = (b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
        b'"capabilities":{},"clientInfo":{"name":"client","version":"1"}}}\n')
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
LIST_CHANGED = "notifications/tools/list_changed"

# ``northstar stdio`` in a process that records, once the early answers are written, which
# heavy modules were loaded and whether tools/list was among them.
PROBE = textwrap.dedent("""
    import json, sys
    from northstar import cli
    from northstar.mcp_gateway.transports.stdio import handshake as stdio_handshake
    WATCH = ("mcp", "mcp_types", "anyio", "northstar.runtime", "northstar.mcp_gateway.transports.mcp_face")
    seen = {}
    answer_early = stdio_handshake.answer_early
    def probe(*args, **kwargs):
        first = answer_early(*args, **kwargs)
        seen["loaded_at_answer"] = sorted(m for m in WATCH if m in sys.modules)
        seen["list_early"] = first is not None and first.list_id is not None
        return first
    stdio_handshake.answer_early = probe
    sys.argv[0] = "northstar"
    code = cli.main(sys.argv[1:])
    sys.stderr.write("PROBE " + json.dumps(seen) + "\\n")
    sys.exit(code)
""")


class Launch:
    """One ``northstar stdio`` process and the JSON-RPC messages it wrote, read with deadlines."""

    def __init__(self, data_dir: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", PROBE, "stdio", "--tenant", "t1", "--user", "u1"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=gateway_env(data_dir, STDIO_ENV))
        self.got: queue.Queue[bytes] = queue.Queue()
        self.messages: list[dict[str, Any]] = []
        self.errors: list[bytes] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out, err = self.proc.stdout, self.proc.stderr
        threading.Thread(target=lambda: [self.got.put(raw) for raw in out], daemon=True).start()
        self.err_reader = threading.Thread(target=lambda: self.errors.append(err.read()), daemon=True)
        self.err_reader.start()

    def send(self, *lines: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"".join(lines))
        self.proc.stdin.flush()

    def until(self, match: Any) -> dict[str, Any]:
        while True:
            found = [m for m in self.messages if match(m)]
            if found:
                return found[0]
            self.messages.append(json.loads(self.got.get(timeout=SPAWN_TIMEOUT_S)))

    def reply(self, rpc_id: int) -> dict[str, Any]:
        return self.until(lambda m: m.get("id") == rpc_id)

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
        """End of input; (every message, the probe's record, stderr) once the process exited 0."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=SPAWN_TIMEOUT_S)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self.err_reader.join(timeout=SPAWN_TIMEOUT_S)
        while not self.got.empty():
            self.messages.append(json.loads(self.got.get()))
        err = b"".join(self.errors).decode("utf-8", "replace")
        assert code == 0, err[-3000:]
        probe = json.loads(next(x for x in err.splitlines() if x.startswith("PROBE "))[6:])
        return self.messages, probe, err


def list_tools(rpc_id: int) -> bytes:
    return b'{"jsonrpc":"2.0","id":%d,"method":"tools/list"}\n' % rpc_id


def one_session(data_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """initialize, initialized + tools/list at once (as clients do), a second tools/list, the end."""
    launch = Launch(data_dir)
    launch.send(INIT)
    launch.reply(0)
    launch.send(INITIALIZED, list_tools(1))
    launch.reply(1)
    launch.send(list_tools(2))
    launch.reply(2)
    return launch.finish()


def snapshot_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "stdio").glob("tools-list-*.json"))


def tool_names(reply: dict[str, Any]) -> set[str]:
    return {t["name"] for t in reply["result"]["tools"]}


def test_the_second_launch_lists_tools_before_the_sdk_is_loaded(tmp_path: Path) -> None:
    messages, probe, _ = one_session(tmp_path)
    assert probe == {"loaded_at_answer": [], "list_early": False}  # nothing kept yet: the SDK answers
    first_list = next(m for m in messages if m.get("id") == 1)
    [kept] = snapshot_files(tmp_path)
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert json.loads(kept.read_bytes()) == first_list["result"]

    messages, probe, err = one_session(tmp_path)
    assert probe == {"loaded_at_answer": [], "list_early": True}  # answered with neither the SDK nor the runtime
    replies = {m["id"]: m for m in messages if "id" in m}
    assert sorted(replies) == [0, 1, 2]  # one answer each: the SDK's answer to 1 was dropped
    assert replies[1] == first_list and replies[2]["result"] == first_list["result"]
    assert LIST_CHANGED not in [m.get("method") for m in messages]  # nothing changed: nothing to re-list
    assert "Traceback" not in err


def test_a_stale_snapshot_is_followed_by_list_changed_and_replaced(tmp_path: Path) -> None:
    messages, _, _ = one_session(tmp_path)
    full = next(m for m in messages if m.get("id") == 1)["result"]
    [kept] = snapshot_files(tmp_path)
    stale = dict(full, tools=[t for t in full["tools"] if t["name"] != "echo__ping"])  # as if published since
    kept.write_text(json.dumps(stale, separators=(",", ":")))

    launch = Launch(tmp_path)
    launch.send(INIT)
    launch.reply(0)
    launch.send(INITIALIZED, list_tools(1))
    assert "echo__ping" not in tool_names(launch.reply(1))  # the early answer is the kept one
    launch.until(lambda m: m.get("method") == LIST_CHANGED)  # then: list again
    launch.send(list_tools(2))
    assert "echo__ping" in tool_names(launch.reply(2))
    messages, probe, _ = launch.finish()
    assert probe["list_early"] is True
    assert [m["id"] for m in messages if "id" in m] == [0, 1, 2]
    assert json.loads(kept.read_bytes()) == full  # the live answer replaced the stale one


def test_only_a_plain_first_list_is_answered_early(tmp_path: Path) -> None:
    one_session(tmp_path)
    launch = Launch(tmp_path)
    launch.send(INIT)
    launch.reply(0)
    launch.send(INITIALIZED, b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"x"}}\n')
    launch.reply(1)
    _, probe, _ = launch.finish()
    assert probe["list_early"] is False  # a cursor (or _meta, or another method) goes to the SDK


def test_a_snapshot_that_is_not_a_tools_result_is_never_sent(tmp_path: Path) -> None:
    snapshots = list_snapshot.ListSnapshots(tmp_path, "k")
    assert not snapshots.save("v", b'{"tools":[],"nextCursor":"2"}')  # a page is not the whole list
    assert not snapshots.save("v", b"[]") and snapshots.load("v") is None
    assert snapshots.save("v", b'{"tools":[]}') and not snapshots.save("v", b'{"tools":[]}')  # once
    snapshots.path("v").write_bytes(b'{"tools": 1}')
    assert snapshots.load("v") is None
    snapshots.path("v").write_bytes(b'{"tools":[' + b" " * list_snapshot.MAX_SNAPSHOT_BYTES + b"]}")
    assert snapshots.load("v") is None
    assert list_snapshot.result_of(7, list_snapshot.response_line(7, b'{"tools":[]}')[:-1]) == b'{"tools":[]}'
    assert list_snapshot.result_of("7", b'{"jsonrpc":"2.0","id":7,"result":{}}') is None
