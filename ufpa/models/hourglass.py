"""Stacked hourglass networks (Newell, Yang, Deng: Stacked Hourglass Networks for Human Pose Estimation, ECCV 2016).

A stride-4 stem, then stacks of hourglasses with intermediate supervision. Each hourglass level fuses a skip branch
with a branch that was pooled by 2 and upsampled by 2, recursively ``depth`` times. A 2x2/stride-2 max pool puts
its output o at 2*o + 1/2 of its input, and nearest x2 upsampling copies floor(o/2): the published fusion is off by
half a sample at every level (+-S/2 input px at stride S), and the stem's 2x2 pool puts the heatmap grid at 4*o + 1.

=================  ============================================  =================================================
alignment          downsampling / upsampling                     valid input sizes (per axis)
=================  ============================================  =================================================
baseline           max pool 2x2 / nearest x2                     multiples of 4*2^depth
bilinear           max pool 2x2 / bilinear x2, align_corners=F   multiples of 4*2^depth (pixel-area grids: aligned)
bilinear_corners   max pool 2x2 / bilinear align_corners=True    any (>= 4*2^depth)
ufpa               max pool 3x3 s2 p1 / align_corners=True,      4*2^depth*m + 1 (e.g. 257x193 for depth 4)
                   replicate padding
ufpa_any           max pool 3x3 s2 p1 / size-free x = o/2        any (>= 4*2^depth)
learned            max pool 2x2 / nearest x2 + learned offsets   multiples of 4*2^depth
=================  ============================================  =================================================

Pooling has no parameters, so every parameter-free variant has the baseline's parameter count; 'learned' adds the
zero-initialised offset weights of ``_layers.LearnedResample`` at every level.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .. import geometry
from ._layers import BN_MOMENTUM, check_input_size, conv_bn, make_resample, padding_mode
from ._registry import register_model
from .heads import HeatmapHead, build_head


@dataclass(frozen=True)
class HourglassSpec:
    stacks: int  # hourglasses in sequence
    depth: int = 4  # pool/upsample levels per hourglass
    features: int = 256  # channels between hourglasses
    blocks: int = 1  # residual blocks per position in an hourglass


class Residual(nn.Module):
    """Pre-activation bottleneck of the stacked hourglass (cin -> cout, width cout/2)."""

    def __init__(self, cin, cout, padding_mode):
        super().__init__()
        mid = cout // 2
        self.body = nn.Sequential(
            nn.BatchNorm2d(cin, momentum=BN_MOMENTUM), nn.ReLU(inplace=False), nn.Conv2d(cin, mid, 1),
            nn.BatchNorm2d(mid, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, padding_mode=padding_mode),
            nn.BatchNorm2d(mid, momentum=BN_MOMENTUM), nn.ReLU(inplace=True), nn.Conv2d(mid, cout, 1))
        self.skip = None if cin == cout else nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.body(x) + (x if self.skip is None else self.skip(x))


def _residuals(channels, count, padding_mode):
    return nn.Sequential(*[Residual(channels, channels, padding_mode) for _ in range(count)])


def _pool(alignment):
    if alignment in ("ufpa", "ufpa_any"):
        return nn.MaxPool2d(3, stride=2, padding=1)  # offset-free, like a strided 3x3 conv
    return nn.MaxPool2d(2, stride=2)


class Hourglass(nn.Module):
    def __init__(self, depth, channels, blocks, alignment, padding_mode):
        super().__init__()
        self.skip = _residuals(channels, blocks, padding_mode)
        self.pool = _pool(alignment)
        self.down = _residuals(channels, blocks, padding_mode)
        self.inner = (Hourglass(depth - 1, channels, blocks, alignment, padding_mode) if depth > 1
                      else _residuals(channels, blocks, padding_mode))
        self.up = _residuals(channels, blocks, padding_mode)
        self.resample = make_resample(alignment, 2, channels, channels)

    def forward(self, x):
        low = self.up(self.inner(self.down(self.pool(x))))
        return self.skip(x) + self.resample(low, x)


class StackedHourglass(nn.Module):
    def __init__(self, spec: HourglassSpec, num_keypoints=17, alignment="baseline", head="heatmap",
                 input_size=(256, 192), upscale=4, padding=None):
        super().__init__()
        check_input_size(alignment, input_size, 4 * 2**spec.depth, f"a depth-{spec.depth} hourglass")
        self.spec, self.alignment, self.input_size = spec, alignment, tuple(input_size)
        pad, f = padding_mode(alignment, padding), spec.features
        self.stem = nn.Sequential(conv_bn(3, 64, 7, 2, pad), Residual(64, 128, pad), _pool(alignment),
                                  Residual(128, 128, pad), Residual(128, f, pad))
        self.hourglasses = nn.ModuleList(Hourglass(spec.depth, f, spec.blocks, alignment, pad)
                                         for _ in range(spec.stacks))
        self.features = nn.ModuleList(nn.Sequential(_residuals(f, spec.blocks, pad), conv_bn(f, f, 1))
                                      for _ in range(spec.stacks))
        # Intermediate supervision: every stack but the last predicts heatmaps and feeds them back.
        self.scores = nn.ModuleList(HeatmapHead(f, num_keypoints) for _ in range(spec.stacks - 1))
        self.remap_features = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(spec.stacks - 1))
        self.remap_scores = nn.ModuleList(nn.Conv2d(num_keypoints, f, 1) for _ in range(spec.stacks - 1))
        self.head = build_head(head, f, num_keypoints, upscale, pad)
        self.num_keypoints, self.head_kind = num_keypoints, head

    def forward_stacks(self, x) -> list:
        """Heatmaps of every stack (for intermediate supervision); the last entry is the head's output."""
        x = self.stem(x)
        outputs = []
        for i, (hourglass, features) in enumerate(zip(self.hourglasses, self.features)):
            y = features(hourglass(x))
            if i == len(self.hourglasses) - 1:
                outputs.append(self.head(y))
            else:
                score = self.scores[i](y)
                outputs.append(score)
                x = x + self.remap_features[i](y) + self.remap_scores[i](score)
        return outputs

    def forward(self, x):
        return self.forward_stacks(x)[-1]

    @property
    def output_stride(self) -> float:
        return 4 / self.head.upscale

    def output_position_map(self) -> geometry.PositionMap:
        """Input-pixel position of output sample o along either axis."""
        pool = geometry.conv(3, 2, 1) if self.alignment in ("ufpa", "ufpa_any") else geometry.conv(2, 2, 0)
        return geometry.conv(7, 2, 3).then(pool).then(self.head.position_map())

    def output_size(self) -> tuple[int, int]:
        pm = self.output_position_map()
        return tuple(pm.out_size(n) for n in self.input_size)


@register_model(total_stride=64)  # 4 * 2**depth
def hourglass_4(**kwargs):
    """4 stacks, depth 4, 256 features."""
    return StackedHourglass(HourglassSpec(stacks=4), **kwargs)


@register_model(total_stride=64)
def hourglass_8(**kwargs):
    """8 stacks, depth 4, 256 features."""
    return StackedHourglass(HourglassSpec(stacks=8), **kwargs)


@register_model
def hourglass_small(**kwargs):
    """A CPU preset: 2 stacks, depth 3, 64 features."""
    return StackedHourglass(HourglassSpec(stacks=2, depth=3, features=64), **kwargs)
