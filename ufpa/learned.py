"""Learned alignment against the geometry (issue 22): what a network that may move its own sampling grid learns, set
beside the shift ``ufpa.geometry`` derives for the same fusion in closed form.

Sign convention. A shift is source minus target position in input pixels (``geometry.fusion_shift``, as the audit
reports it). A learned offset is how far the sampler moved the source position, also in input pixels (its offset in
samples of the coarse map times that map's stride). A learner that removes the shift learns ``offset = -shift``, the
*correction* the geometry asks for; what is left is the residual ``shift + offset``.

Regions. Along each axis the border band is the first and last ``factor`` outputs (one coarse sample), where the
coarse map's 3x3 convs read padding and the sampler's reads clamp; the interior is the rest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import audit
from .models._layers import LearnedResample

AXES = audit.AXES


def learned_modules(model: torch.nn.Module) -> dict[str, LearnedResample]:
    """The learned samplers of ``model`` by module path (empty for the parameter-free variants)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LearnedResample)}


# --- the synthetic test: a known shift is all there is to learn ------------------------------------------------------

def fit_known_shift(factor: int = 4, shift: float = 0.0, size=(8, 6), channels: int = 4, batch: int = 8,
                    steps: int = 300, lr: float = 0.02, seed: int = 0) -> dict:
    """Train one :class:`LearnedResample` alone to reproduce a coarse map sampled at ``o / factor + shift`` (coarse
    samples): the aligned grid, which nearest upsampling misses by the sawtooth ``(o mod factor) / factor``, moved by a
    constant. The fine-grid input is noise, so nothing but the shift can be learned, and the offsets must converge to
    ``(o mod factor) / factor + shift`` at every phase. Returns the learned and the true offset per phase and axis
    (coarse samples, mean over the interior, where neither grid clamps), the final loss and the worst error."""
    gen = torch.Generator().manual_seed(seed)
    h, w = size
    fh, fw = factor * h, factor * w
    sampler = LearnedResample(channels, factor, channels)
    optimizer = torch.optim.Adam(sampler.parameters(), lr=lr)
    rows = torch.arange(fh, dtype=torch.float64) / factor + shift
    cols = torch.arange(fw, dtype=torch.float64) / factor + shift
    grid = torch.stack(((cols.view(1, fw) * 2 / (w - 1) - 1).expand(fh, fw),
                        (rows.view(fh, 1) * 2 / (h - 1) - 1).expand(fh, fw)), dim=-1).float()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        x = torch.randn(batch, channels, h, w, generator=gen)
        like = torch.randn(batch, channels, fh, fw, generator=gen)
        target = F.grid_sample(x, grid.expand(batch, fh, fw, 2), mode="bilinear", padding_mode="border",
                               align_corners=True)
        loss = F.mse_loss(sampler(x, like), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        x = torch.randn(batch, channels, h, w, generator=gen)
        delta = sampler.offsets(x, torch.randn(batch, channels, fh, fw, generator=gen)).double()
    inner = slice(factor, None)  # skip the first coarse sample's outputs; the far end is cut below
    out = {"factor": factor, "shift": shift, "loss": float(loss.detach()), "phases": []}
    for a, axis in enumerate(AXES):
        n = (fh, fw)[a]
        keep = np.arange(n)[inner]
        keep = keep[(keep / factor + shift) <= (size[a] - 1) - 1e-9]  # the target clamps past the last sample
        field = delta[:, a].mean(dim=(0, 2 - a)).numpy()  # mean over images and the other axis
        for phase in range(factor):
            at = keep[keep % factor == phase]
            out["phases"].append({"axis": axis, "phase": phase, "true": phase / factor + shift,
                                  "learned": float(field[at].mean())})
    out["max_error"] = max(abs(p["learned"] - p["true"]) for p in out["phases"])
    return out


# --- reading a trained network ---------------------------------------------------------------------------------------

@torch.no_grad()
def read_offsets(model: torch.nn.Module, images, batch: int = 16) -> dict[str, dict[str, np.ndarray]]:
    """Each learned sampler's offsets on ``images`` (N, 3, H, W) as it realises them (reads clamped to the map), in its
    coarse samples: per module path the mean and the mean square over images at every output sample, (2, h, w) each
    (channel 0: height, 1: width)."""
    modules = learned_modules(model)
    sums: dict[str, list] = {name: [0.0, 0.0, 0] for name in modules}

    def hook(name):
        def record(module, args, output):
            d = module.sampled_offsets(*args).double()
            acc = sums[name]
            acc[0] = acc[0] + d.sum(0)
            acc[1] = acc[1] + (d * d).sum(0)
            acc[2] += d.shape[0]
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in modules.items()]
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        for start in range(0, len(images), batch):
            model(torch.as_tensor(images[start:start + batch]).to(param.device, param.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {name: {"mean": (s / n).cpu().numpy(), "mean_sq": (q / n).cpu().numpy()}
            for name, (s, q, n) in sums.items() if n}


def learned_alignment(model: torch.nn.Module, images, input_size, shifts: list[dict] | None = None) -> dict:
    """What ``model``'s learned samplers learned on ``images``, against the geometry, per fusion point and axis.

    ``profiles``: per fusion point and axis, per output index (mean over images and the other axis), the geometry's
    shift at zero offset and the learned offset (input px; the correction the geometry asks for is ``-shift``).
    ``summary``: per region (interior, border) the mean and spread (SD over positions and images) of the learned
    offset and of the correction, the RMS shift before and after the learned offset, and the fraction of the RMS shift
    removed. JSON-ready. ``shifts``: ``audit.shift_fields`` of the same architecture (default: traced from ``model``;
    pass a fresh copy's when ``model`` is wrapped for training)."""
    offsets = read_offsets(model, images)
    modules = learned_modules(model)
    profiles, summary = [], []
    for field in shifts if shifts is not None else audit.shift_fields(model, input_size):
        name = field["module"]
        if name not in offsets:
            continue
        factor = modules[name].factor
        for a, axis in enumerate(AXES):
            info = field["axes"][axis]
            stride = float(info["source_stride"])
            shift = np.asarray(info["shift"].sampled_shift, dtype=np.float64)  # what the zero-offset grid reads
            mean = offsets[name]["mean"][a] * stride  # (h, w) input px
            mean_sq = offsets[name]["mean_sq"][a] * stride ** 2
            n = len(shift)
            along = mean.mean(axis=1 - a)  # average over the other axis
            base = {"fusion": name, "axis": axis, "factor": factor, "source_stride": stride,
                    "target_stride": stride / factor}
            border = (np.arange(n) < factor) | (np.arange(n) >= n - factor)
            profiles.append({**base, "shift_px": [round(float(v), 4) for v in shift],
                             "learned_px": [round(float(v), 4) for v in along]})
            s = shift.reshape((n, 1) if a == 0 else (1, n))  # broadcast over the other axis
            for region, mask in (("interior", ~border), ("border", border)):
                sel = mask.reshape(s.shape)
                sel = np.broadcast_to(sel, mean.shape)
                if not sel.any():
                    continue
                s_full = np.broadcast_to(s, mean.shape)[sel]
                m, q = mean[sel], mean_sq[sel]
                learned_mean = float(m.mean())
                learned_sd = float(np.sqrt(max(q.mean() - learned_mean ** 2, 0.0)))
                residual = float(np.sqrt(np.mean(s_full ** 2 + 2 * s_full * m + q)))
                before = float(np.sqrt(np.mean(s_full ** 2)))
                summary.append({**base, "region": region, "outputs": int(mask.sum()),
                                "correction_mean_px": float(-s_full.mean()), "correction_sd_px": float(s_full.std()),
                                "learned_mean_px": learned_mean, "learned_sd_px": learned_sd,
                                "rms_shift_px": before, "rms_residual_px": residual,
                                "removed": (1 - residual / before) if before > 0 else float("nan")})
    return {"profiles": profiles, "summary": summary, "images": int(len(images))}


def summary_frame(result: dict) -> pd.DataFrame:
    return pd.DataFrame(result["summary"])


def profile_frame(result: dict) -> pd.DataFrame:
    """``result['profiles']`` one row per output index: shift, correction (-shift) and learned offset (input px),
    and the region the index is in."""
    rows = []
    for p in result["profiles"]:
        n, f = len(p["shift_px"]), p["factor"]
        for o, (shift, learned_px) in enumerate(zip(p["shift_px"], p["learned_px"])):
            rows.append({k: p[k] for k in ("fusion", "axis", "factor", "source_stride", "target_stride")}
                        | {"index": o, "region": "border" if o < f or o >= n - f else "interior",
                           "shift_px": shift, "correction_px": -shift, "learned_px": learned_px})
    return pd.DataFrame(rows)


def overall(result: dict) -> dict:
    """One line for a run's record: over all fusion points and both axes, the RMS shift before and after the learned
    offsets (input px, interior and border band), and the fraction removed."""
    out = {}
    for region in ("interior", "border"):
        rows = [r for r in result["summary"] if r["region"] == region]
        if not rows:
            continue
        weight = np.array([r["outputs"] for r in rows], dtype=float)
        before = float(np.sqrt(np.average([r["rms_shift_px"] ** 2 for r in rows], weights=weight)))
        after = float(np.sqrt(np.average([r["rms_residual_px"] ** 2 for r in rows], weights=weight)))
        out[region] = {"rms_shift_px": before, "rms_residual_px": after,
                       "removed": (1 - after / before) if before > 0 else float("nan")}
    return out


def realised_misalignment(result: dict) -> dict:
    """A learned network's fusion shifts as its samplers realise them (zero-offset shift plus learned offset, mean
    over the val crops, per output along each axis), in the audit's one-line summary: the interior's worst and mean
    |shift| and the border band's worst (input px), over every learned fusion and both axes."""
    inner, edge = [], []
    for p in result["profiles"]:
        residual = np.abs(np.asarray(p["shift_px"]) + np.asarray(p["learned_px"]))
        border = np.zeros(len(residual), bool)
        border[:p["factor"]], border[len(residual) - p["factor"]:] = True, True
        inner.append(residual[~border])
        edge.append(residual[border])
    inner, edge = np.concatenate(inner or [np.zeros(0)]), np.concatenate(edge or [np.zeros(0)])
    return {"fusions": len({p["fusion"] for p in result["profiles"]}),
            "max_abs_px": float(inner.max()) if inner.size else 0.0,
            "mean_abs_px": float(inner.mean()) if inner.size else 0.0,
            "border_max_abs_px": float(edge.max()) if edge.size else 0.0,
            "as": "learned offsets realised, mean over val crops"}
