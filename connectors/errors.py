"""The connectors' one exception root, and its kinds."""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error raised by :mod:`connectors`."""


class ProviderFault(ConnectorError):
    """Asking a provider failed. The broker turns every one into ``undetermined``.

    ``reason`` is a short slug safe to log: it never holds personal data or tokens.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConfigError(ConnectorError):
    """A participant's config file is missing, unreadable or invalid."""


class RequestRefused(ConnectorError):
    """An HTTP request refused as it stands: its status, a problem slug and a detail that is
    safe to show (never the request's content)."""

    def __init__(self, status: int, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail
