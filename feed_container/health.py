"""``/healthz``, ``/readyz`` and ``/metrics`` on one small aiohttp server.

* ``/healthz`` (the ECS container health check): 200 while the event loop
  answers and the service is not shutting down.
* ``/readyz``: 200 once instruments are loaded and subscriptions reconciled,
  and (when anything is desired) at least one connection is streaming;
  otherwise 503 with the reasons.
* ``/metrics``: Prometheus text.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from feed_container.metrics import Metrics

#: Returns the reasons the service is not ready (empty: ready).
Readiness = Callable[[], list[str]]


class HealthServer:
    """Serves the three endpoints; ``alive`` flips to False on shutdown."""

    def __init__(self, metrics: Metrics, readiness: Readiness) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self.alive = True
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics_page)
        self._app = app

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (``port`` 0 picks one)."""
        self._runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server  # the bound port of an ephemeral bind
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else port
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _healthz(self, _: web.Request) -> web.Response:
        if not self.alive:
            return web.json_response({"status": "stopping"}, status=503)
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        reasons = self._readiness()
        if reasons:
            return web.json_response({"status": "not ready", "reasons": reasons}, status=503)
        return web.json_response({"status": "ready"})

    async def _metrics_page(self, _: web.Request) -> web.Response:
        return web.Response(
            text=self._metrics.render_prometheus(), content_type="text/plain", charset="utf-8"
        )
