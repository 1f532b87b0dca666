"""The numerical verification: >= 1000 random configurations of every op family against the real torch ops."""

import numpy as np
import pytest

from ufpa import geometry, probe


@pytest.fixture(scope="module")
def sweep():
    return probe.sweep(1200, seed=2024)


def test_sweep_covers_every_family(sweep):
    assert len(sweep) == 1200
    counts = sweep["family"].value_counts()
    assert set(counts.index) == set(probe.FAMILIES)
    assert counts.min() >= 1200 // len(probe.FAMILIES)
    assert (sweep["n_border"] > 0).any()


def test_interior_positions_match_torch(sweep):
    assert sweep["interior_max_dev"].max() <= 1e-9, sweep.sort_values("interior_max_dev").tail(3).to_string()


def test_border_outputs_follow_documented_rules(sweep):
    border = sweep["border_max_dev"].dropna()
    assert len(border) > 200  # borders are checked, not skipped
    assert border.max() <= 1e-9, sweep.sort_values("border_max_dev").tail(3).to_string()


def test_sweep_spans_the_requested_ranges():
    cases = probe.random_cases(1200, seed=2024)
    convs = [c for c in cases if c.family == "conv"]
    assert {c.params["kernel"] for c in convs} == set(range(1, 8))
    assert {c.params["stride"] for c in convs} == {1, 2, 3, 4}
    assert {c.params["dilation"] for c in convs} == {1, 2, 3}
    assert min(c.n_in for c in cases) <= 6 and max(c.n_in for c in cases) >= 68
    linear = [c for c in cases if c.family == "linear"]
    assert {c.params["align_corners"] for c in linear} == {True, False}
    assert any("scale_factor" in c.params for c in linear) and any("size" in c.params for c in linear)
    assert {c.dtype for c in cases if c.family == "nearest"} == {"float32", "float64"}
    assert {c.dims for c in cases} == {1, 2}


def test_probe_catches_a_wrong_position_map(monkeypatch):
    """The probe must fail when geometry is wrong: shift every conv by a quarter pixel."""
    original = geometry.Conv.__init__

    def shifted(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.offset += 0.25

    monkeypatch.setattr(geometry.Conv, "__init__", shifted)
    case = probe.ProbeCase("conv", 20, dict(kernel=3, stride=2, padding=1, dilation=1, padding_mode="zeros"))
    assert probe.run_case(case).interior_max_dev == pytest.approx(0.25)


def test_probe_catches_exact_math_nearest():
    """torch's float arithmetic differs from exact math at some sizes; a rational model is caught."""
    case = probe.ProbeCase("nearest", 41, dict(scale_factor=4.6), dims=2, axis=-1, dtype="float32")
    assert probe.run_case(case).interior_max_dev == 0
    torch_grid = geometry.nearest(41, None, 4.6, arithmetic="float32").positions(188)
    exact_grid = geometry.nearest(41, None, 4.6, arithmetic="rational").positions(188)
    assert np.sum(torch_grid != exact_grid) >= 1  # float32 1/4.6 rounds down: index 69 reads 14, not 15


def test_excluded_configurations_are_named():
    case = probe.ProbeCase("nearest", 20, dict(scale_factor=1.03), dims=2, dtype="float32")
    assert "shortcut" in probe.excluded_reason(case)
    assert probe.excluded_reason(probe.ProbeCase("nearest", 20, dict(scale_factor=2.0), 2, -1, "float32")) is None


def test_summary_and_record(tmp_path):
    results, summary = probe.run_verification(60, seed=1, record_path=tmp_path / "v.json")
    assert summary["passed"] and summary["configs"] == 60
    assert {row["family"] for row in summary["per_family"]} == set(probe.FAMILIES)
    assert (tmp_path / "v.json").is_file()
