"""Device listing and the one-sentence error for a device this machine does not have."""
import subprocess
import sys

import openvino as ov
import pytest

from server.config import ConfigError
from server.devices import check
from tests.server.harness import ROOT


def run(*args):
    return subprocess.run([sys.executable, "-m", "server", *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_list_devices_prints_what_openvino_sees():
    result = run("--list-devices")
    assert result.returncode == 0
    core = ov.Core()
    for device in core.available_devices:
        assert f"{device}\t{core.get_property(device, 'FULL_DEVICE_NAME')}" in result.stdout


def test_absent_device_exits_with_one_sentence_naming_the_devices(fp32_model_dir):
    result = run("--model", str(fp32_model_dir), "--device", "NPU.7")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "NPU.7 is not available" in line and "CPU" in line


def test_check_accepts_real_and_virtual_devices():
    devices = {"CPU": "Xeon", "GPU.0": "Arc A770", "GPU.1": "Iris Xe"}
    for name in ("CPU", "GPU", "GPU.1", "AUTO", "AUTO:GPU,CPU", "HETERO:GPU,CPU"):
        check(name, devices)
    with pytest.raises(ConfigError, match="GPU.2 is not available; this machine has: CPU \\(Xeon\\), GPU.0"):
        check("GPU.2", devices)
