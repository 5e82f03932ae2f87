"""client_unary.py and client_stream.py as subprocesses against a live server."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.client.conftest import ROOT
from client.launcher import free_port

Q1 = "What is the theory of relativity?"
Q2 = "Who is Albert Einstein?"
CLIENTS = ("client_unary.py", "client_stream.py")


def figures(stdout: str) -> dict[str, float]:
    """The report's 'Name: value' lines (the last block: one prompt's, or the aggregate)."""
    found = {}
    for name, value in re.findall(r"^(Number of tokens|Generated tokens per second|Time per generated token|"
                                  r"Total time|Number of responses|First response time|Average response time): "
                                  r"~?([\d.]+)", stdout, re.M):
        found[name] = float(value)
    return found


def check_coherent(fig: dict, streamed: bool, first_ms: float | None) -> None:
    """tokens > 0, first response <= total, tokens/s ~ tokens / decode time (decode: after the first token)."""
    assert fig["tokens"] > 0
    assert fig["total_ms"] > 0
    assert first_ms is not None and 0 < first_ms <= fig["total_ms"]
    decode_s = (fig["total_ms"] - first_ms) / 1000
    assert fig["tokens_per_second"] == pytest.approx(fig["tokens"] / decode_s, rel=0.1)
    assert fig["time_per_token_ms"] == pytest.approx(1000 / fig["tokens_per_second"], rel=1e-6)
    if streamed:
        assert fig["first_response_ms"] <= fig["total_ms"]
        assert fig["responses"] >= 2


@pytest.mark.parametrize("script", CLIENTS)
def test_one_prompt_prints_question_completion_and_figures(live_server, run_script, script):
    out = run_script(script, "--url", live_server.address, "-p", Q1, "--max-new-tokens", "24")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Question:\n{Q1}\n")
    completion = out.stdout.split(f"{Q1}\n", 1)[1].split("Number of tokens")[0].strip()
    assert completion.startswith("The theory of relativity")
    fig = figures(out.stdout)
    assert fig["Number of tokens"] == 24
    assert fig["Total time"] > 0 and fig["Generated tokens per second"] > 0
    assert fig["Time per generated token"] == pytest.approx(1000 / fig["Generated tokens per second"], rel=0.01)
    if script == "client_stream.py":
        assert 0 < fig["First response time"] <= fig["Total time"]
        assert fig["Number of responses"] >= 2 and fig["Average response time"] > 0
    else:
        assert "Number of responses" not in out.stdout


@pytest.mark.parametrize("script", CLIENTS)
def test_two_prompts_print_a_block_each_and_figures_per_prompt_and_in_total(live_server, run_script, script):
    out = run_script(script, "--url", live_server.address, "-p", Q1, "-p", Q2, "--max-new-tokens", "16")
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.index(f"==== Prompt: {Q1} ===="), out.stdout.index(f"==== Prompt: {Q2} ====")
    assert out.stdout[first:second].split("====")[-1].strip()  # text under each header
    assert "Albert Einstein" in out.stdout[second:].split("-- Prompt 0")[0]
    assert "-- Prompt 0:" in out.stdout and "-- Prompt 1:" in out.stdout and "-- All prompts" in out.stdout
    total = figures(out.stdout.split("-- All prompts")[1])
    assert total["Number of tokens"] == 32


@pytest.mark.parametrize("script", CLIENTS)
@pytest.mark.parametrize("prompts", [[Q1], [Q1, Q2]], ids=["1-prompt", "2-prompts"])
def test_json_report_holds_coherent_figures_per_prompt(live_server, run_script, script, prompts):
    args = [a for p in prompts for a in ("-p", p)]
    out = run_script(script, "--url", live_server.address, *args, "--max-new-tokens", "20", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    streamed = script == "client_stream.py"
    assert report["rpc"] == ("GenerateStream" if streamed else "Generate")
    assert [p["index"] for p in report["prompts"]] == list(range(len(prompts)))
    for p, prompt in zip(report["prompts"], prompts):
        assert p["prompt"] == prompt and p["text"].strip()
        assert p["finish_reason"] == "LENGTH" and p["completion_tokens"] == 20 and p["prompt_tokens"] > 0
        assert 0 < p["server_ttft_ms"] <= p["server_total_ms"]
        first = p["first_response_ms"] if streamed else p["server_ttft_ms"]
        check_coherent(p["figures"], streamed, first)
    total = report["aggregate"]
    assert total["tokens"] == 20 * len(prompts)
    assert total["tokens_per_second"] == pytest.approx(total["tokens"] / total["total_ms"] * 1000)


def test_stream_text_equals_unary_text(live_server, run_script):
    texts = []
    for script in CLIENTS:
        out = run_script(script, "--url", live_server.address, "-p", Q2, "--max-new-tokens", "30", "--json")
        texts.append(json.loads(out.stdout)["prompts"][0]["text"])
    assert texts[0] == texts[1] and texts[0]


@pytest.mark.parametrize("script", CLIENTS)
def test_unreachable_server_is_one_line_naming_the_url(run_script, script):
    url = f"127.0.0.1:{free_port()}"
    start = time.monotonic()
    out = run_script(script, "--url", url, "-p", Q1)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"error: cannot reach the server at {url} (connection failed)"]
    assert out.stdout == ""
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("script", CLIENTS)
@pytest.mark.parametrize("flags, field", [(["--max-new-tokens", "0"], "max_new_tokens"),
                                          (["--top-p", "1.5"], "top_p")])
def test_refused_request_prints_the_servers_message(live_server, run_script, script, flags, field):
    out = run_script(script, "--url", live_server.address, "-p", Q1, *flags)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr
    assert lines[0].startswith(f"error: the server refused the request: INVALID_ARGUMENT: {field}")
    assert out.stdout == ""


def test_deadline_is_one_line(live_server, run_script):
    out = run_script("client_unary.py", "--url", live_server.address, "-p", Q1, "--max-new-tokens", "400",
                     "--min-new-tokens", "400", "--timeout", "0.5")
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: no complete answer from {live_server.address} within --timeout 0.5 s"


@pytest.mark.parametrize("prompts", [[Q1], [Q1, Q2]], ids=["1-prompt", "2-prompts"])
def test_ctrl_c_cancels_the_stream_and_prints_what_arrived(live_server, prompts):
    args = [a for p in prompts for a in ("-p", p)]
    cmd = [sys.executable, str(ROOT / "client" / "client_stream.py"), "--url", live_server.address, *args,
           "--max-new-tokens", "1500", "--min-new-tokens", "1500"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    head = ""
    if len(prompts) == 1:  # inline: wait for the question and the first piece of text
        head = proc.stdout.readline() + proc.stdout.readline() + proc.stdout.readline()
        assert head == f"Question:\n{Q1}\n\n"
        head += proc.stdout.read(1)
        time.sleep(1)
    else:  # whole blocks: nothing shows before the end, so give it time (1500 tokens take far longer)
        time.sleep(8)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    out = head + out
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "[interrupted: the call was cancelled after" in out
    for prompt in prompts:
        assert prompt in out
    if len(prompts) == 2:
        assert "(unfinished)" in out
    fig = figures(out)
    assert 1 <= fig["Number of tokens"] < 1500 * len(prompts)
    assert "counted from the text responses" in out
    assert 0 < fig["First response time"] <= fig["Total time"]
    # The server freed the slot: a new call gets its answer at once.
    from tests.server.harness import request
    done = live_server.stub.Generate(request(Q2, max_new_tokens=4), timeout=30)
    assert done.completions[0].completion_tokens == 4


# ---------------------------------------------------------------- --api kserve: the OVMS demo's calls, our figures

@pytest.mark.parametrize("script", CLIENTS)
@pytest.mark.parametrize("prompts", [[Q1], [Q1, Q2]], ids=["1-prompt", "2-prompts"])
def test_kserve_api_gives_the_same_text_and_the_call_s_token_count(live_server, run_script, script, prompts):
    args = [a for p in prompts for a in ("-p", p)]
    ours = json.loads(run_script(script, "--url", live_server.address, *args, "--max-new-tokens", "12", "--json").stdout)
    out = run_script(script, "--url", live_server.address, "--api", "kserve", *args, "--max-new-tokens", "12", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    streamed = script == "client_stream.py"
    assert report["rpc"] == ("ModelStreamInfer" if streamed else "ModelInfer")
    assert [p["text"] for p in report["prompts"]] == [p["text"] for p in ours["prompts"]]
    assert report["aggregate"]["tokens"] == ours["aggregate"]["tokens"]  # token_count: the whole call's
    assert all(p["finish_reason"] == "DONE" for p in report["prompts"])
    if len(prompts) == 1:
        fig = report["prompts"][0]["figures"]
        if streamed:
            check_coherent(fig, streamed, report["prompts"][0]["first_response_ms"])
        else:  # no first-token time in a unary KServe reply: the whole time over the tokens, as the demo counts
            assert fig["tokens_per_second"] == pytest.approx(fig["tokens"] / fig["total_ms"] * 1000)


@pytest.mark.parametrize("script", CLIENTS)
def test_kserve_api_prints_the_report_and_refusals_in_one_line(live_server, run_script, script):
    out = run_script(script, "--url", live_server.address, "--api", "kserve", "-p", Q1, "--max-new-tokens", "16")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"Question:\n{Q1}\n") and "The theory of relativity" in out.stdout
    assert figures(out.stdout)["Number of tokens"] == 16
    for flags, message in ((["--model-name", "other"], "model 'other' is not served here"),
                           (["--max-new-tokens", "0"], "parameters.max_new_tokens")):
        out = run_script(script, "--url", live_server.address, "--api", "kserve", "-p", Q1, *flags)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 1 and len(lines) == 1 and message in lines[0], out.stderr


def test_json_schema_flag_reads_the_schema_file_and_every_answer_follows_it(live_server, run_script, tmp_path):
    schema = {"type": "object", "properties": {"city": {"enum": ["Paris", "Tokyo"]}}, "required": ["city"],
              "additionalProperties": False}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    out = run_script("client_unary.py", "--url", live_server.address, "-p", "Name a city.", "--json-schema",
                     tmp_path / "schema.json", "--max-new-tokens", "20", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(json.loads(out.stdout)["prompts"][0]["text"])["city"] in ("Paris", "Tokyo")
    out = run_script("client_stream.py", "--url", live_server.address, "-p", Q1, "--json-schema", tmp_path / "none")
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        f"error: --json-schema: cannot read {tmp_path / 'none'} (No such file or directory)"]
