"""The ``northstar`` command line: ``main`` parses the arguments and runs one command.

``main.py`` has the parser and the serving commands (``serve``, ``stdio``); ``admin.py`` the
policy, key and audit commands; ``workbench.py`` the drafts, sandbox and publishing commands.
"""

from northstar.cli.main import main as main

__all__ = ["main"]
