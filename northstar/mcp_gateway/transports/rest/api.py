"""Routes declared with their models: one decorator for every REST route.

``Api.route`` registers a handler on a blueprint and records an :class:`Operation` for the
OpenAPI document (:mod:`northstar.mcp_gateway.transports.rest.openapi`). Before the handler runs, the
same pydantic models that the document is generated from parse the request:

* path parameters and query parameters (strings on the wire; integers must be plain ASCII
  digits, then the model's ranges apply; unknown or repeated query parameters are refused),
* the JSON body, in strict mode (no ``"5"`` for 5, no ``true`` for 1; unknown keys refused).

Any problem is one :class:`~northstar.common.errors.ValidationFailed` (400 ``validation_error``)
listing every problem as ``{"path": <JSON pointer>, "message", "in": "path"|"query"|"body"}``,
raised before the handler (and so before any effect). Routes marked ``admin`` check the
permission first: a non-admin learns nothing about what a valid body looks like.

The handler receives the parsed models it declared as keyword arguments ``path``, ``query``
and ``body`` (a route that declares no query model still refuses unknown query parameters);
the decorator returns it unchanged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError
from quart import Blueprint, request

from northstar.common import errors as E
from northstar.mcp_gateway.transports.rest.common import MAX_JSON_DEPTH, check_depth, require_admin

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_DIGITS = re.compile(r"[0-9]{1,20}")


def _ascii_digits(value: Any) -> Any:
    """A path or query integer is plain ASCII digits: no sign, space, ``_``, ``.0`` or Unicode digits."""
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("must be a non-negative integer written in ASCII digits")
    return value


# The last annotation of an integer path or query parameter, after its range:
# ``Annotated[int, Field(ge=1, le=500), DIGITS]`` (in this order, so the range shows in the schema).
DIGITS = BeforeValidator(_ascii_digits)


class NoQuery(BaseModel):
    """The query of a route that takes no query parameters: an unknown one is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Response:
    """One documented answer: a model (JSON), or a media type with a free-form schema."""

    model: type[BaseModel] | None = None
    description: str = ""
    media_type: str = "application/json"


@dataclass(frozen=True)
class Operation:
    method: str
    path: str  # OpenAPI form: /v1/drafts/{draft_id}
    endpoint: str  # the Quart endpoint (unique in its blueprint)
    operation_id: str
    summary: str
    description: str
    tag: str
    path_model: type[BaseModel] | None
    query_model: type[BaseModel]
    pass_query: bool
    body_model: type[BaseModel] | None
    body_required: bool
    responses: dict[int, Response]
    admin: bool


@dataclass
class Api:
    """A blueprint plus the operations declared on it."""

    name: str
    tag: str
    operations: list[Operation] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.blueprint = Blueprint(self.name, __name__)

    def route(self, method: str, rule: str, *, summary: str, description: str = "",
              path: type[BaseModel] | None = None, query: type[BaseModel] | None = None,
              body: type[BaseModel] | None = None, body_required: bool = True,
              responses: dict[int, Response] | None = None, admin: bool = False,
              operation_id: str | None = None) -> Callable[[F], F]:
        """Declare ``method rule`` (``rule`` in OpenAPI form, ``/v1/drafts/{draft_id}``)."""
        params = _PARAM.findall(rule)
        declared = set(path.model_fields) if path else set()
        if set(params) != declared:
            raise ValueError(f"{method} {rule}: path parameters {params} but the model declares {sorted(declared)}")

        def register(handler: F) -> F:
            endpoint = f"{handler.__name__}_{len(self.operations)}"
            op = Operation(method.upper(), rule, endpoint, operation_id or handler.__name__, summary,
                           description or (handler.__doc__ or "").strip(), self.tag, path, query or NoQuery,
                           query is not None, body, body_required, responses or {200: Response(description="OK")},
                           admin)
            self.operations.append(op)
            self.blueprint.add_url_rule(_PARAM.sub(r"<\1>", rule), endpoint, _view(op, handler), methods=[op.method])
            return handler

        return register


def _view(op: Operation, handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def view(**raw: str) -> Any:
        if op.admin:
            require_admin()
        kwargs: dict[str, Any] = {}
        problems: list[dict[str, Any]] = []
        if op.path_model is not None:
            kwargs["path"] = _validate(op.path_model, raw, "path", problems)
        parsed_query = _validate(op.query_model, _query_args(problems), "query", problems)
        if op.pass_query:
            kwargs["query"] = parsed_query
        if op.body_model is not None:
            data = await read_json_body(op.body_required, problems)
            kwargs["body"] = None if data is _MISSING else _validate(op.body_model, data, "body", problems,
                                                                      strict=True)
        if problems:
            raise E.ValidationFailed("the request does not fit this route's parameters or body", errors=problems)
        return await handler(**kwargs)

    view.__name__ = op.endpoint
    return view


_MISSING: Any = object()


def _validate(model: type[BaseModel], data: Any, where: str, problems: list[dict[str, Any]],
              *, strict: bool = False) -> Any:
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        problems.extend(pydantic_problems(exc, where, tags=getattr(model, "union_tags", frozenset())))
        return None


def pydantic_problems(exc: ValidationError, where: str, *prefix: str | int,
                      tags: frozenset[str] = frozenset()) -> list[dict[str, Any]]:
    """Each pydantic error as a problem; the input itself is never echoed (it may be huge or secret).

    ``tags`` are the names of a tagged union's branches: pydantic puts the branch first in the
    location, but it is no part of the input's path.
    """
    out = []
    for e in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = e["loc"][1:] if e["loc"] and e["loc"][0] in tags else e["loc"]
        out.append({"path": E.json_pointer(*prefix, *loc), "message": e["msg"], "type": e["type"], "in": where})
    return out


def _query_args(problems: list[dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, values in request.args.lists():
        if len(values) > 1:
            problems.append({"path": E.json_pointer(name), "message": "given more than once", "in": "query"})
        out[name] = values[0]
    return out


def _reject_constant(name: str) -> Any:
    raise E.InvalidJson(f"{name} is not valid JSON")


async def read_json_body(required: bool, problems: list[dict[str, Any]]) -> Any:
    """The parsed JSON body; ``_MISSING`` (with a problem noted when ``required``) if there is none."""
    raw = await request.get_data(cache=True)
    # The media type itself, parameters aside: "application/jsonx" is not JSON (and would have
    # skipped the front door's strict JSON check, which looks at exactly application/json).
    ctype = request.headers.get("content-type", "")
    if raw and ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise E.UnsupportedMediaType("send Content-Type: application/json")
    if not raw:
        if required:
            problems.append({"path": "", "message": "this route needs a JSON object body", "in": "body"})
            return _MISSING
        return {}
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise E.InvalidJson() from exc
    check_depth(body, MAX_JSON_DEPTH)
    return body
