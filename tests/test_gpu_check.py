"""make gpu-check on CPU: it refuses (it measures a GPU), its plan fits its budget, and its step runner reports a step
that fails or hangs and goes on (the GPU runs it; CPU can test all of this)."""

import os
import stat
from pathlib import Path

import pytest
import torch

from ufpa import __main__ as cli
from ufpa import gpu_check, records


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_it_refuses_a_machine_without_cuda(tmp_path, capsys):
    assert cli.main(["gpu-check", "--out", str(tmp_path / "g")]) == 1
    assert "gpu-check: gpu-check measures a CUDA GPU and torch sees none" in capsys.readouterr().err
    with pytest.raises(ValueError, match="torch sees none here.*run it on a GPU machine"):
        gpu_check.check_device()
    assert not (tmp_path / "g").exists()  # nothing made, nothing measured


def test_the_plan_fits_the_budget_and_names_every_measurement(tmp_path):
    steps = gpu_check.plan(tmp_path)
    assert sum(s.timeout_s for s in steps) <= gpu_check.BUDGET_S == 480
    names = [s.name for s in steps]
    assert names == ["synthpose", "bench_eager_b64", "bench_eager_b128", "bench_graph_b64", "bench_graph_b128",
                     "train_w32"]
    # every bench and the training parse as the CLI would parse them (a typo would waste the GPU's minutes)
    from ufpa import bench, config, train

    for step in steps[1:5]:
        overrides = [a for a in step.command[2:] if "=" in a and not a.startswith("--")]
        bench.validate(config.from_overrides(bench.BenchConfig(device="cuda"), overrides))
    overrides = steps[-1].command[1:]
    cfg = config.from_overrides(train.TrainConfig(), overrides)
    assert (cfg.model, cfg.input_size, cfg.cuda_graph, cfg.bf16) == ("hrnet_w32", (256, 192), None, None)


def test_a_failing_or_hanging_step_is_reported_and_the_next_runs(tmp_path):
    hang = tmp_path / "hang.sh"
    hang.write_text("#!/bin/sh\necho started; sleep 60\n")
    hang.chmod(hang.stat().st_mode | stat.S_IEXEC)
    steps = [gpu_check.Step("ok", ["aligned-size", "256"], 60),
             gpu_check.Step("bad", ["train", "model=nope"], 60)]
    summary = gpu_check.run_steps(steps, tmp_path / "a")
    assert summary["steps"][0]["status"] == "ok"
    assert summary["steps"][1]["status"].startswith("failed") and "nope" in " ".join(summary["steps"][1]["tail"])
    assert not summary["passed"]
    hung = gpu_check.run_steps([gpu_check.Step("hang", [], 1)], tmp_path / "b", python=str(hang))
    assert hung["steps"][0]["status"] == "timed out after 1 s" and hung["steps"][0]["tail"] == ["started"]
    rec = records.read_record(tmp_path / "b" / "results" / "gpu_check.json", "gpu_check")
    assert rec["results"]["steps"][0]["step"] == "hang"
    assert os.path.isfile(Path(tmp_path / "b" / "logs" / "hang.log"))
