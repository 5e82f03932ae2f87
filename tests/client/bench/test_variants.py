"""`python -m client.bench.variants`: the servable against an ov_config variant of itself, in turns."""
from __future__ import annotations

import json
import re

import pytest

from modelcheck import REPO


def test_a_tiny_run_reports_the_variant_against_the_base(fp32_model_dir, run_script, tmp_path):
    out = run_script("client.bench.variants", "--serve", fp32_model_dir, "--servable",
                     REPO / "servable_stream" / "config.json", "--variant", "kv_u8=KV_CACHE_PRECISION:u8",
                     "--levels", "2", "--rounds", "2", "--max-new-tokens", "4", "--json", tmp_path / "v.json",
                     timeout=600)
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"kv_u8_vs_base_2=\d+\.\d{3}", out.stdout.strip().splitlines()[-1]), out.stdout
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["variants"] == {"base": {}, "kv_u8": {"KV_CACHE_PRECISION": "u8"}}
    # Each server's own start-up report: the variant really ran with a u8 cache, the base with its default.
    assert "kv_cache=u8" in report["numerics"]["kv_u8"] and "kv_cache=u8" not in report["numerics"]["base"]
    for name in ("base", "kv_u8"):
        figure = report["figures"][name]["2"]
        assert len(figure["rounds"]) == 2 and all(tps > 0 for tps in figure["rounds"])
    assert report["figures"]["base"]["2"]["vs_base"] == 1.0


@pytest.mark.parametrize("variant", ["kv_u8", "=KV_CACHE_PRECISION:u8", "kv=KV_CACHE_PRECISION"])
def test_a_malformed_variant_is_one_line(run_script, variant, tmp_path):
    out = run_script("client.bench.variants", "--serve", tmp_path, "--variant", variant)
    assert out.returncode == 1 and out.stderr.strip().count("\n") == 0
    assert out.stderr.startswith("error: expected NAME=KEY:VALUE") and "Traceback" not in out.stderr


def test_a_dotted_key_sets_a_servable_key_and_others_go_to_ov_config():
    from client.bench.variants import parse_variant

    v = parse_variant("off=kv_cache.prefix_caching:false,KV_CACHE_PRECISION:u8")
    base = {"ov_config": {"NUM_STREAMS": "1"}, "kv_cache": {"gb": 0.5}}
    assert v.servable(base) == {"ov_config": {"NUM_STREAMS": "1", "KV_CACHE_PRECISION": "u8"},
                                "kv_cache": {"gb": 0.5, "prefix_caching": False}}
    assert base == {"ov_config": {"NUM_STREAMS": "1"}, "kv_cache": {"gb": 0.5}}
