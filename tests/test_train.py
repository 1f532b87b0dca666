"""The trainer: typed configs, a smoke run and its record, kill-and-resume bit for bit, non-finite loss, bf16 on CPU,
2-process DDP against 1 process, and the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ufpa import config, records, runs, train
from ufpa.data import synthetic
from ufpa.data.coco import split_paths

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthetic.ensure(out, "easy", train=48, val=12, seed=0)
    return out


def smoke(data, tmp_path, **changes) -> train.TrainConfig:
    cfg = train.TrainConfig(data=str(data), input_size=(96, 64), epochs=2, batch_size=8, train_limit=32,
                            val_limit=8, warmup_steps=2, threads=1, out=str(tmp_path / "runs"),
                            reports=str(tmp_path / "reports"), progress=False, sigma=2.0)
    return replace(cfg, **changes)


def test_overrides_are_typed_and_unknown_keys_named():
    cfg = config.from_overrides(train.TrainConfig(), ["epochs=3", "input_size=[64,64]", "lr=1e-3", "bf16=True",
                                                      "device=cpu"])
    assert cfg.epochs == 3 and cfg.input_size == (64, 64) and cfg.lr == 1e-3 and cfg.bf16 is True
    shell = config.from_overrides(train.TrainConfig(), ["channels_last=true", "fused=False", "input_size=(64, 48)"])
    assert shell.channels_last is True and shell.fused is False and shell.input_size == (64, 48)
    assert config.parse_value("[baseline,ufpa:zeros, 3]") == ["baseline", "ufpa:zeros", 3]  # bare words in a list
    with pytest.raises(ValueError, match="unknown TrainConfig key 'epoch'.*did you mean 'epochs'.*valid keys"):
        config.from_overrides(train.TrainConfig(), ["epoch=3"])
    for bad, msg in (("batch_size=yes", "expected an integer"), ("bf16=yes", "expected True or False"),
                     ("input_size=256", "expected a tuple"), ("lr=fast", "expected a number"),
                     ("input_size=[1,2,3]", "expected 2 values"), ("__import__('os')", "use key=value")):
        with pytest.raises(ValueError, match=msg):
            config.from_overrides(train.TrainConfig(), [bad])


@pytest.mark.parametrize("changes, msg", [
    (dict(codec="udp", head="heatmap"), "udp codec needs head='udp'"), (dict(lr=float("nan")), "lr=nan"),
    (dict(batch_size=0), "batch_size=0"), (dict(alignment="ufpa", input_size=(100, 64)), "32m\\+1"),
    (dict(model="hrnet_w99"), "not a ufpa model"), (dict(flip=1.5), "probability"),
    (dict(alignment="baseline", input_size=(64, 48)), "multiples of 32"), (dict(sigma=float("nan")), "sigma"),
])
def test_validate_names_the_field_and_the_fix(changes, msg):
    with pytest.raises(ValueError, match=msg):
        train.validate(replace(train.TrainConfig(), **changes))


def test_missing_dataset_says_how_to_make_one(tmp_path):
    cfg = smoke(tmp_path / "nowhere", tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m ufpa synth"):
        train.train(cfg)


def test_smoke_run_writes_a_complete_record(data, tmp_path):
    cfg = smoke(data, tmp_path, alignment="ufpa_any", eval_every=1)
    run_dir = train.train(cfg)
    rec = records.read_record(train.record_path(cfg), "train_run")
    res = rec["results"]
    assert res["run_id"] == train.run_id(cfg) == run_dir.name
    assert [h["epoch"] for h in res["learning_curve"]] == [1, 2]
    assert "val_AP" in res["learning_curve"][0] and "val_AP" not in res["learning_curve"][1]  # last: full eval
    for name in ("flip", "no_flip"):
        m = res[name]
        assert 0 <= m["AP"] <= 1 and m["epe_mean"] > 0 and m["flip_test"] == (name == "flip")
        assert len(m["bias_x_per_joint"]) == 17 and m["flip_consistency_px"] >= 0
    assert res["params"] > 0 and res["gflops"] > 0 and res["val_instances"] == 8 and res["train_instances"] == 32
    # ufpa_any: fused features agree on the interior; only its border reads (replicated edges) are off
    assert res["misalignment"]["max_abs_px"] == 0 and res["misalignment"]["border_max_abs_px"] > 0
    assert rec["provenance"]["git_commit"] and rec["config"]["alignment"] == "ufpa_any"
    coco = json.loads(train.record_path(cfg).with_suffix(".keypoints.json").read_text())
    assert len(coco) == 8 and len(coco[0]["keypoints"]) == 51
    lines = (run_dir / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["config"]["alignment"] == "ufpa_any"
    # the notebook helpers read the same run back
    samples = runs.sample_predictions(cfg, 2)
    assert samples["crops"].shape == (2, 96, 64, 3) and samples["predicted"].shape == (2, 17, 2)
    assert runs.metrics_table(rec).shape[0] == 2 and "AP" in runs.run_summary(rec)
    assert train.run_id(runs.load_run(train.record_path(cfg))[0]) == train.run_id(cfg)
    # a finished run is not trained or evaluated again: its record stands, byte for byte
    before = train.record_path(cfg).read_bytes()
    assert train.train(cfg) == run_dir and train.record_path(cfg).read_bytes() == before


def test_ufpa_runs_at_its_aligned_size(data, tmp_path):
    cfg = smoke(data, tmp_path, alignment="ufpa", input_size=(96, 64), epochs=1)
    assert train.effective_input_size(cfg) == (97, 65)
    train.train(cfg)
    res = records.read_record(train.record_path(cfg))["results"]
    assert res["input_size"] == [97, 65] and res["heatmap_size"] == [25, 17]


def test_resume_with_another_config_is_refused(data, tmp_path):
    cfg = smoke(data, tmp_path, epochs=1)
    run_dir = train.train(cfg)
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    state["config"]["lr"] = 1.0
    train.save_checkpoint(run_dir / "checkpoint.pt", state)
    with pytest.raises(ValueError, match="different config"):
        train.train(cfg)


def _cli(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "ufpa", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _args(cfg):
    skip = ("progress",)
    out = []
    for key, value in vars(cfg).items():
        if key not in skip:
            out.append(f"{key}={list(value) if isinstance(value, tuple) else value!r}")
    return out + ["progress=False"]


def test_killed_run_resumes_bit_for_bit(data, tmp_path):
    """SIGKILL a real training process after its first epoch checkpoint; the resumed run ends bitwise equal to an
    uninterrupted one."""
    cfg = smoke(data, tmp_path / "a", epochs=4, train_limit=48)
    ref = smoke(data, tmp_path / "b", epochs=4, train_limit=48)
    log = Path(cfg.out) / train.run_id(cfg) / "log.jsonl"
    proc = _cli(_args(cfg))
    deadline = time.time() + 120
    while not (log.is_file() and log.read_text().count("\n") >= 1):
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "no epoch finished in 120 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = torch.load(log.parent / "checkpoint.pt", weights_only=True)
    assert state["epoch"] < 4, "the run finished before it could be killed; make it longer"
    assert not train.record_path(cfg).exists()
    finished = _cli(_args(cfg))
    assert finished.wait(timeout=300) == 0, finished.stdout.read()
    uninterrupted = _cli(_args(ref))
    assert uninterrupted.wait(timeout=300) == 0, uninterrupted.stdout.read()
    a = torch.load(log.parent / "checkpoint.pt", weights_only=True)
    b = torch.load(Path(ref.out) / train.run_id(ref) / "checkpoint.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for key in b["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    ra = records.read_record(train.record_path(cfg))["results"]
    rb = records.read_record(train.record_path(ref))["results"]
    assert ra["flip"] == rb["flip"] and ra["no_flip"] == rb["no_flip"]


def test_non_finite_loss_names_step_and_checkpoint(data, tmp_path, monkeypatch):
    cfg = smoke(data, tmp_path, epochs=3)
    calls = {"n": 0}
    real = train.pose_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 5 else loss

    monkeypatch.setattr(train, "pose_loss", poisoned)
    with pytest.raises(train.TrainingError, match=r"loss became nan by step 5 \(epoch 2\).*checkpoint.pt"):
        train.train(cfg)
    assert not train.record_path(cfg).exists()


def test_bf16_autocast_runs_on_cpu(data, tmp_path):
    cfg = smoke(data, tmp_path, epochs=1, bf16=True)
    train.train(cfg)
    res = records.read_record(train.record_path(cfg))["results"]
    assert res["learning_curve"][0]["loss"] > 0 and res["flip"]["epe_mean"] > 0


def test_cuda_graph_needs_cuda(data, tmp_path):
    with pytest.raises(ValueError, match="cuda_graph=True needs a CUDA device"):
        train.train(smoke(data, tmp_path, cuda_graph=True))


def test_ddp_two_processes_match_one(data, tmp_path):
    """torchrun with 2 gloo processes (batch 8 = 2 x 4, batch norm over both) against 1 process with batch 8.

    Two SGD steps; each parameter's update must agree to 1 %. That is the float32 precision of this network's
    gradients: a single process's own float32 and float64 stem gradients differ by 0.3 % (batch norm's backward
    subtracts nearly equal terms, layer after layer), while the head's agree to 1e-6.
    """
    one = smoke(data, tmp_path / "one", epochs=1, train_limit=16, optimizer="sgd", lr=0.05, warmup_steps=0, flip=0.0)
    two = replace(one, out=str(tmp_path / "two" / "runs"), reports=str(tmp_path / "two" / "reports"))
    assert train.run_id(one) == train.run_id(two)
    train.train(one)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun) if torchrun.exists() else sys.executable, *([] if torchrun.exists() else
           ["-m", "torch.distributed.run"]), "--nproc_per_node=2", "--master_port=29517", "-m", "ufpa", "train",
           *_args(two)]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    a = torch.load(Path(one.out) / train.run_id(one) / "checkpoint.pt", weights_only=True)
    b = torch.load(Path(two.out) / train.run_id(two) / "checkpoint.pt", weights_only=True)
    assert a["history"][0]["loss"] == pytest.approx(b["history"][0]["loss"], rel=1e-5)
    torch.manual_seed(one.seed)
    start = train.build(one, datasets=False)[0].state_dict()
    for key, value in a["model"].items():
        if not value.is_floating_point():
            assert torch.equal(value, b["model"][key]), key
            continue
        moved = (value.double() - start[key].double()).norm()
        if moved > 1e-6:
            assert (value.double() - b["model"][key].double()).norm() / moved < 0.01, key
    head = "head.conv.weight"
    assert ((a["model"][head] - b["model"][head]).norm() / (a["model"][head] - start[head]).norm()) < 1e-5


def test_cli_rejects_bad_overrides():
    out = subprocess.run([sys.executable, "-m", "ufpa", "train", "epoch=3"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode != 0 and "did you mean 'epochs'" in out.stderr and "valid keys" in out.stderr
    out = subprocess.run([sys.executable, "-m", "ufpa", "train", "codec=dark"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode != 0 and "head='udp'" in out.stderr


def test_run_id_does_not_depend_on_where_the_data_lives(tmp_path):
    a = train.TrainConfig(data="data/synthpose-easy")
    b = train.TrainConfig(data=str(ROOT / "data" / "synthpose-easy"))
    c = train.TrainConfig(data=str(tmp_path / "elsewhere" / "synthpose-easy"), out="/x")  # threads: identity now
    assert train.run_id(a) == train.run_id(b) == train.run_id(c)
    assert train.run_id(a) != train.run_id(replace(a, data="data/synthpose")) != train.run_id(replace(a, lr=1e-3))
    # the sweep (relative paths) and notebook 05 (paths resolved from the repository root) agree
    assert train.run_id(runs.notebook_config(vars(a))) == train.run_id(a)


def test_run_checks_assert_what_holds_on_any_machine():
    """Notebook 05's check cell: the record is the config's, metrics finite, loss fell (when there is a curve)."""
    cfg = train.TrainConfig()
    metrics = {"AP": 0.5, "epe_mean": 3.0}
    rec = {"results": {"run_id": train.run_id(cfg), "flip": dict(metrics), "no_flip": dict(metrics),
                       "learning_curve": [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 1.0}]}}
    assert "loss fell over 2 epochs" in runs.run_checks(rec, cfg)
    one = {"results": {**rec["results"], "learning_curve": [{"epoch": 1, "loss": 2.0}]}}
    assert "one epoch" in runs.run_checks(one, cfg)
    flat = {"results": {**rec["results"], "learning_curve": [{"epoch": 1, "loss": 2.0}, {"epoch": 2, "loss": 2.0}]}}
    with pytest.raises(ValueError, match="did not fall"):
        runs.run_checks(flat, cfg)
    nan = {"results": {**rec["results"], "flip": {"AP": float("nan")}}}
    with pytest.raises(ValueError, match="not finite"):
        runs.run_checks(nan, cfg)
    with pytest.raises(ValueError, match="not of this config"):
        runs.run_checks(rec, replace(cfg, seed=1))


def test_records_hold_paths_relative_to_the_repository(tmp_path):
    """A record names no machine's folders: paths inside the clone are stored relative to its root (issue 18)."""
    inside = ROOT / "data" / "synthpose-easy"
    cfg = train.TrainConfig(data=str(inside), out=str(ROOT / "runs"), reports="")
    stored = train.record_config(cfg)
    assert (stored["data"], stored["out"], stored["reports"]) == ("data/synthpose-easy", "runs", "")
    assert records.repo_relative(tmp_path / "x") == str((tmp_path / "x").resolve())  # outside: absolute
    assert records.from_repo(stored["data"]) == inside and records.from_repo(str(tmp_path)) == tmp_path


def test_a_folder_in_the_coco_2017_layout_trains_as_it_is_unpacked(data, tmp_path):
    """annotations/person_keypoints_{train,val}2017.json beside train2017/ and val2017/, no renaming (issue 18)."""
    import shutil

    coco = tmp_path / "coco"
    (coco / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        shutil.copy(data / "annotations" / f"person_keypoints_{split}.json",
                    coco / "annotations" / f"person_keypoints_{split}2017.json")
        shutil.copytree(data / "images" / split, coco / f"{split}2017")
    assert split_paths(coco, "train") == (coco / "annotations" / "person_keypoints_train2017.json",
                                           coco / "train2017")
    cfg = smoke(coco, tmp_path, epochs=1)
    train.train(cfg)
    assert records.read_record(train.record_path(cfg))["results"]["train_instances"] == 32
    (coco / "val2017").rename(coco / "elsewhere")
    with pytest.raises(FileNotFoundError, match=r"has no split 'val'.*annotations/person_keypoints_val.json, "
                                                r"images/val, val, annotations/person_keypoints_val2017.json, "
                                                r"images/val2017, val2017"):
        split_paths(coco, "val")


def test_threads_are_part_of_the_identity():
    """threads=1 and threads=2 trained different weights under one run id (issue 18): another thread count is
    another run; 1 (the study's setting) is implied, so the committed records keep their ids."""
    one, two, default = (train.TrainConfig(threads=t) for t in (1, 2, 0))
    assert train.run_id(one) != train.run_id(two)
    assert train.run_id(default) == train.run_id(replace(one, threads=torch.get_num_threads()))
    for path in sorted((ROOT / "reports" / "results" / "runs").glob("*-????????.json")):
        rec = records.read_record(path)
        cfg = train.TrainConfig(**{k: tuple(v) if k == "input_size" else v for k, v in rec["config"].items()})
        assert train.run_id(cfg) == rec["results"]["run_id"] == path.stem


def test_a_run_of_ones_own_writes_to_scratch(monkeypatch):
    """The README's `train` example wrote its record into the committed study (issue 18): '' reports is scratch/."""
    monkeypatch.delenv("UFPA_REPORTS_DIR", raising=False)
    assert train.record_path(train.TrainConfig()).is_relative_to(records.SCRATCH / "results" / "runs")
    assert train.record_path(train.TrainConfig(reports="reports")).parts[:3] == ("reports", "results", "runs")


def test_the_tests_clean_tree_takes_the_run_directory_too(tmp_path, monkeypatch):
    """nbval executes notebook 05 under UFPA_REPORTS_DIR: its run directory goes there, so a checkpoint another
    version of the code left in runs/ is never resumed (it would be refused) by `make test`."""
    monkeypatch.setenv("UFPA_REPORTS_DIR", str(tmp_path))
    params = {f: getattr(train.TrainConfig(), f) for f in ("out", "data")}
    cfg = runs.notebook_config(params)
    assert cfg.out == str(tmp_path / "runs") and cfg.data == str(ROOT / "data" / "synthpose-easy")


def test_options_added_later_keep_the_ids_and_pooling_of_older_runs():
    """fused (issue 20) changes the numbers, so it is part of a run's identity, but only when on: the ids of runs
    recorded before it existed stay valid. cache_mb changes nothing computed: never part of the id."""
    base = train.TrainConfig()
    assert train.run_id(base) == "hrnet_w8_tiny-baseline-96x64-udp-s0-4d8f0c5b"  # the committed study's id
    assert train.run_id(replace(base, cache_mb=0)) == train.run_id(base)
    assert train.run_id(replace(base, fused=True)) != train.run_id(base)
    with pytest.raises(ValueError, match="fused=True is a kernel of adam and adamw"):
        train.validate(replace(base, fused=True, optimizer="sgd"))
    with pytest.raises(ValueError, match="cache_mb=-1"):
        train.validate(replace(base, cache_mb=-1))
    from ufpa import report

    old = {"config": {"model": "m", "lr": 0.1, "data": "d"}, "results": {}}
    new = {"config": {"model": "m", "lr": 0.1, "data": "d", "fused": False, "cache_mb": 512}, "results": {}}
    assert report._condition(old) == report._condition(new)
    assert report._condition(old) != report._condition({**new, "config": {**new["config"], "fused": True}})


def test_without_a_bar_a_run_logs_a_line_per_epoch_and_evaluation(data, tmp_path, capsys):
    """issue 25: a run printed nothing until its end without a bar, so a killed run's log said nothing."""
    train.train(smoke(data, tmp_path, epochs=2, eval_every=1))
    lines = capsys.readouterr().out.splitlines()
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and epochs[0].startswith("epoch 1/2: loss ") and "img/s" in epochs[0]
    assert "val AP" in epochs[0] and "ETA" in epochs[0] and epochs[1].endswith("training done; evaluating")
    assert [line.split(":")[0] for line in lines if line.startswith("evaluation")] == [
        "evaluation without flip test", "evaluation with flip test"]
    train.train(smoke(data, tmp_path / "bar", epochs=1, progress=True))
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]


def test_paths_given_on_the_command_line_are_taken_from_the_current_folder(data, tmp_path, monkeypatch):
    """issue 26: `python -m ufpa train data=... out=... reports=...` from any folder means that folder's paths."""
    from ufpa import __main__ as cli

    monkeypatch.delenv("UFPA_REPORTS_DIR", raising=False)
    here = tmp_path / "here"
    here.mkdir()
    (here / "mydata").symlink_to(data)
    monkeypatch.chdir(here)
    assert cli.main(["train", "data=mydata", "out=myruns", "reports=myreports", "epochs=1", "batch_size=8",
                     "train_limit=16", "val_limit=8", "warmup_steps=1", "input_size=[96,64]", "progress=False"]) == 0
    recs = list((here / "myreports" / "results" / "runs").glob("*-s0-*[0-9a-f].json"))
    assert len(recs) == 1 and (here / "myruns" / recs[0].stem / "done.json").is_file()
    recorded = records.read_record(recs[0])["config"]["data"]  # outside the clone: absolute
    assert Path(recorded).is_absolute() and Path(recorded).resolve() == (here / "mydata").resolve()


def test_the_padding_control_trains_ufpa_without_its_replicate_padding(data, tmp_path):
    """issue 21: ufpa differs from the baseline in alignment, size and padding at once; padding=zeros separates the
    padding (bench models' ufpa:zeros, now trainable). The run id says so; '' keeps every older id."""
    cfg = smoke(data, tmp_path, alignment="ufpa", padding="zeros", epochs=1)
    assert "-ufpa-zerospad-96x64-" in train.run_id(cfg)
    assert "-ufpa-96x64-" in train.run_id(replace(cfg, padding=""))
    model, _, _, _ = train.build(cfg, datasets=False)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert convs and {m.padding_mode for m in convs} == {"zeros"}
    own, _, _, _ = train.build(replace(cfg, padding=""), datasets=False)
    assert "replicate" in {m.padding_mode for m in own.modules() if isinstance(m, torch.nn.Conv2d)}
    train.train(cfg)
    rec = records.read_record(train.record_path(cfg))
    assert rec["config"]["padding"] == "zeros" and rec["results"]["input_size"] == [97, 65]
    with pytest.raises(ValueError, match="padding='reflect'"):
        train.validate(replace(cfg, padding="reflect"))


def test_a_learned_alignment_run_records_what_it_learned(data, tmp_path):
    """issue 22: a learned run writes its offsets against the geometry beside its record (hash in the record), and its
    record's misalignment is the one its samplers realised, with the zero-offset audit kept beside it."""
    import hashlib

    cfg = smoke(data, tmp_path, alignment="learned", epochs=1)
    train.train(cfg)
    rec = records.read_record(train.record_path(cfg))["results"]
    text = train.record_path(cfg).with_suffix(".offsets.json").read_bytes()
    assert hashlib.sha256(text).hexdigest() == rec["offsets_sha256"]
    offsets = json.loads(text)
    assert offsets["images"] == 8 and {p["fusion"] for p in offsets["profiles"]} and offsets["summary"]
    assert rec["misalignment_at_zero_offset"]["max_abs_px"] == 28.0  # the baseline's grid, before learning
    assert rec["misalignment"]["as"].startswith("learned offsets") and 0 < rec["learned_alignment"]["interior"][
        "rms_shift_px"]
    assert rec["params"] > train.model_cost(cfg.model, "baseline", cfg.head, cfg.input_size)["params"]
