"""The aiohttp application: `init_app(config)` wires the route table, the error middleware, CORS,
metrics, and (in cleanup_ctx) the Kubernetes client and the watch tasks that feed the caches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from onair.api_gateway.cache import Store, WatchCache
from onair.api_gateway.config import GatewayConfig
from onair.api_gateway.errors import error_middleware, log_unparsable_requests_as_warnings, problem_response
from onair.api_gateway.handlers import Gateway
from onair.api_gateway.openapi import build_document
from onair.api_gateway.preview_relay import PreviewRelay
from onair.api_gateway.routes import ROUTES
from onair.api_gateway.watched_secrets import ApiKeysSecret, SigningKeySecret, WatchedSecret
from onair.kubeclient import Credentials, KubeClient
from onair.processmetrics import register_process_metrics
from onair.streamkeys import PREVIEW_PATH, check_seed

log = logging.getLogger("onair.gateway")
CONFIG_KEY = web.AppKey("config", GatewayConfig)
STORE_KEY = web.AppKey("store", Store)
GATEWAY_KEY = web.AppKey("gateway", Gateway)
KUBE_KEY = web.AppKey("kube", KubeClient)
REGISTRY_KEY = web.AppKey("registry", CollectorRegistry)
RELAY_KEY = web.AppKey("relay", PreviewRelay)
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Content-Encoding, Idempotency-Key"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    def __init__(self, registry: CollectorRegistry, store: Store, relay: PreviewRelay) -> None:
        self.requests = Counter("onair_gateway_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=registry)
        self.latency = Histogram("onair_gateway_request_seconds", "Request latency", ["method", "route"],
                                 registry=registry, buckets=(.001, .0025, .005, .01, .02, .05, .1, .25, .5, 1, 2.5))
        cached = Gauge("onair_gateway_cached_objects", "Objects in the watch caches", ["cache"], registry=registry)
        synced = Gauge("onair_gateway_cache_synced", "1 when the cache has listed", ["cache"], registry=registry)
        for cache in store.caches:
            cached.labels(cache.name).set_function(partial(_size, cache))
            synced.labels(cache.name).set_function(partial(_synced, cache))
        Gauge("onair_gateway_preview_viewers", "Live preview viewers the gateway relays",
              registry=registry).set_function(lambda: len(relay.viewers))
        Gauge("onair_gateway_preview_encoders", "Encoder previews the gateway has open: one per job watched "
              "through it, however many watch", registry=registry).set_function(lambda: len(relay.previews))
        # (method, route, status) -> its two series: labels() costs a few µs a call, on every request
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        # The HTTP parser accepts WebDAV's methods and the like too: those count as one value, OTHER.
        method = method if method in KNOWN_METHODS else "OTHER"
        series = self._series.get((method, route, status))
        if series is None:
            series = self._series[(method, route, status)] = (
                self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
        series[0].inc()
        if status != 101:  # a WebSocket's time is how long its viewer watched, not a latency
            series[1].observe(seconds)


def _size(cache: WatchCache) -> float:
    return float(len(cache.objects))


def _synced(cache: WatchCache) -> float:
    return 1.0 if cache.synced.is_set() else 0.0


def cors_middleware(origins: tuple[str, ...]) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        origin = request.headers.get("Origin", "").rstrip("/")
        allowed = origin and ("*" in origins or origin in origins)
        if request.method == "OPTIONS" and request.headers.get("Access-Control-Request-Method"):
            response: web.StreamResponse
            if not allowed:
                # Escaped: an Origin may hold bytes that are not UTF-8, and the answer must still encode.
                shown = origin.encode("ascii", "backslashreplace").decode() if origin else "(none)"
                response = problem_response(403, [f"Origin: {shown} is not allowed"])
            else:
                response = web.Response(status=204)
                response.headers["Access-Control-Allow-Methods"] = CORS_METHODS
                response.headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        # Every answer, also one to an origin that is not allowed: a cache keeps them apart by Origin.
        response.headers["Vary"] = "Origin"
        if allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            # Retry-After: a console backs off as a 503 or 429 says (a busy API server, a preview not up yet).
            response.headers["Access-Control-Expose-Headers"] = "Location, Idempotent-Replayed, Retry-After"
        return response
    return middleware


def metrics_middleware(metrics: Metrics) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            metrics.observe(request.method, route, status, time.perf_counter() - started)
    return middleware


def init_app(config: GatewayConfig, *, kube: KubeClient | None = None, store: Store | None = None,
             clock: Callable[[], float] = time.time) -> web.Application:
    """The gateway app. Without `kube`, one is made from config.kubeconfig (or discovered) at startup;
    with config.watch false no watch task runs (tests feed `store` directly)."""
    check_seed(config.stream_key_seed, "ONAIR_GATEWAY_STREAM_KEY_SEED")
    store = store or Store(config.template_namespace, config.stream_key_seed, config.watch_namespaces)
    registry = CollectorRegistry()
    register_process_metrics(registry)
    relay = PreviewRelay(store, config.preview_port, config.preview_max_viewers)
    metrics = Metrics(registry, store, relay)
    log_unparsable_requests_as_warnings()
    app = web.Application(client_max_size=config.max_body_bytes,
                          middlewares=[metrics_middleware(metrics), cors_middleware(config.cors_origins),
                                       error_middleware])
    gateway = Gateway(config, store, kube, clock)
    gateway.openapi_document = build_document(ROUTES)
    watched = gateway.watched_secrets
    if config.api_keys_secret:
        watched.append(ApiKeysSecret(*config.api_keys_secret_ref, config.api_keys_secret_key, gateway.tokens,
                                     registry))
    if config.jwt_secret_secret:
        watched.append(SigningKeySecret(*config.jwt_secret_secret_ref, config.jwt_secret_secret_key,
                                        gateway.tokens, registry))
    app[CONFIG_KEY] = config
    app[STORE_KEY] = store
    app[GATEWAY_KEY] = gateway
    app[REGISTRY_KEY] = registry
    app[RELAY_KEY] = relay
    for route in ROUTES:
        wrapped = gateway.wrap(route)
        wrapped.route = route  # type: ignore[attr-defined]
        if route.method == "GET":  # and HEAD, answered as GET without the body
            app.router.add_get(route.path, wrapped, name=route.handler)
        else:
            app.router.add_route(route.method, route.path, wrapped, name=route.handler)

    async def metrics_view(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def readyz(request: web.Request) -> web.Response:
        ready = gateway.ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    if config.public_metrics:  # false where the API port is public and its metrics must not be
        app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get(PREVIEW_PATH + "/{key}", relay.handle)
    app.cleanup_ctx.append(_kube_context(gateway, store, config, kube, watched))
    app.cleanup_ctx.append(relay.client_session)
    app.on_shutdown.append(relay.close_viewers)
    return app


def _kube_context(gateway: Gateway, store: Store, config: GatewayConfig, given: KubeClient | None,
                  watched: list[WatchedSecret]) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(app: web.Application) -> AsyncIterator[None]:
        kube = given
        own = False
        if kube is None and config.watch:
            credentials = (Credentials.from_kubeconfig(config.kubeconfig) if config.kubeconfig
                           else Credentials.discover())
            kube = KubeClient(credentials, connections=128, field_manager="onair-gateway")
            own = True
        gateway.kube = kube
        if kube is not None:
            app[KUBE_KEY] = kube
        tasks = []
        if kube is not None and config.watch:
            own_caches = [secret.cache for secret in watched]
            tasks = [asyncio.create_task(cache.run(kube), name=f"watch-{cache.name}")
                     for cache in [*store.caches, *own_caches]]
            try:
                await asyncio.wait_for(asyncio.gather(*(c.synced.wait() for c in [*store.core_caches, *own_caches])),
                                       config.cache_sync_timeout)
            except TimeoutError:
                log.warning("caches not synced after %.0fs; serving 503 until they are", config.cache_sync_timeout)
            for secret in watched:
                secret.warn_if_missing()
        yield
        for task in tasks:
            task.cancel()
        for task in list(gateway.background):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 5)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if own and kube is not None:
            await kube.close()
    return context
