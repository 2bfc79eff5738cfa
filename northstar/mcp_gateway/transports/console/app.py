"""The console's own routes: sign-in, sign-out and the pages (each a shell its module fills from ``/v1``).

Nothing here reads or changes the gateway's data: the pages' modules do, through the REST API
with the session cookie (and the session's CSRF token on every state change). A page request
only resolves the session exactly as the REST API does
(:meth:`~northstar.policy.auth.Authenticator.authenticate_session`) to know who is asking:
without a live session it redirects to the sign-in page, and an admin page answers 403 to
anyone but an admin.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from quart import Response, render_template, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from northstar.common import errors as E
from northstar.common.identity import RequestContext, Transport
from northstar.mcp_gateway.transports.console.pages import PAGES, Page
from northstar.mcp_gateway.transports.console.security import (
    PAGE_CACHE,
    SECURITY_HEADERS,
    cleared_cookie,
    same_origin,
    session_cookie,
)
from northstar.policy.console_sessions import COOKIE_NAME, ConsoleSession
from northstar.workbench.drafts.service import DRAFT_ID_PATTERN

HERE = Path(__file__).resolve().parent
PREFIX = "/console"
LOGIN = f"{PREFIX}/login"
MAX_KEY_CHARS = 256  # an nsk_ key is 81 characters; anything far longer is not one
_DRAFT_ID = re.compile(DRAFT_ID_PATTERN)


class ConsoleMount:
    """ASGI: ``/console`` and below to the console, everything else (and lifespan) to the REST app."""

    def __init__(self, console: Any, rest: Any) -> None:
        self.console = console
        self.rest = rest

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
            await self.console(scope, receive, send)
        else:
            await self.rest(scope, receive, send)


def build_console_app(services: Any) -> QuartTrio:
    app = QuartTrio("northstar.console", template_folder=str(HERE / "templates"),
                    static_folder=str(HERE / "static"), static_url_path=f"{PREFIX}/static")
    app.config.update(MAX_CONTENT_LENGTH=16 * 1024, SEND_FILE_MAX_AGE_DEFAULT=None, TEMPLATES_AUTO_RELOAD=False)
    auth = services.authenticator

    @app.after_request
    async def harden(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith(f"{PREFIX}/static/"):
            response.headers["Cache-Control"] = "no-cache"
        else:
            response.headers["Cache-Control"] = PAGE_CACHE
        return response

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return await error_page(404, "There is no such page.")

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> Response:
        return await error_page(405, "That method is not allowed here.")

    @app.errorhandler(HTTPException)
    async def http_error(err: HTTPException) -> Response:
        return await error_page(err.code or 400, "The request was refused.")

    @app.errorhandler(Exception)
    async def failed(_: Exception) -> Response:
        app.logger.exception("console page failed")
        return await error_page(500, "Something went wrong; the gateway's log has the details.")

    @app.get(PREFIX)
    async def root() -> Response:
        return see_other(f"{PREFIX}/")

    @app.get(LOGIN)
    async def login_form() -> Response:
        if await signed_in(auth) is not None:
            return see_other(f"{PREFIX}/")
        return await page_response(await render_template("login.html", message=None), 200)

    @app.post(LOGIN)
    async def login() -> Response:
        if not same_origin(request.headers.get("origin"), request.scheme, request.headers.get("host")):
            return await error_page(403, "Sign in from the console's own page.")
        form = await request.form
        key = form.get("key", "")
        try:
            if not key or len(key) > MAX_KEY_CHARS:
                raise E.Unauthorized("malformed API key")
            session_id, _ = await auth.sign_in(key)
        except E.Unauthorized:
            return await login_page("That key was not accepted (unknown, revoked or malformed).", 401)
        except E.KeyNotConfirmed:
            return await login_page("That admin key is not confirmed yet: an operator adopts it first "
                                    "(northstar keys adopt).", 403)
        response = see_other(f"{PREFIX}/")
        response.headers["Set-Cookie"] = session_cookie(session_id, secure=request.scheme == "https")
        return response

    @app.post(f"{PREFIX}/logout")
    async def logout() -> Response:
        if not same_origin(request.headers.get("origin"), request.scheme, request.headers.get("host")):
            return await error_page(403, "Sign out from the console's own page.")
        session_id = request.cookies.get(COOKIE_NAME)
        form = await request.form
        session = auth.session(session_id) if session_id else None
        if session is not None and not session.csrf_ok(form.get("csrf")):
            return await error_page(403, "The sign-out form was not this session's.")
        if session_id:
            auth.sign_out(session_id)
        response = see_other(LOGIN)
        response.headers["Set-Cookie"] = cleared_cookie(secure=request.scheme == "https")
        return response

    for page in PAGES:
        app.add_url_rule(page.path, page.name, page_view(auth, page), methods=["GET"])
    return app


def page_view(auth: Any, page: Page) -> Any:
    async def view(**params: str) -> Response:
        found = await signed_in(auth)
        if found is None:
            response = see_other(LOGIN)
            if request.cookies.get(COOKIE_NAME):
                response.headers["Set-Cookie"] = cleared_cookie(secure=request.scheme == "https")
            return response
        if isinstance(found, E.NorthstarError):
            return await error_page(found.http_status, found.message)
        ctx, session = found
        if page.admin and not ctx.is_admin:
            return await error_page(403, f"The {page.title} page needs an admin key.", ctx=ctx, session=session)
        draft_id = params.get("draft_id")
        if draft_id is not None and not _DRAFT_ID.fullmatch(draft_id):
            return await error_page(404, "There is no such draft.", ctx=ctx, session=session)
        body = await render_template(f"{page.name}.html", page=page, pages=PAGES, ctx=ctx, csrf=session.csrf_token,
                                     draft_id=draft_id)
        return await page_response(body, 200)

    view.__name__ = f"page_{page.name}"
    return view


async def signed_in(auth: Any) -> tuple[RequestContext, ConsoleSession] | E.NorthstarError | None:
    """The caller behind the session cookie; None without a live session; the error for a refused key."""
    session_id = request.cookies.get(COOKIE_NAME)
    if not session_id:
        return None
    try:
        found: tuple[RequestContext, ConsoleSession] = await auth.authenticate_session(
            session_id, list(request.headers.items()), Transport.HTTP, method="GET")
    except E.Unauthorized:
        return None
    except E.NorthstarError as err:
        return err
    return found


def see_other(location: str) -> Response:
    """303 to a page of the console (never to a place named by the request: no open redirect)."""
    return Response("", status=303, headers={"Location": location})


async def page_response(body: str, status: int) -> Response:
    return Response(body, status=status, content_type="text/html; charset=utf-8")


async def login_page(message: str, status: int) -> Response:
    return await page_response(await render_template("login.html", message=message), status)


async def error_page(status: int, message: str, *, ctx: RequestContext | None = None,
                     session: ConsoleSession | None = None) -> Response:
    body = await render_template("error.html", status=status, message=message, ctx=ctx, pages=PAGES,
                                 csrf=session.csrf_token if session else None, page=None)
    return await page_response(body, status)
