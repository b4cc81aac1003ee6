"""HTTP endpoints inside the operator's event loop: /metrics, and /healthz + /readyz for the kubelet.

Every API call has a time limit, so a pass always ends. Readiness needs the last reconcile pass
(which reads CompressionJobs, Jobs and pods from the watch caches, and fails until they have
listed once, and writes each status) to have succeeded and to have ended recently (an unreachable
apiserver, broken RBAC for the lists). Liveness fails only when no
pass at all has ended for ``liveness_stall_seconds`` (a hung operator), so a short apiserver outage
does not get the operator restarted.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


async def start_servers(
    registry: CollectorRegistry,
    metrics_port: int,
    health_port: int,
    *,
    alive: Callable[[], bool],
    ready: Callable[[], bool],
    host: str = "0.0.0.0",
) -> list[web.AppRunner]:
    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def healthz(_: web.Request) -> web.Response:
        if alive():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="the reconcile loop stopped or no pass has ended for too long\n")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ok\n")
        return web.Response(status=503, text="not ready: no recent successful pass over CompressionJobs\n")

    metrics_app = web.Application()
    metrics_app.router.add_get("/metrics", metrics)
    health_app = web.Application()
    health_app.router.add_get("/healthz", healthz)
    health_app.router.add_get("/readyz", readyz)
    runners = []
    for app, port in ((metrics_app, metrics_port), (health_app, health_port)):
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
    return runners
