"""The REST API (Quart-Trio): one blueprint per domain, documented in ``docs/api.md``."""
