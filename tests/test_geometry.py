"""ufpa.geometry: constructors, composition, fusion shifts, closed forms and aligned sizes."""

import math
from fractions import Fraction

import numpy as np
import pytest

from ufpa import geometry as g


def test_conv_position_and_size():
    pm = g.conv(3, 2, 1)
    assert (pm.scale, pm.offset) == (2.0, 0.0)
    assert np.array_equal(pm.positions(4), [0, 2, 4, 6])
    assert pm.out_size(256) == 128 and pm.out_size(257) == 129
    assert g.conv(4, 1, 0).offset == 1.5  # even kernel: centre between taps
    assert g.conv(3, 1, 0, dilation=3).offset == 3.0


def test_transposed_conv_is_adjoint_of_conv():
    t = g.transposed_conv(4, 2, 1)
    assert (t.scale, t.offset) == (0.5, -0.25)  # SimpleBaseline's deconv: a quarter-pixel offset
    assert t.out_size(8) == 16
    c = g.conv(4, 2, 1)
    # conv after its transposed twin maps output o back onto o*s*(1/s) with offsets cancelling
    both = t.then(c)
    assert both.scale == 1.0 and both.offset == 0.0


def test_resize_grids_match_torch_formulas():
    assert np.allclose(g.resize(4, 8, False).positions(8), (np.arange(8) + 0.5) / 2 - 0.5)
    assert np.allclose(g.resize(5, 9, True).positions(9), np.arange(9) / 2)
    # scale_factor is used as given, not in/out
    pm = g.resize(10, None, False, scale_factor=2.5)
    assert pm.out_size(10) == 25 and pm.scale == pytest.approx(0.4)
    # a size that does not change is copied, whatever the scale factor
    assert g.resize(14, None, False, scale_factor=1.05).scale == 1.0
    # border: torch reads clip(x, 0, in-1)
    s = g.resize(4, 8, False).sampled_positions(4)
    assert s[0] == 0 and s[-1] == 3


def test_nearest_arithmetic_variants():
    rational = g.nearest(7, 10, arithmetic="rational").positions(10)
    assert list(rational) == [math.floor(Fraction(o * 7, 10)) for o in range(10)]
    assert list(g.nearest(4, 8, exact=True).positions(8)) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert not g.nearest(4, 8).is_affine
    with pytest.raises(ValueError, match="integer output indices"):
        g.nearest(4, 8).at(0.5)
    with pytest.raises(ValueError, match="arithmetic"):
        g.nearest(4, 8, arithmetic="float16")


def test_pixel_shuffle_subpixel_centres():
    pm = g.pixel_shuffle(4)
    assert np.allclose(pm.positions(4), [-0.375, -0.125, 0.125, 0.375])
    assert pm.out_size(3) == 12


def test_composition_is_data_flow_order():
    a, b = g.conv(3, 2, 1), g.conv(3, 2, 1)
    ab = a.then(b)
    assert ab.scale == 4 and ab.offset == 0
    shifted = g.conv(2, 1, 0).then(g.conv(3, 2, 1))  # offset 0.5 first, then stride 2
    assert np.allclose(shifted.positions(3), 2 * np.arange(3) + 0.5)
    assert ab.out_size(256) == 64
    with pytest.raises(TypeError):
        a.then("conv")


def test_composite_taps_follow_both_ops():
    lo, hi = g.conv(3, 2, 1).then(g.conv(3, 2, 1)).taps(64)
    o = np.arange(16)
    assert np.array_equal(lo, 4 * o - 3) and np.array_equal(hi, 4 * o + 3)


def test_composite_interior_marks_padding_and_clamping():
    path = g.downsample_path(2).then(g.upsample("aligned", 64, 128, 2))
    inner = path.interior(256)
    assert inner.sum() > 0 and not inner[0] and not inner[-1]


@pytest.mark.parametrize("n", [192, 256, 384])
def test_hrnet_nearest_shift_is_4_12_28(n):
    worst = [g.multiscale_fusion_shift(n, level, 0, "nearest").max_abs for level in (1, 2, 3)]
    assert worst == [4.0, 12.0, 28.0]


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bilinear_corners", "aligned"])
@pytest.mark.parametrize("n", [128, 256, 288])
def test_fusion_shift_matches_closed_form(mode, n):
    sizes = g.branch_sizes(n)
    for level in (1, 2, 3):
        fs = g.multiscale_fusion_shift(n, level, 0, mode)
        closed = g.upsample_shift_closed_form(mode, level, 4, sizes[0], sizes[level])
        assert np.max(np.abs(fs.shift - closed)[fs.interior]) < 1e-9


def test_aligned_sizes_give_zero_shift_everywhere():
    for n in (129, 193, 257, 289):
        for level in (1, 2, 3):
            fs = g.multiscale_fusion_shift(n, level, 0, "bilinear_corners")
            assert fs.max_abs < 1e-9 and fs.border_max_abs < 1e-9


def test_size_free_variant_is_aligned_inside_and_reports_its_border():
    fs = g.multiscale_fusion_shift(256, 3, 0, "aligned")
    assert fs.max_abs == 0
    assert fs.border_width > 0 and fs.border_max_abs == 28.0


def test_fusion_of_different_sizes_is_refused():
    with pytest.raises(ValueError, match="cannot fuse"):
        g.fusion_shift(g.downsample_path(2), g.downsample_path(3), 256)
    with pytest.raises(ValueError, match="bilinear_corners"):
        g.multiscale_fusion_shift(257, 1, 0, "nearest")


def test_aligned_grid_recovers_source_coordinates():
    target, source = g.downsample_path(2), g.downsample_path(4)
    grid = g.aligned_grid(target, source, 10)
    assert np.allclose(grid, np.arange(10) / 4)


def test_aligned_size_rules_agree_with_the_algebra():
    for n in range(97, 420):
        zero = all(g.multiscale_fusion_shift(n, lv, 0, "bilinear_corners").max_abs < 1e-9 for lv in (1, 2, 3))
        assert zero == g.is_fusion_aligned(n), n
        assert zero == ((n - 1) % 32 < 4), n  # 32m+1 .. 32m+4: branch 0 has 8m+1 samples
        if g.is_aligned_size(n):  # the full condition implies fusion alignment and spans the input exactly
            assert zero
            assert all(4 * 2**lv * (size - 1) == n - 1 for lv, size in enumerate(g.branch_sizes(n)))
    assert g.aligned_size(256) == 257 and g.aligned_size(192) == 193 and g.aligned_size(257) == 257
    assert g.aligned_size(256, levels=3) == 257 and g.aligned_size(250, levels=3) == 257
    assert g.nearest_aligned_sizes(256) == (225, 257)


def test_check_aligned_size_names_valid_sizes():
    assert g.check_aligned_size(257) == 257
    with pytest.raises(ValueError, match=r"nearest valid sizes: 225 or 257"):
        g.check_aligned_size(256)
    with pytest.raises(ValueError, match=r"nearest valid sizes: 33"):
        g.check_aligned_size(20)


@pytest.mark.parametrize("bad", [
    lambda: g.conv(0), lambda: g.conv(3, stride=0), lambda: g.conv(3, padding=-1), lambda: g.conv(3.5),
    lambda: g.transposed_conv(3, 2, output_padding=2), lambda: g.resize(0, 4, True), lambda: g.resize(4, None, True),
    lambda: g.resize(4, 7, False, scale_factor=2.0), lambda: g.pixel_shuffle(0), lambda: g.upsample("cubic", 4, 8, 2),
    lambda: g.conv(7, 1, 0).out_size(3), lambda: g.resize(4, 8, True).out_size(5),
])
def test_bad_arguments_raise_value_error(bad):
    with pytest.raises(ValueError):
        bad()


def test_sizes_mirrors_and_linear_sampling():
    assert g.upsampled_size(25, 2, corners=True) == 49 and g.upsampled_size(24, 2, False) == 48
    assert g.mirror(np.array([0.0, 10.5, 191.0]), 192).tolist() == [191.0, 180.5, 0.0]
    # the grid x = 4o + 1.5 over 256 samples: output c - o sits at the mirror of output o
    c = g.mirror_index(4.0, 1.5, 256)
    o = np.arange(64)
    assert np.allclose(4.0 * (c - o) + 1.5, g.mirror(4.0 * o + 1.5, 256))
    v = np.arange(5, dtype=np.float32) * 2
    assert g.sample_linear(v, np.array([-1.0, 0.5, 3.25, 9.0])).tolist() == [0.0, 1.0, 6.5, 8.0]
