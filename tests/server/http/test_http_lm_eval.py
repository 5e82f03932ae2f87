"""lm-evaluation-harness (the pinned release) run offline against the real server: a local multiple-choice task
scored from prompt logprobs (echo, token-id prompts, the server's /tokenizer_info and /tokenize as its tokenizer)
and a local generate-until task. Its loglikelihoods and answers must be those the engine computes in process from
the model's logits (batch-invariant mode on both sides)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from server.engine.engine import Engine
from server.engine.model import LoadedModel
from server.engine.types import GenerationRequest, GivenParams
from tests.server.http.test_http_eval import MODEL

TASKS = Path(__file__).with_name("lm_eval_tasks")


@pytest.fixture(scope="module")
def engine(fp32_model_dir):
    e = Engine(LoadedModel.load(fp32_model_dir, "CPU", {"PERFORMANCE_HINT": "LATENCY"}, batch_invariant=True))
    yield e
    e.close()


def optimum_logprobs(model_dir, ids: list[int]) -> list[float]:
    """Each token's logprob after the first from OVModelForCausalLM's logits over the whole sequence."""
    import torch

    from tests.reference import optimum

    model, _ = optimum(model_dir)
    x = torch.tensor([ids])
    rows = torch.log_softmax(model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0].float(), dim=-1)
    return [rows[i - 1, ids[i]].item() for i in range(1, len(ids))]


def run_lm_eval(http_server, tmp_path: Path) -> tuple[dict, dict[str, list[dict]]]:
    """lm-eval's CLI in a process of its own, offline; its results and its logged samples per task."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    for name in ("local_mc.yaml", "local_gen.yaml"):
        (tasks / name).write_text((TASKS / name).read_text().replace("DATA_DIR", str(TASKS)))
    out = tmp_path / "out"
    args = ["--model", "local-completions", "--tasks", "local_mc,local_gen", "--include_path", str(tasks),
            "--model_args", f"base_url={http_server.http_url}/v1/completions,model={MODEL},num_concurrent=1,"
                            "max_retries=1,tokenized_requests=True",
            "--output_path", str(out), "--log_samples", "--seed", "1234"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_DATASETS_CACHE": str(tmp_path / "hf"),
           "TRANSFORMERS_OFFLINE": "1", "OPENAI_API_KEY": "unused"}
    done = subprocess.run([sys.executable, "-m", "lm_eval", *args], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Using remote tokenizer" in done.stderr + done.stdout  # its tokenizer is the server's
    (results,) = out.rglob("results_*.json")
    samples = {task: [json.loads(line) for f in out.rglob(f"samples_{task}_*.jsonl") for line in f.open()]
               for task in ("local_mc", "local_gen")}
    return json.loads(results.read_text()), samples


def test_lm_eval_scores_local_tasks_as_the_engine_computes_them_in_process(http_server, engine, tmp_path):
    results, samples = run_lm_eval(http_server, tmp_path)
    assert 0 <= results["results"]["local_mc"]["acc,none"] <= 1
    assert "exact_match,none" in results["results"]["local_gen"]
    tokenizer = engine.model.tokenizer

    mc = samples["local_mc"]
    assert len(mc) == 6
    checked = []
    for sample in mc:  # arguments: {gen_args_i: {arg_0: context, arg_1: continuation}}; resps: [[[logprob, greedy]]]
        for args, ((served, greedy),) in zip(sample["arguments"].values(), sample["resps"]):
            context, continuation = args["arg_0"], args["arg_1"]
            # lm-eval's own split: the context's tokens, then the rest of the whole text's
            ctx = tokenizer.encode(context, add_special_tokens=False)
            whole = tokenizer.encode(context + continuation, add_special_tokens=False)
            (c,) = engine.generate(GenerationRequest(prompt_ids=(tuple(whole),), prompt_logprobs=1,
                                                     params=GivenParams(max_new_tokens=0)))
            tail = c.prompt_logprobs[len(ctx):]
            assert math.isclose(float(served), sum(lp.logprob for lp in tail), abs_tol=1e-4)
            checked.append((whole, c.prompt_logprobs))
            assert (greedy == "True") == all(lp.logprob == lp.top[0].logprob for lp in tail)

    # And those are the model's own: optimum-intel's full logits agree up to the paged KV cache's precision.
    whole, logprobs = checked[0]
    assert max(abs(lp.logprob - ref) for lp, ref in zip(logprobs[1:], optimum_logprobs(engine.model.info.path, whole))) < 1e-2

    gen = samples["local_gen"]
    assert len(gen) == 3
    for sample in gen:  # arguments: {gen_args_0: {arg_0: context, arg_1: generation kwargs}}
        (args,) = sample["arguments"].values()
        context, kwargs = args["arg_0"], args["arg_1"]
        (c,) = engine.generate(GenerationRequest(prompts=(context,), raw=True, params=GivenParams(
            max_new_tokens=kwargs["max_gen_toks"], temperature=0, stop=tuple(kwargs["until"]))))
        assert sample["resps"] == [[c.text]] and c.text
