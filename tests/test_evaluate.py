"""ufpa.evaluate: pycocotools AP, result files, exact-GT metrics, and clear errors."""

import json

import numpy as np
import pytest

from ufpa import evaluate


def tiny_gt():
    rng = np.random.default_rng(0)
    anns, images = [], []
    for i in range(4):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 100, "width": 80})
        k = np.concatenate([rng.uniform(10, 70, (17, 2)), np.full((17, 1), 2.0)], 1)
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 17,
                     "keypoints": k.reshape(-1).tolist(), "bbox": [5, 5, 70, 90], "area": 6300.0})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}


def test_perfect_and_perturbed_predictions(tmp_path):
    gt = tiny_gt()
    k = np.array([a["keypoints"] for a in gt["annotations"]]).reshape(4, 17, 3)
    perfect = evaluate.to_coco_results([1, 2, 3, 4], k[..., :2], np.ones((4, 17)))
    assert evaluate.coco_keypoint_ap(gt, perfect)["AP"] == pytest.approx(1.0)
    noisy = evaluate.to_coco_results([1, 2, 3, 4], k[..., :2] + 6.0, np.ones((4, 17)))
    path = evaluate.write_results(tmp_path / "res.json", noisy)
    stats = evaluate.coco_keypoint_ap(gt, path)
    assert set(stats) == set(evaluate.AP_KEYS) and stats["AP"] < 0.9


def test_errors_name_the_problem(tmp_path):
    gt = tiny_gt()
    with pytest.raises(ValueError, match="no results"):
        evaluate.coco_keypoint_ap(gt, [])
    with pytest.raises(ValueError, match="lacks"):
        evaluate.coco_keypoint_ap(gt, [{"image_id": 1}])
    with pytest.raises(ValueError, match="absent from the ground truth"):
        evaluate.coco_keypoint_ap(gt, [{"image_id": 99, "category_id": 1, "keypoints": [0] * 51, "score": 1}])
    with pytest.raises(FileNotFoundError):
        evaluate.coco_keypoint_ap(tmp_path / "none.json", [])
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        evaluate.coco_keypoint_ap(bad, [{"image_id": 1, "category_id": 1, "keypoints": [0] * 51, "score": 1}])
    json.dumps(gt)  # the fixture stays serialisable


def test_exact_metrics_and_flip_consistency():
    gt = np.zeros((2, 17, 2)) + 50
    pred = gt + np.array([0.5, -0.25])
    m = evaluate.exact_metrics(pred, gt, np.ones((2, 17)), box_sizes=[100, 100])
    assert m["bias_x"] == pytest.approx(0.5) and m["bias_y"] == pytest.approx(-0.25)
    assert m["epe_mean"] == pytest.approx(np.hypot(0.5, 0.25)) and m["pck@0.05"] == 1.0
    assert len(m["bias_x_per_joint"]) == 17
    assert evaluate.flip_consistency(pred, gt, np.ones((2, 17))) == pytest.approx(np.hypot(0.5, 0.25))
    with pytest.raises(ValueError, match="no labelled"):
        evaluate.exact_metrics(pred, gt, np.zeros((2, 17)), [100, 100])


def test_localisation_is_measured_apart_from_swaps_and_gross_misses():
    """issue 21: AP and the mean end-point error are ruled by wrists and ankles found in the wrong place; alignment acts
    on the keypoints that were found. Two people, 17 joints, boxes of 100 px (found: within 5 px, not swapped)."""
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 100, size=(2, 17, 2))
    gt[:, 10] = gt[:, 9] + [30.0, 0.0]  # right wrist 30 px from the left one
    pred = gt + [0.5, 0.0]  # every keypoint 0.5 px off in x ...
    pred[0, 9] = gt[0, 10]  # ... but person 0's left wrist sits on the right wrist: a swap
    pred[1, 15] = gt[1, 15] + [20.0, 0.0]  # ... and person 1's left ankle is 20 px off: a gross miss
    m = evaluate.exact_metrics(pred, gt, np.ones((2, 17)), box_sizes=[100, 100])
    assert m["swap_rate"] == pytest.approx(1 / 34) and m["swap_rate_per_joint"][9] == pytest.approx(0.5)
    assert m["found_rate"] == pytest.approx(32 / 34)
    assert m["epe_found"] == pytest.approx(0.5) and m["bias_found_x"] == pytest.approx(0.5)
    assert m["epe_found_per_joint"][9] == pytest.approx(0.5) and m["epe_per_joint"][15] == pytest.approx(10.25)
    assert m["epe_mean"] > 1.0 and m["pck@0.01"] == pytest.approx(32 / 34)
    none = evaluate.exact_metrics(gt + 50, gt, np.ones((2, 17)), [100, 100])
    assert none["found_rate"] == 0 and np.isnan(none["epe_found"])


def _single_person_set(n=60, seed=1):
    rng = np.random.default_rng(seed)
    images, anns, preds, scores = [], [], [], []
    for i in range(n):
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": 100, "width": 80})
        k = rng.uniform(10, 70, (17, 2))
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 17,
                     "keypoints": np.concatenate([k, np.full((17, 1), 2.0)], 1).reshape(-1).tolist(),
                     "bbox": [5, 5, 70, 90], "area": 6300.0})
        preds.append(k + rng.normal(0, rng.uniform(0.5, 12.0), (17, 2)))  # from nearly right to far off
        scores.append(rng.uniform(0.2, 1.0, 17))
    scores[3] = scores[4]  # a tie in score, broken as pycocotools breaks it
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}
    return gt, evaluate.to_coco_results(list(range(1, n + 1)), np.array(preds), np.array(scores))


def test_single_person_ap_is_pycocotools_ap_and_rescores_a_resample():
    """The report's bootstrap over val images re-scores resampled images from each image's OKS and score; that must
    be pycocotools' AP, not an approximation of it."""
    gt, results = _single_person_set()
    coco = evaluate.coco_keypoint_ap(gt, results, per_image=True)
    ids = [r["image_id"] for r in results]
    oks, score = [coco["oks"][i] for i in ids], [r["score"] for r in results]
    assert 0.2 < coco["AP"] < 0.9
    assert evaluate.single_person_ap(oks, score) == pytest.approx(coco["AP"], abs=1e-12)
    pick = np.random.default_rng(2).integers(0, len(ids), len(ids))  # a resample, repeats included
    gt2 = {**gt, "images": [], "annotations": []}
    for new, j in enumerate(pick, 1):
        gt2["images"].append({**gt["images"][j], "id": new})
        gt2["annotations"].append({**gt["annotations"][j], "id": new, "image_id": new})
    results2 = [{**results[j], "image_id": new} for new, j in enumerate(pick, 1)]
    again = evaluate.coco_keypoint_ap(gt2, results2)["AP"]
    assert evaluate.single_person_ap(np.array(oks)[pick], np.array(score)[pick]) == pytest.approx(again, abs=1e-12)


def test_per_image_oks_only_where_each_image_holds_one_person():
    gt = tiny_gt()
    two = {**gt, "annotations": gt["annotations"] + [{**gt["annotations"][0], "id": 99}]}
    k = np.array([a["keypoints"] for a in gt["annotations"]]).reshape(4, 17, 3)
    res = evaluate.to_coco_results([1, 2, 3, 4], k[..., :2] + 2.0, np.ones((4, 17)))
    assert set(evaluate.coco_keypoint_ap(gt, res, per_image=True)["oks"]) == {1, 2, 3, 4}
    assert evaluate.coco_keypoint_ap(two, res, per_image=True)["oks"] is None
    assert "oks" not in evaluate.coco_keypoint_ap(gt, res)
