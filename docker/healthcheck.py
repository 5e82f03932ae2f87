"""Container health check: exit 0 only when the gRPC health service answers SERVING, within a time limit.

Usage: python docker/healthcheck.py [--address HOST:PORT] [--service NAME] [--timeout SECONDS]
The address defaults to 127.0.0.1:$PORT (9000): the check runs inside the server's container or pod.
"""
from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", default=f"127.0.0.1:{os.environ.get('PORT', '9000')}")
    p.add_argument("--service", default="", help="health service name; empty means the whole server")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds before the check counts as failed")
    args = p.parse_args(argv)

    with grpc.insecure_channel(args.address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            print(f"unhealthy: {args.address}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(f"unhealthy: {args.address}: {status}", file=sys.stderr)
        return 1
    print(f"healthy: {args.address}: {status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
