"""The OpenAI-compatible HTTP API and the chat page: HTTP/JSON <-> engine requests and events.

Like server/grpc/servicer.py for gRPC, this only translates; the engine (shared with gRPC) does the work.
"""
from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from server.calls import Gateway
from server.engine import reasoning, tool_parsers
from server.engine.errors import EngineError, NotReady, ValidationError
from server.engine.types import Event, Finished, TextDelta
from server.http import answers, errors, responses, schema, tokens
from server.http.asgi import (ApiKeyCheck, dumps, error_response, http_exception, json_response, read_json,
                              send_error, send_json, unexpected, until_disconnected)
from server.http.errors import HttpError

log = logging.getLogger(__name__)
STATIC = Path(__file__).with_name("static")
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]


class OpenAIApi:
    """The HTTP front door; `calls` (shared with the other front doors) holds the engine and the drain state."""

    def __init__(self, calls: Gateway, model_name: str, api_key: str | None, max_body_bytes: int,
                 tool_call_parser: str | None = None, reasoning_parser: str | None = None):
        self.calls = calls
        self.tool_call_parser, self.reasoning_parser = tool_call_parser, reasoning_parser  # None: from the template
        self.model_name = model_name
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.created = int(time.time())

    def app(self, more_routes: list | None = None) -> Starlette:
        """The app: this API's routes, `more_routes` (KServe's REST API), the chat page."""
        routes = [*(more_routes or []),
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/models/{name:path}", self.model, methods=["GET"]),
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/tokenize", self.tokenize, methods=["POST"]),
            Route("/detokenize", self.detokenize, methods=["POST"]),
            Route("/tokenizer_info", self.tokenizer_info, methods=["GET"]),
            Route("/", self.page, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        app = Starlette(routes=routes, exception_handlers={HTTPException: http_exception, Exception: unexpected})
        return ApiKeyCheck(app, self.api_key)

    # ------------------------------------------------------------ plain endpoints

    async def health(self, request: Request) -> Response:
        if not self.calls.ready:
            status = "draining" if self.calls.draining else "loading"
            return json_response({"status": status}, 503)
        return json_response({"status": "serving"})

    def _card(self) -> dict:
        return {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "llm-server"}

    async def models(self, request: Request) -> Response:
        return json_response({"object": "list", "data": [self._card()]})

    async def model(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name != self.model_name:
            return error_response(errors.model_not_found(name, self.model_name))
        return json_response(self._card())

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    # ------------------------------------------------------------ tokens (vLLM's endpoints)

    async def tokenize(self, request: Request) -> Response:
        async def answer(body):
            model, generation, special, strs = tokens.parse_tokenize(body)
            self._check_model(model)
            engine = self._engine()
            (ids,) = await engine.tokenize(generation, special)
            texts = [await engine.detokenize([t]) for t in ids] if strs else None
            return {"count": len(ids), "max_model_len": engine.context_length, "tokens": ids, "token_strs": texts}
        return await self._tokens(request, "tokenize", answer)

    async def detokenize(self, request: Request) -> Response:
        async def answer(body):
            model, ids = tokens.parse_detokenize(body)
            self._check_model(model)
            return {"prompt": await self._engine().detokenize(ids)}
        return await self._tokens(request, "detokenize", answer)

    async def tokenizer_info(self, request: Request) -> Response:
        try:
            return json_response(self._engine().tokenizer_info())
        except NotReady as error:
            return error_response(errors.from_engine(error))

    async def _tokens(self, request: Request, rpc: str, answer) -> Response:
        try:
            return json_response(await answer(await read_json(request, self.max_body_bytes)))
        except (EngineError, HttpError) as error:
            refused = errors.from_engine(error) if isinstance(error, EngineError) else error
            self.calls.refused(rpc, "http", refused.log_code, refused.message)
            return error_response(refused)

    def _check_model(self, model: str | None) -> None:
        if model is not None and model != self.model_name:
            raise errors.model_not_found(model, self.model_name)

    def _engine(self):
        if self.calls.engine is None:
            raise NotReady("the model is still loading")
        return self.calls.engine

    # ------------------------------------------------------------ generation

    async def chat_completions(self, request: Request):
        return await self._generate(request, "chat")

    async def completions(self, request: Request):
        return await self._generate(request, "completion")

    async def _generate(self, request: Request, kind: str):
        body = parsed = None
        try:
            body = await read_json(request, self.max_body_bytes)
            # Choices per call: the engine's max_batch; before it loaded no bound here (the call is refused as loading).
            engine = self.calls.engine
            template = engine.chat_template if engine else None
            parsed = schema.parse(body, kind, engine.limits.max_batch if engine else sys.maxsize,
                                  tool_parsers.for_template(template, self.tool_call_parser))
            if parsed.model is not None and parsed.model != self.model_name:
                raise errors.model_not_found(parsed.model, self.model_name)
            if kind == "chat" and reasoning.detect(template, self.reasoning_parser):
                (prompt,) = await engine.render(parsed.request)
                parsed = replace(parsed, answer=replace(parsed.answer, thinking=reasoning.opened(prompt)))
        except (ValidationError, HttpError) as error:
            refused = errors.from_engine(error, parsed) if isinstance(error, ValidationError) else error
            stream = isinstance(body, dict) and body.get("stream") is True
            rpc = ("chat.completions" if kind == "chat" else "completions") + (".stream" if stream else "")
            self.calls.refused(rpc, "http", refused.log_code, refused.message)
            return error_response(refused)
        return Generation(self, parsed)

    def events(self, request: schema.OpenAIRequest) -> AsyncIterator[Event]:
        """The call's events (every choice's: the engine answers each prompt n times, event index = choice index),
        logged and counted like a gRPC call."""
        call = self.calls.observer.start(request.rpc, list(request.texts), "http")
        return self.calls.generate(request.request, call, lambda error: errors.from_engine(error, request).message)


class Generation:
    """The response to one generation call, as a raw ASGI app: it watches for the client leaving the whole
    time (while queued, while generating, while streaming) and cancels the generation when it does."""

    def __init__(self, api: OpenAIApi, request: schema.OpenAIRequest):
        self.api, self.request = api, request
        self.id = responses.new_id(request.kind)
        self.created = responses.now()

    async def __call__(self, scope, receive, send) -> None:
        await until_disconnected(self._run(send), receive)

    async def _run(self, raw_send) -> None:
        r = self.request
        started = False

        async def send(message) -> None:
            nonlocal started
            started = True
            await raw_send(message)

        try:
            async with aclosing(self.api.events(r)) as events:
                try:
                    first = await anext(events)  # refusals (bad value, queue full, draining) come before it
                except EngineError as error:
                    await send_error(send, errors.from_engine(error, r))
                    return
                if r.stream:
                    await self._stream(send, first, events)
                else:
                    await self._whole(send, first, events)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - answered as a 500 if nothing was sent yet
            log.exception("unexpected error in an HTTP call", exc_info=error)
            if not started:
                await send_error(raw_send, errors.internal(error))

    async def _whole(self, send, first, events) -> None:
        r = self.request
        choices: dict[int, responses.Choice] = {}
        texts: dict[int, list[str]] = {}
        logprobs: dict[int, list] = {}
        prompts: dict[int, tuple] = {}
        try:
            event = first
            while True:
                i = event.index
                if isinstance(event, TextDelta):
                    texts.setdefault(i, []).append(event.text)
                    logprobs.setdefault(i, []).extend(event.logprobs)
                    if event.prompt_logprobs is not None:
                        prompts[i] = event.prompt_logprobs
                elif isinstance(event, Finished):
                    choices[i] = responses.Choice(i, "", responses.FINISH[event.reason], event.usage)
                event = await anext(events)
        except StopAsyncIteration:
            pass
        except EngineError as error:
            await send_error(send, errors.from_engine(error, r))
            return
        for i, choice in choices.items():
            choice.text = "".join(texts.get(i, []))
            if r.kind == "chat" and not r.answer.plain:
                piece = answers.whole(r.answer, choice.text)
                choice.text, choice.reasoning = piece.content, answers.message_fields(piece, r.answer)
                if piece.tool_calls:
                    choice.text, choice.tool_calls, choice.finish_reason = piece.content or None, piece.tool_calls, \
                        "tool_calls"
            if r.logprobs:
                choice.logprobs = logprobs.get(i, [])
            if r.echo:
                choice.prompt, choice.prompt_logprobs = self._echo(i // r.n, prompts.get(i, ()))
        body = responses.whole(r.kind, self.id, self.created, self.api.model_name, list(choices.values()), r.n)
        await send_json(send, 200, body)

    def _echo(self, prompt: int, prompt_logprobs: tuple) -> tuple[str, tuple]:
        """echo: the prompt's text (a token-id prompt's, from its tokens) and, with logprobs, its logprobs."""
        request = self.request.request
        text = request.prompts[prompt] if request.prompts else "".join(lp.token for lp in prompt_logprobs)
        return text, prompt_logprobs if self.request.logprobs else ()

    async def _stream(self, send, first, events) -> None:
        r = self.request
        model, kind, usage = self.api.model_name, r.kind, r.include_usage
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})

        async def emit(data: dict) -> None:
            await send({"type": "http.response.body", "body": b"data: " + dumps(data) + b"\n\n", "more_body": True})

        if kind == "chat":  # OpenAI opens every choice with the assistant's role
            # continuous usage, as vLLM: the prompt's tokens (every copy's conversation is the same), none generated
            event = first
            prompt_tokens = event.prompt_tokens if isinstance(event, TextDelta) else event.usage.prompt_tokens
            now = responses.usage(prompt_tokens, 0, 0) if r.continuous_usage else None
            for i in range(r.prompt_count * r.n):
                await emit(responses.chunk(kind, self.id, self.created, model, i, role=True, with_usage=usage,
                                        usage_now=now))
        finals: list[responses.Choice] = []
        offsets: dict[int, int] = {}  # completions' text_offset, per choice
        readers: dict[int, answers.Reader] = {}  # chat: per choice, its reasoning and calls read apart
        try:
            event = first
            while True:
                i = event.index
                if isinstance(event, TextDelta):
                    text, logprobs = event.text, event.logprobs
                    if r.echo and event.prompt_logprobs is not None:  # a choice's first delta: its prompt first
                        prompt, prompt_logprobs = self._echo(i // r.n, event.prompt_logprobs)
                        text, logprobs = prompt + text, (*prompt_logprobs, *logprobs)
                    piece = answers.Piece(text)
                    if kind == "chat" and not r.answer.plain:
                        piece = readers.setdefault(i, answers.Reader(r.answer)).feed(text)
                    if piece.content or piece.reasoning or piece.tool_calls or (r.logprobs and logprobs):
                        now = responses.usage(event.prompt_tokens, event.completion_tokens, 0) \
                            if r.continuous_usage else None
                        content = piece.content if piece.content or not (piece.reasoning or piece.tool_calls) else None
                        await emit(responses.chunk(kind, self.id, self.created, model, i, content, with_usage=usage,
                                                logprobs=self._logprobs(i, logprobs, offsets), usage_now=now,
                                                tool_calls=piece.tool_calls, reasoning=piece.reasoning))
                elif isinstance(event, Finished):
                    reason = responses.FINISH[event.reason]
                    if i in readers:
                        reader = readers.pop(i)
                        piece = reader.finish()
                        if piece.content or piece.reasoning or piece.tool_calls:
                            await emit(responses.chunk(kind, self.id, self.created, model, i, piece.content or None,
                                                    with_usage=usage, tool_calls=piece.tool_calls,
                                                    reasoning=piece.reasoning))
                        reason = "tool_calls" if reader.called else reason
                    finals.append(responses.Choice(i, "", reason, event.usage))
                    u = event.usage
                    now = responses.usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens) \
                        if r.continuous_usage else None
                    await emit(responses.chunk(kind, self.id, self.created, model, i, None, reason, with_usage=usage,
                                            usage_now=now))
                event = await anext(events)
        except StopAsyncIteration:
            if usage:
                await emit(responses.usage_chunk(kind, self.id, self.created, model, finals, r.n))
        except EngineError as error:  # after the 200: the error goes in the stream, as vLLM does
            failed = errors.from_engine(error, r)
            await send({"type": "http.response.body", "body": b"data: " + failed.body() + b"\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    def _logprobs(self, i: int, logprobs: tuple, offsets: dict[int, int]) -> dict | None:
        """A streamed chunk's logprobs in the kind's shape (None when not asked for)."""
        if not self.request.logprobs:
            return None
        if self.request.kind == "chat":
            return responses.chat_logprobs(list(logprobs))
        out = responses.completion_logprobs(list(logprobs), offsets.get(i, 0))
        offsets[i] = offsets.get(i, 0) + sum(len(lp.token) for lp in logprobs)
        return out
