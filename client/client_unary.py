"""Send prompts in one Generate call (one batch) and print the completions with latency figures.

    python client/client_unary.py --url localhost:9000 -p "What is the theory of relativity?" -p "Who is Albert Einstein?"
"""
from __future__ import annotations

import sys
import time


import grpc

from client.connection import ClientError, connect, describe_rpc_error, fail
from client.figures import PromptResult
from client.report import header, json_report, print_report
from client.request import build_request, client_parser


def main(argv: list[str] | None = None) -> int:
    args = client_parser("Generate completions for one batch of prompts in one unary call.").parse_args(argv)
    try:
        conn = connect(args.url, args.api_key)
    except ClientError as exc:
        return fail(str(exc))
    request = build_request(args)
    start = time.perf_counter()
    try:
        response = conn.stub.Generate(request, timeout=args.timeout, metadata=conn.metadata)
    except grpc.RpcError as exc:
        return fail(describe_rpc_error(exc, args.url, args.timeout))
    except KeyboardInterrupt:
        print("interrupted: the call was cancelled", file=sys.stderr)
        return 130
    finally:
        wall_ms = (time.perf_counter() - start) * 1000
        conn.close()

    results = [PromptResult(index=i, prompt=p) for i, p in enumerate(args.prompts)]
    for completion in response.completions:
        r = results[completion.index]
        r.text = completion.text
        r.finish(completion, wall_ms)
    if args.json:
        print(json_report(args.url, results, wall_ms, streamed=False))
        return 0
    for r in results:
        print(header(args.prompts, r.index))
        print(r.text)
        print()
    print_report(results, wall_ms, streamed=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
