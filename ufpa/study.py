"""What notebooks 03 and 04 record, as functions: each returns the (config, results) of its results record, so the
notebooks stay thin and the same numbers can be produced without a notebook."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def misalignment_audit(model: str, sizes, other_models, other_size, cost_size) -> tuple[dict, dict]:
    """Notebook 03's record: the audit of ``model`` at every size and variant, other families at ``other_size``,
    output grids of models and heads, parameter and FLOP counts, and the audit's check against real forward passes."""
    from . import audit, bench
    from .models import ALIGNMENTS, HEADS, create_model

    hrnet = audit.audit_variants(model, sizes)
    others = pd.concat([audit.audit_variants(name, [other_size]) for name in other_models], ignore_index=True)
    grids = audit.output_grids([model] + list(other_models), other_size)
    heads = audit.output_grids([model], other_size, alignments=["baseline", "ufpa"], heads=HEADS)
    costs = pd.DataFrame([bench.model_cost(model, alignment, "heatmap", cost_size) for alignment in ALIGNMENTS]
                         + [bench.model_cost(model, "baseline", head, cost_size) for head in ("udp", "sr", "duc")])
    empirical = audit.empirical_positions(create_model(model, input_size=tuple(other_size)), tuple(other_size))
    config = {"model": model, "sizes": sizes, "other_models": other_models, "other_size": other_size,
              "cost_size": cost_size}
    results = {"hrnet": hrnet.to_dict("records"), "others": others.to_dict("records"),
               "grids": grids.to_dict("records"), "heads": heads.to_dict("records"),
               "costs": costs.to_dict("records"), "empirical_max_dev_px": float(empirical["max_dev_px"].max())}
    return config, results


def flip_table(seed: int, n: int = 100, names=("msra", "dark", "udp")) -> list[dict]:
    """Flip-back error (input px) of each codec on the unbiased grid and on HRNet's 4o grid, and MSRA with the
    legacy one-sample shift: |decode(flip_back(encode(mirror))) - decode(encode)| over ``n`` random poses, and the
    flipped-back decode against the truth along x (mean: the bias a flip test adds; sd: the codec's quantisation)."""
    from . import codecs
    from .models import create_model

    hrnet_grid = create_model("hrnet_w8_tiny").output_position_map()
    cases = [(name, grid_name, opts) for name in names
             for grid_name, opts in [("unbiased (W-1)/(w-1)", {}), ("HRNet 4o", {"grid": hrnet_grid})]]
    cases.append(("msra, legacy 1-sample shift", "HRNet 4o", {"grid": hrnet_grid, "legacy_flip_shift": True}))
    rows = []
    for label, grid_name, opts in cases:
        name = label.split(",")[0]
        err = codecs.flip_error(name, n, seed, **opts)
        bias = codecs.flip_bias(name, n, seed, **opts)
        rows.append(dict(codec=label, grid=grid_name, mean_px=float(err.mean()), max_px=float(err.max()),
                         flipped_bias_x_px=bias["flipped_bias_x_px"], flipped_sd_x_px=bias["flipped_sd_x_px"]))
    return rows


def data_and_codecs(data_dir, n_train: int, n_val: int, seed: int, roundtrip_samples: int) -> tuple[dict, dict]:
    """Notebook 04's record: SynthPose made in ``data_dir`` (its statistics, and AP of its own ground truth, which
    must be 1), codec round trips, sub-pixel sweeps and flip-back errors."""
    from . import bench, codecs, evaluate
    from .data import coco, synthetic

    paths = synthetic.generate(data_dir, n_train, n_val, seed, progress=False)
    train_doc = json.loads(Path(paths["train"]).read_text())
    val_doc = json.loads(Path(paths["val"]).read_text())
    self_results = [dict(image_id=a["image_id"], category_id=1, keypoints=a["keypoints"], score=1.0)
                    for a in val_doc["annotations"]]
    codec_table = bench.bench_codecs(roundtrip_samples, seed)["rows"]
    sweeps = {name: codecs.subpixel_sweep(name) for name in ("msra", "dark", "udp")}
    config = {"n_train": n_train, "n_val": n_val, "seed": seed, "roundtrip_samples": roundtrip_samples}
    results = {"statistics": coco.dataset_statistics(train_doc),
               "self_ap": evaluate.coco_keypoint_ap(paths["val"], self_results)["AP"],
               "codecs": [{k: v for k, v in row.items() if k != "keypoints_per_s"} for row in codec_table],
               "subpixel": {k: [v[0].tolist(), v[1].tolist()] for k, v in sweeps.items()},
               "flip": flip_table(seed)}
    return config, results


def verification_findings(record: dict) -> str:
    """Notebook 02's closing summary, from its record."""
    status = "every" if record["passed"] else "NOT every"
    return (f"{record['configs']} random configurations of the real torch ops: {status} position matches "
            f"ufpa.geometry (worst interior deviation {record['worst_interior_px']:.1e} px, worst border deviation "
            f"{record['worst_border_px']:.1e} px, tolerance {record['tolerance_px']:g} px); "
            f"{len(record.get('excluded') or [])} case(s) excluded, each with its reason in the record.")


def audit_findings(record: dict, focus: str) -> str:
    """Notebook 03's closing summary, from its record: worst fusion shift per variant at ``focus``, and the cost."""
    hrnet = pd.DataFrame(record["hrnet"])
    at = hrnet[hrnet["requested"] == focus]
    lines = []
    for alignment, g in at.groupby("alignment", sort=False):
        size = g["input_size"].iloc[0]
        lines.append(f"{alignment:17s} at {size}: worst interior shift {g['max_abs_px'].max():g} px, "
                     f"border {g['border_max_abs_px'].max():g} px")
    costs = pd.DataFrame(record["costs"])
    heat = costs[costs["head"] == "heatmap"].set_index("alignment")
    extra = 100 * (heat.loc["ufpa", "gflops"] / heat.loc["baseline", "gflops"] - 1)
    lines.append(f"parameters: {heat['params'].nunique() == 1 and 'equal for every variant' or 'NOT equal'} "
                 f"({int(heat.loc['baseline', 'params']):,}); FLOPs: ufpa at {heat.loc['ufpa', 'input_size']} "
                 f"+{extra:.1f} % over the baseline at {heat.loc['baseline', 'input_size']}")
    lines.append(f"the audit agrees with real forward passes to {record['empirical_max_dev_px']:.1e} px")
    return "\n".join(lines)


def data_findings(record: dict) -> str:
    """Notebook 04's closing summary, from its record."""
    codecs_ = {row["codec"]: row for row in record["codecs"]}
    flip = {(r["codec"], r["grid"]): r for r in record["flip"]}
    return "\n".join([
        f"SynthPose scored against its own ground truth: AP {record['self_ap']:.3f} (must be 1).",
        "round trip, worst error in heatmap samples: " + ", ".join(
            f"{name} {row['max_error']:.2g}" for name, row in sorted(codecs_.items())),
        f"flip test on HRNet's grid, flipped decode - truth along x: exact mirror "
        f"{flip[('msra', 'HRNet 4o')]['flipped_bias_x_px']:+.2f} px (msra), "
        f"{flip[('dark', 'HRNet 4o')]['flipped_bias_x_px']:+.2f} px (dark), "
        f"{flip[('udp', 'HRNet 4o')]['flipped_bias_x_px']:+.2f} px (udp); legacy one-sample shift "
        f"{flip[('msra, legacy 1-sample shift', 'HRNet 4o')]['flipped_bias_x_px']:+.2f} px (msra)"])


def measured_cost(results_dir, model: str) -> pd.DataFrame:
    """Step time and peak memory per variant from the ``bench models`` records of ``model`` in ``results_dir`` (one
    row per record and variant, with the device and batch it was measured on); empty if none was recorded."""
    from . import records

    rows = []
    for path in sorted(Path(results_dir).glob(f"bench_models_{model}_*.json")):
        rec = records.read_record(path, kind="bench_models")
        for row in rec["results"]["rows"]:
            rows.append({"record": path.name, "device": rec["provenance"]["device"], "batch": rec["config"]["batch"],
                         "variant": row["variant"], "input_size": "x".join(map(str, row["input_size"])),
                         "step_ms": round(1e3 * row["step_s_median"], 1),
                         "vs_baseline": round(row["step_time_ratio_vs_baseline"], 3),
                         "peak_memory_mb": round(row["peak_memory_mb"])})
    return pd.DataFrame(rows)
