"""SynthPose: procedural people in COCO keypoint format, with exact sub-pixel ground truth.

Each image holds one main figure and up to two others: articulated 2-D bodies with COCO's 17 keypoints (plausible
limb proportions, joint-angle limits, a head whose eyes, nose and ears follow its turn), drawn as tapered limbs and
discs with varied colours and stripes, over cluttered backgrounds, partly hidden by occluders, with blur and noise.

Keypoint convention (that of ``ufpa.geometry``): pixel i's centre is at x = i. The renderer honours it exactly: every
shape is a signed-distance field with a smooth (logistic, 0.5 px) edge evaluated at pixel centres, so a symmetric
shape's intensity centroid is its geometric centre to well under 0.01 px (``tests/test_synthetic.py``). OpenCV draws
only the background clutter, where sub-pixel placement does not matter.

Visibility follows COCO: 2 visible, 1 labelled but occluded (by another figure, an occluder, or the head itself for a
face turned away), 0 not labelled (outside the image; coordinates then 0). Boxes are [x, y, w, h] around the
figure's visible pixels, edges half a pixel outside the outermost pixel centres; area counts those pixels.

Generation is deterministic per seed: image i of a split draws from its own ``SeedSequence((seed, split, i))`` and
writes the same bytes however many processes run.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..records import atomic_write_text

KEYPOINT_NAMES = ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                  "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                  "right_knee", "left_ankle", "right_ankle")
# COCO's skeleton, 1-indexed as in the annotation files.
SKELETON = ((16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10),
            (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7))
SPLITS = {"train": 0, "val": 1}
EDGE = 0.5  # logistic edge softness in pixels


@dataclass(frozen=True)
class SynthConfig:
    height: int = 256  # image size (H, W): person crops by default
    width: int = 192
    max_people: int = 3  # main figure plus up to max_people - 1 others
    occluder_prob: float = 0.5  # chance of one or two occluders
    blur_prob: float = 0.3
    noise: float = 6.0  # noise amplitude (grey levels)
    jpeg_quality: int = 92


# --- the renderer -------------------------------------------------------------------------------------------------

class Canvas:
    """A float32 RGB image plus an owner map (which figure or occluder covers each pixel)."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.owner = np.full(image.shape[:2], -1, dtype=np.int16)

    def _window(self, lo, hi):
        h, w = self.owner.shape
        x0, y0 = max(int(math.floor(lo[0])), 0), max(int(math.floor(lo[1])), 0)
        x1, y1 = min(int(math.ceil(hi[0])) + 1, w), min(int(math.ceil(hi[1])) + 1, h)
        if x0 >= x1 or y0 >= y1:
            return None
        # broadcast a row and a column of pixel centres instead of materialising a grid
        xs = np.arange(x0, x1, dtype=np.float32)[None, :]
        ys = np.arange(y0, y1, dtype=np.float32)[:, None]
        return (slice(y0, y1), slice(x0, x1)), xs, ys

    def paint(self, alpha_fn, lo, hi, colour, owner: int, texture=None):
        """Blend ``colour`` where ``alpha_fn(xs, ys)`` (0..1, at pixel centres) covers, inside the box lo..hi."""
        window = self._window(lo, hi)
        if window is None:
            return
        box, xs, ys = window
        alpha = alpha_fn(xs, ys)
        colour = np.asarray(colour, dtype=np.float32)
        if texture is not None:
            colour = colour * texture(xs, ys)[..., None]
        region = self.image[box]
        region += alpha[..., None] * (colour - region)
        self.owner[box][alpha > 0.5] = owner


def _edge(signed_distance):
    # logistic in the signed distance, 1 / (1 + exp(d / EDGE)) written with tanh (no overflow): smooth, so sampling
    # at pixel centres keeps centroids exact
    return 0.5 - 0.5 * np.tanh(signed_distance * (0.5 / EDGE))


def disc(centre, radius):
    cx, cy = float(centre[0]), float(centre[1])
    reach = radius + 6 * EDGE

    def fn(xs, ys):
        return _edge(np.sqrt((xs - cx) ** 2 + (ys - cy) ** 2) - radius)

    return fn, (cx - reach, cy - reach), (cx + reach, cy + reach)


def capsule(a, b, radius_a, radius_b):
    """A limb from a to b whose radius tapers linearly (distance to the segment minus the local radius)."""
    ax, ay, bx, by = float(a[0]), float(a[1]), float(b[0]), float(b[1])
    dx, dy = bx - ax, by - ay
    length2 = max(dx * dx + dy * dy, 1e-9)

    def fn(xs, ys):
        t = np.clip(((xs - ax) * dx + (ys - ay) * dy) / length2, 0.0, 1.0)
        dist = np.sqrt((xs - ax - t * dx) ** 2 + (ys - ay - t * dy) ** 2)
        return _edge(dist - (radius_a + t * (radius_b - radius_a)))

    reach = max(radius_a, radius_b) + 6 * EDGE
    return fn, (min(ax, bx) - reach, min(ay, by) - reach), (max(ax, bx) + reach, max(ay, by) + reach)


def stripes(rng):
    """A multiplicative stripe texture (or none)."""
    if rng.random() < 0.5:
        return None
    angle, period, depth = rng.uniform(0, np.pi), rng.uniform(3, 9), rng.uniform(0.15, 0.4)
    c, s = math.cos(angle), math.sin(angle)
    return lambda xs, ys: 1.0 - depth * (0.5 + 0.5 * np.sin((xs * c + ys * s) * (2 * np.pi / period)))


# --- bodies -------------------------------------------------------------------------------------------------------

def _rot(v, angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _colour(rng, lo=30, hi=230):
    return rng.uniform(lo, hi, 3).astype(np.float32)


def make_figure(rng, centre, height) -> dict:
    """Joint positions (17, 2) and drawing parameters of one figure of ``height`` px standing at ``centre``."""
    p = {k: v * rng.uniform(0.9, 1.1) for k, v in dict(
        torso=0.30, shoulder=0.11, hip=0.075, upper_arm=0.17, forearm=0.15, thigh=0.24, shin=0.23, head=0.065,
        neck=0.09).items()}
    lean = rng.normal(0, math.radians(10))
    if rng.random() < 0.1:  # now and then a figure lying, tumbling or upside down
        lean += rng.uniform(-math.pi, math.pi)
    up = np.array([math.sin(lean), -math.cos(lean)])
    right = np.array([math.cos(lean), math.sin(lean)])  # image-right for an upright figure
    facing_back = rng.random() < 0.2
    side = -1.0 if facing_back else 1.0  # the person's left is image-right when facing the camera
    body_yaw = rng.uniform(-1.2, 1.2)
    width = max(abs(math.cos(body_yaw)), 0.3)
    s = height
    pelvis = np.asarray(centre, dtype=np.float64) - up * (0.05 * s)
    neck = pelvis + up * p["torso"] * s
    k = np.zeros((17, 2))
    k[5], k[6] = neck + side * right * p["shoulder"] * width * s, neck - side * right * p["shoulder"] * width * s
    k[11], k[12] = pelvis + side * right * p["hip"] * width * s, pelvis - side * right * p["hip"] * width * s
    down = -up
    for joint, (shoulder, elbow, wrist) in enumerate(((5, 7, 9), (6, 8, 10))):
        outward = side * (1 if joint == 0 else -1)
        a = math.radians(np.clip(rng.normal(20, 45), -150, 150)) * outward  # shoulder: arms hang, swing, rise
        flex = math.radians(rng.uniform(0, 145)) * (-outward if rng.random() < 0.7 else outward)
        d1 = _rot(down, a)
        k[elbow] = k[shoulder] + d1 * p["upper_arm"] * s
        k[wrist] = k[elbow] + _rot(d1, flex) * p["forearm"] * s
    for joint, (hip, knee, ankle) in enumerate(((11, 13, 15), (12, 14, 16))):
        outward = side * (1 if joint == 0 else -1)
        a = math.radians(np.clip(rng.normal(5, 25), -40, 100)) * (outward if rng.random() < 0.5 else -outward)
        d1 = _rot(down, a)
        k[knee] = k[hip] + d1 * p["thigh"] * s
        k[ankle] = k[knee] + _rot(d1, -math.radians(rng.uniform(0, 130)) * np.sign(a or 1.0)) * p["shin"] * s
    # Head: a disc on a tilted neck; its turn moves eyes and nose sideways and hides the far ear.
    tilt = rng.normal(0, math.radians(12))
    head_up, head_right = _rot(up, tilt), _rot(right, tilt)
    r = p["head"] * s
    head = neck + head_up * p["neck"] * s
    turn = rng.uniform(-1.3, 1.3)
    lateral, frontal = math.sin(turn), math.cos(turn)
    k[0] = head + head_right * side * 0.75 * r * lateral - head_up * 0.15 * r
    for eye, sign in ((1, 1.0), (2, -1.0)):
        k[eye] = head + head_right * side * (sign * 0.38 * r * frontal + 0.55 * r * lateral) + head_up * 0.2 * r
    for ear, sign in ((3, 1.0), (4, -1.0)):
        k[ear] = head + head_right * side * (sign * 0.95 * r * frontal + 0.3 * r * lateral)
    hidden = set()
    if facing_back:
        hidden |= {0, 1, 2}  # the face is behind the head
    if turn > 0.6:
        hidden.add(4)  # turned towards the person's left: the right ear is behind the head
    if turn < -0.6:
        hidden.add(3)
    return dict(keypoints=k, head=head, head_radius=r, hidden=hidden, scale=s, facing_back=facing_back,
                limb=0.03 * s * rng.uniform(0.8, 1.2), skin=_colour(rng, 60, 230), shirt=_colour(rng),
                trousers=_colour(rng), shirt_texture=stripes(rng), trouser_texture=stripes(rng))


def draw_figure(canvas: Canvas, fig: dict, owner: int):
    k, w = fig["keypoints"], fig["limb"]
    far_first = [(6, 8, 10), (12, 14, 16)] if fig["facing_back"] else [(5, 7, 9), (11, 13, 15)]
    near_last = [(5, 7, 9), (11, 13, 15)] if fig["facing_back"] else [(6, 8, 10), (12, 14, 16)]

    def limb(chain):
        a, b, c = chain
        arm = a in (5, 6)
        colour, texture = (fig["shirt"], fig["shirt_texture"]) if arm else (fig["trousers"], fig["trouser_texture"])
        scale = 1.0 if arm else 1.35
        canvas.paint(*capsule(k[a], k[b], 1.1 * w * scale, 0.9 * w * scale), colour, owner, texture)
        lower = fig["skin"] if arm else fig["trousers"]
        canvas.paint(*capsule(k[b], k[c], 0.9 * w * scale, 0.7 * w * scale), lower, owner)
        canvas.paint(*disc(k[c], 0.8 * w * scale), fig["skin"] if arm else fig["trousers"] * 0.6, owner)

    for chain in far_first:
        limb(chain)
    shoulder_mid, hip_mid = (k[5] + k[6]) / 2, (k[11] + k[12]) / 2
    half = max(0.85 * np.linalg.norm(k[5] - k[6]) / 2, 1.5 * w)
    canvas.paint(*capsule(shoulder_mid, hip_mid, half, max(0.85 * np.linalg.norm(k[11] - k[12]) / 2, 1.3 * w)),
                 fig["shirt"], owner, fig["shirt_texture"])
    for chain in near_last:
        limb(chain)
    r = fig["head_radius"]
    canvas.paint(*capsule(shoulder_mid, fig["head"], 0.5 * r, 0.45 * r), fig["skin"] * 0.9, owner)
    canvas.paint(*disc(fig["head"], r), fig["skin"], owner)
    for ear in (3, 4):
        if ear not in fig["hidden"]:
            canvas.paint(*disc(k[ear], 0.28 * r), fig["skin"] * 0.8, owner)
    if not fig["facing_back"]:
        for eye in (1, 2):
            canvas.paint(*disc(k[eye], 0.14 * r), (20.0, 20.0, 20.0), owner)
        canvas.paint(*disc(k[0], 0.16 * r), fig["skin"] * 0.7, owner)
    else:
        canvas.paint(*disc(fig["head"], 0.85 * r), (40.0, 30.0, 25.0), owner)  # hair


# --- scenes -------------------------------------------------------------------------------------------------------

def _background(rng, h, w) -> np.ndarray:
    base = cv2.resize(rng.uniform(40, 220, (3, 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    image = np.ascontiguousarray(base)
    for _ in range(int(rng.integers(4, 12))):  # clutter
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        kind = rng.integers(3)
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if kind == 0:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(5, w // 2)), y + int(rng.integers(5, h // 2))),
                          colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(image, (x, y), int(rng.integers(3, w // 4)), colour, -1, cv2.LINE_AA)
        else:
            cv2.line(image, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), colour,
                     int(rng.integers(1, 4)), cv2.LINE_AA)
    return image


def render_image(rng: np.random.Generator, cfg: SynthConfig):
    """One image (uint8 RGB) and its figures' annotations (keypoints (17, 3), bbox, area)."""
    h, w = cfg.height, cfg.width
    canvas = Canvas(_background(rng, h, w))
    n_people = int(rng.integers(1, cfg.max_people + 1))
    figures = []
    for i in range(n_people):
        if i == 0:  # the main figure, roughly centred, drawn last so it is rarely hidden
            centre = np.array([w / 2, h / 2]) + rng.normal(0, 0.06, 2) * np.array([w, h])
            height = h * rng.uniform(0.55, 0.85)
        else:
            centre = rng.uniform(0, 1, 2) * np.array([w, h])
            height = h * rng.uniform(0.35, 0.9)
        figures.append(make_figure(rng, centre, height))
    order = list(range(1, n_people)) + [0]
    for pid in order:
        draw_figure(canvas, figures[pid], pid)
    if rng.random() < cfg.occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            centre = figures[0]["keypoints"][int(rng.integers(17))] + rng.normal(0, 10, 2)
            size = rng.uniform(0.08, 0.25) * h
            if rng.random() < 0.5:
                canvas.paint(*capsule(centre - size / 2, centre + size / 2 * rng.uniform(-1, 1, 2), size / 3,
                                      size / 3), _colour(rng), -2)
            else:
                canvas.paint(*disc(centre, size / 2), _colour(rng), -2)
    image = canvas.image
    if rng.random() < cfg.blur_prob:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2))
    if cfg.noise > 0:
        grain = rng.normal(0, cfg.noise, (h // 4 + 1, w // 4 + 1, 3)).astype(np.float32)
        image = image + cv2.resize(grain, ((w // 4 + 1) * 4, (h // 4 + 1) * 4), interpolation=cv2.INTER_NEAREST)[:h, :w]
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)

    annotations = []
    for pid, fig in enumerate(figures):
        visible_px = canvas.owner == pid
        ys, xs = np.nonzero(visible_px)
        if len(xs) < 20:
            continue  # hidden or off the image: not an annotated person
        kps = np.zeros((17, 3))
        for j, (x, y) in enumerate(fig["keypoints"]):
            if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
                continue
            xi, yi = int(round(x)), int(round(y))
            v = 1 if (j in fig["hidden"] or canvas.owner[yi, xi] != pid) else 2
            kps[j] = (x, y, v)
        if not (kps[:, 2] > 0).any():
            continue
        bbox = [float(xs.min()) - 0.5, float(ys.min()) - 0.5, float(xs.max() - xs.min() + 1),
                float(ys.max() - ys.min() + 1)]
        annotations.append(dict(keypoints=kps, bbox=bbox, area=float(len(xs))))  # visible pixels, as COCO segments
    return image, annotations


# --- datasets -----------------------------------------------------------------------------------------------------

def _render_to_file(args):
    seed, split, index, cfg, image_dir = args
    rng = np.random.default_rng(np.random.SeedSequence((seed, SPLITS[split], index)))
    image, annotations = render_image(rng, cfg)
    name = f"{index:06d}.jpg"
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for {split} image {index}")
    path = Path(image_dir) / name
    tmp = path.with_name(f".{name}.tmp")
    tmp.write_bytes(data.tobytes())
    os.replace(tmp, path)
    return index, name, annotations


def categories() -> list[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINT_NAMES),
             "skeleton": [list(p) for p in SKELETON]}]


def generate(out: str | os.PathLike, train: int = 2000, val: int = 200, seed: int = 0, cfg: SynthConfig | None = None,
             workers: int = 1, progress: bool = True) -> dict:
    """Write ``out/images/{train,val}/*.jpg`` and ``out/annotations/person_keypoints_{train,val}.json``.

    Returns the paths of the annotation files. The JSON files are written last and atomically, so a run cut short
    leaves no annotation file pointing at missing images; running again rewrites the same bytes.
    """
    cfg = cfg or SynthConfig()
    if train < 0 or val < 0 or train + val == 0:
        raise ValueError(f"ask for at least one image (train={train}, val={val})")
    out = Path(out)
    paths = {}
    for split, count in (("train", train), ("val", val)):
        if count == 0:
            continue
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(seed, split, i, cfg, str(image_dir)) for i in range(count)]
        results = _run(jobs, workers, progress, f"synth {split}")
        images, annotations = [], []
        for index, name, anns in sorted(results, key=lambda r: r[0]):
            image_id = index + 1
            images.append({"id": image_id, "file_name": name, "height": cfg.height, "width": cfg.width})
            for ann in anns:
                kps = ann["keypoints"]
                annotations.append({
                    "id": len(annotations) + 1, "image_id": image_id, "category_id": 1, "iscrowd": 0,
                    "keypoints": [round(float(v), 4) for v in kps.reshape(-1)],
                    "num_keypoints": int((kps[:, 2] > 0).sum()), "bbox": [round(v, 4) for v in ann["bbox"]],
                    "area": round(ann["area"], 3)})
        doc = {"info": {"description": "SynthPose: procedural people with exact sub-pixel keypoints (ufpa)",
                        "version": "1", "seed": seed, "split": split, "config": asdict(cfg),
                        "keypoint_convention": "pixel i's centre at x = i"},
               "images": images, "annotations": annotations, "categories": categories()}
        path = out / "annotations" / f"person_keypoints_{split}.json"
        atomic_write_text(path, json.dumps(doc, separators=(",", ":")))
        paths[split] = path
    return paths


def _run(jobs, workers, progress, desc):
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc=desc, disable=not progress, mininterval=1.0)
    if workers <= 1:
        return [_render_to_file(job) for job in tqdm(jobs, **bar)]
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        return list(tqdm(pool.imap_unordered(_render_to_file, jobs, chunksize=16), **bar))
