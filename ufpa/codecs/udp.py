"""Heatmap + offset codec, as the UFPA/UDP code trains it.

Output layout (N, 3K, h, w): K Gaussian heatmaps, K x-offsets, K y-offsets (``ufpa.models.heads.UDPHead``; the UFPA
code interleaves the offsets as x_0, y_0, x_1, ..., which ``ufpa.models.official`` reorders on import). Offsets
hold (keypoint - sample) / ``locref_stdev`` in heatmap samples, within ``kpd`` samples of the keypoint; the loss
weights them by the target heatmap (``offset_weight``). Decoding takes the argmax sample and adds
``locref_stdev * offset`` there, so a perfect output decodes exactly (defaults LOCREF_STDEV 1.0, KPD 4.0).

A keypoint trains while its Gaussian reaches the map (``within_reach``), as in the UFPA code: one just off the map
still gets its partial Gaussian and the offsets that point from the border samples to it. Decoding clips the offset at
the argmax to ``kpd`` samples, the longest offset ever trained, so a decoded keypoint stays within ``kpd`` samples of
the map whatever the output holds.
"""

from __future__ import annotations

import numpy as np

from ._base import Codec, check_positive
from .heatmap import argmax_2d, gaussian_heatmaps, within_reach


class UDPCodec(Codec):
    name = "udp"
    channels_per_keypoint = 3

    def __init__(self, input_size, heatmap_size, grid=None, sigma: float | None = None, locref_stdev: float = 1.0,
                 kpd: float = 4.0):
        super().__init__(input_size, heatmap_size, grid)
        self.sigma = float(sigma) if sigma is not None else self.heatmap_size[1] / 24
        check_positive(sigma=self.sigma, locref_stdev=float(locref_stdev), kpd=float(kpd))
        self.locref_stdev, self.kpd = float(locref_stdev), float(kpd)

    def encode(self, keypoints, visible=None) -> dict:
        keypoints, valid = self._check(keypoints, visible)
        uv = self.to_heatmap(np.where(np.isfinite(keypoints), keypoints, 0.0))
        h, w = self.heatmap_size
        valid = valid & within_reach(uv, self.heatmap_size, self.sigma)
        heat = gaussian_heatmaps(uv, valid, self.heatmap_size, self.sigma, None)
        xs, ys = np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64)
        dx = uv[..., 0, None, None] - xs[None, None, None, :]
        dy = uv[..., 1, None, None] - ys[None, None, :, None]
        near = (dx**2 + dy**2 <= self.kpd**2) & valid[..., None, None]
        off_x = np.where(near, dx / self.locref_stdev, 0.0)
        off_y = np.where(near, dy / self.locref_stdev, 0.0)
        target = np.concatenate([heat, off_x, off_y], axis=1).astype(np.float32)
        offset_weight = np.where(near, heat, 0.0).astype(np.float32)
        return {"target": target, "target_weight": valid.astype(np.float32), "offset_weight": offset_weight}

    def decode(self, output):
        output = self._check_output(output)
        k = output.shape[1] // 3
        heat, off_x, off_y = output[:, :k], output[:, k:2 * k], output[:, 2 * k:]
        xy, scores = argmax_2d(heat)
        n = np.arange(output.shape[0])[:, None]
        j = np.arange(k)[None, :]
        xi, yi = xy[..., 0].astype(int), xy[..., 1].astype(int)
        offset = self.locref_stdev * np.stack([off_x[n, j, yi, xi], off_y[n, j, yi, xi]], -1)
        xy = xy + np.clip(offset, -self.kpd, self.kpd)
        return self.to_input(xy), scores.astype(np.float32)

    def _flip_groups(self, groups):
        groups = groups.copy()
        groups[:, 1] = -groups[:, 1]  # x-offsets point the other way after a horizontal flip
        return groups
