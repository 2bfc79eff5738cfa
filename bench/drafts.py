"""Draft saves per second through the gateway's REST API, on SQLite and on PostgreSQL.

wrk PUTs ``/v1/drafts/m-<thread>-<n>`` (a new draft each time, ``expected_version: null``) at
concurrency 32 against a gateway on each store. Afterwards the drafts are counted through
``GET /v1/drafts``: every acknowledged save must be listed (a few more may have committed
while wrk was stopping, at most one per connection).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2

from bench import pg, procs, wrk
from bench.protocol import CheckFailed, describe

CONCURRENCY = 32
SPEC = {
    "schema_version": 1, "tool_id": "notes", "title": "Notes",
    "description": "Notes kept as plain-text assets; a benchmark draft. " + "x" * 150,
    "scopes": [{"name": "notes.write", "description": "Write notes", "firearm": "firearm.notes.write",
                "operations": [{"name": "add_note", "description": "Add a note", "title": "Add note",
                                "wraps": "media_v2.create_asset",
                                "input": {"presets": {"mime_type": "text/plain"},
                                          "restrict": {"name": {"maxLength": 80}}, "hide": []},
                                "annotations": {"idempotent": False}}]}],
}
BODY = json.dumps({"expected_version": None, "spec": SPEC}, separators=(",", ":"))
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def script(prefix: str, auth: dict[str, str]) -> wrk.Script:
    return wrk.Script("PUT", {**HEADERS, **auth}, f"/v1/drafts/{prefix}-", BODY, unique_body=False, unique_path=True,
                      ok_status=(201,), body_pattern='"version":1')


def precheck(client: httpx2.Client, base_url: str, auth: dict[str, str]) -> None:
    response = client.put(f"{base_url}/v1/drafts/check-1", content=BODY, headers={**HEADERS, **auth})
    if response.status_code != 201 or response.json().get("version") != 1:
        raise CheckFailed(f"draft save refused\n{describe(response)}")


def count_drafts(client: httpx2.Client, base_url: str, prefix: str, auth: dict[str, str]) -> int:
    """Drafts whose id starts with ``prefix``, paging through ``GET /v1/drafts``."""
    count, after = 0, None
    while True:
        params = {"limit": "500", **({"after": after} if after else {})}
        response = client.get(f"{base_url}/v1/drafts", params=params, headers=auth)
        if response.status_code != 200:
            raise CheckFailed(f"listing drafts failed\n{describe(response)}")
        page = response.json()
        count += sum(1 for d in page["drafts"] if d["draft_id"].startswith(prefix))
        after = page.get("next_after")
        if not after:
            return count


def measure(server: procs.Server, workdir: Path, duration_s: float, warmup_s: float) -> dict[str, Any]:
    with procs.running(server), httpx2.Client(timeout=60) as client:
        auth = procs.auth_for(server)
        precheck(client, server.url, auth)
        warm = wrk.run(server.url + "/", script("w", auth).write(workdir / "drafts-w.lua"),
                       connections=CONCURRENCY, duration_s=warmup_s)
        timed = wrk.run(server.url + "/", script("m", auth).write(workdir / "drafts-m.lua"),
                        connections=CONCURRENCY, duration_s=duration_s)
        listed = count_drafts(client, server.url, "m-", auth)
    verified = timed.good <= listed <= timed.good + CONCURRENCY
    problems = [*(f"warm-up: {p}" for p in warm.problems), *timed.problems]
    if not verified:
        problems.append(f"{timed.good} saves acknowledged but {listed} listed")
    return {"saves_per_s": timed.rps, "acknowledged": timed.good, "listed": listed, "verified": verified,
            "p99_ms": timed.p99_ms, "concurrency": CONCURRENCY, "valid": not problems, "problems": problems}


def draft_saves(workdir: Path, duration_s: float, warmup_s: float, log: Any = print) -> dict[str, Any]:
    out: dict[str, Any] = {}
    out["sqlite"] = measure(procs.gateway(workdir, name="gateway-drafts-sqlite"), workdir, duration_s, warmup_s)
    log(f"  sqlite: {out['sqlite']['saves_per_s']:.0f} saves/s (listed {out['sqlite']['listed']})")
    reason = pg.unavailable_reason()
    if reason:
        out["postgres"] = {"skipped": reason}
        log(f"  postgres: skipped ({reason})")
        return out
    with pg.fresh_schema("bench_drafts") as url:
        out["postgres"] = measure(procs.gateway(workdir, store_url=url, name="gateway-drafts-pg"),
                                  workdir, duration_s, warmup_s)
    log(f"  postgres: {out['postgres']['saves_per_s']:.0f} saves/s (listed {out['postgres']['listed']})")
    return out
