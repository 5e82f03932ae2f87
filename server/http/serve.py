"""The HTTP server: uvicorn inside the gRPC server's event loop, started and stopped by app.py."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from pathlib import Path

import uvicorn
from prometheus_client import make_asgi_app

from server.auth import bearer_matches
from server.calls import Gateway
from server.config import Settings
from server.http import errors
from server.http.api import OpenAIApi
from server.observability import Metrics

log = logging.getLogger(__name__)


class _Uvicorn(uvicorn.Server):
    def capture_signals(self):
        # app.py handles SIGTERM/SIGINT for both servers and drains them together.
        return contextlib.nullcontext()


def model_name(settings: Settings) -> str:
    return settings.served_model_name or Path(settings.model).name or "model"


def model_names(settings: Settings) -> tuple[str, ...]:
    """The names KServe calls may use: the OVMS demo's (`kserve_model_name`), then the served model name."""
    return tuple(dict.fromkeys((settings.kserve_model_name, model_name(settings))))


class WithMetrics:
    """ASGI: GET /metrics (Prometheus' text format) beside `app`. Scrapers carry no API key, so the API key does not
    guard it; `key` (--metrics-api-key), when set, does."""

    def __init__(self, app, metrics: Metrics, key: str | None):
        self.app, self.key = app, key
        self.metrics = make_asgi_app(metrics.registry)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != "/metrics":
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if self.key is not None and not (header is not None and bearer_matches(header.decode("latin-1"), self.key)):
            error = errors.unauthorized()
            await send({"type": "http.response.start", "status": error.status,
                        "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
            return await send({"type": "http.response.body", "body": error.body()})
        await self.metrics(scope, receive, send)


class HttpServer:
    """The OpenAI API, and beside it `routes` of other front doors (app.py gives KServe's REST routes, so this
    package does not import server.kserve, which imports it), and /metrics."""

    def __init__(self, settings: Settings, calls: Gateway, routes=(), metrics: Metrics | None = None):
        self.settings = settings
        self.api = OpenAIApi(calls, model_name(settings), settings.api_key, settings.max_message_bytes,
                             settings.tool_call_parser, settings.reasoning_parser)
        self.routes = routes
        self.metrics = metrics
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task | None = None
        self.url = ""

    async def start(self) -> str:
        """Listen (raises OSError naming the address if the port is taken) and serve in this loop."""
        s = self.settings
        sock = _bind(s.host, s.http_port)
        tls = {}
        if s.tls_cert:
            tls = {"ssl_certfile": s.tls_cert, "ssl_keyfile": s.tls_key}
            if s.tls_client_ca:
                tls |= {"ssl_ca_certs": s.tls_client_ca, "ssl_cert_reqs": ssl.CERT_REQUIRED}
        app = self.api.app(self.routes)
        if self.metrics is not None:
            app = WithMetrics(app, self.metrics, s.metrics_api_key)
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                                timeout_graceful_shutdown=5, server_header=False, **tls)
        for name in ("uvicorn", "uvicorn.error"):  # its start/stop chatter; our own lines say what matters
            logging.getLogger(name).setLevel(logging.WARNING)
        self._server = _Uvicorn(config)
        self._task = asyncio.ensure_future(self._server.serve(sockets=[sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what went wrong
            raise OSError(f"the HTTP server on {s.host}:{s.http_port} stopped at start")
        host = f"[{s.host}]" if ":" in s.host else s.host
        self.url = f"{'https' if s.tls_cert else 'http'}://{host}:{s.http_port}"
        return self.url

    async def stop(self) -> None:
        """Close the port, let finished responses flush (uvicorn's short grace), then end."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await self._task


def _bind(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise OSError(f"cannot listen on {host}:{port} for HTTP: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock
