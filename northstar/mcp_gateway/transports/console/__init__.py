"""The web console: pages to author, test, publish, govern and audit tools, served at ``/console``.

The console is a thin client of the REST API. Its pages are server-rendered shells (Jinja2
templates, no inline script) whose ES modules call ``/v1/...`` like any other client: the
browser's session cookie is one more credential of the REST authenticator, so every action
goes through the same routes, permission checks and gate chain. The console's own routes only
sign in and out and decide which page a session may open (admin pages answer 403 to others).

:func:`build_console_app` makes the Quart-Trio app; :class:`ConsoleMount` puts it in front
of the REST app under ``/console``.
"""

from northstar.mcp_gateway.transports.console.app import ConsoleMount as ConsoleMount
from northstar.mcp_gateway.transports.console.app import build_console_app as build_console_app
