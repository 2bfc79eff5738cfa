"""The internal Python entry point: ``services.tools.call`` goes through the gate chain like any door."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from northstar.common import errors as E
from northstar.common.config import Settings
from northstar.common.identity import RequestContextBuilder, Transport
from northstar.runtime import Runtime


async def test_tools_call_is_governed_and_audited(tmp_path: Path) -> None:
    rt = Runtime(Settings(data_dir=tmp_path))
    ctx = RequestContextBuilder().from_headers([("X-Tenant-Id", "t1"), ("X-User-Id", "bob")],
                                               transport=Transport.INTERNAL)
    with trio.fail_after(30):
        async with rt.running() as svc:
            tools = svc.tools
            out = await tools.call("echo.ping", {"message": "hi"}, ctx=ctx)
            assert out["pong"] is True and out["message"] == "hi"
            args = {"name": "a.txt", "mime_type": "text/plain", "content_text": "x"}
            with pytest.raises(E.FirearmRequired) as info:
                await tools.call("media_v2.create_asset", args, ctx=ctx)
            assert info.value.details == {"scope": "media.write", "firearm": "firearm.media.write"}
            await svc.firearms.grant("t1", "bob", "firearm.media.write", granted_by="test")
            created = await tools.call("media_v2__create_asset", args, ctx=ctx)
            assert created["asset_id"].startswith("ast_")
            with pytest.raises(E.UnknownTool):
                await tools.call("nope.nothing", {}, ctx=ctx)
            entries = await svc.audit.query(tenant="t1", limit=100)
            decisions = [e.record for e in entries if e.record["event"] == "decision"]
            assert [d["decision"] for d in decisions] == ["allow", "deny", "allow", "deny"]
            assert {d["transport"] for d in decisions} == {"internal"}
    with pytest.raises(E.ServiceUnavailable):  # the runtime has stopped: its gate chain answers no more
        await tools.call("echo.ping", {}, ctx=ctx)
