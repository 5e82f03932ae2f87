"""inference.GRPCInferenceService: KServe v2 messages <-> engine calls (server/kserve/protocol.py does the tensors).

Unary errors raise and the interceptor (server/grpc/interceptor.py) ends the call with their status; inside a
stream an error goes back as that request's `error_message` and the stream goes on, as Triton does.
"""
from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing

from proto import kserve_pb2, kserve_pb2_grpc
from server.calls import Gateway
from server.engine.errors import EngineError, ValidationError
from server.engine.types import Finished, GenerationRequest, TextDelta, collect
from server.errors import status_of
from server.grpc.servicer import stop_code
from server.kserve import protocol
from server.kserve.protocol import Output, Prompts

PROTOCOL = "kserve"
log = logging.getLogger(__name__)


class KServeServicer(kserve_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, calls: Gateway, model_names: Sequence[str]):
        self.calls = calls
        self.names = tuple(model_names)

    # ------------------------------------------------------------ health and metadata

    async def ServerLive(self, request, context):
        return kserve_pb2.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return kserve_pb2.ServerReadyResponse(ready=self.calls.ready)

    async def ModelReady(self, request, context):
        protocol.check_model(request.name, request.version, self.names)
        return kserve_pb2.ModelReadyResponse(ready=self.calls.ready)

    async def ServerMetadata(self, request, context):
        return kserve_pb2.ServerMetadataResponse(**protocol.server_metadata())

    async def ModelMetadata(self, request, context):
        protocol.check_model(request.name, request.version, self.names)
        return kserve_pb2.ModelMetadataResponse(**protocol.model_metadata(request.name))

    # ------------------------------------------------------------ inference

    async def ModelInfer(self, request, context):
        prompts, generation = self._parse(request, "ModelInfer")
        try:
            events = [event async for event in self._events(prompts, generation, "ModelInfer", context)]
        except EngineError as error:
            raise protocol.renamed(error) from None
        completions = collect(events)
        tokens = sum(c.usage.completion_tokens for c in completions)
        return _response(request, protocol.whole_reply([c.text for c in completions], tokens, prompts.plain))

    async def ModelStreamInfer(self, request_iterator, context):
        # One request after another, each answered to its end; the call ends when the client half-closes.
        async for request in request_iterator:
            try:
                prompts, generation = self._parse(request, "ModelStreamInfer")
                async for outputs in self._stream(prompts, generation, context):
                    yield kserve_pb2.ModelStreamInferResponse(infer_response=_response(request, outputs))
            except EngineError as error:
                yield kserve_pb2.ModelStreamInferResponse(error_message=protocol.kserve_message(error))
            except Exception as error:  # noqa: BLE001 - that request fails, the stream goes on
                log.exception("unexpected error in a KServe stream", exc_info=error)
                yield kserve_pb2.ModelStreamInferResponse(error_message=f"internal error: {type(error).__name__}")

    async def _stream(self, prompts: Prompts, generation: GenerationRequest, context) -> AsyncIterator[list[Output]]:
        count, tokens = len(prompts.texts), 0
        async for event in self._events(prompts, generation, "ModelStreamInfer", context):
            if isinstance(event, TextDelta) and event.text:
                yield protocol.delta_reply(count, event.index, event.text, prompts.plain)
            elif isinstance(event, Finished):
                tokens += event.usage.completion_tokens
        for outputs in protocol.final_replies(count, tokens, prompts.plain):
            yield outputs

    def _parse(self, request, rpc: str) -> tuple[Prompts, GenerationRequest]:
        """The request's prompts and the engine request; a refusal is counted, then raised."""
        try:
            protocol.check_model(request.model_name, request.model_version, self.names)
            prompts = read_prompts(request)
            return prompts, protocol.generation_request(prompts, parameters(request.parameters))
        except EngineError as error:
            self.calls.refused(rpc, PROTOCOL, status_of(error).name, str(error))
            raise

    async def _events(self, prompts: Prompts, generation: GenerationRequest, rpc: str, context):
        call = self.calls.observer.start(rpc, list(prompts.texts), PROTOCOL)
        events = self.calls.generate(generation, call, protocol.kserve_message, lambda: stop_code(context))
        async with aclosing(events) as each:
            async for event in each:
                yield event


def read_prompts(request) -> Prompts:
    """`pre_prompt`'s prompts, from `raw_input_contents` (as tritonclient sends them) or the tensor's contents."""
    position = protocol.find_prompt_input([i.name for i in request.inputs])
    tensor = request.inputs[position]
    count = protocol.check_tensor(tensor.datatype, list(tensor.shape))
    if request.raw_input_contents:
        if position >= len(request.raw_input_contents):
            raise ValidationError("raw_input_contents", f"has no entry for input {position} ({protocol.PROMPT})")
        return protocol.raw_prompts(request.raw_input_contents[position], count)
    return protocol.element_prompts(list(tensor.contents.bytes_contents), count)


def parameters(given) -> dict[str, object]:
    """A KServe parameter map as plain values."""
    return {name: getattr(p, p.WhichOneof("parameter_choice")) for name, p in given.items()
            if p.WhichOneof("parameter_choice")}


def _response(request, outputs: list[Output]) -> kserve_pb2.ModelInferResponse:
    return kserve_pb2.ModelInferResponse(
        model_name=request.model_name, model_version=protocol.VERSION, id=request.id,
        outputs=[kserve_pb2.ModelInferResponse.InferOutputTensor(name=o.name, datatype=o.datatype, shape=o.shape)
                 for o in outputs],
        raw_output_contents=[o.raw for o in outputs])
