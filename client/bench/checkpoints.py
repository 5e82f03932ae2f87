"""Random-weight Hugging Face checkpoints at real models' shapes, made offline: speed does not depend on the weights'
values, so a benchmark can measure a 1.1B model without downloading one.

    python -m client.bench.checkpoints --shape tinyllama-1.1b --out models/checkpoints/llama-1.1b-random

A llama config at the shape (`AutoConfig.for_model("llama", ...)`), the default model's tokenizer (rebuilt from the
embedded GGUF: vocabulary 49,152, its chat template), random weights, `save_pretrained` in bf16 (half of f32's disk;
the converters read it as any checkpoint). Written to a temporary directory and renamed last: a directory that exists
is complete, and building it again does nothing.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from client.connection import fail


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    tie_word_embeddings: bool
    max_position_embeddings: int = 2048


SHAPES = {
    # TinyLlama-1.1B's (its untied head), the size people serve at INT8/INT4 on a CPU.
    "tinyllama-1.1b": Shape(2048, 5632, 22, 32, 4, tie_word_embeddings=False),
    # SmolLM2-360M's.
    "smollm2-360m": Shape(960, 2560, 32, 15, 5, tie_word_embeddings=True),
    # For tests: seconds to make and convert.
    "tiny": Shape(64, 128, 2, 4, 2, tie_word_embeddings=False),
}
SEED = 0


def build(shape: Shape, out_dir: Path, dtype: str = "bfloat16", seed: int = SEED) -> Path:
    """The checkpoint at `out_dir`, made unless it is there; returns it."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").is_file():
        return out_dir
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    from modelprep import smollm2_gguf

    tokenizer = smollm2_gguf.build_tokenizer(smollm2_gguf.locate_gguf())
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = AutoConfig.for_model("llama", vocab_size=len(tokenizer), **ids, **asdict(shape))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.generation_config = GenerationConfig(**ids)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    del model
    os.replace(partial, out_dir)  # last: a half-written checkpoint is never taken for one
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m client.bench.checkpoints", description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=list(SHAPES), default="tinyllama-1.1b", help="default %(default)s")
    p.add_argument("--out", required=True, help="the checkpoint directory to write (nothing done if it exists)")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16",
                   help="the saved weights' type (default %(default)s)")
    args = p.parse_args(argv)
    from modelprep.errors import ModelPrepError

    try:
        print(build(SHAPES[args.shape], Path(args.out), args.dtype))
    except (ModelPrepError, OSError, RuntimeError, ValueError) as exc:
        return fail(f"checkpoint: {exc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
