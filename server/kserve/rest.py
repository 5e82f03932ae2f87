"""KServe v2 over REST, on the HTTP port beside the OpenAI API: /v2 JSON <-> engine calls.

    curl -d '{"inputs":[{"name":"pre_prompt","shape":[1],"datatype":"BYTES","data":["Hi"]}]}' \
        localhost:8000/v2/models/python_model/infer
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from contextlib import aclosing

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.calls import Gateway
from server.engine.errors import EngineError, ValidationError
from server.engine.types import collect
from server.errors import INTERNAL, status_of
from server.http.asgi import read_json, until_disconnected
from server.http.errors import HttpError
from server.kserve import protocol
from server.kserve.protocol import Prompts

PROTOCOL = "kserve"
RPC = "infer"
log = logging.getLogger(__name__)


class KServeRest:
    def __init__(self, calls: Gateway, model_names: Sequence[str], max_body_bytes: int):
        self.calls = calls
        self.names = tuple(model_names)
        self.max_body_bytes = max_body_bytes

    def routes(self) -> list[Route]:
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        return [
            Route("/v2", self.server_metadata, methods=["GET"]),
            Route("/v2/health/live", self.live, methods=["GET"]),
            Route("/v2/health/ready", self.ready, methods=["GET"]),
            *(r for base in (model, versioned) for r in (
                Route(base, self.model_metadata, methods=["GET"]),
                Route(base + "/ready", self.model_ready, methods=["GET"]),
                Route(base + "/infer", self.infer, methods=["POST"]),
            )),
        ]

    # ------------------------------------------------------------ health and metadata

    async def server_metadata(self, request: Request) -> Response:
        return _json(protocol.server_metadata())

    async def live(self, request: Request) -> Response:
        return _json({"live": True})

    async def ready(self, request: Request) -> Response:
        return _json({"ready": self.calls.ready}, 200 if self.calls.ready else 503)

    async def model_ready(self, request: Request) -> Response:
        try:
            self._check_model(request)
        except EngineError as error:
            return _error(error)
        return _json({"name": request.path_params["name"], "ready": self.calls.ready},
                     200 if self.calls.ready else 503)

    async def model_metadata(self, request: Request) -> Response:
        try:
            self._check_model(request)
        except EngineError as error:
            return _error(error)
        return _json(protocol.model_metadata(request.path_params["name"]))

    def _check_model(self, request: Request) -> None:
        protocol.check_model(request.path_params["name"], request.path_params.get("version", ""), self.names)

    # ------------------------------------------------------------ inference

    async def infer(self, request: Request):
        try:
            self._check_model(request)
            try:
                body = await read_json(request, self.max_body_bytes)
            except HttpError as error:  # too large, or not JSON: said in KServe's shape
                self.calls.refused(RPC, PROTOCOL, error.log_code, error.message)
                return _json({"error": error.message}, error.status)
            prompts, parameters, request_id = parse(body)
            generation = protocol.generation_request(prompts, parameters)
        except EngineError as error:
            self.calls.refused(RPC, PROTOCOL, status_of(error).name, str(error))
            return _error(error)
        return Inference(self.calls, request.path_params["name"], request_id, prompts, generation)


class Inference:
    """One /infer call as a raw ASGI app: the generation runs while it watches for the client leaving, and
    cancels the generation when it does (as the OpenAI API's Generation does)."""

    def __init__(self, calls: Gateway, model: str, request_id: str | None, prompts: Prompts, generation):
        self.calls, self.model, self.request_id = calls, model, request_id
        self.prompts, self.generation = prompts, generation

    async def __call__(self, scope, receive, send) -> None:
        work = await until_disconnected(self._run(), receive)
        if not work.cancelled() and work.exception() is None:
            await work.result()(scope, receive, send)

    async def _run(self) -> Response:
        call = self.calls.observer.start(RPC, list(self.prompts.texts), PROTOCOL)
        try:
            async with aclosing(self.calls.generate(self.generation, call, protocol.kserve_message)) as events:
                completions = collect([event async for event in events])
        except EngineError as error:
            return _error(error)
        except Exception as error:  # noqa: BLE001 - answered as a 500
            log.exception("unexpected error in a KServe REST call", exc_info=error)
            return Response(_dumps({"error": f"internal error: {type(error).__name__}"}), INTERNAL.http,
                            media_type="application/json")
        texts = [c.text for c in completions]
        tokens = sum(c.usage.completion_tokens for c in completions)
        outputs = [{"name": o.name, "shape": list(o.shape), "datatype": o.datatype, "data": list(o.data)}
                   for o in protocol.whole_reply(texts, tokens, False)]
        reply = {"model_name": self.model, "model_version": protocol.VERSION, "outputs": outputs}
        if self.request_id is not None:
            reply["id"] = self.request_id
        return _json(reply)


def parse(body) -> tuple[Prompts, dict, str | None]:
    """An /infer body: its prompts (input `pre_prompt`), its parameters, its id."""
    if not isinstance(body, dict):
        raise ValidationError("body", "expected a JSON object with `inputs`")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        raise ValidationError("inputs", "expected a list of input tensors")
    tensor = inputs[protocol.find_prompt_input([str(i.get("name")) for i in inputs])]
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise ValidationError(f"{protocol.PROMPT}.shape", "expected a list of integers")
    count = protocol.check_tensor(str(tensor.get("datatype")), shape)
    data = tensor.get("data")
    if not isinstance(data, list):
        raise ValidationError(f"{protocol.PROMPT}.data", "expected a list of strings")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ValidationError("parameters", "expected a JSON object")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ValidationError("id", "expected a string")
    return protocol.element_prompts(_flat(data), count), parameters, request_id


def _flat(data: list) -> list:
    """Row-major elements of a nested list (KServe allows [[...]] for a shape [1, N])."""
    return [x for item in data for x in (_flat(item) if isinstance(item, list) else [item])]


def _dumps(data) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _json(data, status: int = 200) -> Response:
    return Response(_dumps(data), status, media_type="application/json")


def _error(error: EngineError) -> Response:
    """KServe's error shape, {"error": "..."}, with the status from server/errors.py's table."""
    return _json({"error": protocol.kserve_message(error)}, status_of(error).http)
