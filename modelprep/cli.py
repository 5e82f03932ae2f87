"""What the two command-line tools share: one-line errors and exit codes."""
from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Callable

from modelprep.errors import ModelPrepError


def command_name(script: str) -> str:
    """The name the user typed: the console command (`llm-download-model`) or the script (`download_model.py`)."""
    typed = Path(sys.argv[0]).name
    return typed if typed.startswith("llm-") else script


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is a single line on stderr (exit 2), not usage text plus error."""

    def error(self, message: str):  # noqa: D102 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def make_parser(prog: str, description: str, model_help: str, output_help: str) -> OneLineParser:
    """The parser both tools start from: the model table in --help, then --model and --output-dir."""
    from modelprep import registry

    parser = OneLineParser(prog=prog, description=description, epilog=registry.help_table(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=registry.DEFAULT_MODEL,
                        help=f"{model_help} (default: {registry.DEFAULT_MODEL})")
    parser.add_argument("--output-dir", default="models", help=f"{output_help} (default: models)")
    return parser


def quiet_libraries() -> None:
    """Keep the export's tracer/deprecation chatter off the user's screen; progress bars stay."""
    warnings.simplefilter("ignore")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "No CUDA runtime" on CPU hosts
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def run(main: Callable[[], int], prog: str) -> None:
    """Run a CLI main(); every failure ends as one line on stderr and a non-zero exit code."""
    try:
        code = main()
    except ModelPrepError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; no partial model directory was left", file=sys.stderr)
        code = 130
    except Exception as exc:  # an unexpected failure: still one line, the traceback on request
        if os.environ.get("MODELPREP_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(f"{prog}: error: {type(exc).__name__}: {first} (set MODELPREP_DEBUG=1 for details)", file=sys.stderr)
        code = 1
    sys.exit(code)
