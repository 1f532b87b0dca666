"""Figures of the study. Every position drawn here comes from ``ufpa.geometry``."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from . import geometry

MODE_LABELS = {
    "nearest": "nearest",
    "bilinear": "bilinear, align_corners=False",
    "bilinear_corners": "bilinear, align_corners=True",
    "aligned": "size-free aligned (x = o/2^k)",
}
MODE_COLORS = {"nearest": "#d62728", "bilinear": "#ff7f0e", "bilinear_corners": "#1f77b4", "aligned": "#2ca02c"}
_PNG_META = {"Software": None}  # keeps saved PNGs identical across runs


def sampling_panel(ax, n_in: int, mode: str, target_convs: int = 1, source_convs: int = 2, title: str | None = None):
    """One axis of a two-branch fusion: input pixels, target conv outputs, source conv outputs, and where the
    upsampled source samples land, with the shift of each against its target drawn as a bar."""
    target = geometry.downsample_path(target_convs)
    down = geometry.downsample_path(source_convs)
    n_t, n_s = target.out_size(n_in), down.out_size(n_in)
    factor = 2 ** (source_convs - target_convs)
    up = down.then(geometry.upsample(mode, n_s, n_t, factor))
    rows = {
        "input pixels": np.arange(n_in, dtype=float),
        f"stride-{2 ** source_convs} source": down.positions(n_s),
        f"stride-{2 ** target_convs} target": target.positions(n_t),
        "upsampled source": up.sampled_positions(n_in),
    }
    ys = {name: y for name, y in zip(rows, (3, 2, 1, 0))}
    for name, xs in rows.items():
        style = dict(marker="|", ms=14, color="0.5") if name == "input pixels" else dict(marker="o", ms=6)
        ax.plot(xs, np.full_like(xs, ys[name]), ls="", **style)
    target_x = rows[f"stride-{2 ** target_convs} target"]
    for x in target_x:
        ax.axvline(x, color="0.85", lw=0.8, zorder=0)
    shift = rows["upsampled source"] - target_x
    for xt, dx in zip(target_x, shift):
        if abs(dx) > 1e-9:
            ax.annotate("", xy=(xt + dx, 0.0), xytext=(xt, 0.45), arrowprops=dict(arrowstyle="->", color="#d62728"))
    worst = np.max(np.abs(shift))
    ax.set_yticks(list(ys.values()), list(ys.keys()))
    ax.set_ylim(-0.6, 3.6)
    ax.set_xlim(-1, n_in)
    ax.set_xlabel("input pixel coordinate x")
    ax.set_title(title or f"{MODE_LABELS[mode]}, input {n_in}: worst shift {worst:g} px", fontsize=10)
    return shift


def sampling_illustration(path: str | os.PathLike | None = None):
    """The paper-style figure: corner-unaligned vs corner-aligned interpolation, misaligned vs aligned."""
    panels = [
        (16, "nearest", "nearest x2, input 16: sawtooth shift"),
        (16, "bilinear", "corner-unaligned (align_corners=False), input 16: constant inside, clamped at the ends"),
        (16, "bilinear_corners", "corner-aligned (align_corners=True), input 16: shift grows across the axis"),
        (17, "bilinear_corners", "corner-aligned, input 17 = 4m+1: aligned"),
        (16, "aligned", "size-free aligned x = o/2, input 16: aligned inside, clamped at the far edge"),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 * len(panels)), constrained_layout=True)
    shifts = {}
    for ax, (n, mode, title) in zip(axes, panels):
        shifts[(n, mode)] = sampling_panel(ax, n, mode, title=title)
    if path is not None:
        _save(fig, path)
    return fig, shifts


def misalignment_animation(path: str | os.PathLike, n_in: int = 192, levels=(1, 2, 3)):
    """Animated GIF: fusion shift into branch 0 of an HRNet-like network, one frame per source branch."""
    from matplotlib.animation import FuncAnimation, PillowWriter

    fig, ax = plt.subplots(figsize=(7, 3.6), constrained_layout=True)
    modes = list(geometry.UPSAMPLE_MODES)
    worst = max(abs(geometry.multiscale_fusion_shift(n_in, max(levels), 0, m).sampled_shift).max() for m in modes)

    def draw(frame):
        ax.clear()
        level = levels[frame]
        for mode in modes:
            fs = geometry.multiscale_fusion_shift(n_in, level, 0, mode)
            x = geometry.downsample_path(2).positions(len(fs.shift))
            ax.plot(x, fs.sampled_shift, drawstyle="steps-mid", color=MODE_COLORS[mode], label=MODE_LABELS[mode])
        ax.set_ylim(-1.1 * worst, 0.4 * worst)
        ax.set_xlabel("target feature position (input px)")
        ax.set_ylabel("shift (input px)")
        ax.set_title(f"branch {level} upsampled x{2 ** level} into branch 0, input {n_in}")
        ax.legend(loc="lower left", fontsize=8)

    anim = FuncAnimation(fig, draw, frames=len(levels))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    anim.save(tmp, writer=PillowWriter(fps=1))
    os.replace(tmp, path)
    plt.close(fig)
    return path


def deviation_plot(results, path: str | os.PathLike | None = None, floor: float = 1e-18, tolerance: float = 1e-9):
    """Per-family distribution of the worst deviation of each probed configuration (log scale; exact zeros are
    drawn at ``floor``)."""
    import seaborn as sns

    data = results.melt(id_vars=["family"], value_vars=["interior_max_dev", "border_max_dev"],
                        var_name="outputs", value_name="deviation").dropna()
    data["outputs"] = data["outputs"].map({"interior_max_dev": "interior", "border_max_dev": "border (rule)"})
    data["log10 deviation (px)"] = np.log10(np.maximum(data["deviation"].to_numpy(float), floor))
    fig, ax = plt.subplots(figsize=(8, 4.5), constrained_layout=True)
    sns.stripplot(data=data, x="log10 deviation (px)", y="family", hue="outputs", dodge=True, jitter=0.25,
                  size=2.5, alpha=0.6, ax=ax)
    ax.axvline(np.log10(tolerance), color="#d62728", ls="--", label=f"tolerance {tolerance:g} px")
    ax.set_xlim(np.log10(floor) - 1, 1)
    ax.set_title(f"realised vs predicted positions over {len(results)} configurations (0 drawn at {floor:g})")
    ax.legend(loc="lower right", fontsize=8)
    if path is not None:
        _save(fig, path)
    return fig


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    extra = {"metadata": _PNG_META} if path.suffix == ".png" else {}
    if path.suffix in (".jpg", ".jpeg"):
        extra["pil_kwargs"] = {"quality": 85}
    fig.savefig(tmp, dpi=110, bbox_inches="tight", **extra)
    os.replace(tmp, path)


def fusion_misalignment_plot(table, path=None, stride: float = 4.0):
    """Worst interior and border shift per upsampling depth and variant, for fusions into one target stride."""
    import seaborn as sns

    data = table[(table["stride"] == stride) & (table["up_levels"] > 0)].melt(
        id_vars=["alignment", "up_levels", "input_size"], value_vars=["max_abs_px", "border_max_abs_px"],
        var_name="outputs", value_name="worst shift (input px)")
    data["outputs"] = data["outputs"].map({"max_abs_px": "interior", "border_max_abs_px": "border"})
    grid = sns.catplot(data=data, x="up_levels", y="worst shift (input px)", hue="alignment", col="outputs",
                       kind="bar", errorbar=None, height=3.4, aspect=1.2)
    grid.set_axis_labels("levels k below the target (upsampled x2^k)", "worst shift (input px)")
    grid.figure.suptitle(f"fusions into the stride-{stride:g} branch", y=1.02)
    if path is not None:
        _save(grid.figure, path)
    return grid.figure


def corner_error_across_width(path=None, widths=(192, 193), levels=(1, 2, 3)):
    """Shift across the image width for align_corners=True upsampling into branch 0: linear at even sizes, zero at
    32m+1."""
    fig, axes = plt.subplots(1, len(widths), figsize=(5 * len(widths), 3.4), sharey=True, constrained_layout=True)
    for ax, n in zip(np.atleast_1d(axes), widths):
        target_x = None
        for level in levels:
            fs = geometry.multiscale_fusion_shift(n, level, 0, "bilinear_corners")
            target_x = geometry.downsample_path(2).positions(len(fs.shift))
            ax.plot(target_x, fs.shift, label=f"branch {level} (x{2 ** level})")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_title(f"align_corners=True, input width {n}")
        ax.set_xlabel("target feature position x (input px)")
    np.atleast_1d(axes)[0].set_ylabel("shift (input px)")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    if path is not None:
        _save(fig, path)
    return fig


# --- keypoints ----------------------------------------------------------------------------------------------------

# COCO skeleton (0-indexed) with the usual colours: face magenta, arms orange/blue, torso green, legs orange/blue.
SKELETON_0 = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8), (7, 9),
              (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))
_LIMB_COLOURS = ["#ff8000", "#ff8000", "#3399ff", "#3399ff", "#00ff00", "#ff8000", "#3399ff", "#00ff00", "#ff8000",
                 "#3399ff", "#ff8000", "#3399ff", "#ff33ff", "#ff33ff", "#ff33ff", "#ff33ff", "#ff33ff", "#ff33ff",
                 "#ff33ff"]


def draw_skeleton(ax, keypoints, visible=None, linewidth: float = 1.5, size: float = 12):
    """Draw COCO skeletons on ``ax``: keypoints (K, 2) or (N, K, 2); visible (N, K) COCO flags (1: hollow)."""
    k = np.asarray(keypoints, dtype=float).reshape(-1, 17, 2)
    v = np.full(k.shape[:2], 2.0) if visible is None else np.asarray(visible, dtype=float).reshape(-1, 17)
    for pts, vis in zip(k, v):
        for (a, b), colour in zip(SKELETON_0, _LIMB_COLOURS):
            if vis[a] > 0 and vis[b] > 0:
                ax.plot(pts[[a, b], 0], pts[[a, b], 1], color=colour, lw=linewidth)
        shown = vis > 0
        ax.scatter(pts[shown & (vis == 2), 0], pts[shown & (vis == 2), 1], s=size, c="white", edgecolors="black",
                   linewidths=0.6, zorder=3)
        ax.scatter(pts[vis == 1, 0], pts[vis == 1, 1], s=size, facecolors="none", edgecolors="white", zorder=3)


def heatmap_grid(heatmaps, names=None, columns: int = 6, path=None):
    """One panel per keypoint heatmap (K, h, w)."""
    heatmaps = np.asarray(heatmaps)
    rows = -(-len(heatmaps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 2.0 * rows), constrained_layout=True)
    for i, ax in enumerate(np.atleast_1d(axes).reshape(-1)):
        ax.axis("off")
        if i < len(heatmaps):
            ax.imshow(heatmaps[i], cmap="magma", vmin=0, vmax=max(float(heatmaps.max()), 1e-6))
            ax.set_title(names[i] if names else str(i), fontsize=7)
    if path is not None:
        _save(fig, path)
    return fig


def error_vectors(ax, ground_truth, predicted, scale: float = 1.0, colour="#d62728"):
    """Arrows from ground truth to prediction (magnified by ``scale``), e.g. to show a systematic bias."""
    gt = np.asarray(ground_truth, dtype=float).reshape(-1, 2)
    d = (np.asarray(predicted, dtype=float).reshape(-1, 2) - gt) * scale
    ax.quiver(gt[:, 0], gt[:, 1], d[:, 0], d[:, 1], angles="xy", scale_units="xy", scale=1, color=colour, width=0.004)


def gallery(image_dir, doc: dict, count: int = 8, columns: int = 4, path=None):
    """The first ``count`` images of a COCO keypoint dataset with their ground-truth skeletons."""
    import cv2

    images = doc["images"][:count]
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 3.0 * rows), constrained_layout=True)
    for ax in np.atleast_1d(axes).reshape(-1):
        ax.axis("off")
    for ax, im in zip(np.atleast_1d(axes).reshape(-1), images):
        ax.imshow(cv2.imread(str(Path(image_dir) / im["file_name"]))[..., ::-1])
        for ann in (a for a in doc["annotations"] if a["image_id"] == im["id"]):
            k = np.asarray(ann["keypoints"]).reshape(17, 3)
            draw_skeleton(ax, k[:, :2], k[:, 2], size=8)
        ax.set_title(f"image {im['id']}", fontsize=8)
    if path is None:
        return fig
    # Photographs compress poorly as PNG: save a JPEG and show that, to keep notebooks and reports light.
    from IPython.display import Image

    path = Path(path).with_suffix(".jpg")
    _save(fig, path)
    plt.close(fig)
    return Image(filename=str(path))


def subpixel_plot(sweeps: dict, path=None):
    """Signed round-trip error against sub-pixel position, one line per codec (``{name: (fractions, errors)}``)."""
    fig, ax = plt.subplots(figsize=(6, 3.4), constrained_layout=True)
    for name, (frac, err) in sweeps.items():
        ax.plot(frac, err, marker=".", label=name)
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xlabel("keypoint position within a heatmap sample (fraction)")
    ax.set_ylabel("decoded - true x (heatmap samples)")
    ax.legend(fontsize=8)
    if path is not None:
        _save(fig, path)
    return fig


def learning_curve(history: list[dict], path=None, title: str = ""):
    """Training loss per epoch (log scale) and, where evaluated, val AP and end-point error."""
    epochs = [h["epoch"] for h in history]
    evaluated = [h for h in history if "val_AP" in h]
    fig, axes = plt.subplots(1, 2 if evaluated else 1, figsize=(9 if evaluated else 4.5, 3.2),
                             constrained_layout=True, squeeze=False)
    ax = axes[0, 0]
    ax.semilogy(epochs, [h["loss"] for h in history], "o-", color="#0072b2")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (heatmap MSE)")
    ax.set_title(title or "learning curve", fontsize=9)
    if evaluated:
        ax = axes[0, 1]
        ax.plot([h["epoch"] for h in evaluated], [h["val_AP"] for h in evaluated], "o-", color="#009e73", label="AP")
        ax.set_ylim(0, 1)
        ax.set_xlabel("epoch")
        ax.set_ylabel("val AP (no flip)")
        twin = ax.twinx()
        twin.plot([h["epoch"] for h in evaluated], [h["val_epe_mean"] for h in evaluated], "s--", color="#d55e00",
                  label="end-point error")
        twin.set_ylabel("val end-point error (image px)")
        ax.legend(loc="upper left", fontsize=8)
        twin.legend(loc="upper right", fontsize=8)
    if path is not None:
        _save(fig, path)
    return fig


def prediction_grid(samples: dict, others: dict | None = None, path=None):
    """Val crops with ground truth (white) and predictions: this run (top row) and, if given, other runs (one row
    each, ``others``: label -> samples of the same crops)."""
    rows = {"this run": samples, **(others or {})}
    n = len(samples["crops"])
    fig, axes = plt.subplots(len(rows), n, figsize=(2.2 * n, 2.9 * len(rows)), constrained_layout=True,
                             squeeze=False)
    for r, (label, s) in enumerate(rows.items()):
        for i in range(n):
            ax = axes[r, i]
            ax.imshow(samples["crops"][i])
            draw_skeleton(ax, s["predicted"][i], samples["visible"][i], linewidth=1.2, size=8)
            gt = samples["ground_truth"][i][samples["visible"][i] > 0]
            ax.scatter(gt[:, 0], gt[:, 1], s=10, marker="x", c="white", linewidths=0.8, zorder=4)
            err = np.linalg.norm(s["predicted"][i] - samples["ground_truth"][i], axis=-1)[samples["visible"][i] > 0]
            ax.set_title(f"{label}: {err.mean():.1f} px", fontsize=7)
            ax.axis("off")
    if path is not None:
        _save(fig, path)
    return fig
