"""ufpa.codecs: the contract, a round trip per codec, flip-back, grids from models, and bad options."""

import numpy as np
import pytest
import torch

from ufpa import codecs
from ufpa.models import create_model

H, W = 256, 192
PAIRS = codecs.COCO_FLIP_PAIRS


def random_keypoints(n=16, seed=0, lo=(40, 40), hi=(150, 215)):
    rng = np.random.default_rng(seed)
    return np.stack([rng.uniform(lo[0], hi[0], (n, 17)), rng.uniform(lo[1], hi[1], (n, 17))], -1)


def flipped(keypoints):
    perm = np.arange(keypoints.shape[1])
    for a, b in PAIRS:
        perm[a], perm[b] = b, a
    out = keypoints.copy()
    out[..., 0] = (W - 1) - out[..., 0]
    return out[:, perm]


def test_registry_and_errors():
    assert codecs.list_codecs() == ["dark", "msra", "sr", "udp"]
    with pytest.raises(ValueError, match="unknown codec"):
        codecs.create_codec("simcc", (H, W), (64, 48))
    with pytest.raises(ValueError, match="heatmap_size"):
        codecs.create_codec("dark", (H, W), (64,))
    with pytest.raises(ValueError, match="sigma"):
        codecs.create_codec("dark", (H, W), (64, 48), sigma=0)
    with pytest.raises(ValueError, match="odd"):
        codecs.create_codec("dark", (H, W), (64, 48), blur_kernel=4)
    with pytest.raises(ValueError, match="affine"):
        from ufpa import geometry
        codecs.create_codec("dark", (H, W), (64, 48), grid=geometry.nearest(48, 192))
    codec = codecs.create_codec("dark", (H, W), (64, 48))
    with pytest.raises(ValueError, match=r"\(N, K, 2\)"):
        codec.encode(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="visible"):
        codec.encode(np.zeros((1, 17, 2)), np.ones((1, 16)))
    with pytest.raises(ValueError, match="decodes"):
        codec.decode(np.zeros((1, 17, 32, 24)))


class TestMSRA:
    def test_round_trip_is_within_the_quantisation(self):
        err = codecs.roundtrip_errors("msra", 400)
        assert err.max() <= np.sqrt(2) * 0.5 + 1e-9  # rounding to the grid, then a quarter step back
        assert 0.2 < err.mean() < 0.5  # biased by design: reported in notebook 04

    def test_legacy_flip_shift_is_one_sample(self):
        codec = codecs.create_codec("msra", (H, W), (64, 48), legacy_flip_shift=True)
        assert codec.flip_centre() == 48


class TestDARK:
    def test_round_trip(self):
        assert codecs.roundtrip_errors("dark", 400).max() <= 0.05

    def test_encoding_is_unbiased(self):
        codec = codecs.create_codec("dark", (H, W), (64, 48), sigma=2.0)
        target = codec.encode(np.array([[[100.3, 120.7]]]))["target"][0, 0]
        ys, xs = np.mgrid[:64, :48]
        centre = codec.to_input(np.array([(target * xs).sum() / target.sum(), (target * ys).sum() / target.sum()]))
        assert np.allclose(centre, [100.3, 120.7], atol=1e-3)


class TestUDP:
    def test_round_trip_is_exact(self):
        assert codecs.roundtrip_errors("udp", 400).max() <= 0.01

    def test_layout_and_offset_weights(self):
        codec = codecs.create_codec("udp", (H, W), (64, 48))
        enc = codec.encode(random_keypoints(2))
        assert enc["target"].shape == (2, 51, 64, 48) and enc["offset_weight"].shape == (2, 17, 64, 48)
        assert (enc["offset_weight"] <= enc["target"][:, :17] + 1e-7).all()

    def test_decodes_a_model_output(self):
        model = create_model("hrnet_w8_tiny", head="udp", input_size=(H, W))
        with torch.no_grad():
            out = model(torch.randn(1, 3, H, W))
        keypoints, scores = codecs.create_codec("udp", (H, W), (64, 48)).decode(out)
        assert keypoints.shape == (1, 17, 2) and scores.shape == (1, 17)


class TestSR:
    def test_round_trip_on_the_sr_grid(self):
        model = create_model("hrnet_w8_tiny", head="sr", input_size=(H, W))
        grid = model.output_position_map()
        err = codecs.roundtrip_errors("sr", 200, heatmap_size=model.output_size(), grid=grid)
        assert err.max() <= 0.75  # plain argmax on a stride-1 grid: under one input pixel
        err = codecs.roundtrip_errors("sr", 200, heatmap_size=model.output_size(), grid=grid, refine="dark")
        assert err.max() <= 0.05


@pytest.mark.parametrize("name", ["msra", "dark", "udp"])
def test_flip_back_recovers_the_original(name):
    codec = codecs.create_codec(name, (H, W), (64, 48))
    k = random_keypoints()
    direct, _ = codec.decode(codec.encode(k)["target"])
    back, _ = codec.decode(codec.flip_back(codec.encode(flipped(k))["target"], PAIRS))
    assert np.abs(back - direct).max() <= 1e-3


@pytest.mark.parametrize("model_name", ["hrnet_w8_tiny", "simplebaseline_r18"])
def test_model_grids_decode_exactly(model_name):
    """A head grid that is not the unbiased one (HRNet: 4o; SimpleBaseline: 4o - 14) still decodes exactly, and the
    flip uses the exact mirror of that grid."""
    grid = create_model(model_name, input_size=(H, W)).output_position_map()
    codec = codecs.create_codec("udp", (H, W), (64, 48), grid=grid)
    k = random_keypoints(lo=(20, 20), hi=(160, 230))
    assert np.abs(codec.decode(codec.encode(k)["target"])[0] - k).max() <= 1e-3
    back, _ = codec.decode(codec.flip_back(codec.encode(flipped(k))["target"], PAIRS))
    assert np.abs(back - k).max() <= 1e-3


def test_keypoints_off_the_map_get_no_weight():
    codec = codecs.create_codec("dark", (H, W), (64, 48))
    # a labelled NaN is refused (tests/test_bad_inputs.py); unlabelled, its coordinates do not matter
    enc = codec.encode(np.array([[[-100.0, 50.0], [50.0, 50.0], [np.nan, 3.0]]]), np.array([[2, 0, 0]]))
    assert enc["target_weight"].tolist() == [[0.0, 0.0, 0.0]]
    assert enc["target"].max() == 0
