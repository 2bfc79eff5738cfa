"""The console's fixtures (a gateway in api_key mode, one chromium per module, screenshots)."""

from tests.console.kit import browser, gateway, shots

__all__ = ["browser", "gateway", "shots"]
