#!/usr/bin/env python3
"""Get a language model and convert it to OpenVINO IR under models/: modelprep/download_command.py (see --help)."""
from modelprep.download_command import entry

entry()
