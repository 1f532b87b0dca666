"""Keypoint codecs under one contract (see ``ufpa.codecs._base``): ``create_codec(name, input_size, heatmap_size,
**opts)`` and ``list_codecs()``."""

from __future__ import annotations

import numpy as np

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


__all__ = ["COCO_FLIP_PAIRS", "Codec", "create_codec", "list_codecs", "roundtrip_errors", "unbiased_grid"]
