"""ufpa.codecs: the contract, a round trip per codec, flip-back, grids from models, and bad options."""

import cv2
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


# --- the border and noise (issue 17: DARK's mirrored blur made a ghost peak; its Newton step was unbounded) --------
SIZES = [(64, 48), (48, 64), (32, 24), (24, 32)]


@pytest.mark.parametrize("size", SIZES)
def test_round_trips_reach_the_border(size):
    sigma = min(size) / 24  # 2 at 64x48 and 48x64, 1 at 32x24 and 24x32
    distances = (0.0, 0.3, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
    opts = dict(input_size=(4 * size[0], 4 * size[1]), heatmap_size=size, sigma=sigma)
    assert (codecs.border_roundtrip("udp", distances, **opts) <= 1e-3).all()  # exact everywhere, the border too
    assert (codecs.border_roundtrip("msra", distances, **opts) <= 0.5 + 1e-9).all()  # its quantisation, no worse
    # DARK: the quarter-sample fallback within two samples of the edge, the Newton step from two samples on
    dark = codecs.border_roundtrip("dark", distances, **opts)
    assert (dark <= np.where(np.array(distances) < 2, 0.5, 0.25)).all()
    assert dark[distances.index(2.0)] <= 0.25  # DarkPose/mmpose: +0.22 at sigma 2
    assert (codecs.border_roundtrip("sr", distances, **opts) <= 0.5 + 1e-9).all()  # plain argmax: half a sample
    assert (codecs.border_roundtrip("sr", distances, refine="dark", **opts) == dark).all()  # the same DARK step


def reference_dark(heatmaps, kernel=11):
    """DARK as DarkPose and mmpose 1.x write it, one map at a time: zero padding by the kernel radius, OpenCV's blur,
    the maximum restored, log, and the Newton step where two samples of room are left (no other safeguard)."""
    n, k, h, w = heatmaps.shape
    r = kernel // 2
    out = np.zeros((n, k, 2))
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j]
            y, x = np.unravel_index(hm.argmax(), hm.shape)
            padded = np.zeros((h + 2 * r, w + 2 * r), np.float32)
            padded[r:-r, r:-r] = hm
            blurred = cv2.GaussianBlur(padded, (kernel, kernel), 0)[r:-r, r:-r]
            log = np.log(np.maximum(blurred * hm.max() / blurred.max(), 1e-10))
            out[i, j] = x, y
            if 1 < x < w - 2 and 1 < y < h - 2:
                g = np.array([0.5 * (log[y, x + 1] - log[y, x - 1]), 0.5 * (log[y + 1, x] - log[y - 1, x])])
                dxx = 0.25 * (log[y, x + 2] - 2 * log[y, x] + log[y, x - 2])
                dyy = 0.25 * (log[y + 2, x] - 2 * log[y, x] + log[y - 2, x])
                dxy = 0.25 * (log[y + 1, x + 1] - log[y - 1, x + 1] - log[y + 1, x - 1] + log[y - 1, x - 1])
                out[i, j] -= np.linalg.solve(np.array([[dxx, dxy], [dxy, dyy]]), g)
    return out


@pytest.mark.parametrize("size", SIZES)
def test_dark_agrees_with_the_peers_on_noisy_blobs(size):
    """Noisy Gaussian blobs anywhere on the map (the border included): wherever the peers' Newton step is a step to a
    nearby maximum, ufpa decodes the same point (to 1e-4 samples: float32 blur vs OpenCV's)."""
    rng = np.random.default_rng(1)
    h, w = size
    uv = np.stack([rng.uniform(2, w - 3, (12, 17)), rng.uniform(2, h - 3, (12, 17))], -1)
    codec = codecs.create_codec("dark", (4 * h, 4 * w), size, sigma=min(size) / 24)
    heat = codec.encode(codec.to_input(uv))["target"] + rng.normal(0, 0.03, (12, 17, h, w)).astype(np.float32)
    ours = codec.to_heatmap(codec.decode(heat)[0])
    peers = reference_dark(heat)
    argmax = np.stack(np.unravel_index(heat.reshape(12, 17, -1).argmax(-1), size)[::-1], -1)
    stepped = (np.abs(peers - argmax) <= 1).all(-1) & (np.abs(ours - argmax) != 0.25).any(-1)
    assert stepped.mean() > 0.8
    assert np.abs(ours - peers)[stepped].max() <= 1e-4


@pytest.mark.parametrize("name", ["msra", "dark", "udp", "sr"])
def test_decoding_noise_stays_on_the_map(name):
    """Pure noise, flat and all-zero outputs decode to finite keypoints on the map (udp: within the kpd samples its
    offsets were trained on); before, DARK's Newton step on noise reached 72,142 px for a 64x96 crop."""
    rng = np.random.default_rng(0)
    codec = codecs.create_codec(name, (256, 192), (64, 48))
    shape = (16, 17 * codec.channels_per_keypoint, 64, 48)
    reach = codec.kpd if name == "udp" else 0.0
    for output in (rng.random(shape), rng.standard_normal(shape), rng.exponential(size=shape), 1e3 * rng.random(shape),
                   np.zeros(shape), np.full(shape, 0.5), rng.standard_normal(shape) * 1e-6):
        keypoints, scores = codec.decode(output.astype(np.float32))
        uv = codec.to_heatmap(keypoints)
        assert np.isfinite(keypoints).all() and np.isfinite(scores).all()
        assert (uv >= -reach - 1e-9).all() and (uv[..., 0] <= 47 + reach + 1e-9).all()
        assert (uv[..., 1] <= 63 + reach + 1e-9).all()


def test_udp_trains_a_keypoint_just_off_the_map():
    """As the UFPA code does: a keypoint whose Gaussian reaches the map keeps weight 1, its partial Gaussian and the
    offsets that point off the map, and decodes back to where it is; one beyond 3 sigma gets weight 0."""
    codec = codecs.create_codec("udp", (H, W), (64, 48))  # sigma 2: reach 6 samples
    uv = np.array([[[-1.5, 20.0], [48.0, 30.2], [20.0, -3.0], [-7.0, 20.0]]])
    enc = codec.encode(codec.to_input(uv))
    assert enc["target_weight"].tolist() == [[1.0, 1.0, 1.0, 0.0]]
    assert enc["target"][0, 3].max() == 0 and enc["offset_weight"][0, :3].max((1, 2)).min() > 0
    decoded, _ = codec.decode(enc["target"])
    assert np.abs(codec.to_heatmap(decoded)[0, :3] - uv[0, :3]).max() <= 1e-4
