"""G1 and G4: no number a client sends can crash a shared actor, end the process or be echoed badly.

The repro of G1: six ``GET /v1/drafts/x/versions/99999999999999999999999`` from any key, any
tenant, answered 503 five times and then the process exited (an integer >= 2**63 reached
SQLite inside the store actor, the actor crashed, the root's restart intensity ran out).
The repro of G4: a stateless ``tools/call`` whose id is >= 2**64 was executed, then answered
with an empty 500 because its id could not be encoded: a client retrying it repeated a write.

Every value here is out of its declared range (``northstar/common/limits.py``): each is
answered 400 (``validation_error`` on REST, -32600 on the MCP doors) before anything runs.
The acceptance case sends 1,000 of them, mixed, from one non-admin, and the process is still
up, ``/health`` 200, and not one answer is a 5xx. SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx2
import pytest

from northstar.common.limits import INT64_MAX, MAX_JSONRPC_ID_CHARS, MAX_SEQ, MAX_VERSION
from tests.harness import GatewayProcess
from tests.pg import base_url, fresh_schema, pg_unavailable_reason, schema_url
from tests.reliability.kit import (
    ACCEPT_BOTH,
    BASE_ENV,
    HANDSHAKE,
    assert_envelope,
    assert_rpc_error,
    audit,
    fresh,
    grant,
    healthy,
    ident,
    init_params,
    rpc,
    run_stdio,
    traceback_free,
)
from tests.reliability.test_protocol_abuse import MCP_DOORS, Doors, no_audit

REPRO = "99999999999999999999999"
HUGE_TEXT = [REPRO, str(2**63), str(2**64), "9" * 5000]
ODD_TEXT = ["²", "٣", "+5", " 5", "5_0", "0x10", "1e3", "-1", ""]
HUGE_JSON: list[Any] = [10**23, 2**63, 2**64, -(2**63) - 1, 1e308, -1e308]
WRITE = {"name": "n.txt", "mime_type": "text/plain", "content_text": "x"}


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def ngw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway per backend; it must end without a traceback."""
    env = dict(BASE_ENV)
    schema = None
    if request.param == "postgres":
        reason = pg_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
        schema = fresh_schema("num")
        env["NORTHSTAR_STORE_URL"] = schema_url(base_url(), schema)
    try:
        with GatewayProcess(tmp_path_factory.mktemp(f"num-{request.param}"), env=env) as gw:
            yield gw
        traceback_free(gw)
    finally:
        if schema is not None:
            subprocess.run(["psql", base_url(), "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                           capture_output=True, check=False, timeout=30)


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=30) as client:
        yield client


def health(gw: GatewayProcess) -> dict[str, Any]:
    assert healthy(gw)
    body: dict[str, Any] = httpx2.get(f"{gw.url}/health", timeout=10).json()
    assert body["down"] == [] and set(body["subsystems"].values()) == {"up"}, body
    return body


# -- G1: the repro, on both backends ---------------------------------------------------------------
def test_g1_the_repro_six_huge_versions_leave_the_gateway_up(ngw: GatewayProcess, http: httpx2.Client) -> None:
    who = ident(fresh("t"), "anyone")
    put = http.put(f"{ngw.url}/v1/drafts/x", headers=who, json={"spec": {"tool_id": "x"}})
    assert put.status_code in (201, 422), put.text  # the spec does not matter, the route does
    for _ in range(6):
        resp = http.get(f"{ngw.url}/v1/drafts/x/versions/{REPRO}", headers=who)
        err = assert_envelope(resp, 400, "validation_error")
        assert [e["path"] for e in err["details"]["errors"]] == ["/version"], err
    health(ngw)
    assert http.get(f"{ngw.url}/v1/drafts/x/versions/{MAX_VERSION}", headers=who).status_code == 404


REST_CASES: list[tuple[str, str, dict[str, str], dict[str, Any] | None, str]] = [
    *[("GET", f"/v1/drafts/x/versions/{n}", {}, None, "version") for n in [*HUGE_TEXT, "²", "٣", "0", "-1", "1.0"]],
    *[("GET", "/v1/audit", {"after_seq": n}, None, "after_seq") for n in [*HUGE_TEXT, *ODD_TEXT[:-1]]],
    *[("GET", "/v1/audit", {"limit": n}, None, "limit") for n in [*HUGE_TEXT, *ODD_TEXT, "0", "1001"]],
    *[("GET", "/v1/drafts", {"limit": n}, None, "limit") for n in [*HUGE_TEXT, *ODD_TEXT]],
    *[("GET", "/v1/audit", {k: ts}, None, "") for k in ("since", "until")
      for ts in ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "x" * 100]],
    ("GET", "/v1/audit", {"tool": "t" * 1000}, None, "tool"),
    ("GET", "/v1/drafts", {"after": "a" * 10_000}, None, "after"),
    *[("POST", "/v1/sandbox/run", {}, {"tool": "echo.ping", "arguments": {"message": "m"}, "draft_id": "x",
                                       "draft_version": n}, "draft_version")
      for n in [*HUGE_JSON, MAX_VERSION + 1, 0, True, "1"]],
    *[("POST", "/v1/tools/echo.ping/call", {}, {"arguments": {"message": "m"}, "timeout_s": n}, "timeout_s")
      for n in [*HUGE_JSON, 0, 0.0, -1, 120.5, True, "5"]],
    *[("PUT", "/v1/drafts/y", {}, {"spec": {"tool_id": "y"}, "expected_version": n}, "expected_version")
      for n in [*HUGE_JSON, MAX_VERSION + 1, -1, True]],
]


@pytest.mark.parametrize(("method", "path", "params", "body", "field"), REST_CASES,
                         ids=[f"{c[0]} {c[1]} {c[2] or c[3]}"[:70] for c in REST_CASES])
def test_g1_rest_numbers_out_of_range_are_400(ngw: GatewayProcess, http: httpx2.Client, method: str, path: str,
                                               params: dict[str, str], body: dict[str, Any] | None, field: str) -> None:
    headers = {**ident(fresh("t"), "u"), **({"Content-Type": "application/json"} if body is not None else {})}
    resp = http.request(method, f"{ngw.url}{path}", params=params, headers=headers,
                        content=None if body is None else json.dumps(body).encode())
    err = assert_envelope(resp, 400, "validation_error")
    if field:
        assert err["details"].get("field") == field or field in json.dumps(err["details"]), err


def test_g1_the_edges_of_each_range_are_accepted(ngw: GatewayProcess, http: httpx2.Client) -> None:
    who = ident(fresh("t"), "u")
    page = http.get(f"{ngw.url}/v1/audit", params={"after_seq": str(MAX_SEQ), "limit": "1000"}, headers=who)
    assert page.status_code == 200 and page.json()["entries"] == []
    assert http.get(f"{ngw.url}/v1/drafts", params={"limit": "500"}, headers=who).status_code == 200
    call = http.post(f"{ngw.url}/v1/tools/echo.ping/call", headers=who,
                     json={"arguments": {"message": "m"}, "timeout_s": 120})  # = tool_timeout_max_s
    assert call.status_code == 200, call.text


# -- G4: an id that cannot be echoed is refused before the request runs ------------------------------
UNECHOABLE_IDS: list[Any] = [2**64, 2**63, -(2**63) - 1, 10**30, "i" * (MAX_JSONRPC_ID_CHARS + 1)]


@pytest.mark.parametrize("door", MCP_DOORS)
def test_g4_a_write_whose_id_cannot_be_echoed_never_runs(ngw: GatewayProcess, http: httpx2.Client, door: str) -> None:
    with Doors(ngw, http, door) as d:
        grant(ngw.url, d.tenant, "u")
        for rid in UNECHOABLE_IDS:
            body = json.dumps(rpc("tools/call", {"name": "media_v2__create_asset", "arguments": WRITE}, rid))
            resp = d.post(body.encode())
            assert_rpc_error(resp, 400, -32600, "invalid_request", rid=None)
        no_audit(ngw, d.tenant)  # not decided, not run, not written: nothing to repeat on a retry
        d.still_works()


def test_g4_the_widest_ids_are_echoed_exactly(ngw: GatewayProcess, http: httpx2.Client) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json", **ident(fresh("t"), "u")}
    for rid in [INT64_MAX, -(2**63), "i" * MAX_JSONRPC_ID_CHARS]:
        body = rpc("tools/call", {"name": "echo__ping", "arguments": {"message": "m"}}, rid)
        resp = http.post(f"{ngw.url}/mcp/stateless", content=json.dumps(body), headers=headers)
        assert resp.status_code == 200 and json.loads(resp.content)["id"] == rid, resp.text


@pytest.mark.parametrize(("label", "message", "echo"), [
    ("progress token", rpc("tools/list", {"_meta": {"progressToken": 2**64}}, 5), 5),
    ("long progress token", rpc("tools/list", {"_meta": {"progressToken": "p" * 300}}, 5), 5),
    ("cursor", rpc("tools/list", {"cursor": "c" * 5000}, 6), 6),
    ("cursor not a string", rpc("tools/list", {"cursor": 2**70}, 6), 6),
    ("cancel requestId", {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 2**64}},
     None),
    ("cancel requestId bool", {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": True}},
     None),
    ("progress", {"jsonrpc": "2.0", "method": "notifications/progress",
                  "params": {"progressToken": 1, "progress": 10**400}}, None),
])
def test_g4_tokens_in_params_have_declared_ranges(ngw: GatewayProcess, http: httpx2.Client, label: str,
                                                  message: dict[str, Any], echo: Any) -> None:
    headers = {"Content-Type": "application/json", "Accept": ACCEPT_BOTH, "MCP-Protocol-Version": HANDSHAKE,
               **ident(fresh("t"), "u")}
    resp = http.post(f"{ngw.url}/mcp/stateless", content=json.dumps(message), headers=headers)
    assert_rpc_error(resp, 400, -32600, "invalid_request", rid=echo)


def test_g4_over_stdio_the_id_is_refused_with_the_right_error(tmp_path: Path) -> None:
    lines = [json.dumps(rpc("initialize", init_params(), 0)).encode()]
    lines += [json.dumps(rpc("tools/call", {"name": "echo__ping", "arguments": {"message": "m"}}, rid)).encode()
              for rid in UNECHOABLE_IDS]
    lines.append(json.dumps(rpc("ping", None, "last")).encode())
    messages, stderr, code = run_stdio(tmp_path, lines, lambda msgs: any(m.get("id") == "last" for m in msgs))
    assert code == 0 and "Traceback" not in stderr, stderr[-2000:]
    refused = [m for m in messages if "error" in m]
    assert len(refused) == len(UNECHOABLE_IDS)
    assert all(m["id"] is None and m["error"]["code"] == -32600 for m in refused), refused
    assert not any("result" in m and m.get("id") not in (0, "last") for m in messages)


# -- the acceptance: 1,000 out-of-range requests of every kind, from one non-admin ------------------
def hostile_requests(count: int, seed: int = 20261207) -> list[tuple[str, str, dict[str, str], bytes | None, str]]:
    rng = random.Random(seed)
    texts = [*HUGE_TEXT[:3], *ODD_TEXT]
    out: list[tuple[str, str, dict[str, str], bytes | None, str]] = []
    makers = [
        lambda: ("GET", f"/v1/drafts/x/versions/{rng.choice(texts) or '0'}", {}, None, "rest"),
        lambda: ("GET", "/v1/audit", {rng.choice(["after_seq", "limit"]): rng.choice(texts)}, None, "rest"),
        lambda: ("GET", "/v1/drafts", {"limit": rng.choice(texts)}, None, "rest"),
        lambda: ("GET", "/v1/audit", {"since": "0001-01-01T00:00:00+01:00"}, None, "rest"),
        lambda: ("POST", "/v1/sandbox/run", {}, json.dumps({"tool": "echo.ping", "arguments": {"message": "m"},
                                                           "draft_id": "x",
                                                           "draft_version": rng.choice(HUGE_JSON)}).encode(), "rest"),
        lambda: ("POST", "/v1/tools/echo.ping/call", {}, json.dumps(
            {"arguments": {"message": "m"}, "timeout_s": rng.choice(HUGE_JSON)}).encode(), "rest"),
        lambda: ("PUT", "/v1/drafts/y", {}, json.dumps(
            {"spec": {"tool_id": "y"}, "expected_version": rng.choice(HUGE_JSON)}).encode(), "rest"),
        lambda: ("POST", "/mcp/stateless", {}, json.dumps(rpc(
            "tools/call", {"name": "echo__ping", "arguments": {"message": "m"}}, rng.choice(UNECHOABLE_IDS))).encode(),
            "mcp"),
        lambda: ("POST", "/mcp/stateless", {}, json.dumps({
            "jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": rng.choice(UNECHOABLE_IDS)}}).encode(), "mcp"),
    ]
    for _ in range(count):
        out.append(rng.choice(makers)())
    return out


def test_g1_a_thousand_out_of_range_requests_leave_the_process_up_and_no_5xx(ngw: GatewayProcess) -> None:
    who = ident(fresh("attacker"), "mallory")  # one non-admin principal
    requests = hostile_requests(1000)
    kinds = {kind for *_, kind in requests}
    assert kinds == {"rest", "mcp"} and len({r[1] for r in requests}) >= 6

    def send(client: httpx2.Client, req: tuple[str, str, dict[str, str], bytes | None, str]) -> int:
        method, path, params, body, kind = req
        headers = {**who, "Content-Type": "application/json"}
        if kind == "mcp":
            headers["Accept"] = ACCEPT_BOTH
        return client.request(method, f"{ngw.url}{path}", params=params, content=body, headers=headers).status_code

    with httpx2.Client(timeout=30) as client, ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(lambda req: send(client, req), requests))
    assert len(statuses) == 1000
    assert [s for s in statuses if s >= 500] == []
    assert set(statuses) == {400}, sorted(set(statuses))
    health(ngw)
    assert ngw.proc is not None and ngw.proc.poll() is None
    assert audit(ngw.url, tenant=who["X-Tenant-Id"]) == []  # nothing of it was decided or run
