"""ufpa.bench on CPU: the GPU code path (bf16 autocast, channels_last) runs, and costs are counted."""

import pytest

from ufpa import bench


@pytest.mark.parametrize("variant", ["baseline", "ufpa", "ufpa_any"])
def test_bf16_channels_last_step_runs_on_cpu(variant):
    cfg = bench.BenchConfig(model="hrnet_w8_tiny", batch=2, steps=1, warmup=0, bf16=True, channels_last=True,
                            input_size=(64, 64), compare_timm=False)
    row = bench._bench_one(cfg, variant)
    assert row["bf16"] and row["channels_last"] and row["images_per_s"] > 0
    assert row["input_size"] == ([65, 65] if variant == "ufpa" else [64, 64])


def test_model_cost_counts_flops_and_keeps_parameters():
    base = bench.model_cost("hrnet_w8_tiny", "baseline", input_size=(128, 96))
    ufpa = bench.model_cost("hrnet_w8_tiny", "ufpa", input_size=(128, 96))
    assert base["params"] == ufpa["params"] and ufpa["input_size"] == [129, 97]
    assert 0 < base["gflops"] < ufpa["gflops"]  # 32m+1 sizes cost compute, not parameters
