"""The browser tests' fixtures (defined in tests.web.browser)."""

from tests.web.browser import base_url, chromium, page

__all__ = ["base_url", "chromium", "page"]
