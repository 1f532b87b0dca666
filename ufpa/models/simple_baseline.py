"""SimpleBaseline (Xiao, Wu, Wei: Simple Baselines for Human Pose Estimation and Tracking, ECCV 2018): a ResNet
backbone (stride 32, every stride step offset-free, so feature o sits at input x = 32*o) and three stride-2
upsampling layers of 256 channels with 4x4 kernels, then a head.

SimpleBaseline has no multi-scale fusion; its upsampling layers decide where the heatmap grid sits. A 4x4
transposed convolution with stride 2 and padding 1 puts output o at input (o - 1/2)/2 of its own input: a quarter
input sample per layer, 4*o - 14 input pixels after all three. No even kernel can centre a stride-2 grid, so the
variants keep the 4x4 kernels (and so every parameter) and change how each layer upsamples:

=================  ===========================================================================
alignment          each of the three upsampling layers
=================  ===========================================================================
baseline           ConvTranspose2d(4, stride 2, padding 1), as published
bilinear           bilinear x2 (align_corners=False), then a 4x4 conv padded (1, 2)
bilinear_corners   bilinear x2 with align_corners=True, then the 4x4 conv
ufpa               align_corners=True to 2n-1 samples (input 32m+1), replicate padding, the 4x4 conv
ufpa_any           size-free x = o/2 upsampling, then the 4x4 conv
=================  ===========================================================================

Where the heatmap grid lands for each variant is computed, not assumed: ``output_position_map()`` composes the
``ufpa.geometry`` maps of every layer, and notebook 03 tabulates them. Codecs decode on that grid.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .. import geometry
from ._layers import BN_MOMENTUM, UPSAMPLE_MODE, Resample, check_input_size, conv3x3, padding_mode
from ._registry import register_model
from .heads import build_head


@dataclass(frozen=True)
class ResNetSpec:
    block: str  # "basic" or "bottleneck"
    layers: tuple[int, int, int, int]  # blocks per stage
    deconv_width: int = 256  # channels of the three upsampling layers


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, padding_mode):
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride, padding_mode)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(planes, planes, 1, padding_mode)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, padding_mode):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv2 = conv3x3(planes, planes, stride, padding_mode)  # stride on the 3x3 (ResNet v1.5)
        self.bn2 = nn.BatchNorm2d(planes, momentum=BN_MOMENTUM)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


def _downsample(cin, cout, stride):
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout, momentum=BN_MOMENTUM))


class ResizeConv(nn.Module):
    """Upsampling x2 by a parameter-free resample, then a 4x4 conv padded (1 before, 2 after) on each axis."""

    def __init__(self, cin, cout, mode, corners, padding_mode):
        super().__init__()
        self.resample = Resample(mode, 2, corners=corners)
        pad = (1, 2, 1, 2)
        self.pad = nn.ReplicationPad2d(pad) if padding_mode == "replicate" else nn.ZeroPad2d(pad)
        self.conv = nn.Conv2d(cin, cout, 4, bias=False)

    def forward(self, x):
        return self.conv(self.pad(self.resample(x)))

    def layer_map(self, n_in: int) -> geometry.PositionMap:
        n_up = geometry.upsampled_size(n_in, self.resample.factor, self.resample.corners)
        return (self.resample.position_map(n_in, n_up).then(geometry.pad(1, 2))
                .then(geometry.conv(4)))


class SimpleBaseline(nn.Module):
    def __init__(self, spec: ResNetSpec, num_keypoints=17, alignment="baseline", head="heatmap",
                 input_size=(256, 192), upscale=4, padding=None):
        super().__init__()
        # no fixed-factor upsampling: deconvolutions and resize-convolutions work at any size
        if alignment == "learned":
            raise ValueError("alignment 'learned' learns offsets where two paths fuse, and SimpleBaseline fuses none "
                             "(its upsampling alone sets the grid): use it with an HRNet or hourglass model")
        check_input_size(alignment, input_size, 32, "a stride-32 ResNet", fixed_factor=())
        self.spec, self.alignment, self.input_size = spec, alignment, tuple(input_size)
        pad = padding_mode(alignment, padding)
        block = {"basic": BasicBlock, "bottleneck": Bottleneck}[spec.block]
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False, padding_mode=pad)
        self.bn1 = nn.BatchNorm2d(64, momentum=BN_MOMENTUM)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages, cin = [], 64
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), spec.layers)):
            layers = []
            for b in range(blocks):
                layers.append(block(cin, planes, 2 if (b == 0 and i > 0) else 1, pad))
                cin = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        ups = []
        for _ in range(3):
            if alignment == "baseline":
                up = nn.ConvTranspose2d(cin, spec.deconv_width, 4, stride=2, padding=1, bias=False)
            else:
                up = ResizeConv(cin, spec.deconv_width, UPSAMPLE_MODE[alignment], alignment == "ufpa", pad)
            ups += [up, nn.BatchNorm2d(spec.deconv_width, momentum=BN_MOMENTUM), nn.ReLU(inplace=True)]
            cin = spec.deconv_width
        self.upsample = nn.Sequential(*ups)
        self.head = build_head(head, cin, num_keypoints, upscale, pad)
        self.num_keypoints, self.head_kind = num_keypoints, head

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.head(self.upsample(x))

    @property
    def output_stride(self) -> float:
        return 4 / self.head.upscale

    def output_position_map_for(self, n_in: int) -> geometry.PositionMap:
        """Input-pixel position of output sample o along an axis of ``n_in`` input samples."""
        pm = geometry.conv(7, 2, 3).then(geometry.conv(3, 2, 1)).then(geometry.downsample_path(3))
        n = pm.out_size(n_in)
        for layer in self.upsample:
            if isinstance(layer, nn.ConvTranspose2d):
                step = geometry.transposed_conv(4, 2, 1)
            elif isinstance(layer, ResizeConv):
                step = layer.layer_map(n)
            else:
                continue
            pm, n = pm.then(step), step.out_size(n)
        return pm.then(self.head.position_map())

    def output_position_map(self) -> geometry.PositionMap:
        """The map along the height axis (width: ``output_position_map_for(input_size[1])``)."""
        return self.output_position_map_for(self.input_size[0])

    def output_size(self) -> tuple[int, int]:
        return tuple(self.output_position_map_for(n).out_size(n) for n in self.input_size)


@register_model
def simplebaseline_r18(**kwargs):
    """SimpleBaseline on ResNet-18: the small CPU preset."""
    return SimpleBaseline(ResNetSpec("basic", (2, 2, 2, 2)), **kwargs)


@register_model
def simplebaseline_r50(**kwargs):
    return SimpleBaseline(ResNetSpec("bottleneck", (3, 4, 6, 3)), **kwargs)


@register_model
def simplebaseline_r101(**kwargs):
    return SimpleBaseline(ResNetSpec("bottleneck", (3, 4, 23, 3)), **kwargs)


@register_model
def simplebaseline_r152(**kwargs):
    return SimpleBaseline(ResNetSpec("bottleneck", (3, 8, 36, 3)), **kwargs)
