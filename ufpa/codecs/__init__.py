"""Keypoint codecs under one contract (see ``ufpa.codecs._base``): ``create_codec(name, input_size, heatmap_size,
**opts)`` and ``list_codecs()``."""

from __future__ import annotations

import numpy as np

from .. import geometry
from ._base import Codec, unbiased_grid
from .heatmap import DARKCodec, MSRACodec, SRCodec
from .udp import UDPCodec

_CODECS = {"msra": MSRACodec, "dark": DARKCodec, "udp": UDPCodec, "sr": SRCodec}

# COCO's 17 keypoints: left/right pairs (0-indexed) that swap under a horizontal flip.
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))


def list_codecs() -> list[str]:
    return sorted(_CODECS)


def create_codec(name: str, input_size, heatmap_size, **opts) -> Codec:
    """Build a codec. ``input_size`` and ``heatmap_size`` are (H, W); ``grid=`` takes a model's output map."""
    if name not in _CODECS:
        raise ValueError(f"unknown codec {name!r}; choose one of {list_codecs()}")
    return _CODECS[name](input_size, heatmap_size, **opts)


def roundtrip_errors(name: str, n: int = 500, seed: int = 0, input_size=(256, 192), heatmap_size=(64, 48),
                     margin: float = 0.1, **opts) -> np.ndarray:
    """End-point errors (heatmap samples) of decode(encode(k)) for ``n`` random sub-pixel keypoints kept ``margin``
    of the map away from the borders."""
    codec = create_codec(name, input_size, heatmap_size, **opts)
    rng = np.random.default_rng(seed)
    h, w = codec.heatmap_size
    uv = np.stack([rng.uniform(margin * (w - 1), (1 - margin) * (w - 1), n),
                   rng.uniform(margin * (h - 1), (1 - margin) * (h - 1), n)], -1)[:, None, :]
    keypoints = codec.to_input(uv)
    decoded, _ = codec.decode(codec.encode(keypoints, np.ones((n, 1)))["target"])
    return np.linalg.norm(codec.to_heatmap(decoded) - uv, axis=-1)[:, 0]


def border_keypoints(heatmap_size, distance: float, n: int = 9) -> np.ndarray:
    """Heatmap (u, v) ``distance`` samples inside each of the four borders, ``n`` spread along each: (4n, 1, 2)."""
    h, w = heatmap_size
    along_x, along_y = np.linspace(3.3, w - 4.3, n), np.linspace(3.3, h - 4.3, n)
    sides = [np.stack([np.full(n, distance), along_y], -1), np.stack([np.full(n, w - 1 - distance), along_y], -1),
             np.stack([along_x, np.full(n, distance)], -1), np.stack([along_x, np.full(n, h - 1 - distance)], -1)]
    return np.concatenate(sides)[:, None]


def border_roundtrip(name: str, distances=(0, 0.5, 1, 1.5, 2, 3, 4), input_size=(256, 192), heatmap_size=(64, 48),
                     **opts) -> np.ndarray:
    """Worst |error| along either axis (heatmap samples) of decode(encode(k)) for keypoints at each of ``distances``
    samples from the map's borders (all four, ``border_keypoints``): where a codec's border handling shows."""
    codec = create_codec(name, input_size, heatmap_size, **opts)
    out = []
    for d in distances:
        uv = border_keypoints(codec.heatmap_size, d)
        decoded, _ = codec.decode(codec.encode(codec.to_input(uv))["target"])
        out.append(np.abs(codec.to_heatmap(decoded) - uv).max())
    return np.array(out)


def subpixel_sweep(name: str, steps: int = 21, input_size=(256, 192), heatmap_size=(64, 48), **opts):
    """Round-trip error against the sub-pixel position of a keypoint: x moves across one heatmap sample (y fixed
    at a sample centre), returning (fractions (steps,), signed x errors (steps,), in heatmap samples)."""
    codec = create_codec(name, input_size, heatmap_size, **opts)
    h, w = codec.heatmap_size
    frac = np.linspace(0, 1, steps)
    uv = np.stack([w // 2 + frac, np.full(steps, h // 2)], -1)[:, None]
    decoded, _ = codec.decode(codec.encode(codec.to_input(uv), np.ones((steps, 1)))["target"])
    return frac, (codec.to_heatmap(decoded) - uv)[:, 0, 0]


def flip_error(name: str, n: int = 200, seed: int = 0, input_size=(256, 192), heatmap_size=(64, 48),
               **opts) -> np.ndarray:
    """|decode(flip_back(encode(mirrored keypoints))) - decode(encode(keypoints))| in input pixels, per keypoint."""
    direct, back, _ = _flip_pair(name, n, seed, input_size, heatmap_size, **opts)
    return np.linalg.norm(back - direct, axis=-1).reshape(-1)


def flip_bias(name: str, n: int = 200, seed: int = 0, input_size=(256, 192), heatmap_size=(64, 48),
              **opts) -> dict:
    """The flipped-back decode against the true keypoints along x (input px): mean (the bias a flip test adds) and
    standard deviation (the codec's own quantisation), beside the same for the direct decode."""
    direct, back, truth = _flip_pair(name, n, seed, input_size, heatmap_size, **opts)
    flipped, plain = (back - truth)[..., 0].reshape(-1), (direct - truth)[..., 0].reshape(-1)
    return {"flipped_bias_x_px": float(flipped.mean()), "flipped_sd_x_px": float(flipped.std()),
            "direct_bias_x_px": float(plain.mean()), "direct_sd_x_px": float(plain.std())}


def _flip_pair(name, n, seed, input_size, heatmap_size, **opts):
    codec = create_codec(name, input_size, heatmap_size, **opts)
    H, W = codec.input_size
    rng = np.random.default_rng(seed)
    k = np.stack([rng.uniform(0.2 * W, 0.8 * W, (n, 17)), rng.uniform(0.2 * H, 0.8 * H, (n, 17))], -1)
    order = np.arange(17)
    for a, b in COCO_FLIP_PAIRS:
        order[a], order[b] = b, a
    mirrored = k[:, order].copy()
    mirrored[..., 0] = geometry.mirror(mirrored[..., 0], W)
    direct, _ = codec.decode(codec.encode(k)["target"])
    back, _ = codec.decode(codec.flip_back(codec.encode(mirrored)["target"], COCO_FLIP_PAIRS))
    return direct, back, k


__all__ = ["COCO_FLIP_PAIRS", "Codec", "border_keypoints", "border_roundtrip", "create_codec", "flip_error",
           "list_codecs", "roundtrip_errors", "subpixel_sweep", "unbiased_grid"]
