"""The OpenAPI 3.1 document of the REST API, generated from the routes' own models.

Every :class:`~northstar.mcp_gateway.transports.rest.api.Operation` becomes a path item: its path and
query models become parameters (with their ranges and patterns), its body model the request
body, its documented answers the success responses, and every error answer is the canonical
envelope (``components.responses.Error``). Schemas come from pydantic
(``models_json_schema``), never written by hand; OpenAPI 3.1 uses JSON Schema 2020-12, the
dialect pydantic emits, so they are used as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from northstar.mcp_gateway.transports.rest.api import Operation
from northstar.mcp_gateway.transports.rest.responses import ErrorEnvelope

REF = "#/components/schemas/{model}"
ERROR_REF = {"$ref": "#/components/responses/Error"}
READ_ERRORS = (400, 403, 404, 429, 500, 503)
BODY_ERRORS = (408, 409, 413, 415, 422)
TOOL_ERRORS = (502, 504)  # the tool itself failed / timed out
TOOL_PATHS = ("/v1/tools/{name}/call", "/v1/sandbox/run")

DESCRIPTION = """\
The northstar gateway's REST API. Every error is the canonical envelope
`{"error": {"code", "message", "http_status", "request_id", "details"}}` with the same
`X-Request-Id` header; `validation_error` lists its problems in `details.errors[]`, each
`{"path": <JSON pointer>, "message", "in": "path"|"query"|"body"}`. Numbers outside their
declared range, unknown query parameters and unknown body keys are refused with 400 before
anything happens. Authenticate with `Authorization: Bearer <API key or OAuth access token>`
(a loopback gateway in `headers` mode also trusts `X-Tenant-Id` / `X-User-Id`).
"""


def document(operations: Iterable[Operation], *, version: str, public_paths: Iterable[str]) -> dict[str, Any]:
    """The whole document for ``operations``; ``public_paths`` need no credential."""
    ops = list(operations)
    public = frozenset(public_paths)
    schemas = _component_schemas(ops)
    paths: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for op in ops:
        item = _operation(op, op.path in public)
        if item["operationId"] in seen:
            raise ValueError(f"operationId {item['operationId']} is used twice")
        seen.add(item["operationId"])
        paths.setdefault(op.path, {})[op.method.lower()] = item
    return {
        "openapi": "3.1.0",
        "info": {"title": "northstar", "version": version, "description": DESCRIPTION},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": schemas,
            "responses": {"Error": _error_response()},
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "an API key (nsk_...) or an OAuth access token"}},
        },
        "security": [{"bearerAuth": []}],
    }


def _component_schemas(ops: list[Operation]) -> dict[str, Any]:
    models: dict[tuple[type[BaseModel], str], None] = {(ErrorEnvelope, "serialization"): None}
    for op in ops:
        if op.body_model is not None:
            models[(op.body_model, "validation")] = None
        for answer in op.responses.values():
            if answer.model is not None:
                models[(answer.model, "serialization")] = None
    _, top = models_json_schema(list(models), ref_template=REF)  # type: ignore[arg-type]
    return dict(sorted(top.get("$defs", {}).items()))


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _operation(op: Operation, public: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "operationId": op.operation_id,
        "tags": [op.tag],
        "summary": op.summary + (" (admin)" if op.admin else ""),
        "parameters": _parameters(op.path_model, "path") + _parameters(op.query_model, "query"),
        "responses": _responses(op, public),
    }
    if op.description:
        item["description"] = op.description
    if op.admin:
        item["x-northstar-admin"] = True
    if public:
        item["security"] = []
    if op.body_model is not None:
        item["requestBody"] = {"required": op.body_required,
                               "content": {"application/json": {"schema": _ref(op.body_model)}}}
    return item


def _parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = _not_null(dict(prop))
        prop.pop("title", None)
        param: dict[str, Any] = {"name": name, "in": where, "required": where == "path" or name in required,
                                 "schema": prop}
        if "description" in prop:
            param["description"] = prop.pop("description")
        out.append(param)
    return out


def _not_null(prop: dict[str, Any]) -> dict[str, Any]:
    """A parameter is absent or a string, never JSON null: ``anyOf [X, null]`` is just ``X``."""
    branches = [b for b in prop.get("anyOf", []) if b != {"type": "null"}]
    if "anyOf" in prop and len(branches) == 1:
        rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
        return {**branches[0], **rest}
    return prop


def _responses(op: Operation, public: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for status, answer in sorted(op.responses.items()):
        content_schema: dict[str, Any] = _ref(answer.model) if answer.model is not None else {"type": "string"}
        if answer.media_type == "application/json" and answer.model is None:
            content_schema = {"type": "object"}
        out[str(status)] = {"description": answer.description or "OK",
                            "content": {answer.media_type: {"schema": content_schema}}}
    codes = set(READ_ERRORS)
    if not public:
        codes.add(401)
    if op.body_model is not None or op.method in ("PUT", "POST", "DELETE"):
        codes.update(BODY_ERRORS)
    if op.path in TOOL_PATHS:
        codes.update(TOOL_ERRORS)
    for code in sorted(codes):
        out.setdefault(str(code), ERROR_REF)
    return out


def _error_response() -> dict[str, Any]:
    return {
        "description": "the canonical error envelope",
        "headers": {
            "X-Request-Id": {"description": "the request id, as in error.request_id", "schema": {"type": "string"}},
            "Retry-After": {"description": "on 429 and 503: seconds to wait", "schema": {"type": "string"}},
        },
        "content": {"application/json": {"schema": _ref(ErrorEnvelope)}},
    }
