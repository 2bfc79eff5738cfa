"""The northstar benchmark suite: ``python -m bench`` (``make bench``); see docs/performance.md."""
