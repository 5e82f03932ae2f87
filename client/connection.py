"""The channel to the server, its flags, and the one-line errors every client ends with."""
from __future__ import annotations

import argparse
import sys
import threading
from dataclasses import dataclass

import grpc

from proto import kserve_pb2_grpc, llm_pb2_grpc

DEFAULT_URL = "localhost:9000"
CONNECT_SECONDS = 5.0  # how long to wait for the server's port before calling it unreachable


class ClientError(Exception):
    """Ends a client with one line on stderr and exit code 1."""


def add_connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help=f"server address host:port (default {DEFAULT_URL})")
    p.add_argument("--api-key", help="sent as 'authorization: Bearer KEY' when the server wants one")
    p.add_argument("--timeout", type=float, default=None, help="deadline of each call, in seconds (default: none)")


@dataclass
class Connection:
    url: str
    channel: grpc.Channel
    stub: llm_pb2_grpc.LLMServiceStub
    metadata: tuple[tuple[str, str], ...]
    kserve: kserve_pb2_grpc.GRPCInferenceServiceStub  # the same channel, KServe v2 (--api kserve)

    def close(self) -> None:
        self.channel.close()


def connect(url: str, api_key: str | None = None, wait: float = CONNECT_SECONDS) -> Connection:
    """A ready channel to `url`, or ClientError naming it (at the first failed attempt, or after `wait` s)."""
    channel = grpc.insecure_channel(url)
    settled = threading.Event()
    states: list[grpc.ChannelConnectivity] = []

    def watch(state: grpc.ChannelConnectivity) -> None:
        states.append(state)
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            settled.set()

    channel.subscribe(watch, try_to_connect=True)
    settled.wait(wait)
    channel.unsubscribe(watch)
    if grpc.ChannelConnectivity.READY not in states:
        channel.close()
        why = "connection failed" if settled.is_set() else f"no connection within {wait:g} s"
        raise ClientError(f"cannot reach the server at {url} ({why})")
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    return Connection(url, channel, llm_pb2_grpc.LLMServiceStub(channel), metadata,
                      kserve_pb2_grpc.GRPCInferenceServiceStub(channel))


def describe_rpc_error(error: grpc.RpcError, url: str, timeout: float | None) -> str:
    """The one line a user sees for a failed call: the server's own message where there is one."""
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no complete answer from {url} within --timeout {timeout:g} s" if timeout else f"deadline exceeded ({details})"
    if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower() or "socket" in details.lower()):
        return f"lost the connection to the server at {url} ({details})"
    if code == grpc.StatusCode.CANCELLED:
        return f"the call was cancelled ({details})"
    return f"the server refused the request: {code.name}: {details}"


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
