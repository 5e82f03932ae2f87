"""Compress a downloaded model's weights with NNCF: NAME_FP16, NAME_INT8/INT4_compressed_weights."""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from modelprep import registry
from modelprep.cli import command_name, make_parser, quiet_libraries, run
from modelprep.errors import ModelPrepError
from modelprep.store import is_complete, model_dir, read_manifest

PROG = command_name("compress_model.py")
COMPRESSED = ("fp16", "int8", "int4")


def _precisions(text: str) -> list[str]:
    items = [p.strip().lower() for p in text.split(",") if p.strip()]
    bad = [p for p in items if p not in COMPRESSED]
    if bad or not items:
        raise argparse.ArgumentTypeError(f"{text!r}: use a comma-separated subset of {','.join(COMPRESSED)}")
    return list(dict.fromkeys(items))


def _group_size(text: str) -> int:
    value = int(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"{text}: a positive group size, or -1 for per-channel")
    return value


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a share of layers in INT4, in (0, 1]")
    return value


def _agreement(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a share of tokens, in [0, 1]")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser(
        PROG,
        "Write FP16 / INT8 / INT4 weight-compressed copies of a downloaded model beside it "
        "(NNCF weight compression); INT4 defaults are per model.",
        model_help="downloaded model name or its directory",
        output_help="where the model directories are",
    )
    parser.add_argument("--precisions", type=_precisions, default=list(COMPRESSED),
                        help="comma-separated subset of fp16,int8,int4 (default: all three)")
    parser.add_argument("--group-size", type=_group_size, help="INT4 group size (default: per model)")
    parser.add_argument("--ratio", type=_ratio, help="share of layers in INT4, the rest INT8 (default: per model)")
    parser.add_argument("--sym", action=argparse.BooleanOptionalAction, default=None,
                        help="symmetric INT4 quantization (default: per model)")
    parser.add_argument("--force", action="store_true", help="rebuild directories that are already complete")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="compare each new directory with FP32 at the CPU's default inference precision and at "
                             "f32, record the precision it needs, refuse it if poor even at f32 (default: on, unless the "
                             "FP32 model does not fit in the memory available)")
    parser.add_argument("--tune", action=argparse.BooleanOptionalAction, default=True,
                        help="time OpenVINO's CPU options (the activation quantization group) on each new INT8/INT4 "
                             "directory, check the faster ones against FP32, record the fastest that passes in its "
                             "manifest for the server (about a minute on the default model; default: on)")
    parser.add_argument("--retune", action="store_true",
                        help="measure the runtime options of complete INT8/INT4 directories again, on this CPU, "
                             "without rebuilding them")
    parser.add_argument("--min-agreement", type=_agreement,
                        help="refuse a directory whose teacher-forced top-1 agreement with FP32 at f32 is below "
                             "this (default: fp16 0.9, int8 0.8, int4 0.5)")
    args = parser.parse_args(argv)

    as_dir = Path(args.model)
    if (as_dir / "openvino_model.xml").is_file() or (as_dir / "modelprep.json").is_file():
        args.source = as_dir
        return args
    known = args.model in registry.MODELS or (Path(args.output_dir) / args.model).is_dir()
    if not known:
        parser.error(f"unknown model {args.model!r}; choose from: {registry.choices_text()}; "
                     "or the directory of a downloaded model")
    args.source = model_dir(args.model, "fp32", args.output_dir)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not is_complete(args.source):
        flag = "" if Path(args.output_dir) == Path("models") else f" --output-dir {args.output_dir}"
        raise ModelPrepError(f"{args.model} has not been downloaded to {args.source}: "
                             f"run `python download_model.py --model {args.source.name}{flag}` first")
    quiet_libraries()
    from modelprep.fidelity import memory_shortfall
    from modelprep.pipeline import compress, default_int4, retune
    from modelprep.report import fidelity_report, size_table

    overrides = {k: v for k, v in (("sym", args.sym), ("group_size", args.group_size), ("ratio", args.ratio))
                 if v is not None}
    int4 = dataclasses.replace(default_int4(read_manifest(args.source).name), **overrides)
    check = args.check
    if check and (shortfall := memory_shortfall(args.source)):
        print(f"{PROG}: warning: not checking against FP32: {shortfall}", file=sys.stderr)
        check = False
    outputs = []
    for precision in args.precisions:
        started = time.monotonic()
        target = model_dir(read_manifest(args.source).name, precision, args.source.parent)
        if is_complete(target) and not args.force:
            if args.retune:
                retune(target, check=check, min_agreement=args.min_agreement)
                print(f"measured the runtime options of {target} in {time.monotonic() - started:.0f}s")
            else:
                print(f"{target} is already complete; use --force to rebuild it")
        else:
            compress(args.source, precision, int4=int4, force=args.force, check=check,
                     min_agreement=args.min_agreement, tune=args.tune)
            print(f"wrote {target} in {time.monotonic() - started:.0f}s")
        outputs.append(target)
    print(size_table(args.source, outputs))
    for line in runtime_report(outputs):
        print(line)
    table, warnings = fidelity_report(outputs)
    if table:
        print(table)
    for line in warnings:
        print(f"{PROG}: warning: {line}", file=sys.stderr)
    return 0


def runtime_report(outputs: list[Path]) -> list[str]:
    """Each directory's measured runtime options, with the figures behind the choice."""
    from modelprep.tune import label, table

    lines = []
    for path in outputs:
        runtime = read_manifest(path).runtime
        if runtime:
            chosen = label(runtime["options"]) if runtime["options"] else "the plugin's defaults"
            lines += [f"{path.name}: runtime options {chosen} (ms a decode step at 1 / 8 sequences, x: speed against "
                      f"the plugin's default, the median and the worst of {runtime['rounds']} alternating rounds, "
                      f"{runtime['seconds']:.0f}s on {runtime['cpu']['name']})", table(runtime)]
    return lines


def entry() -> None:
    """`python compress_model.py` and the `llm-compress-model` command."""
    run(main, PROG)
