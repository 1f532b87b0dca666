"""HRNet for pose estimation (Sun, Xiao, Liu, Wang: Deep High-Resolution Representation Learning for Human Pose
Estimation, CVPR 2019), with the feature-position alignment variants of Wang et al. (Neurocomputing 537, 2023).

Topology as in the paper's pose_hrnet: a stride-4 stem (two 3x3/stride-2 convs), a bottleneck stage, then stages of
high-resolution modules with 2, 3 and 4 branches (branch l at stride 4*2^l, made by 3x3/stride-2 convs, so its sample
o sits at input x = 4*2^l*o exactly). Each module fuses all branches: higher-resolution branches come down through
3x3/stride-2 convs (aligned), lower-resolution ones come up through a 1x1 conv and an upsampling that the
``alignment`` variant chooses:

=================  =========================================================  ===========================
alignment          upsampling (geometry map)                                  valid input sizes (per axis)
=================  =========================================================  ===========================
baseline           nearest x2^k: x = floor(o/2^k)                             multiples of 32
bilinear           bilinear x2^k, align_corners=False: x = (o+1/2)/2^k - 1/2  multiples of 32
bilinear_corners   bilinear to the target size, align_corners=True            any
ufpa               as bilinear_corners, replicate padding: exact at 32m+1     32m+1 (e.g. 257x193)
ufpa_any           size-free x = o/2^k (``ops.aligned_upsample``)             any
learned            nearest's floor(o/2^k) plus learned offsets                multiples of 32
=================  =========================================================  ===========================

No parameter-free variant adds or removes a parameter; 'learned' (``_layers.LearnedResample``) adds offset weights
at every upsampling fusion, all zero at the start, so it starts as the baseline. Shift errors per variant are derived
in notebook 01 and measured in models by ``ufpa.audit``; what 'learned' learns is read by ``ufpa.learned``.

The paper's own model, exactly: ``alignment='ufpa', head='ufpa_official'`` at 32m+1 (e.g. 257x193). Its last module
widens branch 0 to 4*C0 channels at the final fusion, as the official UFPA code does: a bias-free 1x1 conv (no BN) on
the identity path, 1x1 conv + BN to 4*C0 before each upsampling; the head reads those 4*C0 channels
(``heads.UFPAOfficialHead``). HRNet-W32 with 17 keypoints: 28,589,811 parameters (28,537,235 with ``head='udp'``).
A 1x1 conv moves no sample, so positions, the output grid and the audit are those of the same alignment with
``udp``. ``ufpa.models.official`` imports the official HRNet and UFPA state dicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .. import geometry
from ._layers import BN_MOMENTUM, check_input_size, conv3x3, conv_bn, make_resample, padding_mode
from ._registry import register_model
from .heads import HRNET_HEADS, WIDE_HEADS, HeatmapHead, UFPAOfficialHead, build_head


@dataclass(frozen=True)
class HRNetSpec:
    widths: tuple[int, ...]  # channels of branches 0..3
    modules: tuple[int, int, int]  # high-resolution modules in stages 2, 3, 4
    blocks: int = 4  # basic blocks per branch in each module
    stem_width: int = 64
    stage1_blocks: int = 4  # bottlenecks in stage 1
    stage1_planes: int = 64  # bottleneck width (x4 expansion)


class BasicBlock(nn.Module):
    def __init__(self, channels: int, padding_mode: str):
        super().__init__()
        self.conv1 = conv3x3(channels, channels, padding_mode=padding_mode)
        self.bn1 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(channels, channels, padding_mode=padding_mode)
        self.bn2 = nn.BatchNorm2d(channels, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, padding_mode: str):
        super().__init__()
        width = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(planes, planes, padding_mode=padding_mode)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, width, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if inplanes != width:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, width, 1, bias=False),
                                            nn.BatchNorm2d(width, momentum=BN_MOMENTUM))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class UpFuse(nn.Module):
    """Lower-resolution branch j into branch i: 1x1 conv to branch i's width, BN, then upsampling by 2^(j-i)."""

    def __init__(self, cin: int, cout: int, factor: int, alignment: str, like_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)
        self.resample = make_resample(alignment, factor, cout, like_channels)

    def forward(self, x, like):
        return self.resample(self.bn(self.conv(x)), like)


def _down_fuse(cin: int, cout: int, steps: int, padding_mode: str) -> nn.Sequential:
    """Higher-resolution branch into a lower one: ``steps`` 3x3/stride-2 convs (ReLU between, none at the end)."""
    layers = [conv_bn(cin, cin, 3, 2, padding_mode, relu=True) for _ in range(steps - 1)]
    layers.append(conv_bn(cin, cout, 3, 2, padding_mode, relu=False))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """Branches of basic blocks, then each of ``num_outputs`` outputs fuses all branches. ``widen`` > 1 (the last
    module of the official UFPA code, one output): output 0 has ``widen`` * C0 channels, its identity path a bias-free
    1x1 conv (no BN, as there)."""

    def __init__(self, widths, blocks: int, num_outputs: int, alignment: str, padding_mode: str, widen: int = 1):
        super().__init__()
        if widen != 1 and num_outputs != 1:
            raise ValueError(f"widen={widen} needs num_outputs=1 (only the last module widens), got {num_outputs}")
        self.branches = nn.ModuleList(
            nn.Sequential(*[BasicBlock(w, padding_mode) for _ in range(blocks)]) for w in widths)
        self.fuse = nn.ModuleList()
        for i in range(num_outputs):
            row = nn.ModuleList()
            width = widths[i] * widen
            for j, w in enumerate(widths):
                if j > i:
                    row.append(UpFuse(w, width, 2 ** (j - i), alignment, widths[i]))
                elif j < i:
                    row.append(_down_fuse(w, width, i - j, padding_mode))
                elif widen != 1:
                    row.append(nn.Conv2d(w, width, 1, bias=False))
                else:
                    row.append(nn.Identity())
            self.fuse.append(row)
        self.relu = nn.ReLU(inplace=False)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        out = []
        for i, row in enumerate(self.fuse):
            y = None
            for j, (layer, x) in enumerate(zip(row, xs)):
                term = layer(x, xs[i]) if j > i else layer(x)
                y = term if y is None else y + term
            out.append(self.relu(y))
        return out


class HRNet(nn.Module):
    """HRNet pose model: features at stride 4 from branch 0, then a head (see ``ufpa.models.heads``)."""

    def __init__(self, spec: HRNetSpec, num_keypoints: int = 17, alignment: str = "baseline", head: str = "heatmap",
                 input_size: tuple[int, int] = (256, 192), upscale: int = 4, padding: str | None = None):
        super().__init__()
        if head not in HRNET_HEADS:
            raise ValueError(f"unknown head {head!r}; choose one of {HRNET_HEADS}")
        check_input_size(alignment, input_size, 32, "HRNet (4 branches down to stride 32)")
        self.spec, self.alignment, self.input_size = spec, alignment, tuple(input_size)
        pad = padding_mode(alignment, padding)
        stem = spec.stem_width
        self.stem = nn.Sequential(conv_bn(3, stem, 3, 2, pad), conv_bn(stem, stem, 3, 2, pad))
        layer1, cin = [], stem
        for _ in range(spec.stage1_blocks):
            layer1.append(Bottleneck(cin, spec.stage1_planes, pad))
            cin = spec.stage1_planes * Bottleneck.expansion
        self.layer1 = nn.Sequential(*layer1)

        self.transitions = nn.ModuleList()
        self.stages = nn.ModuleList()
        previous = [cin]
        widen = UFPAOfficialHead.widen if head in WIDE_HEADS else 1
        for stage, n_modules in enumerate(spec.modules):
            widths = spec.widths[: stage + 2]
            self.transitions.append(self._transition(previous, widths, pad))
            modules = []
            for m in range(n_modules):
                last = stage == len(spec.modules) - 1 and m == n_modules - 1
                modules.append(HighResolutionModule(widths, spec.blocks, 1 if last else len(widths), alignment, pad,
                                                    widen if last else 1))
            self.stages.append(nn.ModuleList(modules))
            previous = list(widths)
        if head == "ufpa_official":
            self.head = UFPAOfficialHead(spec.widths[0] * widen, num_keypoints)
        elif head == "wide_heatmap":
            self.head = HeatmapHead(spec.widths[0] * widen, num_keypoints)
        else:
            self.head = build_head(head, spec.widths[0], num_keypoints, upscale, pad)
        self.num_keypoints, self.head_kind = num_keypoints, head

    @staticmethod
    def _transition(previous, widths, padding_mode) -> nn.ModuleList:
        layers = nn.ModuleList()
        for i, w in enumerate(widths):
            if i < len(previous):
                layers.append(nn.Identity() if previous[i] == w else conv_bn(previous[i], w, 3, 1, padding_mode))
            else:  # a new branch, one stride-2 step below the last one
                layers.append(conv_bn(previous[-1], w, 3, 2, padding_mode))
        return layers

    def forward(self, x):
        xs = [self.layer1(self.stem(x))]
        for transition, modules in zip(self.transitions, self.stages):
            xs = [t(xs[i] if i < len(xs) else xs[-1]) for i, t in enumerate(transition)]
            for module in modules:
                xs = module(xs)
        return self.head(xs[0])

    # --- geometry -----------------------------------------------------------------------------------------------
    @property
    def output_stride(self) -> float:
        return 4 / self.head.upscale

    def output_position_map(self) -> geometry.PositionMap:
        """Input-pixel position of output sample o along either axis (the stem, then the head)."""
        return geometry.downsample_path(2).then(self.head.position_map())

    def output_size(self) -> tuple[int, int]:
        pm = self.output_position_map()
        return tuple(pm.out_size(n) for n in self.input_size)


def _build(spec, **kwargs):
    return HRNet(spec, **kwargs)


@register_model
def hrnet_w32(**kwargs):
    """HRNet-W32 (28.5M parameters with a 17-keypoint heatmap head)."""
    return _build(HRNetSpec(widths=(32, 64, 128, 256), modules=(1, 4, 3)), **kwargs)


@register_model
def hrnet_w48(**kwargs):
    """HRNet-W48 (63.6M parameters with a 17-keypoint heatmap head)."""
    return _build(HRNetSpec(widths=(48, 96, 192, 384), modules=(1, 4, 3)), **kwargs)


@register_model
def hrnet_w16_small(**kwargs):
    """A CPU study preset: W16 widths, one module per stage, two blocks per branch."""
    return _build(HRNetSpec(widths=(16, 32, 64, 128), modules=(1, 1, 1), blocks=2, stem_width=32,
                            stage1_blocks=2, stage1_planes=32), **kwargs)


@register_model
def hrnet_w8_tiny(**kwargs):
    """The smallest preset, for tests: W8 widths, one module per stage, one block per branch."""
    return _build(HRNetSpec(widths=(8, 16, 32, 64), modules=(1, 1, 1), blocks=1, stem_width=16,
                            stage1_blocks=1, stage1_planes=8), **kwargs)
