"""The clients' flags for a GenerateRequest, derived from the contract (proto/llm.proto), and the request."""
from __future__ import annotations

import argparse

from google.protobuf.descriptor import FieldDescriptor

from client.connection import ClientError, add_connection_flags
from client.kserve import DEFAULT_MODEL
from client.kserve import infer_request as kserve_infer_request
from client.kserve import parameters as kserve_parameters
from proto import llm_pb2

# Better help than the field name for the parameters a user reaches for; any other field gets a plain line.
HELP = {
    "system_prompt": "system message put before each prompt",
    "max_new_tokens": "at most this many new tokens per prompt",
    "min_new_tokens": "at least this many new tokens per prompt",
    "temperature": "sampling temperature (0: greedy)",
    "top_p": "nucleus sampling: keep tokens up to this probability mass",
    "top_k": "keep only the k most likely tokens",
    "repetition_penalty": "penalty for tokens already present (1: none)",
    "do_sample": "sample from the distribution (--no-do-sample: greedy)",
    "seed": "random seed for sampling (sets sampling on)",
    "json_schema": "a JSON schema file: every answer is JSON that follows it",
    "regex": "every answer matches this regular expression",
}
FILES = {"json_schema"}
STRUCTURED = ("json_schema", "regex")  # LLMService fields that KServe's parameters do not take  # flags that name a file whose text is the field's value
TYPES = {FieldDescriptor.CPPTYPE_STRING: str, FieldDescriptor.CPPTYPE_FLOAT: float,
         FieldDescriptor.CPPTYPE_DOUBLE: float, FieldDescriptor.CPPTYPE_UINT32: int,
         FieldDescriptor.CPPTYPE_UINT64: int, FieldDescriptor.CPPTYPE_INT32: int, FieldDescriptor.CPPTYPE_INT64: int}


def optional_fields() -> list[FieldDescriptor]:
    """The request's `optional` scalars: each is unset unless the user gives it (the servable's default)."""
    return [f for f in llm_pb2.GenerateRequest.DESCRIPTOR.fields if f.has_presence and f.message_type is None]


def add_generation_flags(p: argparse.ArgumentParser) -> None:
    """One flag per optional request field; unset flags stay unset so the servable's defaults apply."""
    for f in optional_fields():
        flag = "--" + f.name.replace("_", "-")
        if f.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, help=HELP.get(f.name, f"request field {f.name}"))
        else:
            p.add_argument(flag, type=TYPES[f.cpp_type], metavar="FILE" if f.name in FILES else None,
                           help=HELP.get(f.name, f"request field {f.name}"))
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); not included in the text")


def client_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    add_connection_flags(p)
    p.add_argument("--api", choices=("llm", "kserve"), default="llm",
                   help="llm: this server's LLMService; kserve: KServe v2 (ModelInfer / ModelStreamInfer), as the "
                        "OpenVINO Model Server demo's clients call it, against this server or OVMS (default llm)")
    p.add_argument("--model-name", default=DEFAULT_MODEL,
                   help=f"--api kserve: the model's name (default {DEFAULT_MODEL}, the demo's)")
    p.add_argument("-p", "--prompt", action="append", required=True, dest="prompts",
                   help="a prompt (repeatable); all prompts go in one call, as one batch")
    add_generation_flags(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable report (JSON) instead of text")
    return p


def build_request(args: argparse.Namespace, prompts: list[str] | None = None) -> llm_pb2.GenerateRequest:
    fields = {f.name: getattr(args, f.name) for f in optional_fields() if getattr(args, f.name, None) is not None}
    for name in FILES.intersection(fields):
        try:
            with open(fields[name], encoding="utf-8") as file:
                fields[name] = file.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise ClientError(f"--{name.replace('_', '-')}: cannot read {fields[name]} ({exc.strerror or exc})") from None
    return llm_pb2.GenerateRequest(prompts=prompts if prompts is not None else args.prompts,
                                   stop=getattr(args, "stop", []), **fields)


def build_kserve_request(args: argparse.Namespace):
    """The KServe call for the same flags: the prompts in `pre_prompt`, the generation flags as parameters."""
    for name in ("system_prompt", *STRUCTURED):
        if getattr(args, name, None) is not None:
            raise ClientError(f"--{name.replace('_', '-')}: KServe calls carry prompts and generation parameters only")
    try:
        given = kserve_parameters(args, [f.name for f in optional_fields()
                                         if f.name not in ("system_prompt", *STRUCTURED)])
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    return kserve_infer_request(args, given)
