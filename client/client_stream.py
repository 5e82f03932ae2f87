"""Send prompts in one GenerateStream call (one batch); print text as it arrives, then latency figures.

    python client/client_stream.py --url localhost:9000 -p "What is the theory of relativity?"

Ctrl-C cancels the call and prints what arrived with its figures (exit code 130).
"""
from __future__ import annotations

import sys
import time


import grpc

from client import display
from client.connection import ClientError, connect, describe_rpc_error, fail
from client.figures import PromptResult
from client.report import json_report, print_report
from client.request import build_request, client_parser


def main(argv: list[str] | None = None) -> int:
    args = client_parser("Stream completions for one batch of prompts in one GenerateStream call.").parse_args(argv)
    try:
        conn = connect(args.url, args.api_key)
    except ClientError as exc:
        return fail(str(exc))
    results = [PromptResult(index=i, prompt=p) for i, p in enumerate(args.prompts)]
    shown = None  # the display, made at the first message so that a refusal prints only its error
    error = None
    interrupted = False
    start = time.perf_counter()
    call = conn.stub.GenerateStream(build_request(args), timeout=args.timeout, metadata=conn.metadata)
    try:
        for msg in call:
            at_ms = (time.perf_counter() - start) * 1000
            if shown is None and not args.json:
                shown = display.make(args.prompts)
            r = results[msg.index]
            r.arrivals_ms.append(at_ms)
            if msg.text:
                r.text_responses += 1
                if r.first_response_ms is None:
                    r.first_response_ms = at_ms
                r.text += msg.text
                if shown:
                    shown.text(msg.index, msg.text)
            if msg.finish_reason:
                r.finish(msg, at_ms)
                if shown:
                    shown.finished(msg.index)
    except KeyboardInterrupt:
        call.cancel()
        interrupted = True
    except grpc.RpcError as exc:
        error = describe_rpc_error(exc, args.url, args.timeout)
    wall_ms = (time.perf_counter() - start) * 1000
    conn.close()
    for r in results:
        if r.total_ms is None and r.arrivals_ms:  # unfinished: its figures end at what arrived
            r.total_ms = r.arrivals_ms[-1]

    if error and not any(r.arrivals_ms for r in results):
        return fail(error)  # refused before any text: only the server's message
    if args.json:
        print(json_report(args.url, results, wall_ms, streamed=True, interrupted=interrupted))
    else:
        (shown or display.make(args.prompts)).close()
        if interrupted:
            print(f"[interrupted: the call was cancelled after {wall_ms:.0f} ms; figures cover what arrived]")
        print_report(results, wall_ms, streamed=True)
    if error:
        return fail(error)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
