"""ufpa.models: presets, parameter counts, alignment variants, heads, input-size checks."""

import pytest
import torch

from ufpa.models import ALIGNMENTS, HEADS, create_model, list_models

SIZES = {"ufpa": (129, 97)}  # 32m+1 for the paper's variant
DEFAULT = (128, 96)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry():
    assert {"hrnet_w32", "hrnet_w48", "hrnet_w16_small", "hrnet_w8_tiny", "simplebaseline_r18", "simplebaseline_r50",
            "simplebaseline_r101", "simplebaseline_r152", "hourglass_4", "hourglass_8", "hourglass_small"} <= set(
        list_models())
    assert list_models("hrnet_w4*") == ["hrnet_w48"]
    with pytest.raises(ValueError, match="unknown model"):
        create_model("hrnet_w33")
    with pytest.raises(ValueError, match="unknown alignment"):
        create_model("hrnet_w8_tiny", alignment="aligned")
    with pytest.raises(ValueError, match="unknown head"):
        create_model("hrnet_w8_tiny", head="regression")


@pytest.mark.parametrize("name, expected", [("hrnet_w32", 28_536_113), ("hrnet_w48", 63_595_745)])
def test_hrnet_parameter_counts_match_the_paper(name, expected):
    assert n_params(create_model(name)) == expected


SMALL = ["hrnet_w8_tiny", "simplebaseline_r18", "hourglass_small"]


@pytest.mark.parametrize("name", ["hrnet_w16_small", "simplebaseline_r18", "hourglass_small"])
@pytest.mark.parametrize("head", HEADS)
def test_every_variant_has_the_baseline_parameter_count(name, head):
    base = n_params(create_model(name, head=head, input_size=DEFAULT))
    for alignment in ALIGNMENTS:
        size = SIZES.get(alignment, DEFAULT)
        assert n_params(create_model(name, alignment=alignment, head=head, input_size=size)) == base


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize("alignment", ALIGNMENTS)
@pytest.mark.parametrize("head", HEADS)
def test_forward_backward_and_output_grid(name, alignment, head):
    torch.manual_seed(0)
    size = SIZES.get(alignment, DEFAULT)
    model = create_model(name, num_keypoints=5, alignment=alignment, head=head, input_size=size)
    x = torch.randn(2, 3, *size)
    y = model(x)
    channels = 15 if head == "udp" else 5
    assert y.shape == (2, channels, *model.output_size())
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    pm = model.output_position_map()
    assert pm.out_size(size[0]) == y.shape[2]
    assert model.output_stride == (4 if head in ("heatmap", "udp") else 1)


@pytest.mark.parametrize("head", HEADS)
def test_hrnet_output_grids(head):
    pm = create_model("hrnet_w8_tiny", head=head, input_size=DEFAULT).output_position_map()
    if head in ("heatmap", "udp"):
        assert (pm.scale, pm.offset) == (4.0, 0.0)
    else:  # pixel shuffle by 4 from stride-4 features: pixel o sits at x = o - 1.5
        assert (pm.scale, pm.offset) == (1.0, -1.5)


@pytest.mark.parametrize("alignment, offset", [("baseline", -14.0), ("bilinear", 0.0), ("ufpa", 14.0),
                                               ("ufpa_any", 14.0)])
def test_simplebaseline_head_grid_comes_from_geometry(alignment, offset):
    size = SIZES.get(alignment, DEFAULT)
    pm = create_model("simplebaseline_r18", alignment=alignment, input_size=size).output_position_map()
    assert pm.scale == 4.0 and pm.offset == offset


def test_published_parameter_counts():
    assert n_params(create_model("simplebaseline_r50")) == 33_999_697  # 34.0M (UDP README)


def test_ufpa_uses_replicate_padding_and_corner_aligned_upsampling():
    model = create_model("hrnet_w8_tiny", alignment="ufpa", input_size=(129, 97))
    modes = {m.padding_mode for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)}
    assert modes == {"replicate"}
    resamples = [m for m in model.modules() if type(m).__name__ == "Resample"]
    assert resamples and {m.mode for m in resamples} == {"bilinear_corners"}


@pytest.mark.parametrize("alignment, size, message", [
    ("ufpa", (256, 192), r"use 225 or 257"),
    ("ufpa", (257, 192), r"width 192 is not: use 161 or 193"),
    ("baseline", (250, 192), r"multiples of 32; input height 250 is not: use 224 or 256"),
    ("bilinear", (256, 190), r"use 160 or 192"),
    ("ufpa_any", (20, 190), r"too small"),
])
def test_wrong_input_sizes_name_valid_ones(alignment, size, message):
    with pytest.raises(ValueError, match=message):
        create_model("hrnet_w8_tiny", alignment=alignment, input_size=size)


@pytest.mark.parametrize("name, alignment, size, message", [
    ("hourglass_small", "baseline", (128, 100), r"multiples of 32; input width 100 is not: use 96 or 128"),
    ("hourglass_small", "ufpa", (128, 97), r"32m\+1; input height 128 is not: use 97 or 129"),
    ("hourglass_4", "ufpa", (256, 192), r"64m\+1"),
    ("simplebaseline_r18", "ufpa", (256, 193), r"use 225 or 257"),
])
def test_other_families_check_sizes(name, alignment, size, message):
    with pytest.raises(ValueError, match=message):
        create_model(name, alignment=alignment, input_size=size)


def test_size_free_variants_accept_any_size():
    for alignment in ("bilinear_corners", "ufpa_any"):
        model = create_model("hrnet_w8_tiny", alignment=alignment, input_size=(250, 190))
        assert model(torch.randn(1, 3, 250, 190)).shape[-2:] == (63, 48)


@pytest.mark.parametrize("size", [(97, 65), (129, 97)])
def test_at_32m_plus_1_size_free_alignment_is_ufpa_with_zero_padding(size):
    """At 32m+1 both grids put output sample o at x = o/2 and ``ufpa_any`` pads with zeros, so the two are one
    network: the converged controls' `ufpa_any 97x65` s0 repeated `ufpa-zerospad 97x65` s0 bit for bit."""
    torch.manual_seed(3)
    a = create_model("hrnet_w8_tiny", alignment="ufpa_any", input_size=size)
    torch.manual_seed(3)
    b = create_model("hrnet_w8_tiny", alignment="ufpa", padding="zeros", input_size=size)
    x = torch.randn(2, 3, *size)
    assert torch.equal(a(x), b(x))
    c = create_model("hrnet_w8_tiny", alignment="ufpa", input_size=size)  # its own replicate padding
    c.load_state_dict(b.state_dict())
    assert not torch.equal(c(x), b(x)), "replicate padding changes the border"


def test_cpu_forward_is_deterministic():
    torch.manual_seed(1)
    a = create_model("hrnet_w8_tiny", input_size=(128, 96))
    torch.manual_seed(1)
    b = create_model("hrnet_w8_tiny", input_size=(128, 96))
    x = torch.randn(1, 3, 128, 96)
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name,alignment,size", [("hrnet_w8_tiny", "ufpa", (97, 65)),
                                                 ("hrnet_w8_tiny", "ufpa_any", (96, 64)),
                                                 ("simplebaseline_r18", "ufpa", (65, 65)),
                                                 ("hourglass_small", "ufpa", (65, 65))])
def test_padding_option_ablates_only_the_border(name, alignment, size):
    """padding=None is the variant's own mode (bit for bit); the other mode changes border outputs, not the grid."""
    torch.manual_seed(0)
    own = create_model(name, alignment=alignment, input_size=size).eval()
    other_mode = "zeros" if alignment == "ufpa" else "replicate"
    other = create_model(name, alignment=alignment, input_size=size, padding=other_mode).eval()
    same = create_model(name, alignment=alignment, input_size=size,
                        padding="replicate" if alignment == "ufpa" else "zeros").eval()
    other.load_state_dict(own.state_dict())
    same.load_state_dict(own.state_dict())
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        assert torch.equal(own(x), same(x))
        assert not torch.equal(own(x), other(x))
    grid, other_grid = own.output_position_map(), other.output_position_map()
    assert (grid.scale, grid.offset) == (other_grid.scale, other_grid.offset)
    with pytest.raises(ValueError, match="padding='reflect': choose one of"):
        create_model(name, alignment=alignment, input_size=size, padding="reflect")


def test_fast_replicate_padding_is_bit_identical_to_torchs():
    """ufpa's replicate-padded convs use a slicing backward; outputs and every gradient equal torch's bit for bit."""
    from ufpa.models import _layers

    torch.manual_seed(0)
    model = create_model("hrnet_w8_tiny", alignment="ufpa", head="udp", input_size=(65, 97)).train()
    assert any(isinstance(m, _layers.ReplicateConv2d) for m in model.modules())
    x = torch.randn(2, 3, 65, 97)
    results = []
    for fast in (True, False):
        _layers.FAST_REPLICATE = fast
        try:
            model.zero_grad()
            out = model(x)
            (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
            results.append((out.detach().clone(), [p.grad.clone() for p in model.parameters()]))
        finally:
            _layers.FAST_REPLICATE = None
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))
    g = torch.randn(3, 4, 7, 6)
    for shape in ((3, 4, 5, 4), (1, 2, 2, 2), (1, 1, 1, 5)):
        x = torch.randn(*shape, requires_grad=True)
        grad = torch.randn(*shape[:2], shape[2] + 2, shape[3] + 2) if shape != (3, 4, 5, 4) else g
        a, = torch.autograd.grad(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), x, grad)
        b, = torch.autograd.grad(_layers.replicate_pad1(x), x, grad)
        assert torch.equal(a, b)


def test_one_rule_for_the_size_a_variant_runs_at():
    """train kept a requested 100 and refused it while bench and the audit ran 129 (issue 19): one rule, beside
    create_model, from the model's own stride."""
    from ufpa import bench, train
    from ufpa.models import run_size

    assert run_size("hrnet_w8_tiny", "ufpa", (96, 64)) == (97, 65) == run_size("hrnet_w8_tiny", "ufpa", (97, 65))
    assert run_size("hrnet_w8_tiny", "baseline", (96, 64)) == (96, 64)
    assert run_size("hourglass_4", "ufpa", (256, 192)) == (257, 193)  # stride 64: 64m + 1
    assert run_size("hourglass_small", "ufpa", (96, 64)) == (97, 65)  # depth 3: stride 32
    assert run_size("hrnet_w8_tiny", "ufpa", (100, 64)) == (100, 65)
    cfg = train.TrainConfig(alignment="ufpa", input_size=(100, 64))
    assert train.effective_input_size(cfg) == (100, 65)
    with pytest.raises(ValueError, match="use 97 or 129"):
        bench.model_cost("hrnet_w8_tiny", "ufpa", "heatmap", (100, 64))  # the same rule: refused, not run at 129
