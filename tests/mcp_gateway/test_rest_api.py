"""The REST edge on the real REST app (Quart-Trio test client, real runtime, API keys).

Every route is in the served OpenAPI document, generated from the models that parse the
requests; every number has a range and out of range is a 400 ``validation_error`` with
``errors[]`` (JSON pointers) before any effect; unknown keys and parameters are refused.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate

from northstar.common.config import Settings
from northstar.common.limits import MAX_INT64
from northstar.mcp_gateway.transports.rest.app import PUBLIC_PATHS, build_rest_app, openapi_document
from northstar.runtime import Runtime


class Client:
    """The test client with a key: ``await c.get(path)`` and so on, JSON bodies by ``json=``."""

    def __init__(self, app: Any, key: str) -> None:
        self.app, self.headers = app, {"Authorization": f"Bearer {key}"}

    async def send(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        client = self.app.test_client()
        resp = await client.open(path, method=method, headers={**self.headers, **kw.pop("headers", {})}, **kw)
        body = await resp.get_json(force=True, silent=True)
        return resp.status_code, body


@pytest.fixture
async def rest(tmp_path: Path) -> AsyncIterator[tuple[Client, Client, Any]]:
    """(admin client, user client, services) on a gateway in api_key mode."""
    async with Runtime(Settings(data_dir=tmp_path, log_level="WARNING", auth_mode="api_key")).running() as services:
        app = build_rest_app(services)
        admin_key, _ = await services.keys.create("acme", "root", admin=True, provenance="cli")
        user_key, _ = await services.keys.create("acme", "alice")
        yield Client(app, admin_key), Client(app, user_key), services


def problems(body: Any) -> list[dict[str, Any]]:
    """The ``errors[]`` of a 400 validation_error (and the envelope's shape)."""
    err = body["error"]
    assert err["code"] == "validation_error" and err["http_status"] == 400, body
    items: list[dict[str, Any]] = err["details"]["errors"]
    assert items and all(set(p) >= {"path", "message"} for p in items), items
    assert all(p["path"] == "" or p["path"].startswith("/") for p in items), items
    return items


def quart_to_openapi(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([A-Za-z_][A-Za-z0-9_]*)>", r"{\1}", rule)


# -- the document --------------------------------------------------------------------------------
async def test_every_registered_route_is_in_the_document(rest: tuple[Client, Client, Any]) -> None:
    admin, _, _ = rest
    doc = openapi_document()
    missing = []
    for rule in admin.app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = quart_to_openapi(rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method.lower() not in doc["paths"].get(path, {}):
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from /openapi.json: {missing}"


def test_the_document_is_valid_openapi_3_1_with_the_envelope_on_every_error() -> None:
    doc = openapi_document()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "an API key (nsk_...) or an OAuth access token"}
    error = doc["components"]["responses"]["Error"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorEnvelope"}
    envelope = doc["components"]["schemas"]["ErrorBody"]
    assert set(envelope["required"]) == {"code", "message", "http_status", "request_id", "details"}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            errors = {code: r for code, r in op["responses"].items() if int(code) >= 400}
            assert {"400", "500", "503"} <= set(errors), (method, path)
            if path != "/health":  # a degraded health check answers 503 with the health body
                assert all(r == {"$ref": "#/components/responses/Error"} for r in errors.values()), (method, path)
            assert ("security" in op and op["security"] == []) == (path in PUBLIC_PATHS), (method, path)
            assert ("401" in errors) == (path not in PUBLIC_PATHS), (method, path)


def test_every_integer_parameter_and_body_field_has_a_range() -> None:
    doc = openapi_document()
    unranged = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for p in op["parameters"]:
                s = p["schema"]
                if s.get("type") == "integer" and not ("minimum" in s and s.get("maximum", MAX_INT64 + 1) <= MAX_INT64):
                    unranged.append(f"{method} {path} {p['name']}")
    for name, schema in doc["components"]["schemas"].items():
        if not name.endswith("Body"):
            continue
        for field, s in schema.get("properties", {}).items():
            for branch in s.get("anyOf", [s]):
                if branch.get("type") in ("integer", "number") and not (
                        (("minimum" in branch or "exclusiveMinimum" in branch) and "maximum" in branch)
                        or field == "target"):  # a KPI target: >= 0, no natural maximum (a float)
                    unranged.append(f"{name}.{field}")
    assert not unranged, unranged


async def test_the_document_is_served_without_a_credential(rest: tuple[Client, Client, Any]) -> None:
    admin, _, _ = rest
    resp = await admin.app.test_client().get("/openapi.json")
    assert resp.status_code == 200
    assert await resp.get_json() == openapi_document()


# -- ranges, before any effect ------------------------------------------------------------------
@pytest.mark.parametrize(("method", "path", "where"), [
    ("GET", f"/v1/drafts/d/versions/{MAX_INT64 + 1}", "/version"),
    ("GET", "/v1/drafts/d/versions/99999999999999999999999", "/version"),
    ("GET", "/v1/drafts/d/versions/0", "/version"),
    ("GET", "/v1/drafts/d/versions/-1", "/version"),
    ("GET", "/v1/drafts/d/versions/%D9%A5", "/version"),  # an Arabic-Indic digit five
    ("GET", "/v1/drafts/d/versions/1_0", "/version"),
    ("GET", f"/v1/audit?after_seq={MAX_INT64 + 1}", "/after_seq"),
    ("GET", "/v1/audit?after_seq=1e3", "/after_seq"),
    ("GET", "/v1/audit?limit=0", "/limit"),
    ("GET", "/v1/audit?limit=1001", "/limit"),
    ("GET", "/v1/audit?since=0001-01-01T00:00:00%2B23:59", "/since"),  # before year 1 in UTC
    ("GET", "/v1/audit?since=yesterday", "/since"),
    ("GET", "/v1/audit?decision=maybe", "/decision"),
    ("GET", "/v1/drafts?limit=501", "/limit"),
    ("GET", "/v1/drafts?after=UPPER", "/after"),
    ("GET", "/v1/tools?x=1", "/x"),  # an unknown query parameter
    ("GET", "/v1/audit?limit=5&limit=6", "/limit"),  # one given twice
    ("GET", f"/v1/drafts/{'d' * 65}", "/draft_id"),
    ("DELETE", "/v1/keys/not-a-key-id", "/key_id"),
    ("DELETE", "/v1/firearms/grants/acme/alice/not.a.firearm", "/firearm"),
    ("GET", f"/v1/kpi/status/{'t' * 200}", "/tool_name"),
])
async def test_out_of_range_parameters_are_a_400(rest: tuple[Client, Client, Any], method: str, path: str,
                                                 where: str) -> None:
    admin, _, _ = rest
    status, body = await admin.send(method, path)
    assert status == 400, body
    assert where in [p["path"] for p in problems(body)]


@pytest.mark.parametrize(("method", "path", "body", "where"), [
    ("PUT", "/v1/drafts/d", {"spec": {}, "expected_version": MAX_INT64 + 1}, "/expected_version"),
    ("PUT", "/v1/drafts/d", {"spec": {}, "expected_version": -1}, "/expected_version"),
    ("PUT", "/v1/drafts/d", {"spec": {}, "expected_version": "1"}, "/expected_version"),  # strict: no "1" for 1
    ("PUT", "/v1/drafts/d", {"spec": {}, "expected_version": True}, "/expected_version"),
    ("PUT", "/v1/drafts/d", {"spec": []}, "/spec"),
    ("PUT", "/v1/drafts/d", {}, "/spec"),
    ("POST", "/v1/sandbox/run", {"tool": "echo.ping", "draft_id": "d", "draft_version": 2**70}, "/draft_version"),
    ("POST", "/v1/sandbox/run", {"tool": "echo.ping", "mock_policy": {"grants": ["nope"]}}, "/mock_policy/grants/0"),
    ("POST", "/v1/sandbox/run", {"tool": "echo.ping", "mock_policy": {"grantz": []}}, "/mock_policy/grantz"),
    ("POST", "/v1/tools/echo.ping/call", {"arguments": {}, "timeout_s": 0}, "/timeout_s"),
    ("POST", "/v1/tools/echo.ping/call", {"arguments": {}, "timeout_s": 3601}, "/timeout_s"),
    ("POST", "/v1/tools/echo.ping/call", {"arguments": []}, "/arguments"),
    ("POST", "/v1/drafts/d/publish", {"version": 0}, "/version"),
    ("POST", "/v1/overlays/notes/rollback", {"version": "1.0"}, "/version"),
    ("POST", "/v1/overlays/notes/rollback", {"version": "\u0661.\u0660.\u0660"}, "/version"),  # Arabic-Indic digits
    ("POST", "/v1/firearms/grants", {"tenant": "acme", "user": "u", "firearm": "firearm.x.y",
                                     "expires_at": "9999-12-31T23:59:59-23:59"}, "/expires_at"),
    ("POST", "/v1/keys", {"tenant": "acme", "user": "u", "admin": "yes"}, "/admin"),
    ("POST", "/v1/keys", {"tenant": "acme", "user": "u", "label": "x" * 201}, "/label"),
    # a rule of two fields: its path is the binding itself
    ("PUT", "/v1/kpi/bindings/echo.ping/p95", {"metric": "error_rate", "target": 2, "owner": "o"}, ""),
    ("PUT", "/v1/kpi/bindings/echo.ping/p95", {"metric": "calls", "target": 1, "owner": "o", "window": "91d"},
     "/window"),
    ("PUT", "/v1/kpi/bindings/echo.ping", {"bindings": []}, "/bindings"),
])
async def test_out_of_range_bodies_are_a_400(rest: tuple[Client, Client, Any], method: str, path: str,
                                             body: dict[str, Any], where: str) -> None:
    admin, _, _ = rest
    status, answer = await admin.send(method, path, json=body)
    assert status == 400, answer
    assert where in [p["path"] for p in problems(answer)], answer


async def test_a_call_without_the_arguments_wrapper_is_refused_and_runs_nothing(
        rest: tuple[Client, Client, Any]) -> None:
    _, alice, services = rest
    before = await services.audit.query(tenant=None, limit=1000)
    status, body = await alice.send("POST", "/v1/tools/echo.ping/call", json={"message": "hi"})
    assert status == 400
    assert problems(body) == [{"path": "/message", "message": "Extra inputs are not permitted",
                               "type": "extra_forbidden", "in": "body"}]
    assert await services.audit.query(tenant=None, limit=1000) == before  # nothing reached the gate chain
    status, body = await alice.send("POST", "/v1/tools/echo.ping/call", json={"arguments": {"message": "hi"}})
    assert status == 200 and body["output"]["message"] == "hi"


async def test_a_route_that_needs_a_body_refuses_an_empty_one(rest: tuple[Client, Client, Any]) -> None:
    admin, _, _ = rest
    for method, path in (("POST", "/v1/tools/echo.ping/call"), ("PUT", "/v1/drafts/d"), ("POST", "/v1/keys")):
        status, body = await admin.send(method, path, data=b"", headers={"Content-Type": "application/json"})
        assert status == 400 and problems(body)[0]["path"] == "" and problems(body)[0]["in"] == "body", body
    # publishing takes an optional body: without one it means "the latest version" (404: no such draft)
    status, body = await admin.send("POST", "/v1/drafts/nothing/publish")
    assert status == 404, body
    doc = openapi_document()
    assert doc["paths"]["/v1/drafts/{draft_id}/publish"]["post"]["requestBody"]["required"] is False
    assert doc["paths"]["/v1/tools/{name}/call"]["post"]["requestBody"]["required"] is True


async def test_the_admin_check_comes_before_the_body_is_read(rest: tuple[Client, Client, Any]) -> None:
    _, alice, _ = rest
    status, body = await alice.send("POST", "/v1/keys", json={"tenant": "bad tenant"})
    assert status == 403 and body["error"]["code"] == "admin_required"


# -- KPI bindings: the whole set, or one -------------------------------------------------------
def kpi(kpi_id: str, metric: str = "latency_p95_ms", target: float = 500) -> dict[str, Any]:
    return {"kpi_id": kpi_id, "metric": metric, "target": target, "owner": "ops"}


async def test_kpi_put_replaces_the_set_and_the_per_kpi_routes_touch_one(rest: tuple[Client, Client, Any]) -> None:
    _, alice, _ = rest
    base = "/v1/kpi/bindings/echo.ping"
    status, body = await alice.send("PUT", base, json={"bindings": [kpi("p95"), kpi("errors", "error_rate", 0.1)]})
    assert status == 200 and [b["kpi_id"] for b in body["bindings"]] == ["p95", "errors"] and body["removed"] == []

    status, body = await alice.send("PUT", f"{base}/calls", json={"metric": "calls", "target": 10, "owner": "ops"})
    assert status == 200 and body["kpi_id"] == "calls" and body["comparison"] == "gte"
    listed = (await alice.send("GET", base))[1]
    assert sorted(b["kpi_id"] for b in listed["bindings"]) == ["calls", "errors", "p95"]  # the others kept

    status, body = await alice.send("DELETE", f"{base}/errors")
    assert status == 200 and body == {"tool_name": "echo.ping", "kpi_id": "errors", "deleted": True}
    assert (await alice.send("DELETE", f"{base}/errors"))[0] == 404

    status, body = await alice.send("PUT", base, json=kpi("p95", target=250))  # one binding: the whole set
    assert status == 200 and sorted(body["removed"]) == ["calls"]
    listed = (await alice.send("GET", base))[1]
    assert [(b["kpi_id"], b["target"]) for b in listed["bindings"]] == [("p95", 250.0)]

    status, body = await alice.send("PUT", base, json={"bindings": [kpi("a"), kpi("a")]})
    assert status == 400 and problems(body)[0]["path"] == "/bindings/0/kpi_id"
    status, body = await alice.send("PUT", f"{base}/x", json=kpi("x"))  # the id is in the path, not the body
    assert status == 400 and problems(body)[0]["path"] == "/kpi_id"
