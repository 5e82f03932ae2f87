"""Get a language model and convert it to OpenVINO IR under models/ (see --help for the models)."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from modelprep import registry
from modelprep.cli import command_name, make_parser, quiet_libraries, run
from modelprep.report import human
from modelprep.store import PRECISIONS, dir_size, is_complete, model_dir

PROG = command_name("download_model.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = make_parser(
        PROG,
        "Get a model (the embedded default works offline) and convert it to OpenVINO IR "
        "with its tokenizer, generation config and OpenVINO tokenizer/detokenizer.",
        model_help="model name, hub id or local directory",
        output_help="where model directories go",
    )
    parser.add_argument("--weight-format", choices=PRECISIONS, default="fp32",
                        help="weights of the written directory (default: fp32, named NAME); "
                        "others are compressed from NAME, which is kept")
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete directory exists")
    parser.add_argument("--source", metavar="DIR",
                        help="convert the model from this local Hugging Face checkpoint instead of the hub "
                        "(a registry model keeps its prompt template, stop strings and INT4 defaults)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow a hub model's own Python code to run (off by default)")
    args = parser.parse_args(argv)
    if args.source is not None and not Path(args.source).expanduser().is_dir():
        parser.error(f"--source {args.source!r} is not a directory")
    try:
        args.spec = registry.resolve(args.model, args.source)
    except registry.UnknownModel:
        parser.error(f"unknown model {args.model!r}; choose from: {registry.choices_text()}; "
                     "or a hub id (owner/name) or a local directory")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    target = model_dir(args.spec.name, args.weight_format, args.output_dir)
    if is_complete(target) and not args.force:
        print(f"{target} is already complete ({human(dir_size(target))}); use --force to rebuild it")
        return 0
    quiet_libraries()
    from modelprep.pipeline import ensure_model

    started = time.monotonic()
    # Non-FP32 formats are compressed from the FP32 directory, which is kept (and reused if present).
    path = ensure_model(args.model, args.weight_format, args.output_dir, force=args.force,
                        trust_remote_code=args.trust_remote_code, progress=True, source=args.source)
    print(f"wrote {path} ({human(dir_size(path))}) in {time.monotonic() - started:.0f}s")
    return 0


def entry() -> None:
    """`python download_model.py` and the `llm-download-model` command."""
    run(main, PROG)
