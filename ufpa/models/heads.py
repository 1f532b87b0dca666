"""Output heads. Each declares its ``upscale`` (output samples per feature sample) and the ``ufpa.geometry`` map of
its output grid in the feature map it reads, so codecs can decode on the exact grid.

- ``heatmap``: 1x1 conv to K heatmaps (SimpleBaseline/HRNet).
- ``udp``: 1x1 conv to K heatmaps + K x-offsets + K y-offsets (codec ``udp``; the official UFPA code interleaves the
  offsets as x_0, y_0, x_1, ..., which ``ufpa_official`` maps to this layout).
- ``sr``: SRPose-style super-resolution head: 1x1 conv to K low-resolution heatmaps, a grouped 3x3 conv (one group
  per keypoint) to K*r^2 channels and pixel shuffle by r: heatmaps at r times the feature resolution.
- ``duc``: EFASNet-style dense upsampling convolution: 3x3 conv to K*r^2 channels and pixel shuffle by r.
- ``ufpa_official`` (HRNet only): the official UFPA code's head, a 1x1 conv to the ``udp`` layout that reads HRNet's
  last fusion widened to 4*C0 channels (see ``UFPAOfficialHead``).
- ``wide_heatmap`` (HRNet only): the ``heatmap`` head on that same widened last fusion. Heatmap codecs (msra, dark)
  then train the network ``ufpa_official`` trains under udp, so a codec comparison is not also a capacity comparison.

Pixel shuffle puts the r sub-pixels of feature sample i at ``i - 1/2 + (t + 1/2)/r`` (``geometry.pixel_shuffle``): with
features at stride 4 and r = 4 the heatmap pixel o sits at input x = o - 1.5, not o.
"""

from __future__ import annotations

from torch import nn

from .. import geometry

HEADS = ("heatmap", "udp", "sr", "duc")  # heads every architecture builds
WIDE_HEADS = ("ufpa_official", "wide_heatmap")  # they widen HRNet's last module, so only HRNet builds them
HRNET_HEADS = HEADS + WIDE_HEADS
OFFSET_HEADS = ("udp", "ufpa_official")  # output [K heatmaps, K x-offsets, K y-offsets]: decoded by codec 'udp'


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


class UFPAOfficialHead(UDPHead):
    """The official UFPA code's head: one 1x1 conv (with bias) from HRNet's widened last fusion (``widen`` * C0
    channels, built by ``ufpa.models.hrnet``) to 3K channels, in the ``udp`` layout: K heatmaps, K x-offsets, K
    y-offsets.

    The official code orders the same 3K channels [K heatmaps, x_0, y_0, x_1, y_1, ...] (on flip, its ``validate``
    negates offset channels 0::2, the x ones). Why this head permutes the conv's rows once, on import, rather than its
    output on every forward: the forward stays one conv (nothing extra for torch.fx, the audit, CUDA graphs or
    channels_last), and the loss, codec ``udp`` and its flip-back read it as they read ``udp``. ``official_order`` is
    the permutation; ``ufpa.models.official`` applies it to the official ``final_layer`` on import (its inverse on
    export), so imported weights map exactly, row for row, and no parameter is added.
    """

    widen = 4  # the official last fusion widens branch 0 from C0 to 4*C0 channels

    @staticmethod
    def official_order(num_keypoints: int) -> list[int]:
        """The official channel each channel of this head holds: heatmaps 0..K-1, then x_k = K + 2k, y_k = K + 2k + 1.
        """
        k = num_keypoints
        return list(range(k)) + list(range(k, 3 * k, 2)) + list(range(k + 1, 3 * k, 2))


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
    if kind in HRNET_HEADS:
        raise ValueError(f"head {kind!r} widens HRNet's last fusion, so only HRNet builds it: use an hrnet_* model "
                         f"(ufpa.models.list_models('hrnet*')) or one of {HEADS}")
    raise ValueError(f"unknown head {kind!r}; choose one of {HEADS}")
