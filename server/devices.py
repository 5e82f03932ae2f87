"""What OpenVINO sees on this machine, and whether a requested device is among it."""
from __future__ import annotations

from server.config import ConfigError

VIRTUAL = ("AUTO", "MULTI", "HETERO", "BATCH")  # plugins that pick among the real devices


def available() -> dict[str, str]:
    """Device name -> full name, e.g. {"CPU": "Intel(R) Xeon(R) ...", "GPU.0": "Intel(R) Arc(TM) ..."}."""
    import openvino as ov

    core = ov.Core()
    return {d: core.get_property(d, "FULL_DEVICE_NAME") for d in core.available_devices}


def check(device: str, devices: dict[str, str]) -> None:
    if device.split(":")[0] in VIRTUAL:
        return
    # "GPU" names the first GPU; OpenVINO lists GPU.0, GPU.1 when there are several.
    if device in devices or any(d.startswith(device + ".") for d in devices):
        return
    names = ", ".join(f"{d} ({full})" for d, full in devices.items()) or "none"
    raise ConfigError(f"device {device} is not available; this machine has: {names}")
