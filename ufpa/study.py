"""What notebooks 03 and 04 record, as functions: each returns the (config, results) of its results record, so the
notebooks stay thin and the same numbers can be produced without a notebook."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd


def misalignment_audit(model: str, sizes, other_models, other_size, cost_size, focus_size=None) -> tuple[dict, dict]:
    """Notebook 03's record: the audit of ``model`` at every size and variant (and every fusion point at
    ``focus_size``, default the first size), other families at ``other_size``, output grids of models and heads,
    parameter and FLOP counts, and the audit's check against real forward passes."""
    from . import audit, bench
    from .models import ALL_ALIGNMENTS, HEADS, create_model

    focus_size = tuple(focus_size or sizes[0])
    summaries, points = [], []
    for requested, alignment, size, table in audit.variant_audits(model, sizes):
        summaries.append(audit.labelled(audit.summarize(table), model, requested, alignment, size))
        if requested == focus_size:
            points.append(audit.labelled(audit.fusion_points_of(table), model, requested, alignment, size))
    hrnet = pd.concat(summaries, ignore_index=True)
    others = pd.concat([audit.audit_variants(name, [other_size]) for name in other_models], ignore_index=True)
    grids = audit.output_grids([model] + list(other_models), other_size)
    heads = audit.output_grids([model], other_size, alignments=["baseline", "ufpa"], heads=HEADS)
    costs = pd.DataFrame([bench.model_cost(model, alignment, "heatmap", cost_size) for alignment in ALL_ALIGNMENTS]
                         + [bench.model_cost(model, "baseline", head, cost_size) for head in ("udp", "sr", "duc")])
    empirical = audit.empirical_positions(create_model(model, input_size=tuple(other_size)), tuple(other_size))
    fits = learned_fits()
    config = {"model": model, "sizes": sizes, "focus_size": list(focus_size), "other_models": other_models,
              "other_size": other_size, "cost_size": cost_size}
    results = {"hrnet": hrnet.to_dict("records"), "fusion_points": pd.concat(points, ignore_index=True)
               .drop(columns=["model", "requested"]).to_dict("records"), "others": others.to_dict("records"),
               "grids": grids.to_dict("records"), "heads": heads.to_dict("records"),
               "costs": costs.to_dict("records"), "empirical_max_dev_px": float(empirical["max_dev_px"].max()),
               "learned_fit": fits}
    return config, results


LEARNED_FIT_TOLERANCE = 0.01  # coarse samples: the synthetic-shift test's bound on every phase's learned offset


def learned_fits(factors=(2, 4, 8), shifts=(0.0, 0.3)) -> list[dict]:
    """The synthetic-shift test of issue 22 (``learned.fit_known_shift``) at every upsampling factor HRNet uses, for
    the sawtooth alone and moved by a constant: per case the worst phase's error (coarse samples) and the final loss."""
    from . import learned

    rows = []
    for factor in factors:
        for shift in shifts:
            fit = learned.fit_known_shift(factor=factor, shift=shift)
            rows.append({"factor": factor, "shift": shift, "phases": len(fit["phases"]) // 2,
                         "max_error": fit["max_error"], "loss": fit["loss"]})
    return rows


def learned_targets(record: dict, focus: str) -> pd.DataFrame:
    """What a learned aligner must learn at the focus size, per kind of HRNet fusion (target stride S, upsampled
    from k levels below): the correction is minus the baseline's shift, the sawtooth S * (o mod 2^k), so its mean over
    a period is S(2^k - 1)/2 and its worst S(2^k - 1); the audit's numbers beside the closed forms."""
    hrnet = pd.DataFrame(record["hrnet"])
    base = hrnet[(hrnet["requested"] == focus) & (hrnet["alignment"] == "baseline") & (hrnet["up_levels"] > 0)]
    out = base[["stride", "up_levels", "fusions", "mean_abs_px", "max_abs_px"]].copy()
    out["closed_form_mean_px"] = out["stride"] * (2.0 ** out["up_levels"] - 1) / 2
    out["closed_form_worst_px"] = out["stride"] * (2.0 ** out["up_levels"] - 1)
    out["offsets_per_coarse_sample"] = 2 * 4 ** out["up_levels"]  # two axes, one per sub-pixel phase
    return out.rename(columns={"mean_abs_px": "audit_mean_px", "max_abs_px": "audit_worst_px"}).reset_index(drop=True)


def other_models_summary(record: dict) -> pd.DataFrame:
    """Notebook 03's table of the other families: worst interior shift per kind of fusion, per model and variant.
    Kinds: an operand upsampled into the target (``up_levels`` > 0; the border's worst beside it), one that came
    through a stride-2 op (``up_levels`` = -1: a strided residual projection, or the hourglass' pooled branch
    before it is upsampled) and one on the target's own grid (0: plain residual adds). "none" marks a model without
    that kind of fusion (SimpleBaseline never upsamples into a fusion), instead of a NaN."""
    others = pd.DataFrame(record["others"])
    kind = np.select([others["up_levels"] > 0, others["up_levels"] < 0], ["upsampled in", "strided in"], "same grid")
    others = others.assign(kind=kind)
    rows = []
    for (model, alignment, size), g in others.groupby(["model", "alignment", "input_size"], sort=False):
        row = {"model": model, "alignment": alignment, "input_size": size}
        for name in ("upsampled in", "strided in", "same grid"):
            k = g[g["kind"] == name]
            row[f"{name} (px)"] = round(float(k["max_abs_px"].max()), 4) if len(k) else "none"
        up = g[g["kind"] == "upsampled in"]
        row["upsampled in, border (px)"] = round(float(up["border_max_abs_px"].max()), 4) if len(up) else "none"
        rows.append(row)
    return pd.DataFrame(rows)


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
               "flip": flip_table(seed),
               "border": border_table()}
    return config, results


BORDER_DISTANCES = (0, 0.5, 1, 1.5, 2, 3, 4)


def border_table(names=("msra", "dark", "udp")) -> list[dict]:
    """Worst round-trip error (heatmap samples) against the distance from the map's border, per codec, on a portrait
    64x48 map (sigma 2) and a landscape 48x64 one (sigma 64/24): DARK's blur sees the border, and more so the wider
    its Gaussians."""
    from . import codecs

    rows = []
    for input_size, heatmap_size in (((256, 192), (64, 48)), ((192, 256), (48, 64))):
        for name in names:
            errors = codecs.border_roundtrip(name, BORDER_DISTANCES, input_size, heatmap_size)
            rows.append({"codec": name, "map": f"{heatmap_size[0]}x{heatmap_size[1]}",
                         "sigma": round(heatmap_size[1] / 24, 3),
                         **{f"{d:g} from border": float(e) for d, e in zip(BORDER_DISTANCES, errors)}})
    return rows


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
    free = heat.drop(index=[a for a in ("learned",) if a in heat.index])
    equal = "equal for every parameter-free variant" if free["params"].nunique() == 1 else "NOT equal"
    lines.append(f"parameters: {equal} ({int(heat.loc['baseline', 'params']):,}); FLOPs: ufpa at "
                 f"{heat.loc['ufpa', 'input_size']} +{extra:.1f} % over the baseline at "
                 f"{heat.loc['baseline', 'input_size']}")
    if "learned" in heat.index:
        more = heat.loc["learned", "params"] - heat.loc["baseline", "params"]
        flops = 100 * (heat.loc["learned", "gflops"] / heat.loc["baseline", "gflops"] - 1)
        lines.append(f"learned alignment: +{int(more):,} parameters (+{100 * more / heat.loc['baseline', 'params']:.2f}"
                     f" %), +{flops:.2f} % FLOPs (its offset convolutions; the bilinear sampling, like every "
                     "interpolation, is not counted)")
    if record.get("learned_fit"):
        held = all(r["max_error"] < LEARNED_FIT_TOLERANCE for r in record["learned_fit"])
        lines.append(f"synthetic-shift test: every phase's learned offset {'within' if held else 'NOT within'} "
                     f"{LEARNED_FIT_TOLERANCE:g} coarse samples of the known shift, at every factor and shift")
    grids = pd.DataFrame(record["grids"])
    for model, g in grids.groupby("model", sort=False):
        offsets = ", ".join(f"{a} {o:+g}" for a, o in zip(g["alignment"], g["grid_offset_px"].round(2)))
        lines.append(f"{model}: heatmap sample o sits at scale*o + offset; offsets (px): {offsets}")
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
        f"{flip[('msra, legacy 1-sample shift', 'HRNet 4o')]['flipped_bias_x_px']:+.2f} px (msra)",
        "DARK 2 samples from the border, worst error: " + ", ".join(
            f"{row['2 from border']:.2f} at {row['map']} (sigma {row['sigma']:g})"
            for row in record["border"] if row["codec"] == "dark")])


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


def _upsampled_values(coarse: np.ndarray, mode: str, factor: int, n_target: int) -> np.ndarray:
    """The real op (``ufpa.ops.upsample``) on 1-D signals (S, n): two identical rows make a 2-D map, so every mode
    runs as the networks run it; float64."""
    import torch

    from . import ops

    x = torch.from_numpy(np.repeat(coarse[:, None, None, :], 2, axis=2))
    y = ops.upsample(x, mode, factor, (2 * factor, n_target))
    return y[:, 0, 0, :].numpy()


def kernel_absorption(n_in: int = 192, level: int = 2, taps: int = 9, n_signals: int = 400, seed: int = 0,
                      modes=None) -> dict:
    """Can a learned kernel undo a fusion shift? Branch ``level`` (sampled ideally on its grid) is upsampled into
    branch 0 with each mode, then a ``taps``-wide 1-D kernel on branch 0 (replicate padding, the kernel a network
    could learn there) is fitted by least squares to reproduce the signal at branch 0's positions: the best any
    training could do. Smooth random signals (periods 48..400 px, within the source branch's band) are split half
    for fitting, half for testing. Per mode: the fitted kernel's centroid (its realised offset, px), the shift that
    remains at every branch-0 position after it (a ramp through upsample + kernel, as the probe measures positions),
    and the test error, interior and border. A constant shift is absorbed; a sawtooth, a drift and a border are not,
    because one kernel acts the same at every position. Modes are (name, upsample mode, input size) triples."""
    from . import geometry

    rng = np.random.default_rng(seed)
    modes = modes or [("nearest", "nearest", n_in), ("bilinear", "bilinear", n_in),
                      ("bilinear_corners", "bilinear_corners", n_in),
                      ("bilinear_corners at 32m+1", "bilinear_corners", geometry.aligned_size(n_in)),
                      ("aligned", "aligned", n_in)]
    factor, r = 2 ** level, taps // 2
    freq = rng.uniform(1 / 400, 1 / 48, (n_signals, 4))
    phase = rng.uniform(0, 2 * np.pi, (n_signals, 4))
    amp = rng.normal(size=(n_signals, 4))

    def signal(x):  # (S, len(x)) smooth signals
        return np.einsum("sk,skx->sx", amp, np.cos(2 * np.pi * freq[:, :, None] * x[None, None, :] + phase[:, :, None]))

    rows, curves = [], {}
    for name, mode, n in modes:
        target = geometry.downsample_path(2)
        source = geometry.downsample_path(2 + level)
        n_t, n_s = target.out_size(n), source.out_size(n)
        t_pos, s_pos = target.positions(n_t), source.positions(n_s)
        up = _upsampled_values(signal(s_pos), mode, factor, n_t)
        truth = signal(t_pos)
        index = np.clip(np.arange(n_t)[:, None] + np.arange(-r, r + 1)[None, :], 0, n_t - 1)  # replicate padding
        windows = up[:, index]  # (S, n_t, taps)
        shift_before = geometry.fusion_shift(target, source.then(geometry.upsample(mode, n_s, n_t, factor)), n)
        # fitted where the kernel does best: every tap reads an unclamped upsampled sample and none is padding (the
        # rest is the "border")
        interior = (shift_before.interior[index].all(axis=1) & (np.arange(n_t) >= r) & (np.arange(n_t) < n_t - r))
        fit, test = slice(0, n_signals // 2), slice(n_signals // 2, None)
        weights, *_ = np.linalg.lstsq(windows[fit][:, interior].reshape(-1, taps), truth[fit][:, interior].reshape(-1),
                                      rcond=None)
        err = np.abs(windows[test] @ weights - truth[test])
        ramp = _upsampled_values(s_pos[None, :], mode, factor, n_t)[0]
        realised = (ramp[index] @ weights) / weights.sum()
        remaining = realised - t_pos
        centroid = float((np.arange(-r, r + 1) @ weights) / weights.sum() * target.scale)
        rows.append({"mode": name, "input_size": n,
                     "shift_before_max_px": float(np.abs(shift_before.shift[interior]).max()),
                     "kernel_centroid_px": centroid,
                     "remaining_interior_max_px": float(np.abs(remaining[interior]).max()),
                     "remaining_border_max_px": float(np.abs(remaining[~interior]).max()) if (~interior).any() else 0.0,
                     "test_rmse_interior": float(np.sqrt((err[:, interior] ** 2).mean())),
                     "test_rmse_border": float(np.sqrt((err[:, ~interior] ** 2).mean())) if (~interior).any() else 0.0})
        curves[name] = {"position_px": t_pos.tolist(), "shift_before_px": shift_before.sampled_shift.tolist(),
                        "shift_after_px": remaining.tolist()}
    return {"config": {"n_in": n_in, "level": level, "taps": taps, "n_signals": n_signals, "seed": seed},
            "rows": rows, "curves": curves}


def absorption_findings(result: dict) -> str:
    """Notebook 02's closing lines on the learned-kernel experiment, from its record."""
    return "; ".join(f"{r['mode']}: {r['shift_before_max_px']:.1f} px before, {r['remaining_interior_max_px']:.2f} px "
                     f"after the best kernel (border {r['remaining_border_max_px']:.1f} px)" for r in result["rows"])
