"""Top-down COCO keypoint dataset: person boxes to fixed-size crops through the unbiased affine transform, with
augmentation and targets from a ``ufpa.codecs`` codec. SynthPose and real COCO 2017 load the same way, and
``split_paths`` knows both folder layouts.

Coordinates follow ``ufpa.geometry`` (pixel i's centre at x = i). A box [x, y, w, h] (edges) has its centre at
(x + w/2 - 1/2, y + h/2 - 1/2) in that convention; it is padded to the crop's aspect ratio and by ``padding``
(x1.25). The crop transform is UDP's unbiased one: the box's extent s maps onto the crop's unit length (size - 1),
x_crop = (x - c) * (W - 1) / s_w + (W - 1)/2, so flipping, rotating and scaling never shift the grid.

Everything is validated up front: malformed JSON, missing image files (the first few are listed), ``file_name`` values
that escape the image folder, boxes of zero area and keypoints outside their image are errors or counted, reported
skips (``report``).
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..records import finite_numbers, read_json

FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
UPPER_BODY = tuple(range(11))
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


@dataclass
class Augment:
    flip: float = 0.5  # probability of a horizontal flip
    scale: float = 0.35  # box size x U[1 - scale, 1 + scale]
    rotation: float = 45.0  # degrees, U[-rotation, rotation] ...
    rotation_prob: float = 0.6  # ... with this probability
    half_body: float = 0.3  # probability of cropping to the upper or lower body (needs >= 8 visible keypoints)


@dataclass
class Instance:
    image_id: int
    file: Path
    box: np.ndarray  # [x, y, w, h], edges
    keypoints: np.ndarray  # (K, 2) image pixels
    visible: np.ndarray  # (K,) COCO flags 0/1/2
    score: float = 1.0
    annotation_id: int | None = None


@dataclass
class Report:
    images: int = 0
    instances: int = 0
    skipped: dict = field(default_factory=dict)  # reason -> count
    keypoints_outside_image: int = 0  # labelled keypoints outside their image, treated as unlabelled

    def skip(self, reason: str):
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def box_to_centre_scale(box, aspect: float, padding: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Box [x, y, w, h] (edges) -> centre (x, y) in pixel-centre coordinates and size (w, h) padded to ``aspect``
    (W / H of the crop) and by ``padding``."""
    x, y, w, h = (float(v) for v in box)
    centre = np.array([x + w / 2 - 0.5, y + h / 2 - 0.5])
    if w > aspect * h:
        h = w / aspect
    else:
        w = h * aspect
    return centre, np.array([w, h]) * padding


def crop_transform(centre, size, input_size, rotation: float = 0.0, flip: bool = False) -> np.ndarray:
    """2x3 affine matrix from image pixels to crop pixels (unbiased: the box extent maps onto size - 1)."""
    H, W = input_size
    sx, sy = (W - 1) / size[0], (H - 1) / size[1]
    angle = math.radians(rotation)
    c, s = math.cos(angle), math.sin(angle)
    # translate the box centre to 0, rotate, scale, move to the crop centre
    m = np.array([[sx * c, sx * s, 0.0], [-sy * s, sy * c, 0.0]])
    m[:, 2] = np.array([(W - 1) / 2, (H - 1) / 2]) - m[:, :2] @ np.asarray(centre, dtype=np.float64)
    if flip:
        m = np.array([[-1.0, 0.0, W - 1], [0.0, 1.0, 0.0]]) @ np.vstack([m, [0, 0, 1]])
    return m


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert_transform(matrix: np.ndarray) -> np.ndarray:
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


# --- dataset folders ---------------------------------------------------------------------------------------------

def split_paths(root: Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of ``split`` in a dataset folder, in SynthPose's layout
    (``annotations/person_keypoints_<split>.json``, ``images/<split>/``) or COCO 2017's as it is unpacked
    (``annotations/person_keypoints_<split>2017.json``, ``<split>2017/``; ``split='train'`` finds both)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset at {root}: make SynthPose there with `python -m ufpa synth --out {root} "
                                "--difficulty easy` (or run a profile's sweep, which makes its own), or set data= to "
                                "a COCO 2017 folder (annotations/person_keypoints_train2017.json, train2017/, ...)")
    looked = []
    for name in dict.fromkeys((split, f"{split}2017")):  # 'train2017' asked as is: once
        ann = root / "annotations" / f"person_keypoints_{name}.json"
        folders = (root / "images" / name, root / name)
        looked += [ann, *folders]
        found = [f for f in folders if f.is_dir()]
        if ann.is_file() and found:
            return ann, found[0]
    paths = ", ".join(str(p.relative_to(root)) for p in looked)
    raise FileNotFoundError(f"{root} has no split {split!r}: a split needs its annotation file and its image folder, "
                            f"and neither layout is complete (looked for {paths})")


def _inside_root(root: Path, name: str) -> Path:
    path = (root / name).resolve()
    if Path(name).is_absolute() or root.resolve() not in path.parents:
        raise ValueError(f"file_name {name!r} escapes the image folder {root}: annotation files may only name "
                         "images inside it")
    return path


def load_annotations(ann_file) -> dict:
    path = Path(ann_file)
    if not path.is_file():
        raise FileNotFoundError(f"no annotation file at {path}; generate SynthPose with `python -m ufpa synth --out "
                                "DIR` or point at COCO's annotations/person_keypoints_*.json")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                         "regenerate or re-download it") from err
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a COCO keypoint file: its JSON is {type(doc).__name__}, not an object with "
                         "images, annotations and categories")
    missing = [k for k in ("images", "annotations", "categories") if k not in doc]
    if missing:
        raise ValueError(f"{path} is not a COCO keypoint file: it lacks {missing}")
    check_annotations(doc, path)
    return doc


def check_annotations(doc: dict, path="annotations") -> None:
    """Every entry the loader reads, checked once: a NaN keypoint or box would otherwise become a labelled keypoint or
    a valid instance. Errors name the entry and the fix."""
    fix = "fix or regenerate the file (python -m ufpa synth) / re-download it"
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got {type(doc[key]).__name__}; {fix}")
    if not doc["categories"]:
        raise ValueError(f"{path}: 'categories' is empty; a keypoint file needs its person category (with its "
                         f"'keypoints' names); {fix}")
    for i, im in enumerate(doc["images"]):
        if not isinstance(im, dict) or any(k not in im for k in ("id", "file_name", "width", "height")):
            raise ValueError(f"{path}: images[{i}] lacks one of id, file_name, width, height ({im!r:.120}); {fix}")
        if not finite_numbers([im["width"], im["height"]]) or min(im["width"], im["height"]) <= 0:
            raise ValueError(f"{path}: image {im['id']} has width/height {im['width']!r}x{im['height']!r}; {fix}")
    ids = [im["id"] for im in doc["images"]]
    if len(set(ids)) != len(ids):
        twice = sorted((i for i, n in collections.Counter(ids).items() if n > 1), key=str)[:5]
        raise ValueError(f"{path}: image id(s) {twice} appear more than once in 'images': an annotation's image_id "
                         f"would name two images; {fix}")
    for i, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann:
            raise ValueError(f"{path}: annotations[{i}] lacks image_id ({ann!r:.120}); {fix}")
        name = f"annotation {ann.get('id', f'#{i}')} (image {ann['image_id']})"
        if "bbox" not in ann:
            raise ValueError(f"{path}: {name} lacks bbox [x, y, w, h]; {fix}")
        if not finite_numbers(ann["bbox"], 4):
            raise ValueError(f"{path}: {name} has bbox {ann['bbox']!r}, not four finite numbers; {fix}")
        if "keypoints" in ann and not finite_numbers(ann["keypoints"]):
            raise ValueError(f"{path}: {name} has keypoints that are not all finite numbers (NaN, inf or text); "
                             f"an unlabelled keypoint is [0, 0, 0]; {fix}")


def _image_problem(path: Path, data: bytes | None = None) -> str | None:
    """Why an image file (or its bytes, ``data``) cannot be used: a zero-byte or truncated file would otherwise fail,
    or decode half grey (OpenCV only warns); None if it looks whole."""
    size = len(data) if data is not None else path.stat().st_size
    if size == 0:
        return "zero bytes"
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg", ".png"):
        if data is None:
            with open(path, "rb") as fh:
                fh.seek(max(size - 4096, 0))
                tail = fh.read()
        else:
            tail = data[-4096:]
        end = b"\xff\xd9" if suffix != ".png" else b"IEND"
        if end not in tail:
            return "truncated (no end-of-image marker)"
    return None


class CocoKeypoints:
    """Top-down person crops of a COCO-format keypoint dataset.

    ``item = dataset[i]`` is a dict: ``image`` (3, H, W) float32, normalised; ``target`` and ``target_weight`` from
    ``codec.encode`` (plus any other codec outputs); ``keypoints`` (K, 2) and ``visible`` (K,) in crop pixels
    (a labelled keypoint outside the crop keeps its flag; the codec weighs it by whether its target reaches the map);
    ``matrix`` (2, 3), image -> crop; ``image_id``, ``score``. Augmentation draws from (seed, epoch, index), so
    an epoch is reproducible bit for bit; call ``set_epoch`` between epochs.
    """

    def __init__(self, ann_file, image_dir, input_size=(256, 192), codec=None, train: bool = False,
                 augment: Augment | None = None, padding: float = 1.25, detections=None,
                 detection_threshold: float = 0.0, skip_missing_images: bool = False, seed: int = 0,
                 cache_mb: float = 0):
        self.input_size = tuple(int(v) for v in input_size)
        self.aspect = self.input_size[1] / self.input_size[0]
        self.codec, self.train, self.padding, self.seed, self.epoch = codec, train, padding, seed, 0
        self.augment = augment if augment is not None else (Augment() if train else Augment(0, 0, 0, 0, 0))
        self.image_dir = Path(image_dir)
        # decoded images kept, first come first kept, until cache_mb is used (each DataLoader worker has its own)
        self.cache_bytes, self.cache = int(cache_mb * 2**20), {}
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"no image folder at {self.image_dir}")
        self.report = Report()
        coco = index_annotations(load_annotations(ann_file))
        person = coco.getCatIds(catNms=["person"]) or sorted(coco.cats)[:1]
        self.categories = coco.loadCats(person)
        self.num_keypoints = len(self.categories[0].get("keypoints", [])) or 17
        if self.augment.flip and self.num_keypoints != len(FLIP_PAIRS) * 2 + 1:
            raise ValueError(f"category {self.categories[0].get('name')!r} has {self.num_keypoints} keypoints, but "
                             f"flip augmentation swaps COCO's 17 (left/right pairs {FLIP_PAIRS}); pass "
                             "augment=Augment(flip=0, ...) (train flip=0.0) for other keypoint sets")
        images = {}
        for im in coco.imgs.values():
            images[im["id"]] = (_inside_root(self.image_dir, im["file_name"]), int(im["width"]), int(im["height"]))
        missing = [str(p) for p, _, _ in images.values() if not p.is_file()]
        if missing and not skip_missing_images:
            raise FileNotFoundError(f"{len(missing)} of {len(images)} images are missing, e.g. {missing[:5]}; fix "
                                    "image_dir or pass skip_missing_images=True to skip them (counted in report)")
        broken = {str(p): why for p, _, _ in images.values()
                  if str(p) not in set(missing) and (why := _image_problem(p))}
        if broken and not skip_missing_images:
            first = next(iter(broken.items()))
            raise ValueError(f"{len(broken)} of {len(images)} images are unreadable, e.g. {first[0]}: {first[1]}; "
                             "regenerate or re-download them, or pass skip_missing_images=True to skip them "
                             "(counted in report)")
        missing = missing + list(broken)
        missing = set(missing)
        self.report.images = len(images) - len(missing)
        source = (coco.loadAnns(coco.getAnnIds(catIds=person)) if detections is None
                  else self._load_detections(detections, detection_threshold))
        self.instances = []
        for ann in source:
            image = images.get(ann["image_id"])
            if image is None:
                self.report.skip("unknown image_id")
                continue
            path, width, height = image
            if str(path) in missing:
                self.report.skip("missing image")
                continue
            inst = self._instance(ann, path, width, height, is_detection=detections is not None)
            if inst is not None:
                self.instances.append(inst)
        self.report.instances = len(self.instances)

    # --- loading ---------------------------------------------------------------------------------------------------
    def _load_detections(self, detections, threshold):
        if not isinstance(detections, list):
            detections = read_json(detections, "detection results file")
        if not isinstance(detections, list):
            raise ValueError("detections must be a list of COCO detection results (image_id, category_id, bbox, score)")
        out = []
        for i, det in enumerate(detections):
            if not isinstance(det, dict) or "image_id" not in det or not finite_numbers(det.get("bbox"), 4):
                raise ValueError(f"detection {i} needs image_id and a bbox of four finite numbers, got {det!r:.120}")
            if not finite_numbers([det.get("score", 1.0)]):
                raise ValueError(f"detection {i} (image {det['image_id']}) has score {det.get('score')!r}; a NaN score "
                                 "passes no threshold test honestly: fix the detector output")
            if det.get("category_id", 1) != 1:
                continue
            if det.get("score", 1.0) < threshold:
                self.report.skip("detection below threshold")
                continue
            out.append(det)
        return out

    def _instance(self, ann, path, width, height, is_detection):
        k = self.num_keypoints
        if ann.get("iscrowd", 0):
            self.report.skip("crowd")
            return None
        box = np.asarray(ann.get("bbox", [0, 0, 0, 0]), dtype=np.float64)
        x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
        x1, y1 = min(box[0] + box[2], width), min(box[1] + box[3], height)
        if x1 - x0 <= 0 or y1 - y0 <= 0:
            self.report.skip("zero-area box")
            return None
        box = np.array([x0, y0, x1 - x0, y1 - y0])
        if is_detection:
            return Instance(ann["image_id"], path, box, np.zeros((k, 2)), np.zeros(k), float(ann.get("score", 1.0)))
        kps = np.asarray(ann.get("keypoints", []), dtype=np.float64)
        if kps.size != 3 * k:
            raise ValueError(f"annotation {ann.get('id')} has {kps.size} keypoint values, expected {3 * k}")
        kps = kps.reshape(k, 3)
        visible = kps[:, 2].copy()
        outside = (visible > 0) & ((kps[:, 0] < -0.5) | (kps[:, 0] > width - 0.5) | (kps[:, 1] < -0.5)
                                   | (kps[:, 1] > height - 0.5))
        if outside.any():
            self.report.keypoints_outside_image += int(outside.sum())
            visible[outside] = 0
        if not (visible > 0).any():
            self.report.skip("no labelled keypoints")
            return None
        return Instance(ann["image_id"], path, box, kps[:, :2], visible, 1.0, ann.get("id"))

    # --- items ------------------------------------------------------------------------------------------------------
    def __len__(self):
        return len(self.instances)

    def set_epoch(self, epoch: int):
        self.epoch = int(epoch)

    def _rng(self, index):
        return np.random.default_rng(np.random.SeedSequence((self.seed, self.epoch, index)))

    def sample_transform(self, inst: Instance, rng) -> tuple[np.ndarray, bool]:
        """The image -> crop matrix of one item (augmented when training) and whether it is flipped."""
        aug = self.augment
        centre, size = box_to_centre_scale(inst.box, self.aspect, self.padding)
        if aug.half_body and rng.random() < aug.half_body and (inst.visible > 0).sum() >= 8:
            part = UPPER_BODY if rng.random() < 0.5 else tuple(range(11, self.num_keypoints))
            pts = inst.keypoints[list(part)][inst.visible[list(part)] > 0]
            lo, hi = (pts.min(0), pts.max(0)) if len(pts) >= 2 else (0, 0)
            if np.any(hi > lo):  # points that all coincide span no box: keep the whole person's
                centre, size = box_to_centre_scale([lo[0] + 0.5, lo[1] + 0.5, *(hi - lo)], self.aspect, 1.5)
        if aug.scale:
            size = size * rng.uniform(1 - aug.scale, 1 + aug.scale)
        rotation = rng.uniform(-aug.rotation, aug.rotation) if aug.rotation and rng.random() < aug.rotation_prob \
            else 0.0
        flip = bool(aug.flip and rng.random() < aug.flip)
        return crop_transform(centre, size, self.input_size, rotation, flip), flip

    def __getitem__(self, index) -> dict:
        inst = self.instances[index]
        matrix, flip = self.sample_transform(inst, self._rng(index))
        image = self._image(inst.file)
        H, W = self.input_size
        crop = cv2.warpAffine(image, matrix, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        keypoints = apply_transform(matrix, inst.keypoints)
        visible = inst.visible.copy()
        if flip:
            order = np.arange(self.num_keypoints)
            for a, b in FLIP_PAIRS:
                order[a], order[b] = b, a
            keypoints, visible = keypoints[order], visible[order]
        # A labelled keypoint outside the crop stays labelled: the codec decides whether its target still reaches
        # the map (as the HRNet and UFPA code do), rather than the crop dropping it.
        item = {"image": normalise(crop), "keypoints": keypoints.astype(np.float32),
                "visible": visible.astype(np.float32), "matrix": matrix.astype(np.float32),
                "image_id": inst.image_id, "score": np.float32(inst.score), "flipped": flip}
        if self.codec is not None:
            encoded = self.codec.encode(keypoints[None], visible[None])
            item.update({k: v[0] for k, v in encoded.items()})
        return item

    def _image(self, path: Path) -> np.ndarray:
        """The decoded image (BGR uint8), from the cache when it is there. Checked again as it is read: a file damaged
        after the dataset loaded must not train as a part-grey image."""
        image = self.cache.get(path)
        if image is not None:
            return image
        data = path.read_bytes()
        problem = _image_problem(path, data)
        image = None if problem else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise OSError(f"cannot decode image {path} ({problem or 'not an image'}; damaged after the dataset "
                          "was loaded?); regenerate or re-download it")
        if image.nbytes <= self.cache_bytes:
            self.cache[path] = image
            self.cache_bytes -= image.nbytes
        return image

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.report.skipped.items())) or "none"
        return (f"{self.report.instances} instances from {self.report.images} images; skipped: {skipped}; "
                f"{self.report.keypoints_outside_image} labelled keypoints outside their image treated as unlabelled")


def normalise(crop: np.ndarray) -> np.ndarray:
    """A BGR uint8 crop (H, W, 3) as the network's input: RGB, (x - MEAN) / STD in float32, channels first. One
    channel at a time: bit for bit what the whole-array expression gives, at a quarter of its time."""
    out = np.empty((3, *crop.shape[:2]), np.float32)
    for c in range(3):
        np.subtract(crop[..., 2 - c], MEAN[c], out=out[c], dtype=np.float32)
        out[c] /= STD[c]
    return out


def index_annotations(doc: dict):
    """pycocotools' COCO index over an already validated annotation dict, without its progress prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = doc
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def dataset_statistics(doc: dict) -> dict:
    """Counts of a COCO keypoint annotation dict: images, people, people per image, visibility, box heights."""
    anns = [a for a in doc["annotations"] if not a.get("iscrowd", 0)]
    per_image = np.bincount([a["image_id"] for a in anns], minlength=max([im["id"] for im in doc["images"]]) + 1)
    per_image = per_image[[im["id"] for im in doc["images"]]]
    vis = np.concatenate([np.asarray(a["keypoints"]).reshape(-1, 3)[:, 2] for a in anns]) if anns else np.zeros(0)
    heights = np.array([a["bbox"][3] for a in anns]) if anns else np.zeros(1)
    return {"images": len(doc["images"]), "people": len(anns),
            "people_per_image": {int(n): int((per_image == n).sum()) for n in np.unique(per_image)},
            "keypoint_counts": {"visible": int((vis == 2).sum()), "occluded": int((vis == 1).sum()),
                                "unlabelled": int((vis == 0).sum())},
            "keypoints_visible": float((vis == 2).mean()) if vis.size else 0.0,
            "keypoints_occluded": float((vis == 1).mean()) if vis.size else 0.0,
            "keypoints_unlabelled": float((vis == 0).mean()) if vis.size else 0.0,
            "box_height_px": {"p10": float(np.percentile(heights, 10)), "median": float(np.median(heights)),
                              "p90": float(np.percentile(heights, 90))}}
