"""Tiny random-weight models of every registry architecture, made offline in seconds.

A transformers config with tiny sizes and random weights, saved with `save_pretrained`, is a real model of
its architecture: it goes through the same conversion, compression and serving as the 7B one. The tokenizer
is the default model's (SmolLM2's byte-level BPE); for a registry model that relies on a prompt template,
its chat template is removed, as the real model's tokenizer has none, so the registry's template applies.

Imported by name from test modules (never `from conftest import ...`: several conftests exist).
"""
from __future__ import annotations

from pathlib import Path

from modelprep import registry

# One registry model per architecture (the first seed model of each), plus red-pajama: its prompt
# template and stop strings differ from dolly's on the same architecture (gpt_neox).
TINY = ("tiny-llama-1b-chat", "mistral-7b", "phi-2", "dolly-v2-3b", "red-pajama-3b-chat", "mpt-7b-chat")
SIZES = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
         "max_position_embeddings": 2048}
# Grouped-query attention where the real models have it (llama-3, mistral: fewer KV heads than heads).
PER_ARCH = {"llama": {"num_key_value_heads": 2}, "mistral": {"num_key_value_heads": 2}}
# At transformers' default (0.02) every layer is nearly the identity and mpt repeats one token; at 0.5
# attention is sharp and the answers depend on the whole prompt.
INIT_RANGE = 0.5
# Among 49k random logits the two best are within 1e-3 standard deviations at about one step in 200; with
# this seed every tiny model's smallest gap on the tests' prompts is 2e-3 (seeds 0, 1, 4, 5: 1e-4 to 5e-4).
SEED = 3
# hidden size 64: the registry's INT4 group of 128 cannot divide it.
INT4_GROUP = 32

# Today's families (tests/test_families.py): name -> (transformers model_type, config beyond FAMILY_SIZES), each
# with what sets its real models apart from a plain llama where a tiny config can show it.
# Grouped-query attention as all of them have; head_dim given, as qwen3 and gemma default to 128 or 256.
FAMILY_SIZES = {**SIZES, "num_key_value_heads": 2, "head_dim": 16}
FAMILIES: dict[str, tuple[str, dict]] = {
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "qwen3_moe": ("qwen3_moe", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}),
    # Llama 3.1/3.2's rope scaling; original context 256 so the tests' positions see its scaled frequencies.
    "llama3": ("llama", {"rope_theta": 500000.0, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256}}),
    # Gemma: a sliding window of 8 tokens (4096 in Gemma 2, 512-1024 in Gemma 3), shorter than the tests' prompts,
    # so local and global layers differ.
    "gemma2": ("gemma2", {"sliding_window": 8}),
    "gemma3_text": ("gemma3_text", {"sliding_window": 8}),
    "phi3": ("phi3", {}),
    # Granite 3.3's multipliers (embedding, attention, residual, logits), each changing the numbers.
    "granite": ("granite", {"embedding_multiplier": 12.0, "attention_multiplier": 0.0078125,
                            "residual_multiplier": 0.22, "logits_scaling": 8.0}),
    "olmo2": ("olmo2", {}),
    "starcoder2": ("starcoder2", {}),
    "mixtral": ("mixtral", {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "smollm3": ("smollm3", {}),
}
# Gemma multiplies its embeddings by sqrt(hidden size): at INIT_RANGE every answer is one token repeated. olmo2 at
# INIT_RANGE has a near-tie (7e-6) on the tests' chat prompts; at 0.4 its smallest gap is 3e-3.
FAMILY_INIT_RANGE = {"gemma2": 0.02, "gemma3_text": 0.02, "olmo2": 0.4}


def checkpoint(arch: str, tokenizer_dir: Path, out_dir: Path, with_chat_template: bool, extra: dict | None = None,
               init_range: float = INIT_RANGE) -> Path:
    """Save a 2-layer, hidden-64 model of `arch` with random weights and the tokenizer of `tokenizer_dir`;
    `extra` goes over the sizes and PER_ARCH."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if not with_chat_template:
        tokenizer.chat_template = None
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), initializer_range=init_range,
                                  **{**ids, **SIZES, **PER_ARCH.get(arch, {}), **(extra or {})})
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


class TinyModels:
    """Checkpoints under `root`/checkpoints (one per architecture, with or without a chat template) and their
    conversions under `root`/models, each made once, as `download_model.py --model NAME --source DIR` does."""

    def __init__(self, root: Path, tokenizer_dir: Path):
        self.root, self.tokenizer_dir = root, tokenizer_dir
        self._models: dict[str, Path] = {}

    def checkpoint(self, name: str) -> Path:
        spec = registry.MODELS[name]
        path = self.root / "checkpoints" / (spec.arch + ("-no-chat-template" if spec.template else ""))
        if not path.is_dir():
            checkpoint(spec.arch, self.tokenizer_dir, path, with_chat_template=spec.template is None)
        return path

    def family(self, family: str) -> Path:
        """The checkpoint of one of FAMILIES (with the default model's chat template)."""
        path = self.root / "families" / family
        if not path.is_dir():
            arch, extra = FAMILIES[family]
            checkpoint(arch, self.tokenizer_dir, path, with_chat_template=True, extra={**FAMILY_SIZES, **extra},
                       init_range=FAMILY_INIT_RANGE.get(family, INIT_RANGE))
        return path

    def model(self, name: str) -> Path:
        """The FP32 directory of registry model `name`, made from the tiny checkpoint of its architecture."""
        from modelprep.pipeline import download

        if name not in self._models:
            self._models[name] = download(name, self.root / "models", source=self.checkpoint(name), progress=False)
        return self._models[name]


def greedy(model, ids, n: int) -> tuple[list[int], float]:
    """`model.generate` (transformers' or OVModelForCausalLM's), greedy, exactly n new tokens on the tokenized
    prompt `ids`: the new tokens, and the smallest gap between the two best logits over the steps in standard
    deviations (how clear each greedy choice was)."""
    import torch

    out = model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, output_scores=True,
                         return_dict_in_generate=True)
    gaps = []
    for scores in out.scores:
        finite = scores[0][torch.isfinite(scores[0])]  # min_new_tokens masks the end-of-sequence token
        best = finite.topk(2).values
        gaps.append(float((best[0] - best[1]) / finite.std()))
    return out.sequences[0, ids["input_ids"].shape[1]:].tolist(), min(gaps)


def architectures() -> set[str]:
    return {spec.arch for spec in registry.MODELS.values()}
