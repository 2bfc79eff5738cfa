"""``python -m northstar`` is the ``northstar`` command."""

from northstar.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
