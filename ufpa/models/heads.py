"""Output heads. Each declares its ``upscale`` (output samples per feature sample) and the ``ufpa.geometry`` map of
its output grid in the feature map it reads, so codecs can decode on the exact grid.

- ``heatmap``: 1x1 conv to K heatmaps (SimpleBaseline/HRNet).
- ``udp``: 1x1 conv to K heatmaps + K x-offsets + K y-offsets, the layout of the UFPA/UDP code.
- ``sr``: SRPose-style super-resolution head: 1x1 conv to K low-resolution heatmaps, a grouped 3x3 conv (one group
  per keypoint) to K*r^2 channels and pixel shuffle by r: heatmaps at r times the feature resolution.
- ``duc``: EFASNet-style dense upsampling convolution: 3x3 conv to K*r^2 channels and pixel shuffle by r.

Pixel shuffle puts the r sub-pixels of feature sample i at ``i - 1/2 + (t + 1/2)/r`` (``geometry.pixel_shuffle``): with
features at stride 4 and r = 4 the heatmap pixel o sits at input x = o - 1.5, not o.
"""

from __future__ import annotations

from torch import nn

from .. import geometry

HEADS = ("heatmap", "udp", "sr", "duc")


class HeatmapHead(nn.Module):
    upscale = 1

    def __init__(self, in_channels: int, num_keypoints: int, channels_per_keypoint: int = 1):
        super().__init__()
        self.num_keypoints = num_keypoints
        self.conv = nn.Conv2d(in_channels, num_keypoints * channels_per_keypoint, 1)

    def forward(self, x):
        return self.conv(x)

    def position_map(self) -> geometry.PositionMap:
        return geometry.identity()


class UDPHead(HeatmapHead):
    """Channels: K heatmaps, then K x-offsets, then K y-offsets."""

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__(in_channels, num_keypoints, channels_per_keypoint=3)


class _ShuffleHead(nn.Module):
    def __init__(self, upscale: int):
        super().__init__()
        if upscale < 1:
            raise ValueError(f"upscale must be >= 1, got {upscale}")
        self.upscale = int(upscale)
        self.shuffle = nn.PixelShuffle(self.upscale)

    def position_map(self) -> geometry.PositionMap:
        return geometry.conv(3, 1, 1).then(geometry.pixel_shuffle(self.upscale))


class SRHead(_ShuffleHead):
    def __init__(self, in_channels: int, num_keypoints: int, upscale: int = 4, padding_mode: str = "zeros"):
        super().__init__(upscale)
        self.num_keypoints = num_keypoints
        self.reduce = nn.Conv2d(in_channels, num_keypoints, 1)
        self.expand = nn.Conv2d(num_keypoints, num_keypoints * self.upscale**2, 3, padding=1, groups=num_keypoints,
                                padding_mode=padding_mode)

    def forward(self, x):
        return self.shuffle(self.expand(self.reduce(x)))

    def position_map(self) -> geometry.PositionMap:
        return geometry.conv(1).then(super().position_map())


class DUCHead(_ShuffleHead):
    def __init__(self, in_channels: int, num_keypoints: int, upscale: int = 4, padding_mode: str = "zeros"):
        super().__init__(upscale)
        self.num_keypoints = num_keypoints
        self.conv = nn.Conv2d(in_channels, num_keypoints * self.upscale**2, 3, padding=1, padding_mode=padding_mode)

    def forward(self, x):
        return self.shuffle(self.conv(x))


def build_head(kind: str, in_channels: int, num_keypoints: int, upscale: int = 4,
               padding_mode: str = "zeros") -> nn.Module:
    if kind == "heatmap":
        return HeatmapHead(in_channels, num_keypoints)
    if kind == "udp":
        return UDPHead(in_channels, num_keypoints)
    if kind == "sr":
        return SRHead(in_channels, num_keypoints, upscale, padding_mode)
    if kind == "duc":
        return DUCHead(in_channels, num_keypoints, upscale, padding_mode)
    raise ValueError(f"unknown head {kind!r}; choose one of {HEADS}")
