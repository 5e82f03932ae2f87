"""Export a Hugging Face checkpoint to OpenVINO IR with optimum-intel, plus the OpenVINO tokenizer."""
from __future__ import annotations

from pathlib import Path

from modelprep.errors import ModelPrepError
from modelprep.templates import PromptTemplate

TASK = "text-generation-with-past"
# optimum-intel 2.2.0 caps Gemma's export at transformers 5.0 (GemmaOpenVINOConfig.MAX_TRANSFORMERS_VERSION, which
# gemma2 and gemma3_text inherit), a version guard: at our transformers (5.5.4) both export and the server gives
# transformers' own greedy tokens (tests/test_families.py). For these we pass optimum-intel's own export config
# without the cap, through main_export's `custom_export_configs`, the override its maintainers point to.
UNCAPPED = frozenset({"gemma2", "gemma3_text"})


def _uncapped_export_configs(source: str, trust_remote_code: bool) -> dict | None:
    """{"model": optimum-intel's export config for `source`, its transformers cap lifted}, or None (keep the
    default: every other architecture, whose own caps still apply)."""
    from optimum.exporters.tasks import TasksManager
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    if config.model_type not in UNCAPPED:
        return None
    constructor = TasksManager.get_exporter_config_constructor(
        exporter="openvino", model_type=config.model_type, task=TASK, library_name="transformers")
    # As optimum builds a decoder's config for export (optimum.exporters.utils.get_decoder_models_for_export).
    export_config = constructor(config, int_dtype="int64", float_dtype="fp32", use_past=True, use_past_in_inputs=True)
    export_config.MAX_TRANSFORMERS_VERSION = None
    return {"model": export_config}


def export_ir(source: str, out_dir: Path, trust_remote_code: bool = False) -> None:
    """FP32 IR, config, generation config and HF tokenizer of `source` (hub id or local dir) into out_dir.

    Other precisions are made from this IR by `modelprep.compress`, the one compression code path.
    """
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    main_export(
        source,
        output=out_dir,
        task=TASK,
        trust_remote_code=trust_remote_code,
        # Explicit FP32: without a config optimum silently compresses models over 1B parameters to INT8.
        ov_config=OVConfig(dtype="fp32"),
        custom_export_configs=_uncapped_export_configs(source, trust_remote_code),
    )


def finish_tokenizer(out_dir: Path, template: PromptTemplate | None) -> None:
    """Add the registry's prompt template where the tokenizer has none; write the OpenVINO tokenizer."""
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out_dir)
    if not tokenizer.chat_template and template is not None:
        tokenizer.chat_template = template.to_jinja()
        tokenizer.save_pretrained(out_dir)
    try:
        ov_tokenizer, ov_detokenizer = convert_tokenizer(tokenizer, with_detokenizer=True)
    except Exception as exc:  # openvino-tokenizers raises plain exceptions for unsupported tokenizers
        raise ModelPrepError(f"openvino-tokenizers cannot convert this tokenizer: {str(exc).splitlines()[0]}") from exc
    # openvino-genai's LLMPipeline looks for exactly these names beside the model.
    ov.save_model(ov_tokenizer, out_dir / "openvino_tokenizer.xml")
    ov.save_model(ov_detokenizer, out_dir / "openvino_detokenizer.xml")
