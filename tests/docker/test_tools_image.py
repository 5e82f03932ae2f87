"""The model tools' image (`make docker-build-tools`): it converts the default model into a directory on the host, and
the runtime image, which has no model tools, serves that directory."""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request

from modelcheck import REPO
from tests.docker.helpers import docker, run_container


def test_the_tools_image_converts_a_model_that_the_runtime_image_serves(image, tmp_path, containers, figures):
    tools = f"{image}-tools"
    result = subprocess.run(["make", "--no-print-directory", "docker-build-tools", f"IMAGE={image}"], cwd=REPO,
                            capture_output=True, text=True, timeout=2400)
    assert result.returncode == 0, f"make docker-build-tools failed:\n{result.stdout[-6000:]}{result.stderr[-6000:]}"
    out = tmp_path / "models"
    out.mkdir()
    # As docs/operations.md says: the host's user, so the files are the user's; the default model needs no network.
    docker("run", "--rm", "--user", f"{os.getuid()}:{os.getgid()}", "-v", f"{out}:/models",
           "--entrypoint", "llm-download-model", tools, "--model", "smollm2-135m-instruct", "--output-dir", "/models",
           timeout=1200)
    model = out / "smollm2-135m-instruct"
    assert (model / "openvino_model.xml").is_file() and (model / "tokenizer.json").is_file()
    box, ready, _ = run_container(image, model, None)
    containers.append(box)
    body = json.dumps({"messages": [{"role": "user", "content": "What is the capital of France?"}],
                       "max_tokens": 12, "temperature": 0}).encode()
    ask = urllib.request.Request(box.http_url + "/v1/chat/completions", body, {"content-type": "application/json"})
    with urllib.request.urlopen(ask, timeout=120) as reply:
        answer = json.loads(reply.read())["choices"][0]["message"]["content"]
    assert "Paris" in answer, answer
    docker("stop", box.name)
    size = int(docker("image", "inspect", "-f", "{{.Size}}", tools).stdout)
    figures.append(f"tools image {tools}: {size / 1e9:.2f} GB; its model served by the runtime image "
                   f"(SERVING in {ready:.1f} s)")
