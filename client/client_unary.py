"""Send prompts in one Generate call (one batch) and print the completions with latency figures.

    python client/client_unary.py --url localhost:9000 -p "What is the theory of relativity?" -p "Who is Albert Einstein?"

With `--api kserve`, the same prompts go in one KServe v2 ModelInfer call, as the OpenVINO Model Server demo's
client sends them (to this server or to OVMS).
"""
from __future__ import annotations

import sys
import time


import grpc

from client import kserve
from client.connection import ClientError, connect, describe_rpc_error, fail
from client.figures import PromptResult
from client.report import header, json_report, print_report
from client.request import build_kserve_request, build_request, client_parser


def main(argv: list[str] | None = None) -> int:
    args = client_parser("Generate completions for one batch of prompts in one unary call.").parse_args(argv)
    try:
        conn = connect(args.url, args.api_key)
        request = build_kserve_request(args) if args.api == "kserve" else build_request(args)
    except ClientError as exc:
        return fail(str(exc))
    call = conn.kserve.ModelInfer if args.api == "kserve" else conn.stub.Generate
    start = time.perf_counter()
    try:
        response = call(request, timeout=args.timeout, metadata=conn.metadata)
    except grpc.RpcError as exc:
        return fail(describe_rpc_error(exc, args.url, args.timeout))
    except KeyboardInterrupt:
        print("interrupted: the call was cancelled", file=sys.stderr)
        return 130
    finally:
        wall_ms = (time.perf_counter() - start) * 1000
        conn.close()

    results = [PromptResult(index=i, prompt=p) for i, p in enumerate(args.prompts)]
    tokens = None  # the server's count for the whole call (KServe's token_count)
    if args.api == "kserve":
        reply = kserve.read(response)
        tokens = reply.token_count
        for r, text in zip(results, reply.texts or []):
            r.text, r.finish_reason, r.total_ms = text, kserve.DONE, wall_ms
            if len(results) == 1:
                r.completion_tokens = tokens
    else:
        for completion in response.completions:
            r = results[completion.index]
            r.text = completion.text
            r.finish(completion, wall_ms)
    if args.json:
        print(json_report(args.url, results, wall_ms, streamed=False,
                          rpc="ModelInfer" if args.api == "kserve" else None, tokens=tokens))
        return 0
    for r in results:
        print(header(args.prompts, r.index))
        print(r.text)
        print()
    print_report(results, wall_ms, streamed=False, tokens=tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
