"""ufpa.bench on CPU: the GPU code path (bf16 autocast, channels_last) runs, and costs are counted."""

import math

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


def test_interleaved_rounds_time_every_variant_alike():
    cfg = bench.BenchConfig(model="hrnet_w8_tiny", batch=1, steps=3, warmup=1, input_size=(64, 64),
                            compare_timm=False, threads=1)
    rows = bench._bench_interleaved(cfg, ["baseline", "ufpa", "ufpa_any", "ufpa:zeros"])
    assert [r["variant"] for r in rows] == ["baseline", "ufpa", "ufpa_any", "ufpa:zeros"]
    assert rows[3]["input_size"] == [65, 65]  # the padding ablation runs at the variant's own size
    assert all(len(r["step_s_all"]) == 3 and r["step_s_median"] > 0 for r in rows)
    assert rows[1]["input_size"] == [65, 65] and not rows[0]["cuda_graph"]


def test_cuda_graph_needs_cuda():
    cfg = bench.BenchConfig(model="hrnet_w8_tiny", batch=1, device="cpu", cuda_graph=True, input_size=(64, 64))
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        bench._build(cfg, "baseline")


def test_profile_names_where_the_time_goes():
    cfg = bench.BenchConfig(model="hrnet_w8_tiny", batch=1, steps=1, warmup=1, input_size=(64, 64),
                            compare_timm=False, threads=1, variants=("baseline", "ufpa"))
    rows = bench._profile_variants(cfg, ["baseline", "ufpa"], top=5)
    assert [r["variant"] for r in rows] == ["baseline", "ufpa"] and all(len(r["ops"]) == 5 for r in rows)
    assert rows[0]["groups_ms_per_step"]["convolution"] > 0 and rows[0]["groups_ms_per_step"]["padding"] == 0
    assert rows[1]["groups_ms_per_step"]["padding"] > 0  # ufpa pads by replication before its 3x3 convs


def test_a_benchmark_process_that_dies_or_hangs_is_named_not_waited_on():
    """issue 25: a child that crashes or runs past its limit raises at once (a multiprocessing.Pool waited forever)."""
    import os
    import time

    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="the probe died in its process"):
        bench.in_child(os._exit, 3, what="the probe")
    with pytest.raises(TimeoutError, match="the sleeper ran past its time limit of 1 s"):
        bench.in_child(time.sleep, 30, time_limit_s=1, what="the sleeper")
    assert time.perf_counter() - start < 20
    assert bench.in_child(max, 2, 5) == 5


def test_a_missed_goal_is_measured_against_flops_and_names_its_ops():
    """issue 20: the goal is relative to the FLOP ratio, and a variant that misses it gets the ops that hold it back."""
    cfg = bench.BenchConfig(model="hrnet_w8_tiny", input_size=(64, 64), batch=2, steps=2, warmup=1, device="cpu",
                            compare_timm=False, threads=1, variants=("baseline", "ufpa"))
    held = bench.excess_ops(cfg, ["ufpa"])["ufpa"]
    ops = [o["op"] for o in held["ops"]]
    assert any("replication_pad" in op for op in ops), ops  # the padding ufpa adds: the baseline has none
    pad = next(o for o in held["ops"] if "replication_pad" in o["op"])
    assert pad["extra_ms_per_step"] > 0  # all of its time is extra; the whole step's difference is timing noise-bound
    extras = [o["extra_ms_per_step"] for o in held["ops"]]
    assert extras == sorted(extras, reverse=True) and math.isfinite(held["extra_ms_per_step"])
