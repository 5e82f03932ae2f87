"""The llama.cpp peer without llama.cpp: a peer that looks built, and one whose server is our own."""
from __future__ import annotations

import stat
import sys

from client.bench.llamacpp import LlamaCpp
from client.launcher import free_port
from modelcheck import OV_CACHE, REPO


def fake_peer(root, server_script: str = "#!/bin/sh\nexit 0\n") -> LlamaCpp:
    """A peer that looks built: `server_script` as both tools, a GGUF that is only its magic."""
    peer = LlamaCpp(root)
    for path in (peer.server, peer.quantize):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(server_script)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    peer.gguf.write_bytes(b"GGUF")
    return peer


def stand_in_peer(root, model_dir) -> LlamaCpp:
    """A built peer whose llama-server is our own server (the servable as shipped) on the HTTP port it is given: the
    same /health and /v1/completions with ignore_eos, so a benchmark's turns against llama.cpp run for real without
    `make peers`' half-hour build."""
    servable = REPO / "servable_stream" / "config.json"
    return fake_peer(root, f"""#!/bin/sh
while [ $# -gt 0 ]; do [ "$1" = --port ] && port=$2; shift; done
exec {sys.executable} -m server --config_path {servable} --model {model_dir} --cache-dir {OV_CACHE} \\
    --port {free_port()} --http-port $port
""")
