"""The test-only fault injector: a prompt whose text holds the marker fails inside its generation, after
two tokens, while everything else runs on. It wraps the streamer the output side feeds every token through,
so production code carries no hook.

In-process: `with injected("BOOM"): ...`. A server subprocess: `python -m tests.faults MARKER <server flags>`
(the harness's `start_server(..., fault_marker=...)`) switches it on, then runs `python -m server`.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager

from server.engine.streamer import TokenStreamer


class InjectedFault(RuntimeError):
    pass


def install(marker: str):
    """Switch the fault on; returns a function that switches it off."""
    original = TokenStreamer.put

    def put(self, token, now, last=False, logprob=None):
        if len(self.token_ids) >= 2 and marker in self.tokenizer.decode(self.prompt_ids):
            raise InjectedFault("fault injected by the test harness")
        return original(self, token, now, last, logprob)

    TokenStreamer.put = put
    return lambda: setattr(TokenStreamer, "put", original)


@contextmanager
def injected(marker: str):
    uninstall = install(marker)
    try:
        yield
    finally:
        uninstall()


if __name__ == "__main__":
    install(sys.argv[1])
    from server.cli import main

    sys.exit(main(sys.argv[2:]))
