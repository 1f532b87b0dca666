"""ufpa.models.official and head 'ufpa_official': the official HRNet / UFPA state dicts import key by key.

The fixtures (tests/fixtures/official_*.json) are data: the names and shapes of the official models' state dicts
(``PoseHighResolutionNet(cfg).state_dict()`` of each repository, at the commit they name), for a small config and
for W32. No weights are downloaded: the tests fill those shapes with random values.
"""

import json
from pathlib import Path

import pytest
import torch

from ufpa import train
from ufpa.audit import audit
from ufpa.models import ALIGNMENTS, create_model, official
from ufpa.models.heads import UFPAOfficialHead
from ufpa.models.hrnet import HRNet, HRNetSpec

FIXTURES = Path(__file__).parent / "fixtures"
SOURCES = ("pose_hrnet", "ufpa")
ALIGNMENT = {"pose_hrnet": "baseline", "ufpa": "ufpa"}  # the variant that computes each official forward
SMALL_INPUT = {"pose_hrnet": (96, 64), "ufpa": (97, 65)}
K = 17


def fixture(source, config):
    return json.loads((FIXTURES / f"official_{source}_{config}.json").read_text())


def random_state(fx, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in fx["state_dict"].items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(1000 + seed)
        elif name.endswith("running_var"):
            out[name] = torch.rand(shape, generator=g) + 0.5
        else:
            out[name] = torch.randn(shape, generator=g) * 0.1
    return out


def small_model(source, alignment=None):
    spec = fixture(source, "small")["ufpa_spec"]
    return HRNet(HRNetSpec(widths=tuple(spec["widths"]), modules=tuple(spec["modules"]), blocks=spec["blocks"]),
                 alignment=alignment or ALIGNMENT[source], head=official.SOURCES[source],
                 input_size=SMALL_INPUT[source])


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def small():
    """source -> (official state dict, ufpa model with it imported)."""
    out = {}
    for source in SOURCES:
        state = random_state(fixture(source, "small"))
        out[source] = state, official.load_official(small_model(source), state, source)
    return out


# --- names, shapes, counts --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", SOURCES)
def test_names_shapes_and_order_are_the_official_ones(source):
    fx = fixture(source, "small")
    exported = official.to_official(small_model(source))
    assert list(exported) == list(fx["state_dict"])
    assert {k: list(v.shape) for k, v in exported.items()} == fx["state_dict"]
    assert n_params(small_model(source)) == fx["parameters"]


def meta_state(fx):
    """The fixture's shapes as meta tensors: W32 checked key by key without allocating its 28M weights (the small
    config checks the values)."""
    return {k: torch.empty(shape, device="meta", dtype=torch.int64 if k.endswith("num_batches_tracked") else None)
            for k, shape in fx["state_dict"].items()}


@pytest.mark.parametrize("source, name, head, alignment, size, expected", [
    ("pose_hrnet", "hrnet_w32", "heatmap", "baseline", (256, 192), 28_536_113),
    ("ufpa", "hrnet_w32", "ufpa_official", "ufpa", (257, 193), 28_589_811),
])
def test_w32_matches_the_official_model_and_imports_strictly(source, name, head, alignment, size, expected):
    fx = fixture(source, "w32")
    with torch.device("meta"):
        model = create_model(name, alignment=alignment, head=head, input_size=size)
    assert n_params(model) == fx["parameters"] == expected
    exported = official.to_official(model)
    assert list(exported) == list(fx["state_dict"])
    assert {k: list(v.shape) for k, v in exported.items()} == fx["state_dict"]
    official.load_official(model, meta_state(fx), source)
    wrong = meta_state(fx)
    wrong["stage4.2.fuse_layers.0.3.0.weight"] = torch.empty(32, 256, 1, 1, device="meta")  # W32's own width
    if source == "ufpa":  # the released UFPA weights need the widened last fusion: 4 * 32 = 128 channels
        with pytest.raises(ValueError, match=r"\(32, 256, 1, 1\), but .* needs \(128, 256, 1, 1\)"):
            official.load_official(model, wrong, source)


def test_official_head_widens_the_last_fusion():
    w32 = HRNetSpec(widths=(32, 64, 128, 256), modules=(1, 4, 3))
    with torch.device("meta"):
        udp = HRNet(w32, alignment="ufpa", head="udp", input_size=(257, 193))
        ours = HRNet(w32, alignment="ufpa", head="ufpa_official", input_size=(257, 193))
    # 1x1 conv 32->128 (identity path), 1x1 conv + BN to 128 on the three upsampled paths, head 128 -> 51
    widened = 32 * 128 + sum(c * 128 + 2 * 128 for c in (64, 128, 256)) + 128 * 51 + 51
    narrow = sum(c * 32 + 2 * 32 for c in (64, 128, 256)) + 32 * 51 + 51
    assert n_params(ours) - n_params(udp) == widened - narrow == 28_589_811 - 28_537_235
    last = ours.stages[-1][-1].fuse[0]
    assert isinstance(last[0], torch.nn.Conv2d) and last[0].bias is None and last[0].out_channels == 128
    assert ours.head.conv.in_channels == 128 and ours.head.conv.out_channels == 3 * K


# --- values ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("source", SOURCES)
def test_every_value_is_copied_and_exports_back_exactly(small, source):
    state, model = small[source]
    names = official.official_names(model)
    assert len(names) == len(model.state_dict()) == len(state)
    own = model.state_dict()
    for key, name in names.items():
        if key.startswith("head.") and source == "ufpa":
            continue  # permuted rows: below
        assert torch.equal(own[key], state[name]), key
    back = official.to_official(model)
    assert list(back) == list(state) and all(torch.equal(back[k], v) for k, v in state.items())


def test_ufpa_head_rows_go_to_the_udp_layout(small):
    state, model = small["ufpa"]
    w, b = state["final_layer.weight"], state["final_layer.bias"]
    ours_w, ours_b = model.head.conv.weight.detach(), model.head.conv.bias.detach()
    assert torch.equal(ours_w[:K], w[:K]) and torch.equal(ours_b[:K], b[:K])  # heatmaps
    for k in range(K):  # official: K + 2k is x_k, K + 2k + 1 is y_k; udp: K + k is x_k, 2K + k is y_k
        assert torch.equal(ours_w[K + k], w[K + 2 * k]) and torch.equal(ours_b[K + k], b[K + 2 * k])
        assert torch.equal(ours_w[2 * K + k], w[K + 2 * k + 1]) and torch.equal(ours_b[2 * K + k], b[K + 2 * k + 1])
    assert sorted(UFPAOfficialHead.official_order(K)) == list(range(3 * K))


@pytest.mark.parametrize("source", SOURCES)
def test_forward_after_import_is_deterministic_and_shaped(small, source):
    _, model = small[source]
    model.eval()
    x = torch.randn(1, 3, *SMALL_INPUT[source], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y, again = model(x), model(x)
    channels = 3 * K if source == "ufpa" else K
    assert y.shape == (1, channels, *model.output_size()) and torch.isfinite(y).all() and torch.equal(y, again)
    pm = model.output_position_map()
    assert (pm.scale, pm.offset) == (4.0, 0.0)  # a 1x1 conv moves no sample: the stride-4 grid x = 4o


def test_a_path_wrappers_and_the_dataparallel_prefix(small, tmp_path):
    state, reference = small["ufpa"]
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = official.load_official(small_model("ufpa"), path, source="ufpa")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # torch < 0.4.1 checkpoints
    official.load_official(small_model("ufpa"), {"model": old}, source="ufpa")


# --- errors ----------------------------------------------------------------------------------------------------------

def test_errors_name_the_first_key_that_does_not_fit(small, tmp_path):
    state, _ = small["pose_hrnet"]
    model = small_model("pose_hrnet")

    renamed = {("final.weight" if k == "final_layer.weight" else k): v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"has key 'final\.weight'.*lacks 'final_layer\.weight'.*build the preset"):
        official.load_official(model, renamed)

    reshaped = dict(state)
    reshaped["stage2.0.fuse_layers.0.1.0.weight"] = torch.zeros(8, 8, 1, 1)
    reshaped["final_layer.weight"] = torch.zeros(5, 8, 1, 1)
    with pytest.raises(ValueError, match=r"'stage2\.0\.fuse_layers\.0\.1\.0\.weight' of shape \(8, 8, 1, 1\), but "
                                         r".* needs \(8, 16, 1, 1\) .*'stages\.0\.0\.fuse\.0\.1\.conv\.weight'"):
        official.load_official(model, reshaped)

    missing = {k: v for k, v in state.items() if k not in ("transition1.0.0.weight", "final_layer.bias")}
    with pytest.raises(ValueError, match=r"lacks 'transition1\.0\.0\.weight' \(shape \(8, 256, 3, 3\)\).*2 key\(s\)"):
        official.load_official(model, missing)

    with pytest.raises(ValueError, match="looks like a ufpa checkpoint"):
        official.load_official(model, {"model": model.state_dict()})

    bad = tmp_path / "truncated.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="truncated.pth cannot be read"):
        official.load_official(model, bad)
    with pytest.raises(ValueError, match="not a state dict"):
        official.load_official(model, {"weights": [1, 2]})


def test_source_head_and_model_are_checked(small):
    state, _ = small["pose_hrnet"]
    with pytest.raises(ValueError, match="source='ufpa' weights need a model built with head='ufpa_official'"):
        official.load_official(small_model("pose_hrnet"), state, source="ufpa")
    with pytest.raises(ValueError, match="unknown source 'hrnet'"):
        official.load_official(small_model("pose_hrnet"), state, source="hrnet")
    with pytest.raises(ValueError, match="HRNet only"):
        official.load_official(create_model("simplebaseline_r18"), state)
    ufpa_state, _ = small["ufpa"]  # UFPA weights sent as HRNet's, and the other way round
    with pytest.raises(ValueError, match=r"has key 'stage4\.0\.fuse_layers\.0\.0\.0\.weight'.*look like "
                                         r"source='ufpa' weights \(head='ufpa_official'\)"):
        official.load_official(small_model("pose_hrnet"), ufpa_state)
    with pytest.raises(ValueError, match=r"'stage4\.0\.fuse_layers\.0\.1\.0\.weight' of shape \(8, 16, 1, 1\), but "
                                         r".* needs \(32, 16, 1, 1\).*look like source='pose_hrnet' weights"):
        official.load_official(small_model("ufpa"), state, source="ufpa")


# --- the head in the rest of ufpa -----------------------------------------------------------------------------------

@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_every_alignment_builds_the_official_head_on_tiny_presets(alignment):
    size = (129, 97) if alignment == "ufpa" else (128, 96)
    model = create_model("hrnet_w8_tiny", num_keypoints=5, alignment=alignment, head="ufpa_official", input_size=size)
    base = create_model("hrnet_w8_tiny", num_keypoints=5, head="ufpa_official")
    assert n_params(model) == n_params(base)
    y = model(torch.randn(2, 3, *size))
    assert y.shape == (2, 15, *model.output_size())
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    udp = create_model("hrnet_w8_tiny", num_keypoints=5, alignment=alignment, head="udp", input_size=size)
    assert repr(model.output_position_map()) == repr(udp.output_position_map())


def test_only_hrnet_builds_it():
    with pytest.raises(ValueError, match="only HRNet builds it"):
        create_model("simplebaseline_r18", head="ufpa_official")


@pytest.mark.parametrize("alignment, size", [("baseline", (128, 96)), ("ufpa", (129, 97))])
def test_audit_sees_the_same_fusions_as_with_the_udp_head(alignment, size):
    cols = ["module", "operand", "axis", "stride", "up_levels", "max_abs_px", "mean_abs_px", "border_max_abs_px"]
    tables = [audit(create_model("hrnet_w8_tiny", alignment=alignment, head=head, input_size=size), size)[cols]
              for head in ("udp", "ufpa_official", "wide_heatmap")]
    assert tables[0].equals(tables[1]) and tables[0].equals(tables[2])
    if alignment == "ufpa":
        assert tables[1].max_abs_px.max() == 0 and tables[1].border_max_abs_px.max() == 0


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_wide_heatmap_is_the_official_network_with_a_heatmap_head(alignment):
    size = (129, 97) if alignment == "ufpa" else (128, 96)
    wide, official_head, narrow = (
        create_model("hrnet_w8_tiny", num_keypoints=5, alignment=alignment, head=head, input_size=size)
        for head in ("wide_heatmap", "ufpa_official", "heatmap"))

    def body(model):
        return {k: v.shape for k, v in model.state_dict().items() if not k.startswith("head.")}

    assert body(wide) == body(official_head) and body(wide) != body(narrow)
    channels = wide.spec.widths[0] * UFPAOfficialHead.widen
    assert tuple(wide.head.conv.weight.shape) == (5, channels, 1, 1)
    assert n_params(official_head) - n_params(wide) == 2 * 5 * (channels + 1)  # the offsets' rows, not the body
    y = wide(torch.randn(2, 3, *size))
    assert y.shape == (2, 5, *wide.output_size())
    assert repr(wide.output_position_map()) == repr(narrow.output_position_map())
    with pytest.raises(ValueError, match="only HRNet builds it"):
        create_model("simplebaseline_r18", head="wide_heatmap")


@pytest.mark.parametrize("codec", ["msra", "dark"])
def test_training_config_pairs_the_wide_heatmap_head_with_heatmap_codecs(codec):
    cfg = train.TrainConfig(model="hrnet_w8_tiny", alignment="ufpa", head="wide_heatmap", codec=codec)
    train.validate(cfg)
    model, decoder, _, _ = train.build(cfg, datasets=False)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, *train.effective_input_size(cfg))).numpy()
    assert out.shape[1] == K
    keypoints, scores = decoder.decode(out)
    assert keypoints.shape == (1, K, 2) and scores.shape == (1, K)
    with pytest.raises(ValueError, match="heatmap codecs take 'heatmap' \\(or HRNet's 'wide_heatmap'\\)"):
        train.validate(train.TrainConfig(**{**vars(cfg), "codec": "udp"}))


def test_training_config_pairs_it_with_the_udp_codec():
    cfg = train.TrainConfig(model="hrnet_w8_tiny", alignment="ufpa", head="ufpa_official", codec="udp")
    train.validate(cfg)
    model, codec, _, _ = train.build(cfg, datasets=False)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, *train.effective_input_size(cfg))).numpy()
    keypoints, scores = codec.decode(out)
    assert keypoints.shape == (1, K, 2) and scores.shape == (1, K)
    for changes, msg in ((dict(codec="dark"), "udp codec needs head='udp'"),
                         (dict(model="simplebaseline_r18"), "only HRNet builds it")):
        with pytest.raises(ValueError, match=msg):
            train.validate(train.TrainConfig(**{**vars(cfg), **changes}))
