"""The HTTP server: uvicorn inside the gRPC server's event loop, started and stopped by app.py."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from pathlib import Path

import uvicorn

from server.calls import Gateway
from server.config import Settings
from server.http.api import OpenAIApi

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


class HttpServer:
    """The OpenAI API, and beside it `routes` of other front doors (app.py gives KServe's REST routes, so this
    package does not import server.kserve, which imports it)."""

    def __init__(self, settings: Settings, calls: Gateway, routes=()):
        self.settings = settings
        self.api = OpenAIApi(calls, model_name(settings), settings.api_key, settings.max_message_bytes)
        self.routes = routes
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
        config = uvicorn.Config(self.api.app(self.routes), log_config=None, access_log=False, lifespan="off",
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
