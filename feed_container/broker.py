"""The container's only Kite REST client (aiohttp): today that is the instruments dump.

Kite answers ``GET /instruments`` with the day's CSV; the endpoint needs no
session, but an ``Authorization: token api_key:access_token`` header is sent
when one is given, as Kite's clients do.
"""

from __future__ import annotations

import aiohttp

KITE_VERSION = "3"


class KiteHttpError(Exception):
    """Kite answered with a non-2xx status."""

    def __init__(self, status: int, path: str) -> None:
        super().__init__(f"Kite answered {status} for {path}")
        self.status = status


class KiteRest:
    """Minimal Kite REST client bound to one base URL."""

    def __init__(self, base_url: str, *, timeout: float = 60.0) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def instruments_csv(self, authorization: tuple[str, str] | None = None) -> str:
        """The full instruments dump as CSV text."""
        headers = {"X-Kite-Version": KITE_VERSION}
        if authorization is not None:
            api_key, access_token = authorization
            headers["Authorization"] = f"token {api_key}:{access_token}"
        async with (
            aiohttp.ClientSession(timeout=self._timeout) as session,
            session.get(f"{self._base}/instruments", headers=headers) as response,
        ):
            if response.status // 100 != 2:
                raise KiteHttpError(response.status, "/instruments")
            return await response.text()
