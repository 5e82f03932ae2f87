"""NNCF weight compression of an OpenVINO IR: FP16, INT8 (per channel), INT4 (grouped)."""
from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

from modelprep.errors import ModelPrepError
from modelprep.registry import Int4Params

IR_FILES = ("openvino_model.xml", "openvino_model.bin")


def parameters(precision: str, int4: Int4Params) -> dict:
    """What gets recorded in the manifest for this precision."""
    if precision == "int4":
        return {"mode": "int4_sym" if int4.sym else "int4_asym", **asdict(int4)}
    return {"fp16": {"mode": "fp16"}, "int8": {"mode": "int8_asym", "group_size": -1}}.get(precision, {})


def compress_ir(src: Path, dst: Path, precision: str, int4: Int4Params) -> dict:
    """Write a compressed copy of the IR in `src` to `dst` (with every other file copied as is)."""
    import nncf
    import openvino as ov

    from modelprep.store import MANIFEST

    for item in src.iterdir():
        if item.name in IR_FILES or item.name.startswith(MANIFEST):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dst / item.name)

    model = ov.Core().read_model(src / "openvino_model.xml")
    if precision == "fp16":
        # FP16 is a storage format, not an NNCF mode: OpenVINO stores the constants in half precision.
        ov.save_model(model, dst / "openvino_model.xml", compress_to_fp16=True)
        return parameters(precision, int4)
    if precision == "int8":
        model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    elif precision == "int4":
        mode = nncf.CompressWeightsMode.INT4_SYM if int4.sym else nncf.CompressWeightsMode.INT4_ASYM
        try:
            model = nncf.compress_weights(model, mode=mode, group_size=int4.group_size, ratio=int4.ratio)
        except nncf.InvalidGroupSizeError:
            raise ModelPrepError(
                f"group size {int4.group_size} does not divide this model's weight rows; try --group-size 64 or 32"
            ) from None
    else:
        raise ValueError(f"unsupported precision {precision!r}")
    # Keep the non-quantized constants (norms, scales) in FP32, as optimum-intel does.
    ov.save_model(model, dst / "openvino_model.xml", compress_to_fp16=False)
    return parameters(precision, int4)
