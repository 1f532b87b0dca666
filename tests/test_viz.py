"""ufpa.viz and dataset statistics: figures build from real data (no pixel comparisons)."""

import json

import matplotlib.pyplot as plt
import numpy as np

from ufpa import viz
from ufpa.data import coco, synthetic


def test_keypoint_figures(tmp_path):
    synthetic.generate(tmp_path, train=3, val=0, seed=1, progress=False)
    doc = json.loads((tmp_path / "annotations" / "person_keypoints_train.json").read_text())
    shown = viz.gallery(tmp_path / "images" / "train", doc, 2, path=tmp_path / "g.png")
    assert (tmp_path / "g.jpg").stat().st_size > 1000 and shown is not None
    fig, ax = plt.subplots()
    k = np.asarray(doc["annotations"][0]["keypoints"]).reshape(17, 3)
    viz.draw_skeleton(ax, k[:, :2], k[:, 2])
    viz.error_vectors(ax, k[:, :2], k[:, :2] + 0.5, scale=10)
    assert len(ax.lines) > 0 and len(ax.collections) >= 2
    fig = viz.heatmap_grid(np.random.default_rng(0).random((17, 16, 12)), list(synthetic.KEYPOINT_NAMES))
    assert len(fig.axes) == 18
    plt.close("all")


def test_dataset_statistics(tmp_path):
    synthetic.generate(tmp_path, train=5, val=0, seed=2, progress=False)
    doc = json.loads((tmp_path / "annotations" / "person_keypoints_train.json").read_text())
    stats = coco.dataset_statistics(doc)
    assert stats["images"] == 5 and stats["people"] == len(doc["annotations"])
    assert sum(stats["people_per_image"].values()) == 5
    assert abs(stats["keypoints_visible"] + stats["keypoints_occluded"] + stats["keypoints_unlabelled"] - 1) < 1e-9


def test_shift_map_draws_both_axes_per_variant(tmp_path):
    fig = viz.shift_map((128, 96), 3, path=tmp_path / "map.png")
    panels = {ax.get_title().split(" ")[0]: ax.images[0].get_array() for ax in fig.axes if ax.images}
    assert set(panels) == {"baseline", "bilinear", "bilinear_corners", "ufpa", "ufpa_any"}
    assert panels["baseline"].max() == np.hypot(28, 28)  # the nearest sawtooth peaks on both axes at once
    assert panels["ufpa"].max() == 0 and panels["ufpa"].shape == (33, 25)  # 129x97 input: exact everywhere
    assert panels["ufpa_any"][:20, :15].max() == 0 < panels["ufpa_any"][-1, -1]  # exact inside, a border band
    assert (tmp_path / "map.png").stat().st_size > 1000
    plt.close(fig)


def test_keypoint_counts_are_integers_that_add_up(tmp_path):
    synthetic.generate(tmp_path, train=4, val=0, seed=3, progress=False)
    doc = json.loads((tmp_path / "annotations" / "person_keypoints_train.json").read_text())
    stats = coco.dataset_statistics(doc)
    counts = stats["keypoint_counts"]
    assert all(isinstance(n, int) for n in counts.values()) and sum(counts.values()) == 17 * stats["people"]
    assert abs(counts["unlabelled"] / (17 * stats["people"]) - stats["keypoints_unlabelled"]) < 1e-12
