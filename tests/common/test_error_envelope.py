"""register_error_handlers maps every error to the canonical envelope, leaking nothing."""

from __future__ import annotations

from quart_trio import QuartTrio

from northstar.common import errors as E
from northstar.common.error_envelope import jsonrpc_code, jsonrpc_error, register_error_handlers


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


def test_validation_errors_always_list_problems_with_json_pointer_paths() -> None:
    assert E.ValidationFailed("bad", field="arguments").details == {
        "errors": [{"path": "/arguments", "message": "bad"}]}
    assert E.ValidationFailed().details == {"errors": [{"path": "", "message": "request validation failed"}]}
    from_pydantic = E.ValidationFailed("x", errors=[{"loc": ["a/b", 0, "c~d"], "msg": "too big", "type": "t"}])
    assert from_pydantic.details["errors"] == [{"path": "/a~1b/0/c~0d", "message": "too big", "type": "t"}]
    relative = E.ValidationFailed("x", errors=[{"path": "mime_type", "message": "m"}, {"loc": ["spec"]}])
    assert relative.details["errors"] == [{"path": "/mime_type", "message": "m"}, {"path": "/spec", "message": "x"}]
    data = jsonrpc_error(E.ValidationFailed("bad", field="name"), "rid")["data"]
    assert data["details"] == {"errors": [{"path": "/name", "message": "bad"}]}
