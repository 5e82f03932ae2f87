"""A tritonclient caller that sends and reads what each OpenVINO Model Server LLM demo release's client did
(shared/KSERVE.md), run by the tests as its own process: tritonclient's stubs and ours clash in one process.

    python tests/server/kserve/triton_client.py --url HOST:PORT --variant 2024.1 --stream -p A -p B

Prints one JSON object: the texts per prompt, the token count, the messages and their output names, or the error.
Variants: 2024.1 (length-prefixed BYTES [N], outputs read by name), 2024.0 (length-prefixed when N > 1, else
plain text in a [1]; reads the first raw output), 2023.3 (one plain prompt of shape [len], reads raw text).
"""
from __future__ import annotations

import argparse
import json
import queue
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor

# The 2023.3 and 2024.0 stream clients know only these, and assert that a message's (first) output is one of them:
# a message [completion, token_count] passes, one with token_count alone fails them.
OLD_NAMES = {"completion", "end_signal"}


def prompt_input(prompts: list[str], variant: str) -> grpcclient.InferInput:
    if variant == "2023.3" or (variant == "2024.0" and len(prompts) == 1):
        (prompt,) = prompts
        shape = [len(prompt)] if variant == "2023.3" else [1]
        tensor = grpcclient.InferInput("pre_prompt", shape, "BYTES")
        tensor._raw_content = prompt.encode()  # the plain text, no length prefix, as those clients sent it
        return tensor
    tensor = grpcclient.InferInput("pre_prompt", [len(prompts)], "BYTES")
    tensor.set_data_from_numpy(np.array([p.encode() for p in prompts], dtype=np.object_))
    return tensor


def read(result, variant: str, count: int) -> tuple[list[str] | None, int | None, list[str]]:
    """(texts or None, token count or None, output names) of one response, as the variant's client reads it."""
    response = result.get_response()
    names = [o.name for o in response.outputs]
    if variant == "2024.1":
        texts = result.as_numpy("completion")
        tokens = result.as_numpy("token_count")
        return ([t.decode() for t in texts] if texts is not None else None,
                int(tokens[0]) if tokens is not None else None, names)
    if "end_signal" in names:
        return None, None, names
    raw = response.raw_output_contents[0]
    if variant == "2023.3" or count == 1:
        return [raw.decode()], None, names
    return [t.decode() for t in deserialize_bytes_tensor(raw)], None, names


def health(client, args) -> dict:
    """What tools and load balancers ask: liveness, readiness, the model's metadata."""
    metadata = client.get_model_metadata(args.model, headers=args.headers, as_json=True)
    return {"live": client.is_server_live(headers=args.headers), "ready": client.is_server_ready(headers=args.headers),
            "model_ready": client.is_model_ready(args.model, headers=args.headers), "metadata": metadata}


def unary(client, args) -> dict:
    result = client.infer(args.model, [prompt_input(args.prompts, args.variant)], client_timeout=600,
                          headers=args.headers, parameters=args.parameters)
    texts, tokens, names = read(result, args.variant, len(args.prompts))
    return {"texts": texts, "token_count": tokens, "names": [names]}


def stream(client, args) -> dict:
    answers: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)), headers=args.headers)
    client.async_stream_infer(args.model, [prompt_input(args.prompts, args.variant)], parameters=args.parameters)
    if args.half_close_first:
        client.stop_stream()  # half-close at once: the server must still answer, then end the call
    texts = [""] * len(args.prompts)
    report = {"texts": texts, "token_count": None, "names": []}
    while True:
        result, error = answers.get(timeout=600)
        if error is not None:
            report["error"] = str(error)
            break
        got, tokens, names = read(result, args.variant, len(args.prompts))
        report["names"].append(names)
        if args.variant != "2024.1" and names[0] not in OLD_NAMES:
            report["error"] = f"output names {names}: this client knows only {sorted(OLD_NAMES)}"
            break
        if got is not None:
            for i, piece in enumerate(got):
                texts[i] += piece
        if tokens is not None:
            report["token_count"] = tokens
        if "end_signal" in names:
            break
    client.stop_stream()  # waits for the server to end the call
    return report


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--model", default="python_model")
    p.add_argument("--variant", choices=("2024.1", "2024.0", "2023.3"), default="2024.1")
    p.add_argument("--stream", action="store_true")
    p.add_argument("--half-close-first", action="store_true")
    p.add_argument("--api-key")
    p.add_argument("--health", action="store_true", help="ask for health and metadata instead")
    p.add_argument("--parameter", action="append", default=[], help="NAME=JSON, a request parameter")
    p.add_argument("-p", "--prompt", action="append", dest="prompts", default=[])
    args = p.parse_args()
    args.parameters = {k: json.loads(v) for k, _, v in (a.partition("=") for a in args.parameter)} or None
    args.headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else None
    client = grpcclient.InferenceServerClient(args.url)
    try:
        report = health(client, args) if args.health else stream(client, args) if args.stream else unary(client, args)
    except InferenceServerException as error:
        report = {"error": str(error), "status": error.status()}
    finally:
        client.close()
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
