#!/usr/bin/env python3
"""Compress a downloaded model's weights with NNCF (FP16, INT8, INT4): modelprep/compress_command.py (see --help)."""
from modelprep.compress_command import entry

entry()
