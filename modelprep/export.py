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


def check_exportable(source: str, trust_remote_code: bool = False) -> None:
    """Stop in one sentence, before any long step, on an architecture optimum-intel exports but not for text
    generation (gemma-3-4b-it: a vision-language gemma3). Unknown ones are left to main_export."""
    import optimum.exporters.openvino  # noqa: F401 - registers optimum-intel's architectures with TasksManager
    from optimum.exporters.tasks import TasksManager
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code).model_type
    try:
        tasks = list(TasksManager.get_supported_tasks_for_model_type(model_type, exporter="openvino",
                                                                     library_name="transformers"))
    except KeyError:  # not optimum-intel's: main_export says so (or runs the model's own code)
        return
    if TASK not in tasks:
        raise ModelPrepError(
            f"{source}: optimum-intel exports {model_type} models only for {', '.join(tasks)}, not text generation "
            "(a vision-language checkpoint?); this server needs a text-only model")


def _export_configs(source: str, trust_remote_code: bool) -> dict | None:
    """main_export's `custom_export_configs` for `source`: {"model": optimum-intel's own export config, its
    transformers cap lifted} for UNCAPPED, else None (the default: every other architecture's own caps apply)."""
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
        custom_export_configs=_export_configs(source, trust_remote_code),
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
