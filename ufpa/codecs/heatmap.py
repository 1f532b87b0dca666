"""Gaussian heatmap codecs.

- ``msra`` (Xiao et al. 2018): Gaussian at the *rounded* keypoint (a quantisation bias of up to half a heatmap
  sample), cut at 3 sigma; decoded by argmax plus a quarter-sample shift towards the higher neighbour.
- ``dark`` (Zhang et al. 2020): Gaussian at the exact sub-pixel keypoint; decoded by Gaussian blur, log, and a
  second-order Taylor (Newton) step at the argmax.
- ``sr`` (SRPose, Wang et al. 2023): Gaussian targets on the high-resolution grid of a super-resolution head; decoded
  by plain argmax (the higher resolution replaces post-processing) or, optionally, the DARK step.

Default sigma is w / 24 heatmap samples (2 at 256x192 with a stride-4 heatmap, 1 at 128x96, 3 at 384x288, the UFPA
code's values; 8 on a stride-1 SR grid at 256x192).
"""

from __future__ import annotations

import cv2
import numpy as np

from ._base import Codec, check_positive


def gaussian_heatmaps(uv: np.ndarray, valid: np.ndarray, size, sigma: float, radius: float | None) -> np.ndarray:
    """(N, K, h, w) Gaussians at heatmap coordinates ``uv`` (N, K, 2); zero beyond ``radius`` samples if given."""
    h, w = size
    xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
    dx = xs[None, None, None, :] - uv[..., 0, None, None]
    dy = ys[None, None, :, None] - uv[..., 1, None, None]
    heat = np.exp(-(dx**2 + dy**2) / (2 * sigma**2))
    if radius is not None:
        heat = np.where((np.abs(dx) <= radius) & (np.abs(dy) <= radius), heat, 0.0)
    return (heat * valid[..., None, None]).astype(np.float32)


# The longest Newton step DARK takes (heatmap samples per axis): a clean peak lies within half a sample of its argmax.
MAX_DARK_STEP = 1.0


def within_reach(uv: np.ndarray, size, sigma: float) -> np.ndarray:
    """(N, K) mask of keypoints whose Gaussian reaches the map within 3 sigma: these train (a keypoint just off the
    map still teaches its partial Gaussian, as in the UFPA and HRNet code); one entirely outside teaches nothing."""
    h, w = size
    reach = 3 * sigma
    return ((uv[..., 0] > -reach) & (uv[..., 0] < w - 1 + reach)
            & (uv[..., 1] > -reach) & (uv[..., 1] < h - 1 + reach))


def argmax_2d(heatmaps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer (x, y) of the maximum of each (h, w) map, and the maximum: (N, K, 2), (N, K)."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = flat.argmax(-1)
    return np.stack([idx % w, idx // w], -1).astype(np.float64), flat.max(-1)


def quarter_offset(heatmaps: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """MSRA refinement: move a quarter sample towards the higher neighbour on each axis (none at the map's edge)."""
    n, k, h, w = heatmaps.shape
    maps = heatmaps.reshape(n * k, h, w)
    x, y = xy[..., 0].reshape(-1).astype(int), xy[..., 1].reshape(-1).astype(int)
    i = np.arange(n * k)
    xl, xr, yu, yd = np.maximum(x - 1, 0), np.minimum(x + 1, w - 1), np.maximum(y - 1, 0), np.minimum(y + 1, h - 1)
    out = xy.reshape(-1, 2).astype(np.float64)  # a copy
    out[:, 0] += np.where((0 < x) & (x < w - 1), 0.25 * np.sign(maps[i, y, xr] - maps[i, y, xl]), 0.0)
    out[:, 1] += np.where((0 < y) & (y < h - 1), 0.25 * np.sign(maps[i, yd, x] - maps[i, yu, x]), 0.0)
    return out.reshape(xy.shape)


def blur_keep_peak(maps: np.ndarray, kernel: int) -> np.ndarray:
    """DARK's modulation: each (h, w) map blurred by OpenCV's ``kernel``-tap Gaussian with zeros beyond the map (as
    DarkPose and mmpose pad), then rescaled to keep its maximum. A mirrored border (OpenCV's default) would put a ghost
    peak beside a keypoint near the edge and pull the Newton step towards it."""
    if kernel <= 1:
        return maps
    n, h, w = maps.shape
    taps = cv2.getGaussianKernel(kernel, 0).ravel()
    r = kernel // 2
    pad = np.pad(maps, ((0, 0), (r, r), (r, r)))
    rows = sum(t * pad[:, i:i + h, :] for i, t in enumerate(taps))
    blurred = sum(t * rows[:, :, i:i + w] for i, t in enumerate(taps)).astype(np.float32)
    return blurred * (maps.max((1, 2)) / np.maximum(blurred.max((1, 2)), 1e-12))[:, None, None]


def dark_refine(heatmaps: np.ndarray, xy: np.ndarray, blur_kernel: int) -> np.ndarray:
    """DARK: blur (``blur_keep_peak``), take logs, one Newton step of the 2-D quadratic at the argmax ``xy``.

    The step is taken only where it is a step to a maximum near the peak: two samples of room on each side (the
    derivatives need them), a negative definite Hessian, and at most one sample along each axis. Anywhere else (a map
    at the border, flat, or not concave at its argmax, e.g. noise) the keypoint falls back to MSRA's quarter-sample
    rule, so a decoded keypoint never leaves its argmax's neighbourhood.
    """
    n, k, h, w = heatmaps.shape
    maps = blur_keep_peak(heatmaps.reshape(n * k, h, w).astype(np.float32), blur_kernel)
    log = np.log(np.maximum(maps, 1e-10).astype(np.float64))
    x, y = xy[..., 0].reshape(-1).astype(int), xy[..., 1].reshape(-1).astype(int)
    inside = (1 < x) & (x < w - 2) & (1 < y) & (y < h - 2)
    x, y, i = np.clip(x, 2, w - 3), np.clip(y, 2, h - 3), np.arange(n * k)

    def at(dy, dx):
        return log[i, y + dy, x + dx]

    dx = 0.5 * (at(0, 1) - at(0, -1))
    dy = 0.5 * (at(1, 0) - at(-1, 0))
    dxx = 0.25 * (at(0, 2) - 2 * at(0, 0) + at(0, -2))
    dyy = 0.25 * (at(2, 0) - 2 * at(0, 0) + at(-2, 0))
    dxy = 0.25 * (at(1, 1) - at(-1, 1) - at(1, -1) + at(-1, -1))
    det = dxx * dyy - dxy * dxy
    concave = (dxx < 0) & (det > 1e-12)  # negative definite: the quadratic has a maximum, not a saddle or a minimum
    safe = np.where(concave, det, 1.0)
    step = np.stack([(dyy * dx - dxy * dy) / safe, (dxx * dy - dxy * dx) / safe], -1)  # H^-1 g
    ok = inside & concave & (np.abs(step) <= MAX_DARK_STEP).all(-1)
    out = quarter_offset(heatmaps, xy).reshape(-1, 2)
    out[ok] = xy.reshape(-1, 2)[ok] - step[ok]
    return out.reshape(xy.shape)


class GaussianCodec(Codec):
    """Shared Gaussian encoding; ``quantize`` and ``refine`` make it MSRA, DARK or SR."""

    def __init__(self, input_size, heatmap_size, grid=None, sigma: float | None = None, quantize: bool = False,
                 refine: str = "dark", blur_kernel: int = 11, truncate: float | None = None):
        super().__init__(input_size, heatmap_size, grid)
        self.sigma = float(sigma) if sigma is not None else self.heatmap_size[1] / 24
        check_positive(sigma=self.sigma)
        if refine not in ("none", "quarter", "dark"):
            raise ValueError(f"refine must be 'none', 'quarter' or 'dark', got {refine!r}")
        if blur_kernel < 1 or blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be an odd size >= 1, got {blur_kernel}")
        self.quantize, self.refine, self.blur_kernel, self.truncate = quantize, refine, blur_kernel, truncate

    def encode(self, keypoints, visible=None) -> dict:
        keypoints, valid = self._check(keypoints, visible)
        uv = self.to_heatmap(np.where(np.isfinite(keypoints), keypoints, 0.0))
        if self.quantize:
            uv = np.floor(uv + 0.5)
        valid = valid & within_reach(uv, self.heatmap_size, self.sigma)
        radius = self.truncate * self.sigma if self.truncate is not None else None
        target = gaussian_heatmaps(uv, valid, self.heatmap_size, self.sigma, radius)
        return {"target": target, "target_weight": valid.astype(np.float32)}

    def decode(self, output):
        heat = self._check_output(output)
        xy, scores = argmax_2d(heat)
        if self.refine == "quarter":
            xy = quarter_offset(heat, xy)
        elif self.refine == "dark":
            xy = dark_refine(heat, xy, self.blur_kernel)
        return self.to_input(xy), scores.astype(np.float32)


class MSRACodec(GaussianCodec):
    name = "msra"

    def __init__(self, input_size, heatmap_size, grid=None, sigma=None, legacy_flip_shift: bool = False):
        super().__init__(input_size, heatmap_size, grid, sigma, quantize=True, refine="quarter", truncate=3.0)
        self.legacy_flip_shift = legacy_flip_shift

    def flip_centre(self) -> float:
        # The original pipeline shifts flipped heatmaps by one whole sample; the exact mirror is c = (W-1-2b)/a.
        return float(self.heatmap_size[1]) if self.legacy_flip_shift else super().flip_centre()


class DARKCodec(GaussianCodec):
    name = "dark"

    def __init__(self, input_size, heatmap_size, grid=None, sigma=None, blur_kernel: int = 11):
        super().__init__(input_size, heatmap_size, grid, sigma, quantize=False, refine="dark", blur_kernel=blur_kernel)


class SRCodec(GaussianCodec):
    """Targets on a super-resolution head's grid (e.g. stride 1). ``grid``: the model's output map, e.g.
    ``create_model(..., head='sr').output_position_map()`` (pixel o at x = o - 1.5 for HRNet with upscale 4)."""

    name = "sr"

    def __init__(self, input_size, heatmap_size, grid=None, sigma=None, refine: str = "none", blur_kernel: int = 11):
        super().__init__(input_size, heatmap_size, grid, sigma, quantize=False, refine=refine,
                         blur_kernel=blur_kernel)
