"""Send prompts in one GenerateStream call (one batch); print text as it arrives, then latency figures.

    python client/client_stream.py --url localhost:9000 -p "What is the theory of relativity?"

Ctrl-C cancels the call and prints what arrived with its figures (exit code 130). With `--api kserve`, the same
prompts go in one KServe v2 ModelStreamInfer call, as the OpenVINO Model Server demo's client streams them.
"""
from __future__ import annotations

import sys
import time


import grpc

from client import display, kserve
from client.connection import ClientError, connect, describe_rpc_error, fail
from client.figures import PromptResult
from client.report import json_report, print_report
from client.request import build_kserve_request, build_request, client_parser


def main(argv: list[str] | None = None) -> int:
    args = client_parser("Stream completions for one batch of prompts in one GenerateStream call.").parse_args(argv)
    try:
        conn = connect(args.url, args.api_key)
        request = build_kserve_request(args) if args.api == "kserve" else build_request(args)
    except ClientError as exc:
        return fail(str(exc))
    results = [PromptResult(index=i, prompt=p) for i, p in enumerate(args.prompts)]
    shown = None  # the display, made at the first message so that a refusal prints only its error
    error = None
    interrupted = False
    tokens = None  # KServe's token_count: the server's count for the whole call
    start = time.perf_counter()
    if args.api == "kserve":
        call, messages = kserve.stream(conn.kserve, request, args.timeout, conn.metadata)
    else:
        call = messages = conn.stub.GenerateStream(request, timeout=args.timeout, metadata=conn.metadata)
    try:
        for msg in messages:
            if args.api == "kserve":  # a message holds a delta for each prompt, the count, or the end
                shown = _kserve_message(msg, results, args, shown, (time.perf_counter() - start) * 1000)
                tokens = msg.token_count if msg.token_count is not None else tokens
                continue
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
    except kserve.KServeError as exc:
        error = f"the server refused the request: {exc}"
    wall_ms = (time.perf_counter() - start) * 1000
    conn.close()
    for r in results:
        if r.total_ms is None and r.arrivals_ms:  # unfinished: its figures end at what arrived
            r.total_ms = r.arrivals_ms[-1]

    if error and not any(r.arrivals_ms for r in results):
        return fail(error)  # refused before any text: only the server's message
    if args.json:
        print(json_report(args.url, results, wall_ms, streamed=True, interrupted=interrupted,
                          rpc="ModelStreamInfer" if args.api == "kserve" else None, tokens=tokens))
    else:
        (shown or display.make(args.prompts)).close()
        if interrupted:
            print(f"[interrupted: the call was cancelled after {wall_ms:.0f} ms; figures cover what arrived]")
        print_report(results, wall_ms, streamed=True, tokens=tokens)
    if error:
        return fail(error)
    return 130 if interrupted else 0


def _kserve_message(msg: kserve.Reply, results: list[PromptResult], args, shown, at_ms: float):
    """Take one KServe stream message: each prompt's new text, and at the end the count and every prompt's end."""
    if shown is None and not args.json:
        shown = display.make(args.prompts)
    for r, piece in zip(results, msg.texts or []):
        if not piece:
            continue
        r.arrivals_ms.append(at_ms)
        r.text_responses += 1
        if r.first_response_ms is None:
            r.first_response_ms = at_ms
        r.text += piece
        if shown:
            shown.text(r.index, piece)
    if msg.token_count is not None and len(results) == 1:
        results[0].completion_tokens = msg.token_count
    if msg.end:
        for r in results:
            r.finish_reason, r.total_ms = kserve.DONE, r.arrivals_ms[-1] if r.arrivals_ms else at_ms
            if shown:
                shown.finished(r.index)
    return shown


if __name__ == "__main__":
    sys.exit(main())
