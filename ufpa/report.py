"""The study's tables and figures, as functions of its results records.

``load_runs`` reads every training record under a results folder into one tidy frame (one row per run and flip-test
setting); ``aggregate`` and ``paired`` summarise it over seeds as mean ± 95 % confidence half-width (``ufpa.stats``:
Student t, so three seeds give wide intervals, as they should); the table functions return numeric frames that
``write_table`` saves as Markdown, CSV and LaTeX; the figure functions draw from the same frames. Nothing here trains or
evaluates: a number that is not in a record cannot appear in a table.

Conventions: AP and AR are COCO keypoint AP/AR in [0, 1] (tables print them as such); end-point error, |bias| and flip
consistency are in pixels of the original image; an alignment's gain is its paired difference to the baseline run with
the same model, head, codec, nominal input size, flip-test setting and seed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import records, stats, viz
from .models import ALIGNMENTS
from .train import arm_name, condition

# Method order of the paper's tables is the registry's (ALIGNMENTS); each alignment keeps its colour in every figure.
COLOURS = viz.ALIGNMENT_COLOURS
METRICS = ("AP", "AP50", "AP75", "AR", "epe_px", "abs_bias_px", "flip_consistency_px")
LABELS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "AR": "AR", "epe_px": "EPE (px)", "abs_bias_px": "|bias| (px)",
          "flip_consistency_px": "flip cons. (px)", "params_M": "params (M)", "gflops": "GFLOPs",
          "size": "nominal size", "input_size": "run at"}
PUBLISHED = Path(__file__).resolve().parent / "reference" / "published_coco_val.csv"


# --- records into a frame --------------------------------------------------------------------------------------------

def _size(hw) -> str:
    return f"{int(hw[0])}x{int(hw[1])}"


# A run has converged when its val AP (no flip) gained less than this over the last quarter of its epochs (issue 21).
PLATEAU_AP = 0.005


def plateau(record: dict) -> tuple[bool, float]:
    """(met, gain): the val AP (no flip) the run gained from its last evaluation at or before 3/4 of its epochs to its
    end (the final evaluation); met when that gain is below ``PLATEAU_AP``. A run with no evaluation that early has
    not shown a plateau (met False, gain NaN)."""
    cfg, res = record["config"], record["results"]
    epochs = cfg["epochs"]
    early = [h for h in res["learning_curve"] if h.get("val_AP") is not None and h["epoch"] <= 0.75 * epochs]
    if not early:
        return False, float("nan")
    gain = res["no_flip"]["AP"] - early[-1]["val_AP"]
    return bool(gain < PLATEAU_AP), float(gain)


def run_rows(record: dict) -> list[dict]:
    """Two rows (no flip, flip test) of the tidy frame from one ``train_run`` record."""
    cfg, res, prov = record["config"], record["results"], record["provenance"]
    curve = res["learning_curve"]
    mis = res.get("misalignment") or {}
    converged, late_gain = plateau(record)
    rows = []
    for key, flip in (("no_flip", False), ("flip", True)):
        m = res[key]
        bias = np.hypot(np.asarray(m["bias_x_per_joint"], float), np.asarray(m["bias_y_per_joint"], float))
        rows.append({
            "run_id": res["run_id"], "model": cfg["model"], "alignment": cfg["alignment"], "head": cfg["head"],
            "codec": cfg["codec"], "size": _size(cfg["input_size"]), "input_size": _size(res["input_size"]),
            "pixels": int(cfg["input_size"][0]) * int(cfg["input_size"][1]), "seed": cfg["seed"], "flip_test": flip,
            "epochs": cfg["epochs"], "data": Path(cfg["data"]).name,
            "AP": m["AP"], "AP50": m["AP50"], "AP75": m["AP75"], "AR": m["AR"], "epe_px": m["epe_mean"],
            "epe_median_px": m["epe_median"], "abs_bias_px": float(np.nanmean(bias)),
            "flip_consistency_px": m["flip_consistency_px"], "pck_0.05": m.get("pck@0.05", np.nan),
            "found_rate": m.get("found_rate", np.nan), "epe_found_px": m.get("epe_found", np.nan),
            "swap_rate": m.get("swap_rate", np.nan), "pck_0.01": m.get("pck@0.01", np.nan),
            "pck_0.02": m.get("pck@0.02", np.nan),
            "padding": cfg.get("padding", ""),
            "arm": arm_name(cfg["alignment"], cfg.get("padding", ""), res["input_size"], cfg["codec"]),
            "params_M": res["params"] / 1e6, "gflops": res["gflops"], "wall_s": res["wall_s"],
            "images_per_s": res["images_per_s"], "final_loss": curve[-1]["loss"] if curve else None,
            "plateau": converged, "late_gain_AP": late_gain,
            "misalignment_px": mis.get("max_abs_px", np.nan),
            "border_misalignment_px": mis.get("border_max_abs_px", np.nan),
            "git_commit": prov["git_commit"][:10], "device": prov["device"], "torch": prov["torch"],
        })
    return rows


def run_records(results_dir) -> list[tuple[Path, dict]]:
    """Every training record under ``results_dir/runs`` (COCO result files and failure notes are not records)."""
    folder = Path(results_dir) / "runs"
    if not folder.is_dir():
        raise FileNotFoundError(f"no training records in {folder}; run `make study` (or `python -m ufpa sweep "
                                f"profiles/cpu.yaml`) first")
    out = [(p, records.read_record(p, kind="train_run")) for p in records.run_record_paths(folder)]
    for path, rec in out:  # a results file left by another write of this run must not pass as this record's
        want, results = rec["results"].get("keypoints_sha256"), path.with_suffix(".keypoints.json")
        if want and results.is_file() and hashlib.sha256(results.read_bytes()).hexdigest() != want:
            raise ValueError(f"{results} is not the results file of the record {path.name} (its hash differs): the "
                             "run was written twice or cut short between the two; re-run it")
    return out


_RECORD_METRICS = ("AP", "AP50", "AP75", "AR", "epe_mean", "epe_median", "flip_consistency_px", "bias_x", "bias_y")


def _condition(rec: dict) -> dict:
    """What must be equal between the seeds of one condition: the run's identity but the seed
    (``train.condition``: where things lived and how they were executed do not count, the data by its folder's name),
    and the data's fingerprint."""
    return {**condition(rec["config"]), "data_fingerprint": rec["results"].get("data_fingerprint")}


def code_identity(rec: dict) -> str:
    """The version of the code a run's numbers came from: the training code's fingerprint
    (``records.code_fingerprint``), or, for a record made before there was one, its commit."""
    code = rec["results"].get("code_fingerprint")
    return f"code {code}" if code else f"commit {rec['provenance']['git_commit'][:10]}"


def check_pooling(recs: list[tuple[Path, dict]], one_commit: bool = True) -> None:
    """What a report may pool, checked before anything is averaged: each record once; every metric a finite number;
    the seeds of a condition (model, head, codec, size, alignment) distinct seeds of one identical config (everything
    but the seed equal, the data's folder name and fingerprint included); and, unless ``one_commit=False``, every
    record made at one commit. Anything else is refused with the files and the difference named."""
    seen = {}
    for path, rec in recs:
        rid = rec["results"]["run_id"]
        if rid in seen:
            raise ValueError(f"{path.name} and {seen[rid].name} are the same run ({rid}): a copied record would count "
                             "twice; remove one")
        seen[rid] = path
        for name in ("no_flip", "flip"):
            for key in _RECORD_METRICS:
                value = rec["results"][name].get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"{path.name}: {name} {key} is {value!r}, not a finite number: the run failed or "
                                     "the record was edited; re-run it (a seed must not drop out silently)")
    groups: dict = {}
    for path, rec in recs:
        cfg = rec["config"]
        key = (cfg["model"], cfg["head"], cfg["codec"], _size(cfg["input_size"]), cfg["alignment"],
               cfg.get("padding") or "own padding")
        groups.setdefault(key, []).append((path, rec))
    for key, members in groups.items():
        first_path, first = members[0]
        for path, rec in members[1:]:
            a, b = _condition(first), _condition(rec)
            diff = [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            if diff:
                raise ValueError(f"{first_path.name} and {path.name} are seeds of one condition {'/'.join(key)} but "
                                 f"of different configs ({'; '.join(diff)}): report them apart (another results "
                                 "folder) or re-run one")
        seeds = [rec["config"]["seed"] for _, rec in members]
        if len(set(seeds)) != len(seeds):
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ValueError(f"condition {'/'.join(key)} has seed(s) {twice} more than once: a seed counts once")
    codes = {code_identity(rec) for _, rec in recs}
    if one_commit and len(codes) > 1:
        named = ", ".join(sorted(codes))
        raise ValueError(f"the records were made with {len(codes)} versions of the training code ({named}): a report "
                         "is of one; re-run the others at one commit, or pass one_commit=False to pool them knowingly")


def load_runs(results_dir, one_commit: bool = True) -> pd.DataFrame:
    """The tidy frame of every training record in ``results_dir`` (see ``run_rows``), after ``check_pooling``."""
    recs = run_records(results_dir)
    check_pooling(recs, one_commit)
    rows = [row for _, rec in recs for row in run_rows(rec)]
    if not rows:
        raise ValueError(f"{Path(results_dir) / 'runs'} holds no training records; run a sweep first")
    frame = pd.DataFrame(rows)
    frame["alignment"] = pd.Categorical(frame["alignment"], [v for v in ALIGNMENTS if v in set(frame["alignment"])])
    return frame.sort_values(["model", "pixels", "alignment", "codec", "flip_test", "seed"]).reset_index(drop=True)


def learning_curves(results_dir) -> pd.DataFrame:
    """One row per (run, epoch) of every training record: loss and, where evaluated, val AP and end-point error (no
    flip); the last epoch takes the final evaluation's no-flip numbers, so every curve ends where the record does."""
    rows = []
    for _, rec in run_records(results_dir):
        cfg, res = rec["config"], rec["results"]
        curve = res["learning_curve"]
        for i, h in enumerate(curve):
            last = i == len(curve) - 1 and h["epoch"] == cfg["epochs"]
            ap = res["no_flip"]["AP"] if last else h.get("val_AP")
            epe = res["no_flip"]["epe_mean"] if last else h.get("val_epe_mean")
            rows.append({"run_id": res["run_id"], "model": cfg["model"], "alignment": cfg["alignment"],
                         "size": _size(cfg["input_size"]), "seed": cfg["seed"], "epoch": h["epoch"],
                         "loss": h["loss"], "val_AP": ap, "val_epe_px": epe})
    return pd.DataFrame(rows)


def compare_field(results_dir, field: str, metrics=("AP", "epe_px"), flip_test: bool = True) -> pd.DataFrame:
    """Runs of one results folder that differ only in the config ``field`` (two values, e.g. ``bf16`` off and on),
    compared per metric: each value's mean and 95 % CI over its seeds, and the paired difference (second value minus
    first, same seed) with its CI and the sign-flip p-value. Each value's runs must pool on their own
    (``check_pooling``)."""
    recs = run_records(results_dir)
    values = sorted({json.dumps(rec["config"].get(field)) for _, rec in recs})
    if len(values) != 2:
        raise ValueError(f"{results_dir}: the records hold {len(values)} values of {field!r} ({values}); comparing "
                         "needs exactly two")
    frames = []
    for value in values:
        group = [(p, r) for p, r in recs if json.dumps(r["config"].get(field)) == value]
        check_pooling(group)
        frame = pd.DataFrame([row for _, r in group for row in run_rows(r)])
        frames.append(frame[frame["flip_test"] == flip_test].set_index(["model", "size", "alignment", "seed"]))
    common = frames[0].index.intersection(frames[1].index)
    rows = []
    for m in metrics:
        diff = (frames[1].loc[common, m] - frames[0].loc[common, m]).to_numpy(float)
        row = {"metric": m, "pairs": len(common)}
        for name, frame in zip(values, frames):
            row[f"{field}={name}"], row[f"{field}={name}_ci"], _ = stats.mean_ci(frame[m])
        row["difference"], row["difference_ci"], _ = stats.mean_ci(diff)
        row["p_sign_flip"] = stats.sign_flip_test(diff)
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


# --- aggregation -----------------------------------------------------------------------------------------------------

KEYS = ["model", "head", "codec", "size", "alignment", "padding", "flip_test"]


def aggregate(frame: pd.DataFrame, metrics=METRICS, level: float = 0.95) -> pd.DataFrame:
    """Mean and confidence half-width (``<metric>_ci``) over seeds per model, head, codec, size, alignment, flip test
    (``stats.aggregate`` on the study's condition columns)."""
    return stats.aggregate(frame, KEYS, metrics, level, first=("input_size", "pixels", "params_M", "gflops"))


def paired(frame: pd.DataFrame, metrics=METRICS, level: float = 0.95) -> pd.DataFrame:
    """Per alignment: its difference to the baseline run of the same model, head, codec, size, flip test and seed,
    as mean and confidence half-width over the seeds both have (``pairs``), plus the per-seed differences
    (``stats.paired`` with the baseline as control)."""
    return stats.paired(frame, KEYS, metrics, arm="alignment", control="baseline", level=level, first=("pixels",))


# --- tables ----------------------------------------------------------------------------------------------------------

def main_table(frame: pd.DataFrame, flip_test: bool = True) -> pd.DataFrame:
    """The paper's layout: method, backbone, input size, cost, COCO metrics and exact-ground-truth columns (mean and
    95 % CI over seeds), and the paired AP difference to the baseline with its CI. Flip test as in the paper."""
    agg = aggregate(frame[frame["flip_test"] == flip_test])
    diff = paired(frame[frame["flip_test"] == flip_test])
    cols = KEYS + ["input_size", "seeds", "params_M", "gflops"]
    table = agg[cols + [c for m in METRICS for c in (m, f"{m}_ci")]].copy()
    if len(diff):
        d = diff[KEYS + ["d_AP", "d_AP_ci", "d_epe_px", "d_epe_px_ci"]]
        table = table.merge(d, on=KEYS, how="left")
    else:
        table[["d_AP", "d_AP_ci", "d_epe_px", "d_epe_px_ci"]] = np.nan
    return table.drop(columns=["flip_test"]).rename(columns={"alignment": "method", "model": "backbone"})


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Alignment x codec x flip test: AP and end-point error, and the paired AP gain over the baseline."""
    agg = aggregate(frame, metrics=("AP", "epe_px"))
    diff = paired(frame, metrics=("AP",))
    table = agg[KEYS + ["seeds", "AP", "AP_ci", "epe_px", "epe_px_ci"]]
    if len(diff):
        table = table.merge(diff[KEYS + ["d_AP", "d_AP_ci"]], on=KEYS, how="left")
    return table.sort_values(["model", "size", "codec", "flip_test", "alignment"]).reset_index(drop=True)


def lowres_table(frame: pd.DataFrame, flip_test: bool = True) -> pd.DataFrame:
    """The paper's central claim, tested: per nominal input size, the baseline's AP and each alignment's paired gain."""
    sub = frame[frame["flip_test"] == flip_test]
    agg = aggregate(sub, metrics=("AP",))
    diff = paired(sub, metrics=("AP", "epe_px"))
    rows = []
    for (model, head, codec, size), group in agg.groupby(["model", "head", "codec", "size"], sort=False):
        base = group[group["alignment"] == "baseline"]
        row = {"model": model, "head": head, "codec": codec, "size": size, "pixels": group["pixels"].iloc[0],
               "baseline_AP": base["AP"].iloc[0] if len(base) else np.nan,
               "baseline_AP_ci": base["AP_ci"].iloc[0] if len(base) else np.nan}
        same = (diff["model"] == model) & (diff["head"] == head) & (diff["codec"] == codec) & (diff["size"] == size)
        for _, d in diff[same].iterrows():
            row[f"{d['alignment']}_dAP"], row[f"{d['alignment']}_dAP_ci"] = d["d_AP"], d["d_AP_ci"]
            row[f"{d['alignment']}_dEPE_px"] = d["d_epe_px"]
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["model", "codec", "pixels"]).drop(columns="pixels").reset_index(drop=True)


def cost_table(frame: pd.DataFrame | None, results_dir) -> pd.DataFrame:
    """Parameters, FLOPs and measured step time per variant: the ``bench models`` records (with their device) and,
    from the training records, each trained variant's cost and training throughput."""
    rows = []
    for path in sorted(Path(results_dir).glob("bench_models_*.json")):
        rec = records.read_record(path, kind="bench_models")
        res, cfg = rec["results"], rec["config"]
        base = next((r["step_s_median"] for r in res["rows"] if r["variant"] == "baseline"), None)
        for r in res["rows"]:
            rows.append({"source": path.name, "model": cfg["model"], "variant": r["variant"],
                         "input_size": _size(r["input_size"]), "device": rec["provenance"]["device"],
                         "batch": cfg["batch"], "params_M": r["params"] / 1e6, "gflops": r.get("gflops"),
                         "step_ms": 1e3 * r["step_s_median"], "images_per_s": r["images_per_s"],
                         "ratio_vs_baseline": r["step_s_median"] / base if base else np.nan,
                         "peak_memory_mb": r.get("peak_memory_mb")})
    if frame is not None and len(frame):  # training throughput (data pipeline included), per variant and size
        sub = frame[~frame["flip_test"]]
        for (model, _), group in sub.groupby(["model", "size"], sort=False):
            base = group.loc[group["alignment"] == "baseline", "images_per_s"].mean()
            for alignment, g in group.groupby("alignment", observed=True, sort=False):
                ips = g["images_per_s"].mean()
                rows.append({"source": "training records", "model": model, "variant": alignment,
                             "input_size": g["input_size"].iloc[0], "device": g["device"].iloc[0], "batch": None,
                             "params_M": g["params_M"].iloc[0], "gflops": g["gflops"].iloc[0], "step_ms": np.nan,
                             "images_per_s": ips, "ratio_vs_baseline": base / ips if ips else np.nan,
                             "peak_memory_mb": np.nan})
    return pd.DataFrame(rows)


def published_table(path=PUBLISHED) -> pd.DataFrame:
    """Published COCO val2017 anchor numbers (not reproduced here), each with its source."""
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    table = pd.DataFrame(rows)
    for c in ("ap_baseline", "ap_method", "detector"):
        table[c] = table[c].astype(float)
    table.insert(5, "gain", (table["ap_method"] - table["ap_baseline"]).round(1))
    table.insert(0, "status", "published, not reproduced")
    return table


# --- writing tables --------------------------------------------------------------------------------------------------

def _fmt(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def formatted(table: pd.DataFrame, digits: dict | None = None) -> pd.DataFrame:
    """Strings for reading: ``x`` and ``x_ci`` become one ``x ± ci`` column; signed differences keep their sign."""
    digits = {"AP": 3, "AP50": 3, "AP75": 3, "AR": 3, "params_M": 3, "gflops": 3, **(digits or {})}
    out = {}
    cols = list(table.columns)
    for c in cols:
        if c.endswith("_ci") or c.endswith("_per_seed"):
            continue
        base = c[2:] if c.startswith("d_") else c.split("_dAP")[0] if c.endswith("_dAP") else c
        d = digits.get(base, 3 if "AP" in c else 2)
        sign = c.startswith("d_") or c.endswith(("_dAP", "_dEPE_px"))
        cis = table[f"{c}_ci"].tolist() if f"{c}_ci" in table.columns else [None] * len(table)
        out[_header(c)] = [_cell(v, ci, d, sign) for v, ci in zip(table[c].tolist(), cis)]
    return pd.DataFrame(out)


def _cell(value, ci, digits: int, signed: bool) -> str:
    if not isinstance(value, (float, np.floating)) or not np.isfinite(value):
        return _fmt(value, digits)
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text if ci is None or not np.isfinite(ci) else f"{text} ± {ci:.{digits}f}"


def _header(column: str) -> str:
    if column.startswith("d_"):
        return "Δ" + LABELS.get(column[2:], column[2:]) + " vs baseline"
    if column.endswith("_dAP"):
        return f"ΔAP {column[:-4]}"
    if column.endswith("_dEPE_px"):
        return f"ΔEPE {column[:-8]} (px)"
    return LABELS.get(column, column)


def markdown(table: pd.DataFrame) -> str:
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"


def latex(table: pd.DataFrame, caption: str = "") -> str:
    def esc(s):
        return str(s).replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace(
            "&", "\\&").replace("#", "\\#").replace("±", "$\\pm$").replace("Δ", "$\\Delta$").replace("|", "$|$")

    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{esc(caption)}}}" if caption else "",
             "\\begin{tabular}{" + "l" * len(table.columns) + "}", "\\hline",
             " & ".join(esc(c) for c in table.columns) + " \\\\", "\\hline"]
    lines += [" & ".join(esc(v) for v in row) + " \\\\" for row in table.itertuples(False)]
    lines += ["\\hline", "\\end{tabular}", "\\end{table}"]
    return "\n".join(line for line in lines if line) + "\n"


def write_table(table: pd.DataFrame, name: str, folder, caption: str = "", digits: dict | None = None) -> pd.DataFrame:
    """``<folder>/<name>.md`` (with the caption), ``.csv`` (numbers, full precision) and ``.tex``; returns the
    formatted frame (what the Markdown and LaTeX show)."""
    folder = Path(folder)
    text = formatted(table, digits)
    records.atomic_write_text(folder / f"{name}.md", (f"{caption}\n\n" if caption else "") + markdown(text))
    records.atomic_write_text(folder / f"{name}.csv", table.to_csv(index=False, float_format="%.6g"))
    records.atomic_write_text(folder / f"{name}.tex", latex(text, caption))
    return text


# --- figures ---------------------------------------------------------------------------------------------------------

def _save(fig, path):
    if path is not None:
        viz._save(fig, path)  # atomic, reproducible PNG metadata
    return fig


def _sizes(frame) -> list[str]:
    return list(dict.fromkeys(frame.sort_values("pixels")["size"]))


def accuracy_vs_size(frame: pd.DataFrame, flip_test: bool = True, path=None):
    """AP (mean and 95 % CI over seeds) against nominal input size, one line per alignment and model."""
    agg = aggregate(frame[frame["flip_test"] == flip_test], metrics=("AP", "epe_px"))
    sizes = _sizes(frame)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), constrained_layout=True)
    for (model, alignment), g in agg.groupby(["model", "alignment"], observed=True, sort=False):
        x = [sizes.index(s) + 0.06 * (list(COLOURS).index(alignment) - 2) for s in g["size"]]
        for ax, m in zip(axes, ("AP", "epe_px")):
            ax.errorbar(x, g[m], yerr=g[f"{m}_ci"].fillna(0), marker="o", capsize=3, color=COLOURS[alignment],
                        label=f"{alignment} ({model})" if agg["model"].nunique() > 1 else alignment)
    for ax, label in zip(axes, ("AP (COCO OKS)" + (", flip test" if flip_test else ""),
                                "end-point error (image px)")):
        ax.set_xticks(range(len(sizes)), [f"{s}\n(nominal)" for s in sizes])
        ax.set_xlabel("input size H×W (px)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title("accuracy vs input size (mean ± 95 % CI over seeds)", fontsize=9)
    return _save(fig, path)


def paired_gain(frame: pd.DataFrame, metric: str = "AP", flip_test: bool = True, path=None):
    """Each alignment's paired difference to the baseline per input size: one dot per seed, mean ± 95 % CI."""
    diff = paired(frame[frame["flip_test"] == flip_test], metrics=(metric,))
    sizes = _sizes(frame)
    fig, ax = plt.subplots(figsize=(5.5, 3.4), constrained_layout=True)
    alignments = [v for v in ALIGNMENTS if v in set(diff["alignment"])]
    width = 0.8 / max(len(alignments), 1)
    for _, d in diff.iterrows():
        x = sizes.index(d["size"]) + width * (alignments.index(d["alignment"]) - (len(alignments) - 1) / 2)
        ax.scatter([x] * len(d[f"d_{metric}_per_seed"]), d[f"d_{metric}_per_seed"], s=14, alpha=0.6,
                   color=COLOURS[d["alignment"]])
        ax.errorbar([x + width * 0.25], [d[f"d_{metric}"]], yerr=[0 if not np.isfinite(d[f"d_{metric}_ci"]) else
                                                                  d[f"d_{metric}_ci"]],
                    fmt="D", color=COLOURS[d["alignment"]], capsize=3, ms=5)
    for v in alignments:
        ax.scatter([], [], color=COLOURS[v], label=v)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_xlabel("nominal input size H×W (px)")
    unit = "AP points (0–1 scale)" if "AP" in metric else "image px"
    ax.set_ylabel(f"Δ{LABELS.get(metric, metric)} vs baseline ({unit})")
    ax.set_title("paired gain per seed (dots) and mean ± 95 % CI (diamonds)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def misalignment_and_gain(frame: pd.DataFrame, audit: dict | None = None, flip_test: bool = True, path=None):
    """Left: how far fused features sit apart in each trained network (interior and border, from the run records'
    audit); middle, if the audit record is given: per fusion type of HRNet-W32 (target stride, x2 upsampling steps);
    right: the paired AP gain, so a reader sees the cause beside the effect."""
    sub = frame[frame["flip_test"] == flip_test]
    panels = 3 if audit else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 3.4), constrained_layout=True)
    mis = sub.groupby(["size", "alignment"], observed=True, sort=False)[
        ["misalignment_px", "border_misalignment_px", "pixels"]].first().reset_index()
    sizes = _sizes(sub)
    alignments = [v for v in ALIGNMENTS if v in set(mis["alignment"])]
    width = 0.8 / max(len(alignments), 1)
    ax = axes[0]
    for _, r in mis.iterrows():
        x = sizes.index(r["size"]) + width * (alignments.index(r["alignment"]) - (len(alignments) - 1) / 2)
        ax.bar(x, r["misalignment_px"], width * 0.9, color=COLOURS[r["alignment"]])
        ax.bar(x, r["border_misalignment_px"], width * 0.9, fill=False, hatch="//", edgecolor=COLOURS[r["alignment"]])
        if r["misalignment_px"] == 0:
            ax.text(x, 0.3, "0", ha="center", fontsize=7)
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_xlabel("nominal input size H×W (px)")
    ax.set_ylabel("worst fusion shift (input px)")
    ax.set_title("trained networks: interior (solid), border (hatched)", fontsize=8)
    for v in alignments:
        ax.bar([0], [0], color=COLOURS[v], label=v)
    ax.legend(fontsize=7)
    if audit:
        ax = axes[1]
        rows = pd.DataFrame(audit["results"]["hrnet"])
        rows = rows[rows["requested"] == rows["requested"].iloc[0]]
        rows = rows[rows["up_levels"] > 0]
        kind = [f"s{int(r.stride)} ×{2 ** int(r.up_levels)}" for r in rows.itertuples()]
        kinds = list(dict.fromkeys(kind))
        al = [v for v in ALIGNMENTS if v in set(rows["alignment"])]
        w = 0.8 / len(al)
        for k, r in zip(kind, rows.itertuples()):
            x = kinds.index(k) + w * (al.index(r.alignment) - (len(al) - 1) / 2)
            ax.bar(x, r.max_abs_px, w * 0.9, color=COLOURS[r.alignment])
            if r.max_abs_px == 0:
                ax.text(x, 0.3, "0", ha="center", fontsize=6)
        ax.set_xticks(range(len(kinds)), kinds, rotation=45, fontsize=7)
        ax.set_xlabel("fusion (target stride, upsampling factor)")
        ax.set_ylabel("interior shift (input px)")
        ax.set_title(f"{audit['config']['model']} at {rows['requested'].iloc[0]} (audit record)", fontsize=8)
        for v in al:
            ax.bar([0], [0], color=COLOURS[v], label=v)
        ax.legend(fontsize=6)
    ax = axes[-1]
    diff = paired(sub, metrics=("AP",))
    for _, d in diff.iterrows():
        x = sizes.index(d["size"]) + width * (alignments.index(d["alignment"]) - (len(alignments) - 1) / 2)
        ax.bar(x, d["d_AP"], width * 0.9, color=COLOURS[d["alignment"]],
               yerr=0 if not np.isfinite(d["d_AP_ci"]) else d["d_AP_ci"], capsize=3)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_xlabel("nominal input size H×W (px)")
    ax.set_ylabel("ΔAP vs baseline (AP points, 0–1)")
    ax.set_title("paired gain, mean ± 95 % CI", fontsize=8)
    return _save(fig, path)


# A drawing template (an upright person, arbitrary units) to place the per-joint bias arrows; not data.
TEMPLATE = np.array([[0, -8.2], [0.35, -8.5], [-0.35, -8.5], [0.8, -8.3], [-0.8, -8.3], [1.6, -6.8], [-1.6, -6.8],
                     [2.1, -4.6], [-2.1, -4.6], [2.3, -2.6], [-2.3, -2.6], [1.0, -2.4], [-1.0, -2.4], [1.1, 1.0],
                     [-1.1, 1.0], [1.2, 4.2], [-1.2, 4.2]])
SKELETON = viz.SKELETON_0  # COCO limbs, 0-based


def bias_fields(results_dir, size: str | None = None, flip_test: bool = True, path=None, scale: float = 0.5):
    """Signed bias per joint (mean over seeds, image px) as arrows on a template skeleton, one panel per alignment:
    what a systematic shift of the features leaves in the keypoints. ``scale``: template units per image px."""
    groups: dict = {}
    for _, rec in run_records(results_dir):
        cfg = rec["config"]
        s = _size(cfg["input_size"])
        if size is not None and s != size:
            continue
        m = rec["results"]["flip" if flip_test else "no_flip"]
        groups.setdefault((s, cfg["alignment"]), []).append(np.stack([m["bias_x_per_joint"],
                                                                      m["bias_y_per_joint"]], 1))
    keys = sorted(groups, key=lambda k: (int(k[0].split("x")[0]), ALIGNMENTS.index(k[1])))
    fig, axes = plt.subplots(1, len(keys), figsize=(2.3 * len(keys), 3.6), constrained_layout=True, squeeze=False)
    for ax, key in zip(axes[0], keys):
        b = np.nanmean(np.asarray(groups[key], float), 0)
        for a, c in SKELETON:
            ax.plot(*TEMPLATE[[a, c]].T, color="0.8", lw=1.5, zorder=1)
        ax.quiver(TEMPLATE[:, 0], TEMPLATE[:, 1], b[:, 0], b[:, 1], color=COLOURS[key[1]], angles="xy",
                  scale_units="xy", scale=1 / scale, width=0.012, zorder=2)
        ax.annotate("", xy=(-3 + 2 * scale, 6), xytext=(-3, 6), arrowprops=dict(arrowstyle="->", color="k"))
        ax.text(-3, 6.5, "2 px", fontsize=7, va="top")
        ax.set_xlim(-4, 4)
        ax.set_ylim(7, -10)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{key[1]}\n{key[0]}, |bias| {np.nanmean(np.hypot(b[:, 0], b[:, 1])):.2f} px", fontsize=8)
    fig.suptitle("signed bias per joint (prediction − ground truth, image px; key: 2 px), mean over seeds", fontsize=9)
    return _save(fig, path)


def flip_consistency_figure(frame: pd.DataFrame, path=None):
    """Distance between the predictions on an image and on its mirror, mapped back (image px): one dot per run, a box
    per alignment and size."""
    sub = frame[~frame["flip_test"]]
    sizes = _sizes(sub)
    alignments = [v for v in ALIGNMENTS if v in set(sub["alignment"])]
    width = 0.8 / max(len(alignments), 1)
    fig, ax = plt.subplots(figsize=(5.5, 3.2), constrained_layout=True)
    rng = np.random.default_rng(0)  # jitter only
    for (size, alignment), g in sub.groupby(["size", "alignment"], observed=True, sort=False):
        x = sizes.index(size) + width * (alignments.index(alignment) - (len(alignments) - 1) / 2)
        values = g["flip_consistency_px"].to_numpy(float)
        ax.boxplot([values], positions=[x], widths=width * 0.8, showfliers=False,
                   medianprops={"color": COLOURS[alignment]}, boxprops={"color": COLOURS[alignment]},
                   whiskerprops={"color": COLOURS[alignment]}, capprops={"color": COLOURS[alignment]})
        ax.scatter(x + rng.uniform(-0.2, 0.2, len(values)) * width, values, s=12, color=COLOURS[alignment], zorder=3)
    for v in alignments:
        ax.scatter([], [], color=COLOURS[v], label=v)
    ax.set_xticks(range(len(sizes)), sizes)
    ax.set_xlabel("nominal input size H×W (px)")
    ax.set_ylabel("flip consistency (image px, lower is better)")
    ax.set_title("prediction vs mirrored prediction, per run", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def learning_curve_panels(curves: pd.DataFrame, path=None):
    """Training loss and val AP per epoch for every run (thin: one seed; thick: mean), one column per input size."""
    sizes = list(dict.fromkeys(sorted(curves["size"], key=lambda s: int(s.split("x")[0]) * int(s.split("x")[1]))))
    fig, axes = plt.subplots(2, len(sizes), figsize=(4.2 * len(sizes), 5.6), constrained_layout=True, squeeze=False)
    for j, size in enumerate(sizes):
        for alignment, g in curves[curves["size"] == size].groupby("alignment", sort=False):
            c = COLOURS[alignment]
            for _, run in g.groupby("seed"):
                axes[0, j].semilogy(run["epoch"], run["loss"], color=c, alpha=0.3, lw=0.8)
                ev = run.dropna(subset=["val_AP"])
                axes[1, j].plot(ev["epoch"], ev["val_AP"], color=c, alpha=0.3, lw=0.8)
            mean = g.groupby("epoch")[["loss", "val_AP"]].mean()
            axes[0, j].semilogy(mean.index, mean["loss"], color=c, lw=2, label=alignment)
            ev = mean.dropna(subset=["val_AP"])
            axes[1, j].plot(ev.index, ev["val_AP"], "o-", color=c, lw=2, ms=3, label=alignment)
        axes[0, j].set_title(f"{size} (nominal)", fontsize=9)
        axes[0, j].set_ylabel("training loss (log)")
        axes[1, j].set_ylabel("val AP (no flip)")
        axes[1, j].set_xlabel("epoch")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[1, 0].legend(fontsize=8)
    return _save(fig, path)


# --- findings --------------------------------------------------------------------------------------------------------

def findings(frame: pd.DataFrame, flip_test: bool = True, level: float = 0.95) -> str:
    """The study's findings in words, every number read from the records (Markdown). The alignments' paired
    comparisons with the baseline at one flip setting are one family: each gets its t-test p-value adjusted by Holm
    and its exact sign-flip p-value, and a simultaneous interval (Bonferroni: each at 1 - (1 - level) / m). A finding
    says "higher" or "lower" only when that corrected interval excludes zero and every run in it met the plateau
    criterion (``plateau``); otherwise it says what the runs cannot tell, and the seeds a test would need."""
    sub = frame[frame["flip_test"] == flip_test]
    agg = aggregate(sub, metrics=("AP", "epe_px"))
    diff = paired(sub, metrics=("AP", "epe_px"))
    lines = []
    n_runs = sub["run_id"].nunique()
    models = ", ".join(sorted(set(sub["model"])))
    seeds = sorted(set(sub["seed"]))
    lines.append(f"- **Runs**: {n_runs} training records ({models}; data {', '.join(sorted(set(sub['data'])))}; "
                 f"seeds {seeds}; {', '.join(sorted(set(sub['device'])))}; commit(s) "
                 f"{', '.join(sorted(set(sub['git_commit'])))}). Metrics with flip test"
                 f"{'' if flip_test else ' off'}; ± is the 95 % CI over seeds (Student t).")
    runs = sub.drop_duplicates("run_id")
    unconverged = runs[~runs["plateau"].astype(bool)]
    lines.append(f"- **Convergence**: {len(runs) - len(unconverged)} of {len(runs)} runs met the plateau criterion "
                 f"(val AP, no flip, gained < {PLATEAU_AP} over the last quarter of training; median gain there "
                 f"{np.nanmedian(runs['late_gain_AP']):+.3f}). A comparison with a run that had not plateaued makes no "
                 "claim: more accurate cannot be told from learning faster.")

    def pm(value, ci, digits):
        return f"{value:.{digits}f}" + (f" ± {ci:.{digits}f}" if np.isfinite(ci) else " (one seed: no interval)")

    base = agg[agg["alignment"] == "baseline"]
    for _, b in base.iterrows():
        lines.append(f"- **Baseline** {b['model']} at {b['size']}: AP {pm(b['AP'], b['AP_ci'], 3)}, "
                     f"end-point error {pm(b['epe_px'], b['epe_px_ci'], 2)} px.")
    m = len(diff)
    if m:
        p_holm = stats.holm([stats.t_test(d) for d in diff["d_AP_per_seed"]])
        lines.append(f"- **Family**: the {m} paired comparisons with the baseline below (flip test "
                     f"{'on' if flip_test else 'off'}); p-values Holm-adjusted over them, intervals simultaneous "
                     f"(Bonferroni, each at {100 * (1 - (1 - level) / m):.1f} %).")
    for i, (_, d) in enumerate(diff.iterrows()):
        size = sub.loc[(sub["alignment"] == d["alignment"]) & (sub["size"] == d["size"]), "input_size"].iloc[0]
        head = f"- **{d['alignment']}** ({d['model']}, {d['size']} nominal, run at {size}): ΔAP {d['d_AP']:+.3f}"
        per_seed = np.asarray(d["d_AP_per_seed"], float)
        if len(per_seed) < 2:
            lines.append(f"{head} ({d['pairs']} paired seed: no interval), ΔEPE {d['d_epe_px']:+.2f} px.")
            continue
        sd = per_seed.std(ddof=1)
        half = stats.t_quantile(1 - (1 - level) / m / 2, len(per_seed) - 1) * sd / np.sqrt(len(per_seed))
        lo, hi = d["d_AP"] - half, d["d_AP"] + half
        cells = sub[(sub["model"] == d["model"]) & (sub["size"] == d["size"]) & (sub["codec"] == d["codec"])
                    & sub["alignment"].isin(["baseline", d["alignment"]]) & sub["seed"].isin(d["seeds"])]
        waiting = int((~cells.drop_duplicates("run_id")["plateau"].astype(bool)).sum())
        if waiting:
            verdict = f"no claim: {waiting} of its {cells['run_id'].nunique()} runs had not plateaued"
        elif lo > 0 or hi < 0:
            verdict = f"{'higher' if lo > 0 else 'lower'} than the baseline (corrected interval excludes zero)"
        else:
            verdict = "not resolved by these runs (the corrected interval includes zero)"
        need = stats.seeds_for_power(d["d_AP"], sd, alpha=(1 - level) / m)
        lines.append(f"{head} (corrected interval {lo:+.3f} to {hi:+.3f}, {d['pairs']} paired seeds; Holm p "
                     f"{p_holm[i]:.2f}, sign-flip p {stats.sign_flip_test(per_seed):.2f}), ΔEPE "
                     f"{d['d_epe_px']:+.2f} px: {verdict}. 80 % power for a gain this size needs about {need} "
                     "paired seeds.")
    if len(diff):
        for alignment, g in diff.groupby("alignment", observed=True):
            g = g.sort_values("pixels")
            if len(g) > 1:
                lo, hi = g.iloc[0], g.iloc[-1]
                trend = "larger" if lo["d_AP"] > hi["d_AP"] else "smaller"
                apart = abs(lo["d_AP"] - hi["d_AP"]) > (lo["d_AP_ci"] + hi["d_AP_ci"])  # intervals do not overlap
                lines.append(f"- **Resolution** ({alignment}): the gain is {trend} at the lowest input size "
                             f"({lo['size']}: {lo['d_AP']:+.3f}) than at the highest ({hi['size']}: "
                             f"{hi['d_AP']:+.3f}); " + ("the intervals do not overlap." if apart else
                                                         "their 95 % intervals overlap, so the trend is not resolved "
                                                         "by these runs."))
    return "\n".join(lines) + "\n"


DIGITS = {"gain": 1, "ap_baseline": 1, "ap_method": 1, "detector": 1, "batch": 0}
TABLES = {  # name -> (function of (frame, results_dir, flip_test), caption)
    "main": (lambda f, r, flip=True: main_table(f, flip),
             "Main comparison: mean ± 95 % CI over seeds; Δ is the paired difference to the baseline run of the same "
             "seed."),
    "ablation": (lambda f, r, flip=True: ablation_table(f),
                 "Ablation: alignment variant × codec × flip test (mean ± 95 % CI)."),
    "low_resolution": (lambda f, r, flip=True: lowres_table(f, flip),
                       "Gain vs input size: baseline AP and each variant's paired ΔAP (± 95 % CI) and ΔEPE."),
    "cost": (lambda f, r, flip=True: cost_table(f, r),
             "Cost: parameters, FLOPs and measured step time (bench records, with their device); training throughput "
             "from the training records (two runs shared the CPU, so their ratios are rough)."),
    "published": (lambda f, r, flip=True: published_table(),
                  "Published COCO val2017 AP (%), not reproduced here; sources listed."),
}
FLIP_TABLES = ("main", "low_resolution")  # tables of one flip-test setting
FIGURES = {  # file stem -> function of (frame, results_dir, flip_test)
    "06_learning_curves": lambda f, r, flip=True: learning_curve_panels(learning_curves(r)),  # training: no flip test
    "06_accuracy_vs_size": lambda f, r, flip=True: accuracy_vs_size(f, flip),
    "06_paired_gain": lambda f, r, flip=True: paired_gain(f, flip_test=flip),
    "06_misalignment_and_gain": lambda f, r, flip=True: misalignment_and_gain(f, _audit(r), flip),
    "06_bias_fields": lambda f, r, flip=True: bias_fields(r, flip_test=flip),
    "06_flip_consistency": lambda f, r, flip=True: flip_consistency_figure(f),  # compares the two settings itself
}


def _audit(results_dir):
    path = Path(results_dir) / "misalignment_audit.json"
    return records.read_record(path, kind="misalignment_audit") if path.is_file() else None


def table(name: str, frame: pd.DataFrame, results_dir, tables_dir, flip_test: bool = True) -> pd.DataFrame:
    """Build table ``name`` (see ``TABLES``) with or without flip test, write it to ``tables_dir`` and return what it
    shows."""
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; the tables are {list(TABLES)}")
    build, caption = TABLES[name]
    if name in FLIP_TABLES:  # the others show both settings, or none
        caption = f"{caption} Flip test {'on' if flip_test else 'off'}."
    return write_table(build(frame, results_dir, flip_test), name, tables_dir, caption, DIGITS)


def figure(name: str, frame: pd.DataFrame, results_dir, figures_dir, flip_test: bool = True):
    """Draw figure ``name`` (see ``FIGURES``) with or without flip test and save it as ``figures_dir/<name>.png``."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; the figures are {list(FIGURES)}")
    return _save(FIGURES[name](frame, results_dir, flip_test), Path(figures_dir) / f"{name}.png")


def render_all(results_dir, tables_dir, figures_dir, flip_test: bool = True) -> dict:
    """Every table and figure of the study from ``results_dir`` (one flip-test setting for all); returns the shown
    tables by name."""
    frame = load_runs(results_dir)
    out = {name: table(name, frame, results_dir, tables_dir, flip_test) for name in TABLES}
    for name in FIGURES:
        plt.close(figure(name, frame, results_dir, figures_dir, flip_test))
    return out


def fill_markers(text: str, blocks: dict) -> str:
    """Replace each ``<!-- ufpa:NAME -->`` ... ``<!-- /ufpa:NAME -->`` block of ``text`` with ``blocks[NAME]``, so a
    README quotes the generated tables and findings instead of typing numbers."""
    import re

    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- ufpa:{re.escape(name)} -->\n).*?(<!-- /ufpa:{re.escape(name)} -->)", re.S)
        text = pattern.sub(lambda m, body=body: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)
    return text


def readme_blocks(results_dir, tables_dir) -> dict:
    """What the README quotes: each generated table's Markdown, the findings, and the speed measurements."""
    blocks = {name: Path(tables_dir, f"{name}.md").read_text(encoding="utf-8") for name in TABLES
              if Path(tables_dir, f"{name}.md").is_file()}
    blocks["findings"] = findings(load_runs(results_dir))
    blocks["speed"] = speed_summary(results_dir)
    return blocks


def speed_summary(results_dir) -> str:
    """The CPU loop's speed-ups (``bench train``), what each alignment costs against its goal and the ops that hold a
    missed one back (``bench models``), and whether bf16 trains as well as fp32 (``reports/bf16_check``), as Markdown
    from those records."""
    results_dir = Path(results_dir)
    lines = []
    loop = results_dir / "bench_train_cpu.json"
    if loop.is_file():
        rec = records.read_record(loop, "bench_train")
        rows = rec["results"]["loops"]
        steps = "; ".join(f"{r['mode']} {r['loop_ms_per_image']:.2f} ms (x{r['loop_vs_today']:.2f})" for r in rows)
        first, last = rows[0], rows[-1]
        lines.append(f"- **Training loop, ms per image** (`bench train`, {rows[0]['model']} at "
                     f"{'x'.join(map(str, rec['config']['input_size']))}, batch {rec['config']['batch']}, one "
                     f"thread, {rec['provenance']['device']}; each mode adds one change to the one before): {steps}. "
                     f"Data {first['data_ms_per_image']:.2f} -> {last['data_ms_per_image']:.2f} ms, step "
                     f"{first['step_ms_per_image']:.2f} -> {last['step_ms_per_image']:.2f} ms. Goal x"
                     f"{rec['results']['goal_loop_vs_today']}: "
                     f"{'met' if last['loop_vs_today'] <= rec['results']['goal_loop_vs_today'] else 'missed'}.")
    for path in sorted(results_dir.glob("bench_models_*_cpu.json")):
        res = records.read_record(path, "bench_models")["results"]
        if "goal_over_flops" not in res:
            continue  # made before goals were relative to FLOPs
        for variant, ratio in res["ratio_vs_baseline"].items():
            text = (f"- `{path.name}`: {variant} x{ratio:.2f} of the baseline's step (goal x"
                    f"{res['goal_ratio'][variant]:.2f}, {res['goal_over_flops'][variant]} x its FLOP ratio): "
                    f"{'met' if res['goal_met'][variant] else 'missed'}")
            held = res["excess_ops"].get(variant)
            if held:
                text += "; held back by " + ", ".join(f"`{o['op']}` +{o['extra_ms_per_step']:.1f} ms"
                                                      for o in held["ops"][:3]) + " per step"
            lines.append(text + ".")
    check = results_dir.parent / "bf16_check" / "results"
    if (check / "runs").is_dir():
        table = compare_field(check, "bf16")
        ap, epe = table.loc["AP"], table.loc["epe_px"]
        late = [plateau(rec) for _, rec in run_records(check)]
        gains = [g for _, g in late if np.isfinite(g)]
        lines.append(f"- **bf16 autocast on CPU at the cpu recipe's length** (`profiles/bf16_check.yaml`, "
                     f"{int(ap['pairs'])} seeds each): flip AP {ap['bf16=true']:.3f} ± {ap['bf16=true_ci']:.3f} "
                     f"against fp32's {ap['bf16=false']:.3f} ± {ap['bf16=false_ci']:.3f}; paired difference "
                     f"{ap['difference']:+.3f} ± {ap['difference_ci']:.3f} AP (sign-flip p = {ap['p_sign_flip']:.2f}), "
                     f"end-point error {epe['difference']:+.2f} ± {epe['difference_ci']:.2f} px. "
                     f"{sum(ok for ok, _ in late)} of its {len(late)} runs met the plateau criterion (val AP still "
                     f"rising by a median {np.median(gains):+.3f} over the last quarter): this compares bf16 with "
                     "fp32 at the recipe's length, not at convergence.")
    return "\n".join(lines)


def is_study_folder(results_dir) -> bool:
    """Whether ``results_dir`` is the committed study's own ``reports/results`` (only it may speak in the README)."""
    return Path(results_dir).resolve() == (records.REPO_ROOT / "reports" / "results").resolve()


def update_readme(readme, results_dir, tables_dir) -> bool:
    """Fill the README's marker blocks from the tables and records; returns whether the file changed. The README
    states the committed study: records elsewhere (``UFPA_REPORTS_DIR``, a scratch folder) never rewrite it."""
    if not is_study_folder(results_dir):
        raise ValueError(f"{results_dir} is not the study's reports/results: the README shows the committed study "
                         "only; render tables and figures from other records without updating the README")
    readme = Path(readme)
    old = readme.read_text(encoding="utf-8")
    new = fill_markers(old, readme_blocks(results_dir, tables_dir))
    if new != old:
        records.atomic_write_text(readme, new)
    return new != old
