"""`python -m server`: parse flags, build the settings, run the server."""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from server import devices, logs
from server.config import ENVIRONMENT, ConfigError, load


def parser() -> argparse.ArgumentParser:
    env = {name: var for var, name in ENVIRONMENT.items()}
    p = argparse.ArgumentParser(
        prog="python -m server",
        description="Serve a causal language model (OpenVINO IR) over gRPC (llm.LLMService, health, reflection) "
                    "and HTTP (the OpenAI-compatible API, the chat page, KServe v2 REST, Prometheus /metrics).",
        epilog="Precedence: flag > environment variable > --config_path file > built-in default.",
    )
    p.add_argument("--config_path", help="servable config.json (model_path, device, ov_config, batch_invariant, generation, limits, scheduler, kv_cache)")
    p.add_argument("--model", help=f"model directory (OpenVINO IR) [env {env['model']}; default /model]")
    p.add_argument("--device", help=f"OpenVINO device: CPU, GPU, GPU.1, AUTO [env {env['device']}; default CPU]")
    p.add_argument("--batch-invariant", dest="batch_invariant", action="store_true", default=None,
                   help="f32 with dynamic quantization off, whatever ov_config says: the same prompt gives the same "
                        "greedy text whatever else runs (slower at many streams)")
    p.add_argument("--host", help=f"address to bind [env {env['host']}; default 127.0.0.1, 0.0.0.0 for all interfaces]")
    p.add_argument("--port", type=int, help=f"port [env {env['port']}; default 9000]")
    p.add_argument("--http-port", dest="http_port", type=int,
                   help=f"HTTP on this port: the OpenAI-compatible API, the chat page, KServe v2 REST and /metrics; 0 for "
                        f"none [env {env['http_port']}; default 8000]")
    p.add_argument("--served-model-name", dest="served_model_name",
                   help="the model's name in the HTTP API (default: the model directory's name)")
    p.add_argument("--tool-call-parser", dest="tool_call_parser",
                   help="how chat answers write tool calls: hermes, llama3_json, mistral, granite, phi4_mini_json "
                        "(default: as the model's chat template teaches)")
    p.add_argument("--reasoning-parser", dest="reasoning_parser",
                   help="deepseek_r1, qwen3 or granite: read <think>...</think> into `reasoning`; none: leave it in "
                        "the content (default: when the model's chat template thinks)")
    p.add_argument("--generation-config", dest="generation_config",
                   help="auto: OpenAI API requests take the sampling fields they leave out from the model's "
                        "generation_config.json, else from the servable's generation; servable: from the servable's "
                        "generation only (default auto, as vLLM's --generation-config; gRPC and KServe always use "
                        "the servable's)")
    p.add_argument("--kserve-model-name", dest="kserve_model_name",
                   help="the model's name in KServe v2 calls, beside the served name (default python_model, "
                        "the OpenVINO Model Server demo's)")
    p.add_argument("--cache-dir", dest="cache_dir", help=f"OpenVINO model cache, for fast restarts [env {env['cache_dir']}]")
    p.add_argument("--grace-seconds", dest="grace_seconds", type=float, help="time running calls get on SIGTERM (default 30)")
    p.add_argument("--trust-remote-code", dest="trust_remote_code", action="store_true", default=None,
                   help="allow model code from the model directory (off by default)")
    p.add_argument("--log-level", dest="log_level", help=f"DEBUG, INFO, WARNING, ERROR [env {env['log_level']}]")
    p.add_argument("--log-format", dest="log_format", choices=("text", "json"),
                   help=f"one line of text or one JSON object per log record [env {env['log_format']}]")
    p.add_argument("--log-prompts", dest="log_prompts", action="store_true", default=None,
                   help="include prompt text in request logs (off by default)")
    p.add_argument("--metrics-port", dest="metrics_port", type=int,
                   help=f"Prometheus metrics on a port of their own too (they are always on the HTTP port's /metrics), 0 "
                        f"for none [env {env['metrics_port']}; default 0]")
    p.add_argument("--metrics-api-key", dest="metrics_api_key",
                   help=f"require 'authorization: Bearer KEY' on the HTTP port's /metrics, which --api-key leaves open "
                        f"for scrapers [env {env['metrics_api_key']}]")
    p.add_argument("--api-key", dest="api_key",
                   help=f"require 'authorization: Bearer KEY' on every call but health [env {env['api_key']}]")
    p.add_argument("--tls-cert", dest="tls_cert", help="PEM certificate chain: serve over TLS")
    p.add_argument("--tls-key", dest="tls_key", help="PEM private key for --tls-cert")
    p.add_argument("--tls-client-ca", dest="tls_client_ca", help="PEM CA: require client certificates (mutual TLS)")
    p.add_argument("--list-devices", action="store_true", help="print the devices OpenVINO sees and exit")
    return p


def check_model_dir(path: str) -> None:
    if not Path(path).is_dir():
        raise ConfigError(f"model directory {path} does not exist; get one with "
                          f"`python download_model.py --model NAME` and pass it with --model")
    if not any(Path(path).glob("openvino*model*.xml")):
        raise ConfigError(f"model directory {path} holds no OpenVINO IR (openvino_model.xml)")


def main(argv: list[str] | None = None) -> int:
    # The server needs no PyTorch (OpenVINO runs the model, transformers only the tokenizer), and the runtime install
    # has none: transformers' note at import that PyTorch is missing would only alarm.
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    args = vars(parser().parse_args(argv))
    if args.pop("list_devices"):
        for name, full in devices.available().items():
            print(f"{name}\t{full}")
        return 0
    try:
        settings = load(args)  # the flags given, config_path among them
        check_model_dir(settings.model)
        devices.check(settings.device, devices.available())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logs.setup(settings.log_level, settings.log_format)
    try:
        return asyncio.run(_serve(settings))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # one sentence, not a traceback, for start-up failures
        logging.getLogger("server").debug("start-up failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _serve(settings):
    from server.app import serve

    return await serve(settings)
