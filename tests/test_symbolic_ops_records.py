"""ufpa.symbolic against ufpa.geometry, ufpa.ops against its position map, and ufpa.records."""

import json
import os

import numpy as np
import pytest
import torch

from ufpa import geometry as g
from ufpa import ops, records
from ufpa import symbolic as sy


def test_symbolic_conv_and_transposed_centres_match_geometry():
    samples = [dict(k=k, s=s, p=p, d=d, count=9) for k in (1, 3, 4) for s in (1, 2, 4) for p in (0, 2) for d in (1, 3)]
    assert sy.max_deviation(sy.conv_centre(), lambda k, s, p, d: g.conv(k, s, p, d).positions(9), samples) == 0
    dev = sy.max_deviation(sy.transposed_conv_centre(),
                           lambda k, s, p, d: g.transposed_conv(k, s, p, d).positions(9), samples)
    assert dev < 1e-12


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "bilinear_corners", "aligned"])
def test_symbolic_fusion_errors_match_geometry(mode):
    for n in (128, 256):
        sizes = g.branch_sizes(n)
        for level in (1, 2, 3):
            fs = g.multiscale_fusion_shift(n, level, 0, mode)
            values = dict(K=level, S=4, n_hi=sizes[0], n_lo=sizes[level], count=len(fs.shift))
            assert sy.max_deviation(sy.fusion_error(mode), lambda _fs=fs, **_: _fs.shift, [values]) < 1e-9


def test_symbolic_alignment_condition():
    import sympy as sp

    cond = sy.corner_alignment_condition()
    assert sp.simplify(sp.solve(cond, sy.n_hi)[0] - (2**sy.K * (sy.n_lo - 1) + 1)) == 0
    assert sp.simplify(sy.halving_size(2 * sy.m + 1) - (sy.m + 1)) == 0


def test_aligned_upsample_realises_its_position_map():
    x = torch.arange(9, dtype=torch.float64).view(1, 1, -1)
    y = ops.aligned_upsample(x, 2, 17)[0, 0].numpy()
    assert np.allclose(y, g.aligned_upsample(2, 9, 17).sampled_positions(9))
    y = ops.aligned_upsample(x, 4, 36)[0, 0].numpy()  # past the last sample: clamped edge
    assert np.allclose(y, np.minimum(np.arange(36) / 4, 8))


def test_aligned_upsample_2d_and_gradients():
    x = torch.randn(2, 3, 5, 7, requires_grad=True)
    y = ops.aligned_upsample(x, (2, 4), (9, 27))
    assert y.shape == (2, 3, 9, 27)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="cannot be reached"):
        ops.aligned_upsample(x, 2, (30, 10))
    with pytest.raises(ValueError, match="spatial"):
        ops.aligned_upsample(torch.zeros(3), 2, 4)


def test_records_are_atomic_and_carry_provenance(tmp_path):
    path = records.write_record(tmp_path / "r" / "x.json", "demo", {"a": np.int64(3)},
                                {"v": np.float64(0.5), "nan": float("nan"), "arr": np.arange(3)}, seed=7)
    rec = records.read_record(path, kind="demo")
    assert rec["config"] == {"a": 3} and rec["results"]["nan"] is None and rec["results"]["arr"] == [0, 1, 2]
    prov = rec["provenance"]
    for key in ("git_commit", "device", "torch", "seed", "time_utc", "numpy", "python"):
        assert key in prov
    assert prov["seed"] == 7
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no temporary files left behind


def test_read_record_errors_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="run the notebook"):
        records.read_record(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="delete it and re-run"):
        records.read_record(bad)
    bad.write_text(json.dumps({"kind": "x"}))
    with pytest.raises(ValueError, match="missing"):
        records.read_record(bad)
    path = records.write_record(tmp_path / "ok.json", "demo", {}, {})
    with pytest.raises(ValueError, match="expected 'other'"):
        records.read_record(path, kind="other")


def test_reports_dir_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("UFPA_REPORTS_DIR", str(tmp_path))
    assert records.reports_dir("../reports") == tmp_path
    monkeypatch.delenv("UFPA_REPORTS_DIR")
    assert str(records.reports_dir("../reports")) == "../reports"


def test_a_learned_kernel_absorbs_a_constant_shift_only():
    from ufpa import study

    rows = {r["mode"]: r for r in study.kernel_absorption(n_in=128, level=2, taps=9, n_signals=200)["rows"]}
    assert rows["bilinear"]["shift_before_max_px"] == 6.0 and rows["bilinear"]["remaining_interior_max_px"] < 1.0
    assert rows["nearest"]["remaining_interior_max_px"] > 2.0  # the sawtooth survives any single kernel
    assert rows["bilinear_corners"]["remaining_interior_max_px"] > 3.0  # so does the drift
    for aligned in ("bilinear_corners at 32m+1", "aligned"):
        assert rows[aligned]["remaining_interior_max_px"] < 0.05
        assert abs(rows[aligned]["kernel_centroid_px"]) < 0.05  # nothing to move: the kernel stays centred
    assert rows["aligned"]["remaining_border_max_px"] > 5.0  # no kernel repairs the border band
