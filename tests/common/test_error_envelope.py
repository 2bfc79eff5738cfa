"""register_error_handlers maps every error to the canonical envelope, leaking nothing."""

from __future__ import annotations

from quart_trio import QuartTrio

from northstar.common import errors as E
from northstar.common.error_envelope import jsonrpc_code, register_error_handlers


def make_app() -> QuartTrio:
    app = QuartTrio("t")
    register_error_handlers(app)

    @app.get("/boom")
    async def boom() -> str:
        raise RuntimeError("secret internals /etc/passwd")

    @app.get("/conflict")
    async def conflict() -> str:
        raise E.Conflict(current_version=3)

    @app.get("/limited")
    async def limited() -> str:
        raise E.RateLimited(retry_after=7)

    return app


async def test_unexpected_errors_are_a_bare_500() -> None:
    resp = await make_app().test_client().get("/boom", headers={"X-Request-Id": "rid-1"})
    assert resp.status_code == 500
    body = await resp.get_json()
    assert body == {"error": {"code": "internal_error", "message": "internal error", "http_status": 500,
                              "request_id": "rid-1", "details": {}}}
    assert "secret" not in (await resp.get_data(as_text=True))
    assert resp.headers["X-Request-Id"] == "rid-1"


async def test_known_errors_keep_code_details_and_headers() -> None:
    client = make_app().test_client()
    resp = await client.get("/conflict")
    body = await resp.get_json()
    assert resp.status_code == 409 and body["error"]["details"] == {"current_version": 3}
    resp = await client.get("/limited")
    assert resp.status_code == 429 and resp.headers["Retry-After"] == "7"


async def test_routing_errors_use_the_envelope() -> None:
    client = make_app().test_client()
    resp = await client.get("/nope")
    assert resp.status_code == 404 and (await resp.get_json())["error"]["code"] == "not_found"
    resp = await client.post("/boom")
    assert resp.status_code == 405 and (await resp.get_json())["error"]["code"] == "method_not_allowed"


def test_jsonrpc_codes() -> None:
    assert jsonrpc_code(E.InvalidJson()) == -32700
    assert jsonrpc_code(E.UnknownTool()) == -32602
    assert jsonrpc_code(E.ValidationFailed()) == -32602
    assert jsonrpc_code(E.BadRequest()) == -32600
    assert jsonrpc_code(E.NorthstarError()) == -32603
