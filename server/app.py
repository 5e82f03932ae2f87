"""The server's life: listen, load the model, serve LLMService, KServe's GRPCInferenceService, health and reflection
(and the OpenAI and KServe REST APIs over HTTP), drain on SIGTERM."""
from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from proto import kserve_pb2, kserve_pb2_grpc, llm_pb2, llm_pb2_grpc
from server.auth import ApiKeyInterceptor
from server.calls import Gateway
from server.config import Settings
from server.engine.async_engine import AsyncEngine
from server.engine.errors import one_line
from server.grpc.interceptor import ErrorInterceptor
from server.grpc.servicer import LLMServicer
from server.http.serve import HttpServer, model_name, model_names
from server.kserve.rest import KServeRest
from server.kserve.servicer import KServeServicer
from server.observability import Metrics, Observer

log = logging.getLogger(__name__)
SERVICE = llm_pb2.DESCRIPTOR.services_by_name["LLMService"].full_name
KSERVE = kserve_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def load_engine(settings: Settings, metrics: Metrics | None):
    from server.engine.engine import Engine
    from server.engine.model import LoadedModel

    ov_config = {"CACHE_DIR": settings.cache_dir, **settings.ov_config}
    cache = Path(ov_config["CACHE_DIR"])
    warm = cache.is_dir() and any(cache.glob("*.blob"))  # compiled blobs from an earlier start
    try:
        model = LoadedModel.load(settings.model, settings.device, ov_config, settings.trust_remote_code,
                                 settings.batch_invariant, settings.scheduler.graphs)
    except Exception as exc:
        raise RuntimeError(f"cannot load the model in {settings.model} on {settings.device} "
                           f"(ov_config {settings.ov_config}): {one_line(exc)}") from exc
    info = model.info
    log.info("model loaded: path=%s device=%s weights=%s context=%d load_time=%.2fs model_cache=%s (%s)",
             info.path, info.device, info.precision, info.context_length, info.load_seconds,
             "warm" if warm else "cold", cache)
    log.info("numerics: %s%s; options: %s%s%s", info.numerics,
             f" (the model directory requires {info.required_precision})" if info.required_precision else "",
             info.options, f"; {info.runtime_note}" if info.runtime_note else "",
             "; batch-invariant mode: the same prompt gives the same greedy text whatever runs beside it"
             if settings.batch_invariant else "")
    engine = Engine(model, settings.generation, settings.limits, settings.scheduler,
                    on_batch=metrics.batch_size.observe if metrics else None, kv_cache=settings.kv_cache,
                    speculation=settings.speculation, model_defaults=settings.generation_config == "auto")
    if metrics:
        metrics.load_seconds.set(info.load_seconds)
        metrics.watch_engine(engine)
    return engine


def listen(server, settings: Settings) -> str:
    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert:
        credentials = grpc.ssl_server_credentials(
            [(Path(settings.tls_key).read_bytes(), Path(settings.tls_cert).read_bytes())],
            root_certificates=Path(settings.tls_client_ca).read_bytes() if settings.tls_client_ca else None,
            require_client_auth=bool(settings.tls_client_ca),
        )
        bound = server.add_secure_port(address, credentials)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    return address


async def set_health(health, status) -> None:
    for name in ("", SERVICE):
        await health.set(name, status)


async def stop_servers(server, http, grace: float) -> None:
    await asyncio.gather(server.stop(grace), *([http.stop()] if http is not None else []))


async def drain(server, calls: Gateway, health, grace: float, http=None) -> None:
    """Stop taking calls, let running ones finish within `grace` seconds, then stop everything."""
    log.info("shutting down: refusing new calls, letting running ones finish (grace %.0fs)", grace)
    await set_health(health, NOT_SERVING)
    calls.draining = True  # HTTP's /health and KServe's readiness say so
    if calls.engine is not None:
        calls.engine.stop_accepting()  # new calls now get UNAVAILABLE
    # Keep the port open while calls drain: health checks answer NOT_SERVING and new calls get a clear
    # UNAVAILABLE (gRPC itself would cancel calls that arrive after stop()).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while calls.engine is not None and calls.engine.active and loop.time() < deadline:
        await asyncio.sleep(0.05)
    # What is left are health Watch streams and the last bytes of finished calls: a short grace, not the rest.
    await stop_servers(server, http, 1.0)
    if calls.engine is not None:
        calls.engine.close()  # cancels whatever outlived the grace period


async def serve(settings: Settings) -> int:
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
    ]
    interceptors = [ErrorInterceptor(SERVICE), ErrorInterceptor(KSERVE)]
    if settings.api_key:
        interceptors.insert(0, ApiKeyInterceptor(settings.api_key))
    server = grpc.aio.server(interceptors=interceptors, options=options)
    metrics = Metrics(model_name(settings))  # on the HTTP port's /metrics, and on metrics_port when set
    observer = Observer(metrics, settings.log_prompts)
    calls = Gateway(observer)  # what the front doors share: the engine, the drain state, call accounting
    http = None  # the OpenAI and KServe REST front doors, and /metrics
    if settings.http_port:
        kserve_rest = KServeRest(calls, model_names(settings), settings.max_message_bytes)
        http = HttpServer(settings, calls, kserve_rest.routes(), metrics)
    health = health_aio.HealthServicer()
    llm_pb2_grpc.add_LLMServiceServicer_to_server(LLMServicer(calls), server)
    kserve_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(KServeServicer(calls, model_names(settings)), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (SERVICE, KSERVE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    address = listen(server, settings)
    await set_health(health, NOT_SERVING)
    await server.start()
    log.info("listening on %s%s (NOT_SERVING until the model is loaded)", address, " with TLS" if settings.tls_cert else "")
    if http is not None:
        try:
            url = await http.start()
        except BaseException:
            await server.stop(0)
            raise
        log.info("OpenAI-compatible HTTP API on %s/v1, KServe v2 REST on %s/v2, chat page on %s/ "
                 "(503 until the model is loaded)", url, url, url)
    if settings.metrics_port:
        metrics.serve(settings.host, settings.metrics_port)
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    loading = asyncio.ensure_future(asyncio.to_thread(load_engine, settings, metrics))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if loading.done():
        if loading.exception() is not None:
            await stop_servers(server, http, 0)
            raise loading.exception()
        calls.engine = AsyncEngine(loading.result())  # one engine, every front door
        await set_health(health, SERVING)
        log.info("serving %s on %s", SERVICE, address)
        log.info("serving %s on %s: model %s", KSERVE, address, " or ".join(model_names(settings)))
        await stopping

    await drain(server, calls, health, settings.grace_seconds, http)
    if calls.engine is None and not loading.done():
        loading.cancel()
    log.info("stopped")
    return 0
