"""Issue 22: the learned aligner starts as the baseline, learns a known shift, and its offsets are read against the
geometry's shifts in one sign convention."""

import numpy as np
import pytest
import torch

from ufpa import learned
from ufpa.models import create_model, model_cost

SIZE = (96, 64)


def _pair(name="hrnet_w8_tiny", size=SIZE, head="udp"):
    torch.manual_seed(0)
    base = create_model(name, alignment="baseline", input_size=size, head=head).eval()
    torch.manual_seed(0)
    return base, create_model(name, alignment="learned", input_size=size, head=head).eval()


@pytest.mark.parametrize("name,size,head", [("hrnet_w8_tiny", SIZE, "udp"), ("hourglass_small", (64, 64), "heatmap")])
def test_learned_variant_starts_as_the_baseline(name, size, head):
    base, model = _pair(name, size, head)
    assert learned.learned_modules(model) and not learned.learned_modules(base)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        assert torch.allclose(base(x), model(x), atol=1e-6)  # zero offsets: the nearest grid; same initial weights
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in base.parameters())
    assert extra == sum(p.numel() for m in learned.learned_modules(model).values() for p in m.parameters()) > 0


def test_learned_offsets_get_gradients_and_its_cost_is_counted():
    _, model = _pair()
    model.train()
    model(torch.randn(2, 3, *SIZE)).square().mean().backward()
    grads = [m.coarse_bias.grad for m in learned.learned_modules(model).values()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    base = model_cost("hrnet_w8_tiny", "baseline", "udp", SIZE)
    mine = model_cost("hrnet_w8_tiny", "learned", "udp", SIZE)
    assert mine["params"] > base["params"] and mine["gflops"] > base["gflops"]


def test_models_without_a_fusion_refuse_the_learned_variant():
    with pytest.raises(ValueError, match="SimpleBaseline fuses none"):
        create_model("simplebaseline_r18", alignment="learned", input_size=(64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        create_model("hrnet_w8_tiny", alignment="learned", input_size=(97, 65))


@pytest.mark.parametrize("factor,shift", [(2, 0.0), (4, 0.0), (4, 0.3), (2, -0.2)])
def test_a_known_shift_is_learned(factor, shift):
    """The synthetic task of issue 22: nothing to learn but a shift; every phase's offset within 0.01 coarse samples
    of (o mod factor) / factor + shift, from a start at zero (the nearest grid)."""
    torch.set_num_threads(1)
    fit = learned.fit_known_shift(factor=factor, shift=shift, steps=300)
    assert len(fit["phases"]) == 2 * factor
    assert fit["max_error"] < 0.01, fit["phases"]
    assert {round(p["true"], 6) for p in fit["phases"]} == {round(k / factor + shift, 6) for k in range(factor)}


def test_offsets_read_against_the_geometry_in_one_convention():
    """Zero offsets leave the baseline's shift; offsets set to the sawtooth the geometry gives remove it exactly in the
    interior, and at the far border the clamped reads leave what the geometry says they leave."""
    _, model = _pair()
    images = torch.randn(3, 3, *SIZE)
    before = learned.summary_frame(learned.learned_alignment(model, images, SIZE))
    assert (before["learned_mean_px"] == 0).all() and (before["removed"] == 0).all()
    assert (before["rms_shift_px"] > 0).all()
    with torch.no_grad():
        for module in learned.learned_modules(model).values():
            f = module.factor
            phase = torch.arange(f, dtype=torch.float32) / f
            module.coarse_bias.copy_(torch.stack((phase.view(f, 1).expand(f, f), phase.view(1, f).expand(f, f))
                                                 ).reshape(-1))
    result = learned.learned_alignment(model, images, SIZE)
    after = learned.summary_frame(result)
    inner = after[after["region"] == "interior"]
    assert np.allclose(inner["rms_residual_px"], 0, atol=1e-4) and np.allclose(inner["removed"], 1)
    assert np.allclose(inner["learned_mean_px"], inner["correction_mean_px"], atol=1e-4)
    realised = learned.realised_misalignment(result)
    assert realised["max_abs_px"] < 1e-3 and realised["border_max_abs_px"] > 1  # the far border's clamp remains
    assert learned.realised_misalignment(learned.learned_alignment(_pair()[1], images, SIZE))["max_abs_px"] == 28.0
    edge = after[after["region"] == "border"]
    assert (edge["removed"] < 1).all()  # the last coarse sample cannot be read past: the clamp keeps some shift
    profiles = learned.profile_frame(result)
    inner = profiles[profiles["region"] == "interior"]
    assert len(inner) and np.allclose(inner["learned_px"], inner["correction_px"], atol=1e-3)
