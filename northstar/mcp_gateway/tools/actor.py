"""The tool runtime: one :class:`ToolActor` per tool definition, driven by :class:`Invoke`.

The message set is closed: an actor understands exactly :class:`Invoke` (frozen), and
answers with an :class:`InvokeResult`. The caller (the gateway's call path) has already
resolved the operation, checked the caller's firearms and validated the arguments into
the operation's input model; the actor runs the handler and checks its output.

Failure semantics ("let it crash"):

* A handler raising a :class:`~northstar.common.errors.NorthstarError` (``NotFound``,
  ``ValidationFailed``, ...) is an *answer*, not a failure of the actor: it comes back as
  ``InvokeResult(output=None, error=err)`` and the actor keeps serving.
* So are the actor's own refusals: an unknown operation (``UnknownTool``), arguments of
  the wrong model (``ValidationFailed``) and output that does not fit the operation's
  output model (``ToolFailed``); none of them leaves the actor in doubt about its state.
* Any other exception from a *handler* is a bug in that call: it is logged for the operator
  (``tool crashed``, with the request id, tool, operation and exception type) and answered with
  ``ToolFailed("the tool crashed while handling the call")``, naming nothing of the
  exception. It is contained to its own call: handlers are functions over the tool's
  services and hold no state of the actor's, so crashing the actor would only fail every
  other call in flight on it (other principals' included) for nothing.
* An exception anywhere else in the actor still crashes it: the runtime answers the callers
  in flight with :class:`actors.ActorCrashed` and the supervisor restarts it from its
  factory (see :func:`tool_child`).
* ``trio.Cancelled`` (a caller timing out, shutdown) propagates untouched.

An operation with a ``sync_handler`` (a handler that never waits, such as ``echo.ping``) is
answered inline by the serving loop (:meth:`actors.Actor.answer_now`): same checks, same
containment, no task or cancel scope per call.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

import actors
from northstar.common.errors import NorthstarError, ToolFailed, UnknownTool, ValidationFailed
from northstar.mcp_gateway.tools.model import Operation, ToolContext, ToolDefinition

log = logging.getLogger("northstar.tools")

DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_CAPACITY = 64


@dataclass(frozen=True, slots=True)
class Invoke:
    """Run ``operation`` with already validated ``arguments`` (an input-model instance)."""

    tctx: ToolContext
    operation: str
    arguments: BaseModel


@dataclass(frozen=True, slots=True)
class InvokeResult:
    """The answer to an :class:`Invoke`: an output model instance, or a deliberate error."""

    output: BaseModel | None
    error: NorthstarError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> BaseModel:
        """The output, or raise the error."""
        if self.error is not None:
            raise self.error
        assert self.output is not None
        return self.output


ToolMessage = Invoke  # the closed message set; widen to a union when messages are added


def actor_name(definition: ToolDefinition) -> str:
    return f"tool:{definition.tool_id}"


class ToolActor(actors.Actor[ToolMessage, InvokeResult]):
    """Serves the operations of one tool definition, up to ``max_concurrency`` at once."""

    max_concurrency = DEFAULT_MAX_CONCURRENCY

    def __init__(self, definition: ToolDefinition, *, max_concurrency: int = DEFAULT_MAX_CONCURRENCY) -> None:
        super().__init__(actor_name(definition))
        self.definition = definition
        self.max_concurrency = max_concurrency

    def answer_now(self, msg: ToolMessage) -> InvokeResult | actors.NotNow:
        """Operations with a ``sync_handler`` (they never wait) are answered inline."""
        if not isinstance(msg, Invoke):
            return actors.NOT_NOW
        op = self._operation(msg.operation, msg.arguments)
        if isinstance(op, InvokeResult):
            return op
        if op.sync_handler is None:
            return actors.NOT_NOW
        try:
            output = op.sync_handler(msg.tctx, msg.arguments)
        except NorthstarError as err:
            return InvokeResult(None, err)
        except Exception as exc:
            return self._crashed(msg.tctx, msg.operation, exc)
        return check_output(self.definition, op, output)

    async def handle(self, msg: ToolMessage) -> InvokeResult:
        match msg:
            case Invoke(tctx=tctx, operation=operation, arguments=arguments):
                return await self._invoke(tctx, operation, arguments)
            case _:
                raise TypeError(f"{self.name} got a message it does not understand: {type(msg).__name__}")

    def _operation(self, operation: str, arguments: BaseModel) -> Operation | InvokeResult:
        """The operation to run, or the refusal to answer (unknown operation, wrong model)."""
        found = self.definition.find(operation)
        if found is None:
            name = f"{self.definition.tool_id}.{operation}"
            return InvokeResult(None, UnknownTool(f"unknown operation {name!r}", name=name))
        _, op = found
        if not isinstance(arguments, op.input_model):
            return InvokeResult(None, ValidationFailed(
                f"arguments must be a {op.input_model.__name__}", errors=[{"loc": ["arguments"]}]
            ))
        return op

    def _crashed(self, tctx: ToolContext, operation: str, exc: Exception) -> InvokeResult:
        """A bug in this call only: contained, logged, answered cleanly."""
        log.error("tool crashed", extra={
            "request_id": tctx.request.request_id, "tool": self.definition.tool_id, "operation": operation,
            "error": type(exc).__name__,
        })
        return InvokeResult(None, ToolFailed("the tool crashed while handling the call"))

    async def _invoke(self, tctx: ToolContext, operation: str, arguments: BaseModel) -> InvokeResult:
        op = self._operation(operation, arguments)
        if isinstance(op, InvokeResult):
            return op
        try:
            output = await op.handler(tctx, arguments)
        except NorthstarError as err:
            return InvokeResult(None, err)
        except Exception as exc:
            return self._crashed(tctx, operation, exc)
        return check_output(self.definition, op, output)


def check_output(definition: ToolDefinition, op: Operation, output: object) -> InvokeResult:
    """The handler's output as an instance of the operation's output model, or ToolFailed."""
    if isinstance(output, op.output_model):
        return InvokeResult(output)
    try:
        return InvokeResult(op.output_model.model_validate(output))
    except ValidationError as exc:
        return InvokeResult(None, ToolFailed(
            f"{definition.tool_id}.{op.name} returned output that does not match its schema",
            errors=exc.errors(include_url=False, include_input=False, include_context=False),
        ))


def tool_factory(
    definition: ToolDefinition, *, max_concurrency: int = DEFAULT_MAX_CONCURRENCY
) -> Callable[[], ToolActor]:
    """A zero-argument factory making fresh :class:`ToolActor` instances (for spawn / restarts)."""
    return functools.partial(ToolActor, definition, max_concurrency=max_concurrency)


def tool_child(
    definition: ToolDefinition,
    *,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    capacity: int = DEFAULT_CAPACITY,
    restart: actors.Restart = actors.Restart.PERMANENT,
) -> actors.ChildSpec:
    """A supervisor child spec, id ``tool:<tool_id>``, that runs (and restarts) the tool's actor."""
    return actors.actor_child(
        actor_name(definition),
        tool_factory(definition, max_concurrency=max_concurrency),
        capacity=capacity,
        restart=restart,
    )


def contained_tool_child(
    child_id: str,
    factory: Callable[[], actors.Actor[Any, Any]],
    *,
    capacity: int = DEFAULT_CAPACITY,
    max_restarts: int = 5,
    period: float = 10.0,
    backoff: actors.Backoff | None = None,
    shutdown_timeout: float = 6.0,
) -> actors.ChildSpec:
    """A tool actor contained (:func:`actors.contained`) as a child of ``tools``.

    A crashing handler is restarted (the :class:`actors.ActorRef` stays the same) within the
    tool's own intensity; past it only this tool is down (its callers get 503) until its
    backoff has passed and it is started again, and the crash storm never escalates to the
    tools supervisor or the root. The spec's started value is the tool's ref.
    """
    spec = actors.actor_child(child_id, factory, capacity=capacity)
    return actors.contained(spec, max_restarts=max_restarts, period=period, backoff=backoff,
                            shutdown_timeout=shutdown_timeout)
