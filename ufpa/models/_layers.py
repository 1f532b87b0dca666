"""Building blocks shared by the architectures: alignment-aware resampling and convolutions."""

from __future__ import annotations

import torch
from torch import nn

from .. import geometry, ops

# How each alignment variant upsamples where paths meet (a geometry / ops mode name).
UPSAMPLE_MODE = {"baseline": "nearest", "bilinear": "bilinear", "bilinear_corners": "bilinear_corners",
                 "ufpa": "bilinear_corners", "ufpa_any": "aligned"}
# The paper's strategy pads 3x3 convs by replicating the border; the other variants keep zeros.
PADDING_MODE = {"baseline": "zeros", "bilinear": "zeros", "bilinear_corners": "zeros", "ufpa": "replicate",
                "ufpa_any": "zeros"}
BN_MOMENTUM = 0.1


def conv3x3(cin: int, cout: int, stride: int = 1, padding_mode: str = "zeros", bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias, padding_mode=padding_mode)


def conv_bn(cin, cout, kernel, stride=1, padding_mode="zeros", relu=True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False, padding_mode=padding_mode),
              nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Resample(nn.Module):
    """Parameter-free upsampling of a source tensor onto the grid of a target tensor (``like``).

    ``mode`` is a ``geometry.UPSAMPLE_MODES`` name; :meth:`position_map` gives the ``ufpa.geometry`` map of one
    axis, which the audit uses, so the model and the algebra name the same grid.
    """

    def __init__(self, mode: str, factor: int):
        super().__init__()
        if mode not in geometry.UPSAMPLE_MODES:
            raise ValueError(f"unknown upsample mode {mode!r}; choose one of {geometry.UPSAMPLE_MODES}")
        self.mode, self.factor = mode, int(factor)

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return ops.upsample(x, self.mode, self.factor, like.shape[-2:])

    def position_map(self, in_size: int, out_size: int) -> geometry.PositionMap:
        return geometry.upsample(self.mode, in_size, out_size, self.factor)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, factor={self.factor}"
