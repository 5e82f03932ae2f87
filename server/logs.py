"""Logging set-up: plain text or one JSON object per line (python-json-logger; we only choose its keys)."""
from __future__ import annotations

import logging
import time

from pythonjsonlogger.json import JsonFormatter

# Our names for the record attributes each JSON line starts with, and for a traceback (exc_info);
# python-json-logger adds whatever came with `extra=` under its own name.
RENAMED = {"asctime": "time", "levelname": "level", "name": "logger", "exc_info": "exception"}


class UtcJsonFormatter(JsonFormatter):
    """`time` as ISO 8601 in UTC with milliseconds, e.g. 2025-01-31T12:00:00.123Z (the logging module's own hooks)."""

    converter = time.gmtime
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"


def json_formatter() -> logging.Formatter:
    return UtcJsonFormatter(["asctime", "levelname", "name", "message"], rename_fields=RENAMED)


def setup(level: str, fmt: str) -> None:
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(json_formatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
