"""ufpa.audit: fusion points found in real models, numbers equal to the closed forms, empirical cross-check."""

import numpy as np
import pytest
import torch
from torch import nn

from ufpa import audit, geometry
from ufpa.models import create_model


def upsampled_into_branch0(df):
    rows = df[df.source.str.contains("resample") & (df.stride == 4)]
    return rows.groupby(rows.source.str.extract(r"fuse_0_(\d)_resample")[0].astype(int))


@pytest.fixture(scope="module")
def tables():
    out = {}
    for alignment, size in [("baseline", (256, 192)), ("bilinear", (256, 192)), ("bilinear_corners", (256, 192)),
                            ("ufpa", (257, 193)), ("ufpa_any", (256, 192)), ("ufpa_any", (250, 190))]:
        model = create_model("hrnet_w8_tiny", alignment=alignment, input_size=size)
        out[(alignment, size)] = (model, audit.audit(model, size))
    return out


def test_audit_finds_every_fusion(tables):
    _, df = tables[("baseline", (256, 192))]
    assert set(df.columns) >= {"node", "axis", "stride", "max_abs_px", "mean_abs_px", "border_max_abs_px",
                               "border_width", "module", "source", "operand"}
    # the tiny preset has 1 + 1 + 1 modules with 2, 3, 4 (last: 1 output) branches, plus residual adds
    assert df.source.str.contains("resample").sum() == 2 * (1 + 3 + 3)
    assert set(df.axis) == {"H", "W"}


def test_baseline_shows_the_nearest_pattern(tables):
    _, df = tables[("baseline", (256, 192))]
    worst = upsampled_into_branch0(df).max_abs_px.max()
    assert worst.to_dict() == {1: 4.0, 2: 12.0, 3: 28.0}
    assert df[~df.source.str.contains("resample")].max_abs_px.max() == 0  # strided paths and residuals are aligned


def test_audit_equals_the_closed_forms(tables):
    for alignment, mode in [("baseline", "nearest"), ("bilinear", "bilinear"), ("bilinear_corners",
                                                                                  "bilinear_corners")]:
        _, df = tables[(alignment, (256, 192))]
        for level, group in upsampled_into_branch0(df):
            for axis, n in zip("HW", (256, 192)):
                sizes = geometry.branch_sizes(n)
                closed = geometry.upsample_shift_closed_form(mode, level, 4, sizes[0], sizes[level])
                fs = geometry.multiscale_fusion_shift(n, level, 0, mode)
                got = group[group.axis == axis]
                assert np.isclose(got.max_abs_px.max(), np.abs(closed[fs.interior]).max())
                assert np.isclose(got.mean_abs_px.max(), np.abs(closed[fs.interior]).mean())


def test_aligned_variants(tables):
    _, df = tables[("ufpa", (257, 193))]
    assert df.max_abs_px.max() <= 1e-9 and df.border_max_abs_px.max() <= 1e-9
    for size in [(256, 192), (250, 190)]:
        _, df = tables[("ufpa_any", size)]
        assert df.max_abs_px.max() <= 1e-9
        assert df.border_width.max() > 0 and df.border_max_abs_px.max() > 0  # the border cost is reported


@pytest.mark.parametrize("key", [("baseline", (256, 192)), ("bilinear", (256, 192)), ("ufpa", (257, 193)),
                                 ("ufpa_any", (250, 190))])
def test_empirical_forward_pass_agrees_with_audit(tables, key):
    model, df = tables[key]
    emp = audit.empirical_positions(model, key[1])
    assert len(emp) > len(df)  # every operand, targets included
    assert emp.max_dev_px.max() <= 1e-9


def test_empirical_check_catches_a_wrong_map(tables, monkeypatch):
    """If Resample declared a grid other than the one its forward pass realises, the empirical check must fail."""
    model, _ = tables[("baseline", (256, 192))]
    from ufpa.models._layers import Resample

    monkeypatch.setattr(Resample, "position_map",
                        lambda self, i, o: geometry.resize(i, o, align_corners=True))
    emp = audit.empirical_positions(model, (256, 192))
    assert emp.max_dev_px.max() > 1


def test_audit_does_not_change_the_model(tables):
    model, _ = tables[("baseline", (256, 192))]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    audit.audit(model, (256, 192))
    audit.empirical_positions(model, (256, 192))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_ops_stop_the_audit_with_a_message():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d((8, 8))

        def forward(self, x):
            y = self.conv(x)
            return y + nn.functional.interpolate(self.pool(y), size=y.shape[-2:])

    with pytest.raises(audit.AuditError, match="AdaptiveAvgPool2d"):
        audit.audit(Odd(), (32, 32))


def test_plain_torch_model_with_upsample_and_concat():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.skip = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return torch.cat([self.skip(x), self.up(self.down(x))], dim=1)

    df = audit.audit(Tiny(), (16, 16))
    assert len(df) == 2 and df.max_abs_px.max() == 1.0 and df.stride.unique().tolist() == [1.0]


@pytest.mark.parametrize("alignment, size, interior, border", [
    ("baseline", (128, 96), {4.0: 2.0, 8.0: 4.0, 16.0: 8.0}, False),
    ("bilinear", (128, 96), {4.0: 0.0, 8.0: 0.0, 16.0: 0.0}, True),
    ("ufpa", (129, 97), {4.0: 0.0, 8.0: 0.0, 16.0: 0.0}, False),
    ("ufpa_any", (128, 96), {4.0: 0.0, 8.0: 0.0, 16.0: 0.0}, True),
])
def test_hourglass_audit(alignment, size, interior, border):
    """2x2 pooling puts samples half a pixel off the nearest grid at every level; offset-free pooling fixes it."""
    model = create_model("hourglass_small", alignment=alignment, input_size=size)
    df = audit.audit(model, size)
    up = df[df.source.str.contains("resample")]
    assert up.groupby("stride").max_abs_px.max().to_dict() == interior
    assert (up.border_max_abs_px.max() > 0) == border
    assert audit.empirical_positions(model, size).max_dev_px.max() <= 1e-9


def test_simplebaseline_has_only_aligned_residual_fusions():
    model = create_model("simplebaseline_r18", input_size=(128, 96))
    df = audit.audit(model, (128, 96))
    assert len(df) == 2 * 8 and df.max_abs_px.max() == 0  # 8 residual adds, two axes each


def test_fusion_points_keep_cross_resolution_fusions_in_network_order(tables):
    _, df = tables[("baseline", (256, 192))]
    points = audit.fusion_points_of(df)
    assert points["module"].str.fullmatch(r"stages\.\d+\.\d+").all()  # residual adds inside branches left out
    assert list(points["order"]) == list(range(len(points)))
    # hrnet_w8_tiny, one module per stage: 2 + 3*2 incoming tensors, then 3 into branch 0 only (the last module
    # outputs the highest resolution alone)
    assert len(points) == 2 + 6 + 3
    worst = points.groupby("up_levels")["max_abs_px"].max().to_dict()
    assert worst == {0: 0.0, 1: 8.0, 2: 12.0, 3: 28.0}  # x2 into stride 8: 8 px
    assert (points["max_abs_px"] == 0).sum() == (points["up_levels"] == 0).sum()  # zeros stay in
    _, ufpa = tables[("ufpa", (257, 193))]
    aligned = audit.fusion_points_of(ufpa)
    assert len(aligned) == len(points) and aligned[["max_abs_px", "border_max_abs_px"]].max().max() <= 1e-9
