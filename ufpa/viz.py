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
ALIGNMENT_COLOURS = {"baseline": "#000000", "bilinear": "#e69f00", "bilinear_corners": "#56b4e9", "ufpa": "#009e73",
                     "ufpa_any": "#d55e00",
                     "learned": "#0072b2"}  # Okabe-Ito, the same colour per alignment in every figure
_LEVEL_COLOURS = {0: "#999999", 1: "#56b4e9", 2: "#e69f00", 3: "#cc79a7"}


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
            ax.text(xt + dx / 2, 0.5, f"{dx:+.2f}", ha="center", va="bottom", fontsize=7, color="#d62728")
    # the image covers [-1/2, n-1/2]: pixel i is the unit cell around its centre i
    ax.axvspan(-0.5, n_in - 0.5, ymin=0.86, ymax=0.98, color="#56b4e9", alpha=0.25, lw=0)
    for edge in (-0.5, n_in - 0.5):
        ax.axvline(edge, color="#56b4e9", lw=1.0, ls="--", zorder=0)
    worst = np.max(np.abs(shift))
    ax.set_yticks(list(ys.values()), list(ys.keys()))
    ax.set_ylim(-0.6, 3.6)
    ax.set_xlim(-1.5, n_in + 0.5)
    ax.set_xlabel("input pixel coordinate x (px); dashed: image extent [-1/2, n-1/2]; red: shift in px")
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


def shift_profiles(n_in: int = 192, levels=(1, 2, 3), path=None):
    """Static: shift into branch 0 against the target position for every upsampling mode (one panel each, plus the
    corner-aligned mode at the 32m+1 size), one line per source branch; what the ops really read (borders included)."""
    panels = [(mode, n_in) for mode in geometry.UPSAMPLE_MODES]
    panels.insert(3, ("bilinear_corners", geometry.aligned_size(n_in)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.1 * len(panels), 3.2), sharey=True, constrained_layout=True)
    for ax, (mode, n) in zip(axes, panels):
        for level in levels:
            fs = geometry.multiscale_fusion_shift(n, level, 0, mode)
            x = geometry.downsample_path(2).positions(len(fs.shift))
            ax.plot(x, fs.sampled_shift, drawstyle="steps-mid", color=_LEVEL_COLOURS[level],
                    label=f"branch {level} (x{2 ** level})")
        ax.axhline(0, color="0.6", lw=0.8)
        for edge in (-0.5, n - 0.5):
            ax.axvline(edge, color="#56b4e9", lw=0.8, ls="--")
        ax.set_title(f"{MODE_LABELS[mode]}\ninput {n}", fontsize=9, color=MODE_COLORS[mode])
        ax.set_xlabel("target position x (input px)")
    axes[0].set_ylabel("shift (input px)")
    axes[0].legend(fontsize=7, loc="lower left")
    if path is not None:
        _save(fig, path)
    return fig


def absorption_plot(result: dict, path=None):
    """Shift into branch 0 before (thin) and after (thick) the best learned kernel, per mode: a constant shift is
    absorbed, a sawtooth, a drift and the border bands are not (``study.kernel_absorption``)."""
    curves = result["curves"]
    fig, axes = plt.subplots(1, len(curves), figsize=(3.1 * len(curves), 3.2), sharey=True, constrained_layout=True)
    for ax, (name, c) in zip(np.atleast_1d(axes), curves.items()):
        mode = "bilinear_corners" if name.startswith("bilinear_corners") else name
        colour = MODE_COLORS.get(mode, "k")
        ax.plot(c["position_px"], c["shift_before_px"], drawstyle="steps-mid", color=colour, lw=0.8, alpha=0.6,
                label="upsampled")
        ax.plot(c["position_px"], c["shift_after_px"], color=colour, lw=2.0, label="after the learned kernel")
        ax.axhline(0, color="0.6", lw=0.8)
        ax.set_title(name, fontsize=9, color=colour)
        ax.set_xlabel("branch-0 position x (input px)")
    np.atleast_1d(axes)[0].set_ylabel("shift (input px)")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="lower left")
    cfg = result["config"]
    fig.suptitle(f"branch {cfg['level']} into branch 0, input {cfg['n_in']}: the best {cfg['taps']}-tap kernel "
                 "(least squares) can remove a constant shift only", fontsize=10)
    if path is not None:
        _save(fig, path)
    return fig


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


def _hrnet_unit(module: str) -> str:
    """'stages.1.0' -> 'stage 3, module 1': HRNet's papers number stages from 1 (the stem's stage) and the first
    multi-branch stage is 2."""
    parts = module.split(".")
    if len(parts) == 3 and parts[0] == "stages":
        return f"stage {int(parts[1]) + 2}, module {int(parts[2]) + 1}"
    return module


def fusion_points_plot(points, path=None):
    """Worst shift of every incoming tensor at every cross-resolution fusion, in network order, one panel per alignment.
    Filled markers: interior outputs; open markers: border outputs. Zeros are drawn, not left out."""
    alignments = list(dict.fromkeys(points["alignment"]))
    fig, axes = plt.subplots(len(alignments), 1, figsize=(11, 1.45 * len(alignments) + 0.8), sharex=True, sharey=True,
                             constrained_layout=True)
    top = max(float(points[["max_abs_px", "border_max_abs_px"]].max().max()), 1.0)
    for ax, alignment in zip(np.atleast_1d(axes), alignments):
        p = points[points["alignment"] == alignment]
        for level, colour in _LEVEL_COLOURS.items():
            q = p[p["up_levels"] == level]
            label = "strided convs in" if level == 0 else f"upsampled x{2 ** level}"
            ax.scatter(q["order"], q["max_abs_px"], s=16, color=colour, label=label, zorder=3, clip_on=False)
            ax.scatter(q["order"], q["border_max_abs_px"], s=22, facecolors="none", edgecolors=colour, lw=0.9,
                       zorder=3, clip_on=False)
        for start in p.groupby("module", sort=False)["order"].min():
            ax.axvline(start - 0.5, color="0.85", lw=0.6, zorder=1)
        ax.set_ylim(-0.04 * top, 1.08 * top)
        ax.set_ylabel("|shift| (px)")
        ax.set_title(f"{alignment} at {p['input_size'].iloc[0]}", fontsize=9, loc="left",
                     color=ALIGNMENT_COLOURS.get(alignment, "k"))
    last = np.atleast_1d(axes)[-1]
    p = points[points["alignment"] == alignments[0]]
    starts = p.groupby("module", sort=False)["order"].agg(["min", "max"])
    last.set_xticks([(a + b) / 2 for a, b in starts.values])
    last.set_xticklabels([_hrnet_unit(m) for m in starts.index], rotation=60, fontsize=7, ha="right")
    last.set_xlabel("fusion unit in network order (each dot: one incoming branch into one target branch)")
    np.atleast_1d(axes)[0].legend(fontsize=7, ncol=4, loc="upper left", title="filled: interior, open: border",
                                  title_fontsize=7)
    if path is not None:
        _save(fig, path)
    return fig


def shift_map(input_size, level: int = 3, alignments=None, path=None):
    """|shift| over the image of branch ``level`` upsampled into branch 0 (2-D: both axes), what the ops really read,
    per alignment; 'ufpa' at its 32m+1 size. Each panel spans the image, extent [-1/2, n-1/2] px."""
    from .models import ALIGNMENTS, run_size
    from .models._layers import UPSAMPLE_MODE

    alignments = list(alignments or ALIGNMENTS)
    fig, axes = plt.subplots(1, len(alignments), figsize=(2.3 * len(alignments) + 1, 3.6), constrained_layout=True)
    maps, extents, sizes = [], [], []
    for alignment in alignments:
        size = run_size("hrnet_w32", alignment, input_size)  # HRNet's branches: the one size rule
        per_axis = [geometry.multiscale_fusion_shift(n, level, 0, UPSAMPLE_MODE[alignment]) for n in size]
        maps.append(np.hypot(per_axis[0].sampled_shift[:, None], per_axis[1].sampled_shift[None, :]))
        target = geometry.downsample_path(2)  # branch 0: each fused sample drawn as the stride-4 cell around it
        (y0, y1), (x0, x1) = [target.positions(len(a.shift))[[0, -1]] for a in per_axis]
        half = target.scale / 2
        extents.append([x0 - half, x1 + half, y1 + half, y0 - half])
        sizes.append(size)
    vmax = max(float(m.max()) for m in maps) or 1.0
    for ax, alignment, m, extent, size in zip(axes, alignments, maps, extents, sizes):
        image = ax.imshow(m, extent=extent, cmap="magma", vmin=0, vmax=vmax, interpolation="nearest")
        ax.add_patch(plt.Rectangle((-0.5, -0.5), size[1], size[0], fill=False, ec="#56b4e9", lw=1.0, ls="--"))
        ax.set_xlim(-8, size[1] + 8)
        ax.set_ylim(size[0] + 8, -8)
        ax.set_title(f"{alignment} ({size[0]}x{size[1]})", fontsize=9, color=ALIGNMENT_COLOURS.get(alignment, "k"))
        ax.set_xlabel("x (input px)")
    axes[0].set_ylabel("y (input px)")
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="|shift| (input px)")
    fig.suptitle(f"branch {level} upsampled x{2 ** level} into branch 0: |shift| at every fused sample "
                 "(dashed: the image, [-1/2, n-1/2] px)", fontsize=10)
    if path is not None:
        _save(fig, path)
    return fig


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


def subpixel_plot(sweeps: dict, path=None, zoom=("dark", "udp")):
    """Signed round-trip error against sub-pixel position, one line per codec (``{name: (fractions, errors)}``); a
    second panel zooms on the sub-sample codecs, whose errors are invisible at MSRA's scale."""
    styles = {"msra": ("#000000", "-", "o"), "sr": ("#e69f00", "-", "s"), "dark": ("#56b4e9", "-", "^"),
              "udp": ("#d55e00", "--", "x")}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4), constrained_layout=True)
    for ax, names in zip(axes, (list(sweeps), [n for n in sweeps if n in zoom])):
        for name in names:
            frac, err = sweeps[name]
            colour, ls, marker = styles.get(name, (None, "-", "."))
            ax.plot(frac, err, color=colour, ls=ls, marker=marker, ms=3, lw=1.2, label=name)
        ax.axhline(0, color="0.6", lw=0.8, zorder=0)
        ax.set_xlabel("keypoint position within a heatmap sample (fraction)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("decoded - true x (heatmap samples)")
    axes[0].set_title("all codecs", fontsize=9)
    axes[1].set_title(f"zoom: {', '.join(zoom)} (UDP dashed, drawn over DARK)", fontsize=9)
    if path is not None:
        _save(fig, path)
    return fig


def targets_on_crop(image, target, keypoints, visible, codec, path=None):
    """A training crop (``image``: (3, H, W) normalised as the dataset returns it) with its targets overlaid where
    the codec's grid puts them: the maximum over keypoints of the heatmaps, each sample drawn as the cell around its
    position; crosses are the labelled keypoints, and the colour bar is the target value."""
    from .data.coco import MEAN, STD

    rgb = np.clip((np.asarray(image).transpose(1, 2, 0) * STD + MEAN) / 255.0, 0, 1)
    heat = np.asarray(target)[: len(keypoints)].max(axis=0)
    (gy, gx) = codec.grid
    ys, xs = gy.positions(heat.shape[0]), gx.positions(heat.shape[1])
    hy, hx = gy.scale / 2, gx.scale / 2
    fig, axes = plt.subplots(1, 2, figsize=(7.6, 4.6), constrained_layout=True)
    axes[0].imshow(rgb, extent=[-0.5, rgb.shape[1] - 0.5, rgb.shape[0] - 0.5, -0.5])
    axes[0].set_title("crop", fontsize=9)
    axes[1].imshow(rgb, extent=[-0.5, rgb.shape[1] - 0.5, rgb.shape[0] - 0.5, -0.5])
    overlay = axes[1].imshow(heat, extent=[xs[0] - hx, xs[-1] + hx, ys[-1] + hy, ys[0] - hy], cmap="magma",
                             alpha=0.65, vmin=0, vmax=max(float(heat.max()), 1e-6), interpolation="nearest")
    labelled = np.asarray(visible) > 0
    kp = np.asarray(keypoints)
    axes[1].scatter(kp[labelled, 0], kp[labelled, 1], marker="+", s=30, color="#56b4e9", lw=1.0,
                    label="labelled keypoints")
    axes[1].set_title(f"{codec.name} targets on the crop (max over keypoints)", fontsize=9)
    axes[1].legend(fontsize=7, loc="lower right")
    for ax in axes:
        ax.set_xlim(-0.5, rgb.shape[1] - 0.5)
        ax.set_ylim(rgb.shape[0] - 0.5, -0.5)
        ax.set_xlabel("x (crop px)")
    axes[0].set_ylabel("y (crop px)")
    fig.colorbar(overlay, ax=axes[1], shrink=0.8, label="target value")
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
