"""Model directories: naming, completeness, atomic creation."""
from __future__ import annotations

import pytest

from modelprep.store import MANIFEST, REQUIRED, Manifest, atomic_dir, is_complete, model_dir


def fill(path):
    for name in REQUIRED:
        (path / name).write_text(name)


def test_names():
    assert model_dir("m", "fp32", "models").name == "m"
    assert [model_dir("m", p).name for p in ("fp16", "int8", "int4")] == [
        "m_FP16", "m_INT8_compressed_weights", "m_INT4_compressed_weights"]
    with pytest.raises(ValueError):
        model_dir("m", "int3")


def test_atomic_dir_publishes_only_when_done(tmp_path):
    target = tmp_path / "m"
    with atomic_dir(target, Manifest("m", "fp32", "test")) as tmp:
        fill(tmp)
        assert not target.exists()
    assert is_complete(target) and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "m", Manifest("m", "fp32", "test")) as tmp:
            fill(tmp)
            raise RuntimeError("conversion failed")
    assert list(tmp_path.iterdir()) == []


def test_incomplete_directories(tmp_path):
    target = tmp_path / "m"
    with atomic_dir(target, Manifest("m", "fp32", "test")) as tmp:
        fill(tmp)
    (target / "openvino_model.bin").write_text("truncated")  # size differs from the manifest
    assert not is_complete(target)
    (target / MANIFEST).unlink()
    assert not is_complete(target) and not is_complete(tmp_path / "missing")


def test_replacing_an_existing_directory(tmp_path):
    target = tmp_path / "m"
    target.mkdir()
    (target / "stale").write_text("old")
    with atomic_dir(target, Manifest("m", "fp32", "test")) as tmp:
        fill(tmp)
    assert is_complete(target) and not (target / "stale").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
