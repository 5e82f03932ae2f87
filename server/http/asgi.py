"""ASGI plumbing shared by the HTTP front doors (OpenAI and KServe REST): the API key check, JSON bodies and
responses, errors in OpenAI's shape, and watching for a client that leaves."""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server.auth import bearer_matches
from server.http import errors
from server.http.errors import HttpError

log = logging.getLogger(__name__)
JSON_HEADERS = [(b"content-type", b"application/json")]


class ApiKeyCheck:
    """ASGI middleware: with an API key configured, every path needs it except health (KServe's too) and the page itself
    (the page holds no data; it asks for the key and sends it with its API calls)."""

    OPEN = ("/health", "/", "/favicon.ico", "/v2/health/live", "/v2/health/ready")

    def __init__(self, app, key: str | None):
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send) -> None:
        if self.key is None or scope["type"] != "http" or scope["path"] in self.OPEN \
                or scope["path"].startswith("/static/"):
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if header is not None and bearer_matches(header.decode("latin-1"), self.key):
            return await self.app(scope, receive, send)
        await send_error(send, errors.unauthorized(), [(b"www-authenticate", b"Bearer")])


def dumps(data) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(data, status: int = 200) -> Response:
    return Response(dumps(data), status, media_type="application/json")


def error_response(error: HttpError) -> Response:
    return Response(error.body(), error.status, media_type="application/json")


async def send_json(send, status: int, data) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": dumps(data)})


async def send_error(send, error: HttpError, headers=()) -> None:
    await send({"type": "http.response.start", "status": error.status, "headers": JSON_HEADERS + list(headers)})
    await send({"type": "http.response.body", "body": error.body()})


async def until_disconnected(work: Awaitable, receive) -> asyncio.Future:
    """Run `work` while watching for the client leaving, which cancels it; the finished (or cancelled) task."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(disconnected(receive))
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    task.cancel()  # a no-op when it finished; otherwise the client left
    gone.cancel()
    await asyncio.gather(task, gone, return_exceptions=True)
    return task


async def disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def read_json(request: Request, limit: int):
    size = request.headers.get("content-length", "")
    if size.isdigit() and int(size) > limit:
        raise errors.for_status(413, f"body: {size} bytes, above this server's limit of {limit}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise errors.for_status(413, f"body: above this server's limit of {limit} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"body: not valid JSON ({exc})", "invalid_request_error", "body") from None


async def http_exception(request: Request, exc: HTTPException) -> Response:
    detail = exc.detail if exc.status_code != 404 else f"{request.url.path}: no such path"
    if exc.status_code == 405:
        detail = f"{request.method} {request.url.path}: method not allowed"
    return Response(errors.for_status(exc.status_code, detail).body(), exc.status_code,
                    headers=exc.headers, media_type="application/json")


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in an HTTP call", exc_info=exc)
    return error_response(errors.internal(exc))
