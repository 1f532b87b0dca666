"""Evaluation: COCO keypoint AP through pycocotools (never a hand-written OKS), results files in the COCO/mmpose
result format, and exact-ground-truth metrics for SynthPose (end-point error, signed bias per axis and joint, PCK,
flip consistency), and ``predict`` / ``evaluate_model``: a model's keypoints on a dataset, and all of those metrics."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch

from .codecs import COCO_FLIP_PAIRS
from .data.coco import apply_transform, invert_transform
from .records import atomic_write_text, finite_numbers, read_json
from .runtime import TrainingError

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


def coco_keypoint_ap(gt_json, results, per_image: bool = False) -> dict:
    """COCO keypoint AP/AR (keys ``AP_KEYS``) of ``results`` against ``gt_json`` (a path or a COCO dict). With
    ``per_image``, where every image holds one person and one result, also ``oks`` {image id: pycocotools' OKS of its
    result} (what ``single_person_ap`` needs to re-score a resampled set of images); else ``oks`` is None."""
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
    out = {key: float(v) for key, v in zip(AP_KEYS, ev.stats)}
    if per_image:
        single = all(np.shape(ev.ious.get((i, c), ())) == (1, 1) for i in gt.getImgIds() for c in gt.getCatIds())
        out["oks"] = {int(i): float(ev.ious[(i, c)][0, 0]) for i in gt.getImgIds() for c in gt.getCatIds()} \
            if single else None
    return out


OKS_THRESHOLDS = np.linspace(0.5, 0.95, 10)  # pycocotools' IoU thresholds for keypoints
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def single_person_ap(oks, scores) -> float:
    """COCO keypoint AP of results where each image holds one person and one result (``oks``, ``scores``: one per
    image, repeats allowed, as in a bootstrap resample): pycocotools' accumulate (results by score, stable order;
    precision made monotone; 101 recall points; mean over OKS 0.50:0.05:0.95), without re-running its matching."""
    oks, scores = np.asarray(oks, np.float64), np.asarray(scores, np.float64)
    order = np.argsort(-scores, kind="mergesort")
    oks = oks[order]
    n = len(oks)
    precisions = []
    for t in OKS_THRESHOLDS:
        tp = np.cumsum(oks >= t)
        fp = np.cumsum(oks < t)
        recall = tp / n
        precision = tp / np.maximum(tp + fp, np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.where(idx < n, precision[np.minimum(idx, n - 1)], 0.0)
        precisions.append(q.mean())
    return float(np.mean(precisions))


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


# A keypoint counts as found when it lies within this fraction of its box size (max of width and height) and is not
# closer to its left/right partner's ground truth: the error of found keypoints is localisation, the rest gross misses
# and swaps, which alignment does not address (issue 21).
FOUND_RADIUS = 0.05


def _joint_var(values) -> list:
    """Per joint (column), the sample variance of the finite values; NaN for a joint with fewer than two."""
    out = []
    for column in np.asarray(values, np.float64).T:
        x = column[np.isfinite(column)]
        out.append(float(x.var(ddof=1)) if len(x) > 1 else float("nan"))
    return out


def exact_metrics(pred, gt, visible, box_sizes, pck_thresholds=(0.01, 0.02, 0.05, 0.1, 0.2),
                  flip_pairs=COCO_FLIP_PAIRS, found_radius: float = FOUND_RADIUS) -> dict:
    """Sub-pixel metrics against exact ground truth (N, K, 2); only ``visible`` (N, K) > 0 keypoints count.

    ``epe_*``: end-point error in input pixels (mean, median, per joint); ``bias_x``/``bias_y``: signed mean error,
    overall and per joint (K,); ``pck@t``: fraction within t x box size (``box_sizes`` (N,), e.g. max(w, h) of each
    box). Localisation apart from gross errors: ``swap_rate`` (a keypoint nearer its left/right partner's ground
    truth than its own; per joint too), ``found_rate`` (within ``found_radius`` x box size and not swapped), and on
    found keypoints only ``epe_found`` (mean, per joint) and ``bias_found_x``/``bias_found_y``.
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

    def joint_mean(values, where):  # per joint over the keypoints ``where`` holds; NaN for a joint with none
        count = where.sum(0)
        total = np.where(where, values, 0.0).sum(0)
        return np.divide(total, count, out=np.full(count.shape, np.nan), where=count > 0)

    k = gt.shape[1]
    partner = np.arange(k)
    for a, b in flip_pairs if max(max(p) for p in flip_pairs) < k else ():
        partner[a], partner[b] = b, a
    to_partner = np.linalg.norm(pred - gt[:, partner], axis=-1)
    swapped = mask & mask[:, partner] & (partner != np.arange(k)) & (to_partner < dist)
    found = mask & ~swapped & (dist <= found_radius * sizes)
    instances = {"visible": mask.sum(1).tolist(), "found": found.sum(1).tolist(),
                 "swapped": swapped.sum(1).tolist(), "epe_sum": np.where(mask, dist, 0.0).sum(1).tolist(),
                 "epe_found_sum": np.where(found, dist, 0.0).sum(1).tolist()}
    out = {"keypoints": int(mask.sum()), "epe_mean": float(dist[mask].mean()),
           "epe_median": float(np.median(dist[mask])),
           "bias_x": float(err[..., 0][mask].mean()), "bias_y": float(err[..., 1][mask].mean()),
           "bias_x_per_joint": np.nanmean(per_joint[..., 0], 0).tolist(),
           "bias_y_per_joint": np.nanmean(per_joint[..., 1], 0).tolist(),
           # spread of the signed error per joint, and how many keypoints: the noise floor of a measured bias
           "error_var_x_per_joint": _joint_var(per_joint[..., 0]),
           "error_var_y_per_joint": _joint_var(per_joint[..., 1]),
           "keypoints_per_joint": mask.sum(0).tolist(),
           "epe_per_joint": joint_mean(dist, mask).tolist(),
           "swap_rate": float(swapped[mask].mean()), "swap_rate_per_joint": joint_mean(swapped, mask).tolist(),
           "found_radius": found_radius, "found_rate": float(found[mask].mean()),
           "epe_found": float(dist[found].mean()) if found.any() else float("nan"),
           "epe_found_per_joint": joint_mean(dist, found).tolist(),
           "bias_found_x": float(err[..., 0][found].mean()) if found.any() else float("nan"),
           "bias_found_y": float(err[..., 1][found].mean()) if found.any() else float("nan"),
           "instances": instances}  # per instance, for resampling images (``INSTANCE_FIELDS``)
    for t in pck_thresholds:
        out[f"pck@{t:g}"] = float((dist <= t * sizes)[mask].mean())
    return out


def flip_consistency(pred, pred_from_flipped, visible) -> float:
    """Mean distance (px) between predictions on an image and the flipped-back predictions on its mirror image."""
    mask = np.asarray(visible) > 0
    dist = np.linalg.norm(np.asarray(pred, np.float64) - np.asarray(pred_from_flipped, np.float64), axis=-1)
    return float(dist[mask].mean())


# --- a model on a dataset ---------------------------------------------------------------------------------------------

@torch.no_grad()
def predict(model, codec, dataset, device, flip_test: bool, batch_size: int = 64, channels_last: bool = False,
            mirrored: bool = True):
    """For every instance of ``dataset``, in original-image pixels: ``keypoints`` (N, K, 2) and ``scores`` (N, K)
    (with flip test: from the average of the output and the flipped-back output of the mirrored crop), ``direct``
    (the crop alone) and ``mirrored`` (the mirrored crop alone, flipped back; if asked), for flip consistency."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    fused_kps, direct, mirror, scores, matrices = [], [], [], [], []
    with_mirror = mirrored or flip_test
    for batch in loader:
        x = batch["image"].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x).float().cpu().numpy()
        back = codec.flip_back(model(x.flip(-1)).float().cpu().numpy(), COCO_FLIP_PAIRS) if with_mirror else None
        fused = (out + back) / 2 if flip_test else out
        kps, sc = codec.decode(fused)
        if not np.isfinite(kps).all():
            raise TrainingError("the model's output decodes to non-finite keypoints (a diverged model); no results "
                                "are written")
        fused_kps.append(kps)
        scores.append(sc)
        direct.append(codec.decode(out)[0] if flip_test else kps)
        if mirrored:
            mirror.append(codec.decode(back)[0])
        matrices.append(batch["matrix"].double().numpy())
    to_image = [invert_transform(m) for m in np.concatenate(matrices)]

    def image_space(points):
        return np.stack([apply_transform(m, p) for m, p in zip(to_image, np.concatenate(points))])
    out = {"keypoints": image_space(fused_kps), "scores": np.concatenate(scores), "direct": image_space(direct)}
    if mirrored:
        out["mirrored"] = image_space(mirror)
    return out


def evaluate_model(model, codec, dataset, annotations, device, flip_test: bool, channels_last: bool = False,
                   consistency: bool = True) -> dict:
    """COCO AP (pycocotools, ground-truth boxes) of ``model`` on ``dataset``, scored against the ``annotations`` file it
    was read from, and exact-ground-truth metrics in original-image pixels; flip consistency too unless
    ``consistency=False`` (the quick evaluations of a learning curve). ``coco_results`` holds the results file."""
    pred = predict(model, codec, dataset, device, flip_test, channels_last=channels_last, mirrored=consistency)
    keypoints = pred["keypoints"]
    insts = dataset.instances
    gt = np.stack([i.keypoints for i in insts])
    visible = np.stack([i.visible for i in insts])
    boxes = np.array([max(i.box[2], i.box[3]) for i in insts])
    coco = to_coco_results([i.image_id for i in insts], keypoints, pred["scores"])
    doc = json.loads(Path(annotations).read_text())
    ids = {i.image_id for i in insts}
    doc["images"] = [im for im in doc["images"] if im["id"] in ids]  # a val_limit subset is scored on its images
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in ids]
    metrics = coco_keypoint_ap(doc, coco, per_image=True)
    oks = metrics.pop("oks")
    metrics.update(exact_metrics(keypoints, gt, visible, boxes))
    ids = [i.image_id for i in insts]
    metrics["instances"] |= {"image_id": ids, "score": [r["score"] for r in coco],
                             "oks": [oks[i] for i in ids] if oks is not None and len(set(ids)) == len(ids) else None}
    if consistency:
        metrics["flip_consistency_px"] = flip_consistency(pred["direct"], pred["mirrored"], visible)
    metrics["flip_test"] = flip_test
    metrics["coco_results"] = coco
    return metrics
