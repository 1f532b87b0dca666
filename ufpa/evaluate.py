"""Evaluation: COCO keypoint AP through pycocotools (never a hand-written OKS), results files in the COCO/mmpose
result format, and exact-ground-truth metrics for SynthPose (end-point error, signed bias per axis and joint, PCK,
flip consistency)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np

from .records import atomic_write_text, finite_numbers, read_json

AP_KEYS = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")
# COCO OKS sigmas of the 17 keypoints, in order.
COCO_SIGMAS = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
                        0.087, 0.087, 0.089, 0.089])


def _load_gt(gt_json):
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(gt_json, dict):
            coco = COCO()
            coco.dataset = gt_json
            coco.createIndex()
            return coco
        path = Path(gt_json)
        if not path.is_file():
            raise FileNotFoundError(f"no ground-truth annotation file at {path}")
        try:
            return COCO(str(path))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({err}); regenerate or re-download it") from err


def load_results(results) -> list[dict]:
    """A results list, or the path of a COCO results file, checked entry by entry: a NaN keypoint or score would be
    scored by pycocotools as a match (AP 1.0), so every value must be a finite number."""
    if isinstance(results, (str, os.PathLike)):
        results = read_json(results, "results file")
    if not isinstance(results, list):
        raise ValueError("results must be a list of COCO result dicts (or the path of a JSON file holding one)")
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise ValueError(f"result {i} is a {type(r).__name__}, not a dict with image_id, category_id, keypoints "
                             "and score")
        missing = {"image_id", "category_id", "keypoints", "score"} - set(r)
        if missing:
            raise ValueError(f"result {i} lacks {sorted(missing)}: each needs image_id, category_id, keypoints "
                             "[x1, y1, s1, ...] and score")
        kps = r["keypoints"]
        if not finite_numbers(kps) or len(kps) % 3:
            raise ValueError(f"result {i} (image {r['image_id']}): keypoints must be a flat list [x1, y1, s1, ...] "
                             "of finite numbers; NaN or inf would score as a perfect match in pycocotools, so no AP "
                             "is computed from it (the model diverged or its output was not decoded)")
        if not finite_numbers([r["score"]]):
            raise ValueError(f"result {i} (image {r['image_id']}): score {r['score']!r} is not a finite number; "
                             "fix the scoring (box score x keypoint score) before evaluating")
    return results


def coco_keypoint_ap(gt_json, results) -> dict:
    """COCO keypoint AP/AR (keys ``AP_KEYS``) of ``results`` against ``gt_json`` (a path or a COCO dict)."""
    from pycocotools.cocoeval import COCOeval

    gt = _load_gt(gt_json)
    results = load_results(results)
    if not results:
        raise ValueError("no results to evaluate: the detector or model produced nothing")
    unknown = {r["image_id"] for r in results} - set(gt.getImgIds())
    if unknown:
        raise ValueError(f"results name {len(unknown)} image ids absent from the ground truth, e.g. "
                         f"{sorted(unknown)[:5]}")
    categories = {r["category_id"] for r in results} - set(gt.getCatIds())
    if categories:
        raise ValueError(f"results name category ids {sorted(categories)} absent from the ground truth (its "
                         f"categories: {sorted(gt.getCatIds())}); they would score AP 0 silently: use the ground "
                         "truth's person category id")
    k = len(gt.loadCats(gt.getCatIds())[0].get("keypoints", [])) or 17
    wrong = [i for i, r in enumerate(results) if len(r["keypoints"]) != 3 * k]
    if wrong:
        raise ValueError(f"{len(wrong)} results have a keypoint count other than the ground truth's {k} (e.g. "
                         f"result {wrong[0]}: {len(results[wrong[0]]['keypoints']) // 3})")
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.useSegm = None
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {key: float(v) for key, v in zip(AP_KEYS, ev.stats)}


def to_coco_results(image_ids, keypoints, keypoint_scores, box_scores=None, category_id: int = 1,
                    score_threshold: float = 0.2) -> list[dict]:
    """COCO/mmpose result dicts. Instance score = box score x mean keypoint score over keypoints above threshold."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    keypoint_scores = np.asarray(keypoint_scores, dtype=np.float64)
    n = len(keypoints)
    box_scores = np.ones(n) if box_scores is None else np.asarray(box_scores, dtype=np.float64)
    for name, values in (("keypoints", keypoints), ("keypoint scores", keypoint_scores), ("box scores", box_scores)):
        bad = ~np.isfinite(values.reshape(n, -1)).all(axis=1) if n else np.zeros(0, bool)
        if bad.any():
            raise ValueError(f"{int(bad.sum())} of {n} predictions have non-finite {name} (NaN or inf), e.g. image "
                             f"{int(np.asarray(image_ids)[bad][0])}: the model diverged or its input was bad; no "
                             "results are written from them")
    out = []
    for i in range(n):
        ks = keypoint_scores[i]
        good = ks > score_threshold
        score = box_scores[i] * (ks[good].mean() if good.any() else 0.0)
        flat = np.concatenate([keypoints[i], ks[:, None]], -1).reshape(-1)
        out.append({"image_id": int(image_ids[i]), "category_id": category_id,
                    "keypoints": [round(float(v), 3) for v in flat], "score": round(float(score), 6)})
    return out


def write_results(path, results: list[dict]) -> Path:
    """A COCO results file, atomically; NaN or inf anywhere is refused (it is not JSON) before anything is written."""
    load_results(results)
    return atomic_write_text(path, json.dumps(results, allow_nan=False))


def exact_metrics(pred, gt, visible, box_sizes, pck_thresholds=(0.05, 0.1, 0.2)) -> dict:
    """Sub-pixel metrics against exact ground truth (N, K, 2); only ``visible`` (N, K) > 0 keypoints count.

    ``epe_*``: end-point error in input pixels; ``bias_x``/``bias_y``: signed mean error per joint (K,) and overall;
    ``pck@t``: fraction within t x box size (``box_sizes`` (N,), e.g. max(w, h) of each box).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    mask = np.asarray(visible) > 0
    if pred.shape != gt.shape or mask.shape != gt.shape[:2]:
        raise ValueError(f"pred {pred.shape}, gt {gt.shape} and visible {mask.shape} disagree")
    if not mask.any():
        raise ValueError("no labelled keypoints to evaluate")
    err = pred - gt
    dist = np.linalg.norm(err, axis=-1)
    sizes = np.asarray(box_sizes, np.float64)[:, None]
    per_joint = np.where(mask[..., None], err, np.nan)
    out = {"keypoints": int(mask.sum()), "epe_mean": float(dist[mask].mean()),
           "epe_median": float(np.median(dist[mask])),
           "bias_x": float(err[..., 0][mask].mean()), "bias_y": float(err[..., 1][mask].mean()),
           "bias_x_per_joint": np.nanmean(per_joint[..., 0], 0).tolist(),
           "bias_y_per_joint": np.nanmean(per_joint[..., 1], 0).tolist()}
    for t in pck_thresholds:
        out[f"pck@{t:g}"] = float((dist <= t * sizes)[mask].mean())
    return out


def flip_consistency(pred, pred_from_flipped, visible) -> float:
    """Mean distance (px) between predictions on an image and the flipped-back predictions on its mirror image."""
    mask = np.asarray(visible) > 0
    dist = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(pred_from_flipped, np.float64), axis=-1)
    return float(dist[mask].mean())
