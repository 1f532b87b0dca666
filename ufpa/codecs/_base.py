"""The codec contract (mmpose 1.x style): one object configures both training targets and decoding.

Shapes: N instances, K keypoints, C output channels, (h, w) output grid, (H, W) model input. Keypoints are (x, y) in
input-image pixels, with pixel i's centre at x = i (``ufpa.geometry``'s convention). Sizes are (H, W) everywhere.

- ``encode(keypoints (N, K, 2), visible (N, K)) -> dict``: ``target`` (N, C, h, w) in the model's output layout and
  ``target_weight`` (N, K); codecs may add more (e.g. ``offset_weight``).
- ``decode(output (N, C, h, w)) -> (keypoints (N, K, 2) in input pixels, scores (N, K))``, so
  ``decode(encode(k, v)['target'])`` is a round trip.
- ``flip_back(output, flip_pairs) -> output``: turns the output for a horizontally flipped input into one for the
  original input (pairs swapped, x-offsets negated, the grid mirrored exactly).

Where output sample o sits in the input comes from an affine ``ufpa.geometry`` map per axis (``grid``), by default the
unbiased mapping of UDP (unit length size - 1: x = o * (W - 1) / (w - 1)). Pass a model's ``output_position_map()``
and a head whose grid is offset (SimpleBaseline's deconvolutions, pixel-shuffle heads) decodes exactly.
"""

from __future__ import annotations

import numpy as np

from .. import geometry


def _as_numpy(output) -> np.ndarray:
    if hasattr(output, "detach"):
        output = output.detach().float().cpu().numpy()
    return np.asarray(output, dtype=np.float32)


def check_positive(**values) -> None:
    """Codec settings that must be finite and > 0 (a NaN passes a ``<= 0`` check, so test finiteness first)."""
    for name, value in values.items():
        if value is None or not np.isfinite(value) or value <= 0:
            raise ValueError(f"{name}={value!r}: must be a finite number > 0")


def unbiased_grid(input_len: int, output_len: int) -> geometry.PositionMap:
    """UDP's mapping along one axis: a corner-aligned resize of the input onto the output, x = o (W-1)/(w-1)."""
    return geometry.resize(input_len, output_len, align_corners=True)


class Codec:
    """Base class: grid bookkeeping, validation and flip-back; subclasses encode and decode."""

    name = "codec"
    channels_per_keypoint = 1

    def __init__(self, input_size, heatmap_size, grid=None):
        self.input_size = _pair(input_size, "input_size")
        self.heatmap_size = _pair(heatmap_size, "heatmap_size")
        if grid is None:
            grid = tuple(unbiased_grid(n, m) for n, m in zip(self.input_size, self.heatmap_size))
        elif isinstance(grid, geometry.PositionMap):
            grid = (grid, grid)
        if len(grid) != 2 or not all(isinstance(g, geometry.PositionMap) and g.is_affine for g in grid):
            raise ValueError("grid must be an affine ufpa.geometry map (or an (H, W) pair of them), e.g. a model's "
                             "output_position_map()")
        self.grid = tuple(grid)
        # (scale, offset) per axis, in (x, y) order for keypoint arithmetic
        self._a = np.array([grid[1].scale, grid[0].scale], dtype=np.float64)
        self._b = np.array([grid[1].offset, grid[0].offset], dtype=np.float64)

    # --- coordinates ------------------------------------------------------------------------------------------------
    def to_heatmap(self, keypoints: np.ndarray) -> np.ndarray:
        """Input-pixel (x, y) -> heatmap index coordinates (u, v)."""
        return (np.asarray(keypoints, dtype=np.float64) - self._b) / self._a

    def to_input(self, uv: np.ndarray) -> np.ndarray:
        return np.asarray(uv, dtype=np.float64) * self._a + self._b

    def _check(self, keypoints, visible):
        keypoints = np.asarray(keypoints, dtype=np.float64)
        if keypoints.ndim != 3 or keypoints.shape[-1] != 2:
            raise ValueError(f"keypoints must be (N, K, 2) as (x, y), got shape {keypoints.shape}")
        if visible is None:
            visible = np.ones(keypoints.shape[:2])
        visible = np.asarray(visible, dtype=np.float64)
        if visible.shape != keypoints.shape[:2]:
            raise ValueError(f"visible must be (N, K) = {keypoints.shape[:2]}, got {visible.shape}")
        if not np.isfinite(visible).all():
            raise ValueError("visible holds NaN or inf; use 0 (unlabelled), 1 (occluded) or 2 (visible)")
        bad = (visible > 0) & ~np.isfinite(keypoints).all(-1)
        if bad.any():  # a labelled keypoint at NaN is garbage, not an unlabelled one
            raise ValueError(f"{int(bad.sum())} labelled keypoints are NaN or inf; mark unlabelled keypoints with "
                             "visible 0 instead")
        return keypoints, visible > 0

    def _check_output(self, output) -> np.ndarray:
        output = _as_numpy(output)
        h, w = self.heatmap_size
        if output.ndim != 4 or output.shape[2:] != (h, w) or output.shape[1] % self.channels_per_keypoint:
            raise ValueError(f"{self.name} decodes (N, C, {h}, {w}) outputs with C a multiple of "
                             f"{self.channels_per_keypoint}, got shape {output.shape}")
        bad = ~np.isfinite(output)
        if bad.any():  # argmax would land on a NaN and report it as a keypoint
            raise ValueError(f"{self.name} cannot decode an output with {int(bad.sum())} non-finite values (NaN or "
                             f"inf) in {int(bad.any(axis=(1, 2, 3)).sum())} of {len(output)} items: the model "
                             "diverged or its input was bad; check the loss curve and the input before decoding")
        return output

    # --- flip ------------------------------------------------------------------------------------------------------
    def flip_centre(self) -> float:
        """c such that the flipped-back output is F(c - o): the grid mirrored about the input's centre."""
        return geometry.mirror_index(self._a[0], self._b[0], self.input_size[1])

    def flip_back(self, output, flip_pairs) -> np.ndarray:
        """Output for a horizontally flipped input -> output for the original input."""
        output = self._check_output(output)
        k = output.shape[1] // self.channels_per_keypoint
        order = np.arange(k)
        for a, b in flip_pairs:
            order[a], order[b] = b, a
        w = output.shape[-1]
        mirrored = geometry.sample_linear(output, self.flip_centre() - np.arange(w, dtype=np.float64))  # F(c - o)
        groups = mirrored.reshape(output.shape[0], self.channels_per_keypoint, k, *output.shape[2:])
        groups = groups[:, :, order]
        groups = self._flip_groups(groups)
        return groups.reshape(output.shape).astype(np.float32)

    def _flip_groups(self, groups: np.ndarray) -> np.ndarray:
        return groups

    # --- to implement --------------------------------------------------------------------------------------------
    def encode(self, keypoints, visible=None) -> dict:
        raise NotImplementedError

    def decode(self, output) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def _pair(value, what) -> tuple[int, int]:
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 2:
        raise ValueError(f"{what} must be (H, W) with both sizes >= 2, got {value!r}")
    return value
