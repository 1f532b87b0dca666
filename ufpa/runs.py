"""A run read back: notebook 05's helpers (its parameters cell, config, trained model, predictions, tables and
checks) and the comparison of two records of one run across CPU types. Above ``train``: it reads what a run wrote and
never trains."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import torch

from . import config, integrity, records
from .data import synthetic
from .data.coco import MEAN, STD
from .train import (
    PATH_FIELDS,
    TrainConfig,
    build,
    effective_input_size,
    load_checkpoint,
    resolve_paths,
    run_dir,
    run_id,
    validate,
)

# How far a CPU run's numbers may move on another CPU type or torch build. On the same CPU type and torch build a run
# repeats bit for bit; elsewhere torch and oneDNN dispatch other kernels (AVX-512, AVX2, scalar), which round
# differently, and training amplifies the difference. Per metric: ("rel", r) allows |a - b| <= r * max(|a|, |b|),
# ("abs", d) allows |a - b| <= d, ("epe", f) allows |a - b| <= f * the run's mean end-point error (biases). Set at
# about twice the largest spread measured on notebook 05's smoke run under AVX-512, AVX2 and scalar kernels (loss
# 0.1 %, mean end-point error 3.7 %, median 5.7 %, flip consistency 1.5 %, biases 1 px of a 42 px error);
# tests/test_reproducibility.py keeps it true.
CROSS_CPU_TOLERANCE = {"loss": ("rel", 0.01), "AP": ("abs", 0.02), "AR": ("abs", 0.02), "epe_mean": ("rel", 0.08),
                       "epe_median": ("rel", 0.12), "flip_consistency_px": ("rel", 0.06), "bias_x": ("epe", 0.06),
                       "bias_y": ("epe", 0.06)}


def load_run(record: str | os.PathLike):
    """(config, record) of a finished run from its record path."""
    rec = records.read_record(record, "train_run")
    cfg = TrainConfig(**{f.name: rec["config"][f.name] for f in dataclasses.fields(TrainConfig)
                         if f.name in rec["config"]})
    cfg.input_size = tuple(cfg.input_size)
    for name in PATH_FIELDS:
        if getattr(cfg, name):
            setattr(cfg, name, str(records.from_repo(getattr(cfg, name))))
    return cfg, rec


# --- notebook 05's parameters ------------------------------------------------------------------------------------

NOTEBOOK_EXTRA_PARAMETERS = ("synth", "compare_with", "show")  # notebook 05's parameters beyond TrainConfig
# Notebook 05's own defaults where they differ from the CLI's (TrainConfig's): a smoke run, seconds on a CPU.
NOTEBOOK_SMOKE = {"data": "data/synthpose-notebook", "epochs": 2, "warmup_steps": 10, "eval_every": 1,
                  "progress": False}
_NOTEBOOK_EXTRAS = """\
# SynthPose to generate at `data` if it is missing (a SynthPose folder of other settings is refused; other
# datasets are left alone)
synth = {"difficulty": "easy", "train": 160, "val": 32, "seed": 0}
# other runs of the same config to compare predictions with (alignment names; shown when they have been trained)
compare_with = ["baseline", "ufpa", "ufpa_any"]
show = 3  # val crops to draw"""


def _literal(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def parameters_cell() -> str:
    """Notebook 05's parameters cell, generated from ``TrainConfig`` (its defaults and field comments) and
    ``NOTEBOOK_SMOKE``: the notebook and the CLI cannot disagree on a default (a test compares the two)."""
    comments = config.field_comments(TrainConfig)
    lines = ["# papermill parameters (literals only): every ufpa.train.TrainConfig field (written from it by",
             "# `python -m ufpa notebook-parameters`), then what this notebook shows. Relative paths are taken from",
             "# the repository root.",
             "# Every default is the CLI's (`python -m ufpa train --help`) but those marked smoke: a run of seconds."]
    for f in dataclasses.fields(TrainConfig):
        value = NOTEBOOK_SMOKE.get(f.name, f.default)
        note = comments.get(f.name, "")
        if f.name in NOTEBOOK_SMOKE:
            note = f"smoke (CLI default {_literal(f.default)}); {note}"
        lines.append(f"{f.name} = {_literal(value)}  # {note}")
    return "\n".join(lines) + "\n" + _NOTEBOOK_EXTRAS


def parameters_cell_of(path) -> str:
    """The parameters cell a notebook holds now."""
    return config.parameters_cell(nbformat.read(path, as_version=4), path).source


def write_parameters_cell(path) -> bool:
    """Rewrite notebook 05's parameters cell from ``parameters_cell()`` (``python -m ufpa notebook-parameters``);
    returns whether it changed."""
    nb = nbformat.read(path, as_version=4)
    cell = config.parameters_cell(nb, path)
    new = parameters_cell()
    if cell.source == new:
        return False
    cell.source = new
    records.atomic_write_text(path, nbformat.writes(nb))
    return True


# --- notebook 05's readers ---------------------------------------------------------------------------------------

def notebook_config(namespace: dict, synth: dict | None = None) -> TrainConfig:
    """The TrainConfig of notebook 05's parameters (every field is a parameter there), checked and with relative
    paths taken from the repository root; generates the SynthPose dataset ``synth`` describes if ``data`` is missing.
    """
    config.check_known_parameters(namespace, [f.name for f in dataclasses.fields(TrainConfig)]
                                  + list(NOTEBOOK_EXTRA_PARAMETERS))
    check_shown(namespace.get("show", 3), namespace.get("compare_with", []))
    cfg = config.replace(TrainConfig(), {f.name: namespace[f.name] for f in dataclasses.fields(TrainConfig)
                                         if f.name in namespace})
    inside_repository(cfg)
    cfg = resolve_paths(cfg)
    validate(cfg)
    if synth:
        synthetic.ensure(cfg.data, **synth)
    return cfg


def check_shown(show, compare_with) -> None:
    """Notebook 05's display parameters, checked before anything trains (a bad one would fail after training)."""
    from .models import ALL_ALIGNMENTS

    config.check_parameter("show", show, isinstance(show, int) and not isinstance(show, bool) and show >= 1,
                           "a whole number of val crops >= 1")
    unknown = [a for a in compare_with if a not in ALL_ALIGNMENTS] if isinstance(compare_with, list) else None
    config.check_parameter("compare_with", compare_with, unknown == [],
                           f"a list of alignment names from {list(ALL_ALIGNMENTS)}"
                           + (f" ({unknown} are not)" if unknown else ""))


def inside_repository(cfg: TrainConfig) -> None:
    """A relative ``data``, ``out`` or ``reports`` is taken from the repository root, so it must stay inside it: from
    ``--cwd notebooks`` a user writes ``../scratch/nb`` meaning the repository's scratch/, which from the root is
    outside the clone. An absolute path is taken as it is."""
    root = records.REPO_ROOT
    for name in PATH_FIELDS:
        value = getattr(cfg, name)
        # by its words, not by where links lead: runs/ or data/ may be a link to another disk
        if value and not Path(value).is_absolute() and os.path.normpath(value).split(os.sep)[0] == os.pardir:
            raise ValueError(f"notebook parameter {name}={value!r} leaves the repository: relative paths are taken "
                             f"from the repository root ({root}), whatever the working directory; pass one inside "
                             f"it (e.g. -p {name} scratch/nb) or an absolute path")


def load_model(cfg: TrainConfig, device="cpu"):
    """The trained model of a run (from its last checkpoint) and its codec."""
    path = run_dir(cfg) / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint for run {run_id(cfg)} at {path}; train it first")
    model, codec, _, _ = build(cfg, datasets=False)
    model.load_state_dict(load_checkpoint(path, cfg)["model"])
    return model.to(device).eval(), codec


def sample_predictions(cfg: TrainConfig, count: int = 4) -> dict:
    """The first ``count`` val crops (RGB uint8), their ground truth and this run's predictions (crop pixels), and
    its output heatmaps (N, K, h, w)."""
    model, codec = load_model(cfg)
    _, _, _, val_ds = build(cfg)
    items = [val_ds[i] for i in range(min(count, len(val_ds)))]
    x = torch.from_numpy(np.stack([it["image"] for it in items]))
    with torch.no_grad():
        out = model(x).float().numpy()
    kps, scores = codec.decode(out)
    crops = np.clip(np.stack([it["image"].transpose(1, 2, 0) for it in items]) * STD + MEAN, 0, 255).astype(np.uint8)
    return {"crops": crops, "ground_truth": np.stack([it["keypoints"] for it in items]),
            "visible": np.stack([it["visible"] for it in items]), "predicted": kps, "scores": scores,
            "heatmaps": out[:, :model.num_keypoints]}


def sibling(cfg: TrainConfig, **changes) -> TrainConfig:
    """The same run with some fields changed (e.g. ``alignment='baseline'``), to compare against."""
    return dataclasses.replace(cfg, **changes)


def trained_siblings(cfg: TrainConfig, alignments, count: int) -> dict:
    """Predictions of the same config under other alignment variants that have a checkpoint (label -> samples)."""
    out = {}
    for alignment in alignments:
        other = sibling(cfg, alignment=alignment)
        if alignment == cfg.alignment or effective_input_size(other) != effective_input_size(cfg):
            continue  # another input size means other crops: not comparable picture by picture
        if (run_dir(other) / "checkpoint.pt").is_file():
            out[alignment] = sample_predictions(other, count)
    return out


METRIC_COLUMNS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "AR": "AR", "epe_mean": "EPE px",
                  "epe_median": "EPE median px", "pck@0.1": "PCK@0.1", "flip_consistency_px": "flip consistency px",
                  "found_rate": "found", "epe_found": "EPE found px", "swap_rate": "swaps"}


def metrics_table(record: dict):
    """One row per evaluation (flip test off / on) of a run record: AP, end-point error, |bias|, PCK."""
    rows = []
    for name in ("no_flip", "flip"):
        m = record["results"][name]
        row = {"flip test": name == "flip"}
        row.update({label: m.get(key, math.nan) for key, label in METRIC_COLUMNS.items()})  # older records: NaN
        row["|bias| px"] = math.hypot(m["bias_x"], m["bias_y"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("flip test").round(3)


def run_summary(record: dict) -> str:
    r = record["results"]
    curve = r["learning_curve"]
    flip, plain = r["flip"], r["no_flip"]
    size = "x".join(map(str, r["input_size"]))
    return (f"{record['config']['model']} ({record['config']['alignment']}) at {size}: training loss "
            f"{curve[0]['loss']:.4g} -> {curve[-1]['loss']:.4g} over {len(curve)} epochs; val AP "
            f"{plain['AP']:.3f} without and {flip['AP']:.3f} with flip test; end-point error {flip['epe_mean']:.2f} px "
            f"(median {flip['epe_median']:.2f}), bias ({flip['bias_x']:+.2f}, {flip['bias_y']:+.2f}) px, flip "
            f"consistency {flip['flip_consistency_px']:.2f} px.")


def run_checks(record: dict, cfg: TrainConfig) -> str:
    """What a run's notebook can assert on any machine: the record is this config's, every metric is finite and the
    training loss fell. The numbers themselves move with the CPU's kernels (see ``CROSS_CPU_TOLERANCE``), so the
    notebook shows them but nbval does not compare them digit for digit."""
    if record["results"]["run_id"] != run_id(cfg):
        raise ValueError(f"record {record['results']['run_id']} is not of this config ({run_id(cfg)})")
    for name in ("flip", "no_flip"):
        bad = [k for k, v in record["results"][name].items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise ValueError(f"{name} metrics {bad} are not finite")
    curve = record["results"]["learning_curve"]
    checked = f"checked: the record is this run's ({run_id(cfg)}) and its metrics are finite"
    if len(curve) < 2:  # one epoch has no curve to read
        return checked + "; one epoch: no learning curve to check"
    if not curve[-1]["loss"] < curve[0]["loss"]:
        raise ValueError(f"the training loss did not fall ({curve[0]['loss']:.4g} -> {curve[-1]['loss']:.4g}): check "
                         "the learning rate and the data before reading the metrics")
    return checked + f", and the training loss fell over {len(curve)} epochs"


def cross_cpu_differences(a: dict, b: dict) -> list[str]:
    """The numbers of two records of one config that differ by more than ``CROSS_CPU_TOLERANCE`` (empty: within)."""
    ra, rb = a["results"], b["results"]
    if ra["run_id"] != rb["run_id"]:
        raise ValueError(f"records of two configs ({ra['run_id']}, {rb['run_id']}) are not runs to compare")
    pairs = [(f"loss epoch {x['epoch']}", "loss", x["loss"], y["loss"], None)
             for x, y in zip(ra["learning_curve"], rb["learning_curve"])]
    for name in ("no_flip", "flip"):
        epe = max(ra[name]["epe_mean"], rb[name]["epe_mean"])
        pairs += [(f"{name} {key}", key, ra[name][key], rb[name][key], epe)
                  for key in CROSS_CPU_TOLERANCE if key != "loss"]
    out = []
    for label, key, x, y, epe in pairs:
        kind, amount = CROSS_CPU_TOLERANCE[key]
        allowed = {"rel": amount * max(abs(x), abs(y)), "abs": amount, "epe": amount * (epe or 0.0)}[kind]
        if not abs(x - y) <= allowed:
            out.append(f"{label}: {x:.6g} vs {y:.6g} (allowed +-{allowed:.3g})")
    return out


# --- a record reproduced: one training code standing in for another -------------------------------------------------

def reproduce(record: str | os.PathLike, scratch: str | os.PathLike | None = None) -> dict:
    """Re-train a recorded run with the code checked out now, on this machine, into ``scratch`` (default:
    ``scratch/reproduce/``), and compare the record this call wrote with the recorded one bit for bit
    (``integrity.identical_differences``). The record must be its run (``integrity.check_record_identity``: an
    edited record would train another run), and a run left in ``scratch`` by an earlier call is removed first, so a
    stale file is never compared. When the two training codes differ (``code_fingerprint``) and the run repeated
    exactly, on the CPU type that made the record, an equivalence record goes beside the record
    (``<results>/equivalence/<old>-<new>.json``) holding both records' hashes and the repeat itself
    (``integrity.check_equivalence`` checks them): the report then pools records of the two codes. Returns what it
    found."""
    import shutil

    from .train import record_path, train

    path = Path(record).resolve()
    cfg, rec = load_run(path)
    integrity.check_record_identity(path, rec)
    where = Path(scratch) if scratch else records.SCRATCH / "reproduce"
    cfg = dataclasses.replace(cfg, out=str(where / "runs"), reports=str(where), progress=False)
    repeat_path = record_path(cfg)
    shutil.rmtree(run_dir(cfg), ignore_errors=True)  # an earlier reproduction's run would be "finished"
    for old_file in repeat_path.parent.glob(f"{repeat_path.stem}.*"):
        old_file.unlink()
    train(cfg)
    again = records.read_record(repeat_path, "train_run")
    integrity.check_record_identity(repeat_path, again)
    diffs = integrity.identical_differences(rec, again)
    old, new = rec["results"].get("code_fingerprint"), again["results"]["code_fingerprint"]
    same_cpu = rec["provenance"].get("cpu_capability") == again["provenance"].get("cpu_capability") and \
        rec["provenance"]["device"] == again["provenance"]["device"]
    out = {"run_id": rec["results"]["run_id"], "old_code": old, "new_code": new, "identical": not diffs,
           "differences": diffs, "same_cpu": same_cpu, "equivalence": None}
    if not diffs and same_cpu and old and old != new:
        target = path.parent.parent / "equivalence" / f"{old}-{new}.json"
        records.write_record(target, "code_equivalence", {"record": records.repo_relative(path)},
                             {"codes": [old, new], "run_id": out["run_id"], "device": again["provenance"]["device"],
                              "cpu_capability": again["provenance"].get("cpu_capability"),
                              "record_sha256": integrity.sha256_file(path),
                              "repeat_sha256": integrity.sha256_file(repeat_path), "repeat": again}, cfg.seed)
        integrity.check_equivalence(target)  # what it claims, read back as the report reads it
        out["equivalence"] = str(target)
    return out
