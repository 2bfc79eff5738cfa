"""Who reads which audit records (finding 5), against a real gateway.

A non-admin reads only the records of their own calls, numbered by their own sequence: nothing
of another user of the same tenant, nothing of the admin's policy actions, and no number that
moves with anyone else's traffic (not in ``GET /v1/audit``, not in a call's ``audit_seq``, not in
a sandbox run's). Admins keep the global view.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.harness import GatewayProcess, bearer, northstar_cli

FA = "firearm.media.write"
WRITE = {"name": "n.txt", "mime_type": "text/plain", "content_text": "x"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("visibility")) as gw:  # headers mode: many principals
        yield gw


def who(tenant: str, user: str) -> dict[str, str]:
    return {"X-Tenant-Id": tenant, "X-User-Id": user}


def call(gw: GatewayProcess, headers: dict[str, str], name: str = "echo.ping",
         args: dict[str, Any] | None = None) -> httpx2.Response:
    return httpx2.post(f"{gw.url}/v1/tools/{name}/call", headers=headers,
                       json={"arguments": {"message": "hi"} if args is None else args}, timeout=30)


def own(gw: GatewayProcess, headers: dict[str, str], **params: str) -> dict[str, Any]:
    resp = httpx2.get(f"{gw.url}/v1/audit", headers=headers, params=params, timeout=30)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def test_a_user_reads_only_their_own_calls_numbered_within_their_tenant(gw: GatewayProcess) -> None:
    tenant, other_tenant = f"t-{uuid.uuid4().hex[:8]}", f"o-{uuid.uuid4().hex[:8]}"
    alice, bob, outsider = who(tenant, "alice"), who(tenant, "bob"), who(other_tenant, "carol")
    seqs = []
    for round_ in range(3):  # alice's calls, with another tenant's traffic in between
        for _ in range(round_ + 2):
            assert call(gw, outsider).status_code == 200
        resp = call(gw, alice)
        assert resp.status_code == 200
        seqs.append(resp.json()["audit_seq"])
    assert seqs == [1, 2, 3]  # the other tenant's calls do not show in her numbers
    boss_key = httpx2.post(f"{gw.url}/v1/keys", headers=gw.admin_headers,
                           json={"tenant": tenant, "user": "boss", "admin": True}).json()["key"]
    assert call(gw, bob).status_code == 200  # tenant-mates and the admin's policy actions do count
    granted = httpx2.post(f"{gw.url}/v1/firearms/grants", headers=bearer(boss_key),
                          json={"tenant": tenant, "user": "alice", "firearm": FA})
    assert granted.status_code == 201
    created = call(gw, alice, "media_v2.create_asset", WRITE)  # allowed by the grant: decision + outcome
    assert created.status_code == 200, created.text
    seqs.append(created.json()["audit_seq"])
    decision_and_outcome = own(gw, alice, limit="1000")["entries"][-2:]
    assert seqs[-1] == decision_and_outcome[-1]["seq"]

    mine = own(gw, alice, tenant=other_tenant, user="bob", limit="1000")  # asking for others changes nothing
    entries = mine["entries"]
    assert [e["seq"] for e in entries] == [1, 2, 3, 6, 7] and mine["next_after_seq"] is None
    assert {(e["tenant"], e["user"]) for e in entries} == {(tenant, "alice")}
    assert not [e for e in entries if {"hash", "prev_hash", "tenant_seq"} & set(e)]
    assert not [e for e in entries if e.get("event") == "policy"]  # the grant for her is the admin's record

    page = own(gw, alice, limit="2")
    assert [e["seq"] for e in page["entries"]] == [1, 2] and page["next_after_seq"] == 2
    rest = own(gw, alice, limit="2", after_seq="2")
    assert [e["seq"] for e in rest["entries"]] == [3, 6]

    # the admin sees everything, by the global seq, with each record's tenant_seq beside it
    everyone = httpx2.get(f"{gw.url}/v1/audit", headers=gw.admin_headers, params={"tenant": tenant, "limit": "1000"})
    rows = everyone.json()["entries"]
    assert [e["tenant_seq"] for e in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert [e["user"] for e in rows] == ["alice", "alice", "alice", "bob", "boss", "alice", "alice"]
    assert [e["seq"] for e in rows] != [1, 2, 3, 4, 5, 6, 7] and all("hash" in e for e in rows)
    assert [e["user"] for e in own(gw, bob, limit="1000")["entries"]] == ["bob"]


def test_an_outcome_record_names_its_decision_by_the_callers_own_number(gw: GatewayProcess) -> None:
    tenant = f"w-{uuid.uuid4().hex[:8]}"
    writer = who(tenant, "writer")
    assert httpx2.post(f"{gw.url}/v1/firearms/grants", headers=gw.admin_headers,
                       json={"tenant": tenant, "user": "writer", "firearm": FA}).status_code == 201
    assert call(gw, who(tenant, "someone")).status_code == 200
    created = call(gw, writer, "media_v2.create_asset", WRITE)  # decision first, then its outcome
    assert created.status_code == 200, created.text
    entries = own(gw, writer)["entries"]
    decision, outcome = entries
    assert (decision["event"], outcome["event"]) == ("decision", "outcome")
    # the tenant's records: someone's call (1), then the writer's two (the grant is the admin's,
    # in the admin's own tenant)
    assert (decision["seq"], outcome["seq"], created.json()["audit_seq"]) == (2, 3, 3)
    assert outcome["decision_seq"] == decision["seq"] and "decision_tenant_seq" not in outcome
    admin_view = [e for e in httpx2.get(f"{gw.url}/v1/audit", headers=gw.admin_headers,
                                        params={"tenant": tenant, "user": "writer"}).json()["entries"]]
    assert admin_view[1]["decision_seq"] == admin_view[0]["seq"]  # the global numbers, for admins


def test_a_sandbox_run_reports_the_callers_own_number(gw: GatewayProcess) -> None:
    tenant = f"s-{uuid.uuid4().hex[:8]}"
    tester = who(tenant, "tester")
    for _ in range(3):
        assert call(gw, who(f"busy-{uuid.uuid4().hex[:8]}", "busy")).status_code == 200  # other tenants
    run = httpx2.post(f"{gw.url}/v1/sandbox/run", headers=tester,
                      json={"tool": "echo.ping", "arguments": {"message": "dry"}})
    assert run.status_code == 200, run.text
    assert run.json()["audit_seq"] == 1
    [entry] = own(gw, tester)["entries"]
    assert entry["seq"] == 1 and entry["sandbox"] is True


def test_a_store_refuses_to_open_without_its_audit_key(tmp_path: Path) -> None:
    """The key lives outside the database: a gateway or a CLI that lacks it says so and stops,
    without a traceback, and leaves no stray key of its own behind."""
    first = northstar_cli(tmp_path, "firearms", "bind", "x.write", "firearm.x.write")
    assert first.returncode == 0, first.stderr
    key_file = tmp_path / "audit.key"
    original = key_file.read_bytes()
    key_file.unlink()  # lost (or never copied to this host)
    refused = northstar_cli(tmp_path, "audit", "verify")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "sealed with audit key" in refused.stderr and str(key_file) in refused.stderr
    assert not key_file.exists()  # the key it made for itself sealed nothing: removed
    gw = GatewayProcess(tmp_path)
    with pytest.raises(RuntimeError, match="gateway exited at start"):
        gw.start()
    assert "sealed with audit key" in gw.stderr_text() and "Traceback" not in gw.stderr_text()
    assert gw.proc is not None and gw.proc.wait(timeout=10) == 1
    key_file.write_bytes(original)
    os.chmod(key_file, 0o600)
    back = northstar_cli(tmp_path, "audit", "verify")
    assert back.returncode == 0 and json.loads(back.stdout)["ok"] is True, back.stdout + back.stderr
