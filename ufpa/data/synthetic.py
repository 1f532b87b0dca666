"""SynthPose: procedural people in COCO keypoint format, with exact sub-pixel ground truth.

Each image holds one main figure and up to two others: articulated 2-D bodies with COCO's 17 keypoints (plausible
limb proportions, joint-angle limits, a head whose eyes, nose and ears follow its turn), drawn as tapered limbs and
discs with varied colours and stripes, over cluttered backgrounds, partly hidden by occluders, with blur and noise.

Keypoint convention (that of ``ufpa.geometry``): pixel i's centre is at x = i. The renderer honours it exactly: every
shape is a signed-distance field with a smooth (logistic, 0.5 px) edge evaluated at pixel centres, so a symmetric
shape's intensity centroid is its geometric centre to well under 0.01 px (``tests/test_synthetic.py``). OpenCV
rasterises only the background clutter, where sub-pixel placement does not matter (it does blend the figures' shapes,
with weights the renderer computes).

Visibility follows COCO: 2 visible, 1 labelled but occluded (by another figure, an occluder, or the head itself for a
face turned away), 0 not labelled (outside the image; coordinates then 0). Boxes are [x, y, w, h] around the
figure's visible pixels, edges half a pixel outside the outermost pixel centres; area counts those pixels.

Generation is deterministic per seed: image i of a split draws from its own ``SeedSequence((seed, split, i))`` and
writes the same bytes however many processes run.
"""

from __future__ import annotations

import colorsys
import dataclasses
import difflib
import json
import math
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..records import atomic_write_text, folder_lock

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
    clutter: tuple[int, int] = (4, 12)  # background shapes drawn: integers in [lo, hi)
    tumble_prob: float = 0.1  # chance that a figure lies, tumbles or stands on its head
    background: tuple[float, float] = (40.0, 220.0)  # range of the background's colour field (grey levels)
    pose_spread: float = 1.0  # scale of the random joint angles about the rest pose (< 1: calmer poses)
    side_tint: float = 0.0  # blend of the person's left limbs towards red and right limbs towards blue (0: none)
    joint_markers: float = 0.0  # radius (in limb widths) of a disc of the joint's own colour at every joint (0: none)

    def __post_init__(self):
        if self.height < 32 or self.width < 32:
            raise ValueError(f"image size {self.height}x{self.width} is too small: use --height/--width >= 32")
        if not 0 <= self.clutter[0] < self.clutter[1]:
            raise ValueError(f"clutter must be (lo, hi) with 0 <= lo < hi, got {self.clutter}")
        if self.max_people < 1:
            raise ValueError(f"max_people must be >= 1, got {self.max_people}")


# Named difficulties: 'standard' is the default above; 'easy' is one calm, upright figure on a quiet background, data a
# small CPU model learns in minutes (the study's CPU profile), while GPU profiles keep 'standard'.
DIFFICULTIES = {
    "standard": {},
    "easy": dict(max_people=1, occluder_prob=0.0, blur_prob=0.0, noise=2.0, clutter=(0, 3), tumble_prob=0.0,
                 background=(90.0, 170.0), pose_spread=0.5),
}
# 'localise': 'easy' with each side's limbs tinted apart (left red, right blue), so left and right are told apart by
# colour: the gross errors (swapped and lost wrists and ankles) that rule AP on 'easy' should give way to localisation
# error, the error alignment acts on. Whether they do is measured (profiles/localise_check.yaml), not assumed.
DIFFICULTIES["localise"] = {**DIFFICULTIES["easy"], "side_tint": 0.7}
# 'markers': 'easy' with a small disc of the joint's own colour at every visible keypoint, centred on it exactly: which
# joint is where is never in doubt, so what is left is where exactly its centre is (localisation, at sub-pixel scale),
# the positive control in which alignment's effect has room to show. Trained without flip augmentation (a flip swaps
# labels, not colours) and read without flip test; measured in profiles/markers_check.yaml.
DIFFICULTIES["markers"] = {**DIFFICULTIES["easy"], "joint_markers": 0.6}
# saturated, evenly spread hues, neighbouring joints (and left/right pairs) far apart on the colour wheel
MARKER_COLOURS = tuple(tuple(255.0 * c for c in colorsys.hsv_to_rgb((7 * j % 17) / 17, 1.0, 1.0)) for j in range(17))
SIDE_COLOURS = {"left": np.array([230.0, 40.0, 40.0], np.float32), "right": np.array([40.0, 60.0, 230.0], np.float32)}


def synth_config(difficulty: str = "standard", **overrides) -> SynthConfig:
    """A ``SynthConfig`` for a named difficulty (``DIFFICULTIES``), with field overrides (e.g. height=128)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown SynthPose difficulty {difficulty!r}; choose one of {sorted(DIFFICULTIES)}")
    return SynthConfig(**{**DIFFICULTIES[difficulty], **overrides})


# --- the renderer -------------------------------------------------------------------------------------------------

REACH = 6 * EDGE  # shapes are evaluated this far beyond their edge; the logistic is below 0.25 % there
# cv2.blendLinear divides by (w1 + w2 + 1e-5); weights that sum to BLEND rather than 1 make that term negligible
# (1e-10 relative), so the blend is the exact over-operator.
BLEND = 1e5


_FLAT_ROWS = 16
_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
    """A C-contiguous array of ``shape`` backed by a reused per-thread buffer (its contents are left over).

    Fresh arrays of a few hundred KB come from new, zeroed pages on every image; reusing them saves about a fifth of
    the render time.
    """
    size = math.prod(shape)
    buffer = _SCRATCH.__dict__.get(name)
    if buffer is None or buffer.size < size or buffer.dtype != dtype:
        buffer = _SCRATCH.__dict__[name] = np.empty(max(size, 1 << 16) * 5 // 4, dtype=dtype)
    return buffer[:size].reshape(shape)


class Scene:
    """Discs and tapered capsules queued in drawing order, then rendered over a background in one pass.

    Every shape is a signed-distance field with a logistic edge, evaluated at pixel centres (x = i, y = j) inside its
    bounding window. ``render`` evaluates the fields of all shapes together in flat arrays (a few numpy calls per
    image rather than a few dozen per shape) and then blends the shapes one by one, in order.
    """

    def __init__(self, height: int, width: int):
        self.height, self.width = height, width
        self.windows: list[tuple] = []  # (x0, y0, x1, y1) per shape: the pixels it is evaluated on
        self.params: list[tuple] = []  # (ax, ay, ux, uy, length, radius at a, taper, red, green, blue)
        self.styles: list[tuple] = []  # (owner, texture)
        self.extents: dict[int, list[int]] = {}  # owner -> union of its windows [x0, y0, x1, y1]

    def disc(self, centre, radius: float, colour, owner: int, texture=None):
        self.capsule(centre, centre, radius, radius, colour, owner, texture)

    def capsule(self, a, b, radius_a: float, radius_b: float, colour, owner: int, texture=None):
        """A limb from a to b whose radius tapers linearly (distance to the segment minus the local radius)."""
        ax, ay, bx, by = float(a[0]), float(a[1]), float(b[0]), float(b[1])
        reach = max(radius_a, radius_b) + REACH
        x0, y0 = max(math.floor(min(ax, bx) - reach), 0), max(math.floor(min(ay, by) - reach), 0)
        x1 = min(math.ceil(max(ax, bx) + reach) + 1, self.width)
        y1 = min(math.ceil(max(ay, by) + reach) + 1, self.height)
        if x0 >= x1 or y0 >= y1:
            return  # wholly outside the image
        length = math.hypot(bx - ax, by - ay)
        if length < 1e-6:  # a disc: any direction will do, the clamp keeps 'along' at 0
            ux, uy, length, slope, radius_a = 1.0, 0.0, 0.0, 0.0, max(radius_a, radius_b)
        else:
            ux, uy, slope = (bx - ax) / length, (by - ay) / length, (radius_b - radius_a) / length
        red, green, blue = colour
        self.windows.append((x0, y0, x1, y1))
        self.params.append((ax, ay, ux, uy, length, radius_a, slope, float(red), float(green), float(blue)))
        self.styles.append((owner, texture))
        extent = self.extents.setdefault(owner, [x0, y0, x1, y1])
        extent[:] = min(extent[0], x0), min(extent[1], y0), max(extent[2], x1), max(extent[3], y1)

    def render(self, image: np.ndarray) -> np.ndarray:
        """Blend the shapes into ``image`` (float32 (H, W, 3), in place); return the owner map (int16, -1 = none)."""
        if image.dtype != np.float32 or image.shape != (self.height, self.width, 3) or not image.flags.c_contiguous:
            raise ValueError(f"render needs a C-contiguous float32 ({self.height}, {self.width}, 3) image, "
                             f"got {image.dtype} {image.shape}")
        owner = np.full((self.height, self.width), -1, dtype=np.int16)
        if not self.windows:
            return owner
        xs = np.arange(self.width, dtype=np.float32)  # pixel centres
        ys = np.arange(self.height, dtype=np.float32)[:, None]
        spans, total = [], 0  # each shape's run in the flat arrays
        for x0, y0, x1, y1 in self.windows:
            spans.append(slice(total, total + (y1 - y0) * (x1 - x0)))
            total += (y1 - y0) * (x1 - x0)
        flat = _scratch("flat", (_FLAT_ROWS, total))
        params = np.array(self.params, dtype=np.float32).reshape(-1, 10, 1, 1)
        # rows 0-1: pixel centres x, y; 2-11: the shape's parameters repeated over its run; 12-15: work space
        for (x0, y0, x1, y1), span, values in zip(self.windows, spans, params):
            run = flat[:, span].reshape(_FLAT_ROWS, y1 - y0, x1 - x0)
            run[0] = xs[x0:x1]
            run[1] = ys[y0:y1]
            run[2:12] = values
        dx, dy, ax, ay, ux, uy, length, radius_a, slope, red, green, blue, along, across, clamped, rest = flat
        dx -= ax
        dy -= ay
        np.multiply(dx, ux, out=along)  # coordinates in the shape's frame: a rotation keeps distances
        along += np.multiply(dy, uy, out=clamped)
        np.multiply(dy, ux, out=across)
        across -= np.multiply(dx, uy, out=clamped)
        np.minimum(np.maximum(along, 0.0, out=clamped), length, out=clamped)
        along -= clamped
        along *= along
        across *= across
        along += across
        distance = np.sqrt(along, out=along)
        clamped *= slope
        clamped += radius_a
        distance -= clamped
        weight = _coverage(distance)
        np.subtract(BLEND, weight, out=rest)
        covered = np.greater(weight, 0.5 * BLEND, out=_scratch("covered", (total,), np.bool_))
        paint = cv2.merge([c.reshape(total, 1) for c in (red, green, blue)],
                          dst=_scratch("paint", (total, 1, 3)))
        paint = paint.reshape(total, 3)
        for (x0, y0, x1, y1), span, (who, texture) in zip(self.windows, spans, self.styles):
            window = (y1 - y0, x1 - x0)
            colour = paint[span].reshape(*window, 3)
            if texture is not None:
                shade = texture(xs[x0:x1], ys[y0:y1])
                cv2.multiply(colour, cv2.merge((shade, shade, shade)), dst=colour)
            region = image[y0:y1, x0:x1]
            cv2.blendLinear(region, colour, rest[span].reshape(window), weight[span].reshape(window),
                            dst=region)  # region is a view of image: blended in place
            np.putmask(owner[y0:y1, x0:x1], covered[span].reshape(window), who)
        return owner


def _coverage(signed_distance: np.ndarray) -> np.ndarray:
    """BLEND times the logistic edge 1 / (1 + exp(d / EDGE)), written with tanh (no overflow), in place.

    Smooth, so sampling at pixel centres keeps a symmetric shape's centroid at its centre.
    """
    signed_distance *= 0.5 / EDGE
    np.tanh(signed_distance, out=signed_distance)
    signed_distance *= -0.5 * BLEND
    signed_distance += 0.5 * BLEND
    return signed_distance


def stripes(rng):
    """A multiplicative stripe texture (or none)."""
    if rng.random() < 0.5:
        return None
    angle, period, depth = rng.uniform(0, np.pi), rng.uniform(3, 9), rng.uniform(0.15, 0.4)
    kx, ky = math.cos(angle) * 2 * math.pi / period, math.sin(angle) * 2 * math.pi / period

    def shade(xs, ys):
        phase = xs * kx + ys * ky
        np.sin(phase, out=phase)
        phase *= -0.5 * depth
        phase += 1.0 - 0.5 * depth
        return phase

    return shade


# --- bodies -------------------------------------------------------------------------------------------------------

def _colour(rng, lo=30, hi=230):
    return rng.uniform(lo, hi, 3).astype(np.float32)


# limb lengths as fractions of the figure's height, each varied by +-10 % per figure
PROPORTIONS = dict(torso=0.30, shoulder=0.11, hip=0.075, upper_arm=0.17, forearm=0.15, thigh=0.24, shin=0.23,
                   head=0.065, neck=0.09)


def _turn(angle: float) -> complex:
    return complex(math.cos(angle), math.sin(angle))  # multiplying a point (x + iy) by this rotates it


def make_figure(rng, centre, height, tumble_prob: float = 0.1, pose_spread: float = 1.0) -> dict:
    """Joint positions (17, 2) and drawing parameters of one figure of ``height`` px standing at ``centre``.

    Points are complex numbers x + iy while the figure is built (rotation is a product); random numbers come in
    two blocks because each scalar draw from a Generator costs about a microsecond.
    """
    uniforms = iter(rng.random(40).tolist())
    normals = iter(rng.standard_normal(6).tolist())

    def uniform(lo, hi):
        return lo + (hi - lo) * next(uniforms)

    p = {k: v * uniform(0.9, 1.1) for k, v in PROPORTIONS.items()}
    q = pose_spread  # scales every random joint angle about its rest pose (no extra draws)
    lean = math.radians(10) * q * next(normals)
    if next(uniforms) < tumble_prob:  # now and then a figure lying, tumbling or upside down
        lean += uniform(-math.pi, math.pi)
    up = complex(math.sin(lean), -math.cos(lean))
    right = complex(math.cos(lean), math.sin(lean))  # image-right for an upright figure
    facing_back = next(uniforms) < 0.2
    side = -1.0 if facing_back else 1.0  # the person's left is image-right when facing the camera
    width = max(abs(math.cos(uniform(-1.2, 1.2))), 0.3)  # body yaw narrows the shoulders and hips
    s = height
    pelvis = complex(centre[0], centre[1]) - up * (0.05 * s)
    neck = pelvis + up * p["torso"] * s
    k = [0j] * 17
    k[5], k[6] = neck + side * right * p["shoulder"] * width * s, neck - side * right * p["shoulder"] * width * s
    k[11], k[12] = pelvis + side * right * p["hip"] * width * s, pelvis - side * right * p["hip"] * width * s
    down = -up
    for joint, (shoulder, elbow, wrist) in enumerate(((5, 7, 9), (6, 8, 10))):
        outward = side * (1 if joint == 0 else -1)
        a = math.radians(min(max(20 + 45 * q * next(normals), -150), 150)) * outward  # arms hang, swing, rise
        flex = math.radians(q * uniform(0, 145))
        flex *= -outward if next(uniforms) < 0.7 else outward
        d1 = down * _turn(a)
        k[elbow] = k[shoulder] + d1 * p["upper_arm"] * s
        k[wrist] = k[elbow] + d1 * _turn(flex) * p["forearm"] * s
    for joint, (hip, knee, ankle) in enumerate(((11, 13, 15), (12, 14, 16))):
        outward = side * (1 if joint == 0 else -1)
        a = math.radians(min(max(5 + 25 * q * next(normals), -40), 100))
        a *= outward if next(uniforms) < 0.5 else -outward
        d1 = down * _turn(a)
        k[knee] = k[hip] + d1 * p["thigh"] * s
        k[ankle] = k[knee] + d1 * _turn(-math.radians(q * uniform(0, 130)) * math.copysign(1.0, a)) * p["shin"] * s
    # Head: a disc on a tilted neck; its turn moves eyes and nose sideways and hides the far ear.
    tilt = _turn(math.radians(12) * q * next(normals))
    head_up, head_right = up * tilt, right * tilt
    r = p["head"] * s
    head = neck + head_up * p["neck"] * s
    turn = uniform(-1.3, 1.3)
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
    skin, shirt, trousers = rng.uniform(np.array([[60.0], [30.0], [30.0]]), 230.0, (3, 3)).astype(np.float32)
    return dict(keypoints=np.array([(z.real, z.imag) for z in k]), head=(head.real, head.imag), head_radius=r,
                hidden=hidden, scale=s, facing_back=facing_back, limb=0.03 * s * uniform(0.8, 1.2), skin=skin,
                shirt=shirt, trousers=trousers, shirt_texture=stripes(rng), trouser_texture=stripes(rng))


def draw_figure(scene: Scene, fig: dict, owner: int, side_tint: float = 0.0, joint_markers: float = 0.0):
    k, w = fig["keypoints"].tolist(), fig["limb"]
    far_first = [(6, 8, 10), (12, 14, 16)] if fig["facing_back"] else [(5, 7, 9), (11, 13, 15)]
    near_last = [(5, 7, 9), (11, 13, 15)] if fig["facing_back"] else [(6, 8, 10), (12, 14, 16)]

    def limb(chain):
        a, b, c = chain
        arm = a in (5, 6)
        colour, texture = (fig["shirt"], fig["shirt_texture"]) if arm else (fig["trousers"], fig["trouser_texture"])
        scale = 1.0 if arm else 1.35
        lower = fig["skin"] if arm else fig["trousers"]
        end = fig["skin"] if arm else fig["trousers"] * 0.6
        if side_tint:  # odd COCO indices are the person's left; no random draw, so other difficulties are unchanged
            hue = SIDE_COLOURS["left" if a % 2 else "right"]
            colour, lower, end = ((1 - side_tint) * x + side_tint * hue for x in (colour, lower, end))
        scene.capsule(k[a], k[b], 1.1 * w * scale, 0.9 * w * scale, colour, owner, texture)
        scene.capsule(k[b], k[c], 0.9 * w * scale, 0.7 * w * scale, lower, owner)
        scene.disc(k[c], 0.8 * w * scale, end, owner)

    def midpoint(i, j):
        return (k[i][0] + k[j][0]) / 2, (k[i][1] + k[j][1]) / 2

    def distance(i, j):
        return math.hypot(k[i][0] - k[j][0], k[i][1] - k[j][1])

    for chain in far_first:
        limb(chain)
    shoulder_mid, hip_mid = midpoint(5, 6), midpoint(11, 12)
    scene.capsule(shoulder_mid, hip_mid, max(0.85 * distance(5, 6) / 2, 1.5 * w),
                  max(0.85 * distance(11, 12) / 2, 1.3 * w), fig["shirt"], owner, fig["shirt_texture"])
    for chain in near_last:
        limb(chain)
    r = fig["head_radius"]
    scene.capsule(shoulder_mid, fig["head"], 0.5 * r, 0.45 * r, fig["skin"] * 0.9, owner)
    scene.disc(fig["head"], r, fig["skin"], owner)
    for ear in (3, 4):
        if ear not in fig["hidden"]:
            scene.disc(k[ear], 0.28 * r, fig["skin"] * 0.8, owner)
    if not fig["facing_back"]:
        for eye in (1, 2):
            scene.disc(k[eye], 0.14 * r, (20.0, 20.0, 20.0), owner)
        scene.disc(k[0], 0.16 * r, fig["skin"] * 0.7, owner)
    else:
        scene.disc(fig["head"], 0.85 * r, (40.0, 30.0, 25.0), owner)  # hair
    if joint_markers:  # drawn last, over the figure; no random draw, so the people are the 'easy' ones
        for j in range(17):
            if j not in fig["hidden"]:  # the face's joints sit close together: their markers stay small
                scene.disc(k[j], min(joint_markers * w, 0.2 * r) if j < 5 else joint_markers * w,
                           MARKER_COLOURS[j], owner)


# --- scenes -------------------------------------------------------------------------------------------------------

def _background(rng, h, w, clutter=(4, 12), value_range=(40.0, 220.0)) -> np.ndarray:
    """A smooth colour field and ``clutter`` (lo, hi) anti-aliased rectangles, circles and lines (in a scratch
    buffer)."""
    image = _scratch("canvas", (h, w, 3))
    cv2.resize(rng.uniform(*value_range, (3, 4, 3)).astype(np.float32), (w, h), dst=image,
               interpolation=cv2.INTER_CUBIC)
    n = int(rng.integers(*clutter))
    kinds, colours, draws = rng.integers(3, size=n), rng.uniform(0, 255, (n, 3)).tolist(), rng.random((n, 4)).tolist()
    for kind, colour, (u0, u1, u2, u3) in zip(kinds, colours, draws):  # clutter
        x, y = int(u0 * w), int(u1 * h)
        if kind == 0:
            corner = (x + 5 + int(u2 * (w // 2 - 5)), y + 5 + int(u3 * (h // 2 - 5)))
            cv2.rectangle(image, (x, y), corner, colour, -1, cv2.LINE_AA)
        elif kind == 1:
            cv2.circle(image, (x, y), 3 + int(u2 * (w // 4 - 3)), colour, -1, cv2.LINE_AA)
        else:
            cv2.line(image, (x, y), (int(u2 * w), int(u3 * h)), colour, 1 + int(u3 * 3), cv2.LINE_AA)
    return image


def render_image(rng: np.random.Generator, cfg: SynthConfig):
    """One image (uint8 RGB) and its figures' annotations (keypoints (17, 3), bbox, area)."""
    h, w = cfg.height, cfg.width
    image = _background(rng, h, w, cfg.clutter, cfg.background)
    scene = Scene(h, w)
    n_people = int(rng.integers(1, cfg.max_people + 1))
    figures = []
    for i in range(n_people):
        if i == 0:  # the main figure, roughly centred, drawn last so it is rarely hidden
            centre = np.array([w / 2, h / 2]) + rng.normal(0, 0.06, 2) * np.array([w, h])
            height = h * rng.uniform(0.55, 0.85)
        else:
            centre = rng.uniform(0, 1, 2) * np.array([w, h])
            height = h * rng.uniform(0.35, 0.9)
        figures.append(make_figure(rng, centre, height, cfg.tumble_prob, cfg.pose_spread))
    order = list(range(1, n_people)) + [0]
    for pid in order:
        draw_figure(scene, figures[pid], pid, cfg.side_tint, cfg.joint_markers)
    if rng.random() < cfg.occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            centre = figures[0]["keypoints"][int(rng.integers(17))] + rng.normal(0, 10, 2)
            size = rng.uniform(0.08, 0.25) * h
            if rng.random() < 0.5:
                scene.capsule(centre - size / 2, centre + size / 2 * rng.uniform(-1, 1, 2), size / 3, size / 3,
                               _colour(rng), -2)
            else:
                scene.disc(centre, size / 2, _colour(rng), -2)
    owner = scene.render(image)
    if rng.random() < cfg.blur_prob:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.2), dst=image)  # in place: no fresh pages
    if cfg.noise > 0:  # sensor-like grain in 4x4 cells, uniform with standard deviation cfg.noise
        gh, gw = -(-h // 4), -(-w // 4)
        grain = rng.random((gh, gw, 3), dtype=np.float32)
        grain -= 0.5
        grain *= cfg.noise * math.sqrt(12.0)
        cells = cv2.resize(grain, (4 * gw, 4 * gh), dst=_scratch("grain", (4 * gh, 4 * gw, 3)),
                           interpolation=cv2.INTER_NEAREST)
        image = cv2.add(image, cells[:h, :w], dst=image)
    np.maximum(image, 0.0, out=image)
    image = cv2.convertScaleAbs(image)  # rounds to nearest and saturates at 255

    annotations = []
    for pid, fig in enumerate(figures):
        if pid not in scene.extents:
            continue  # wholly outside the image
        x0, y0, x1, y1 = scene.extents[pid]
        visible_px = owner[y0:y1, x0:x1] == pid
        area = int(np.count_nonzero(visible_px))
        if area < 20:
            continue  # hidden or off the image: not an annotated person
        kps = np.zeros((17, 3))  # unlabelled (outside the image): all zeros, as COCO
        for j, (x, y) in enumerate(fig["keypoints"].tolist()):
            if 0 <= x <= w - 1 and 0 <= y <= h - 1:
                kps[j] = x, y, 1 if j in fig["hidden"] or owner[round(y), round(x)] != pid else 2
        if not kps[:, 2].any():
            continue
        left, top, box_w, box_h = cv2.boundingRect(visible_px.view(np.uint8))  # of the visible pixels
        bbox = [x0 + left - 0.5, y0 + top - 0.5, float(box_w), float(box_h)]
        annotations.append(dict(keypoints=kps, bbox=bbox, area=float(area)))  # visible pixels, as COCO segments
    return image, annotations


# --- datasets -----------------------------------------------------------------------------------------------------

def encode_jpeg(image: np.ndarray, cfg: SynthConfig) -> bytes:
    """The JPEG bytes of an RGB uint8 image, as ``generate`` writes them."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)  # a negative-stride view would cost a slow copy inside imencode
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for an image of shape {image.shape}")
    return data.tobytes()


def _render_to_file(args):
    seed, split, index, cfg, image_dir = args
    rng = np.random.default_rng(np.random.SeedSequence((seed, SPLITS[split], index)))
    image, annotations = render_image(rng, cfg)
    name = f"{index:06d}.jpg"
    data = encode_jpeg(image, cfg)
    # written in place: the split's annotation file, written last, is what vouches for a complete set
    with open(os.path.join(image_dir, name), "wb") as f:
        f.write(data)
    return index, name, annotations


def categories() -> list[dict]:
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(KEYPOINT_NAMES),
             "skeleton": [list(p) for p in SKELETON]}]


def generate(out: str | os.PathLike, train: int = 2000, val: int = 200, seed: int = 0, cfg: SynthConfig | None = None,
             workers: int = 1, progress: bool = True) -> dict:
    """Write ``out/images/{train,val}/*.jpg`` and ``out/annotations/person_keypoints_{train,val}.json``.

    Returns the paths of the annotation files. A split's annotation file is removed before its images are written
    and written again last, atomically, so a run cut short leaves no annotation file pointing at missing or foreign
    images; running again rewrites the same bytes.
    """
    cfg = cfg or SynthConfig()
    # everything is checked before the folder is touched: a bad option must not cost an existing dataset its files
    for name, value in (("train", train), ("val", val), ("seed", seed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r}: must be an integer >= 0")
    if train + val == 0:
        raise ValueError(f"ask for at least one image (train={train}, val={val})")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers={workers!r}: must be an integer >= 1")
    if not isinstance(cfg, SynthConfig) or min(cfg.height, cfg.width) < 32:
        raise ValueError(f"cfg must be a SynthConfig with height and width >= 32, got {cfg!r:.120}")
    out = Path(out)
    with folder_lock(out, ".synth.lock", "another synth run", "use another --out"):
        return _generate(out, train, val, seed, cfg, workers, progress)


def _generate(out: Path, train: int, val: int, seed: int, cfg: SynthConfig, workers: int, progress: bool) -> dict:
    paths = {}
    for split, count in (("train", train), ("val", val)):
        if count == 0:
            continue
        image_dir = out / "images" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        path = out / "annotations" / f"person_keypoints_{split}.json"
        path.unlink(missing_ok=True)
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
                        "version": "2", "seed": seed, "split": split, "config": recorded_config(cfg),
                        "difficulty": next((d for d in DIFFICULTIES if synth_config(d, height=cfg.height,
                                            width=cfg.width) == cfg), "custom"),
                        "keypoint_convention": "pixel i's centre at x = i"},
               "images": images, "annotations": annotations, "categories": categories()}
        atomic_write_text(path, json.dumps(doc, separators=(",", ":")))
        paths[split] = path
    return paths


# Fields added after a dataset version, left out of its annotation files while at their default: a dataset made
# before they existed keeps its bytes, and so its data fingerprint and the runs trained on it.
ADDED_FIELDS = {"side_tint": 0.0, "joint_markers": 0.0}


def recorded_config(cfg: SynthConfig) -> dict:
    """The config an annotation file records (``ADDED_FIELDS`` at their default left out)."""
    return {k: v for k, v in asdict(cfg).items() if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}


def check_request(difficulty: str = "standard", train: int = 2000, val: int = 200, seed: int = 0,
                  **overrides) -> SynthConfig:
    """The ``SynthConfig`` a request (a profile's ``data:`` section, less ``out``) asks for, every key checked."""
    fields = [f.name for f in dataclasses.fields(SynthConfig)]
    for key in overrides:
        if key not in fields:
            close = difflib.get_close_matches(key, ["difficulty", "train", "val", "seed", *fields], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown SynthPose option {key!r}{hint}; valid: difficulty, train, val, seed, "
                             f"{', '.join(fields)}")
    for name, value in (("train", train), ("val", val), ("seed", seed)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}={value!r}: must be an integer >= 0")
    return synth_config(difficulty, **overrides)


def ensure(out: str | os.PathLike, difficulty: str = "standard", train: int = 2000, val: int = 200, seed: int = 0,
           workers: int | None = None, progress: bool = False, **overrides) -> dict:
    """Generate a SynthPose dataset at ``out`` unless both of its annotation files are there; returns the annotation
    paths. Checks its arguments before writing anything. A SynthPose dataset already there must be the one asked for
    (image counts, seed, renderer settings), else a ValueError names the difference: a run must not train on another
    dataset under the same name. A folder holding another dataset (e.g. COCO) is left alone."""
    cfg = check_request(difficulty, train, val, seed, **overrides)
    out = Path(out)
    paths = {s: out / "annotations" / f"person_keypoints_{s}.json" for s in ("train", "val")}
    if all(p.is_file() for p in paths.values()):
        _check_existing(out, paths, {"train": train, "val": val}, seed, cfg)
        return paths
    return generate(out, train, val, seed, cfg, workers=workers or os.cpu_count() or 1, progress=progress)


def _check_existing(out: Path, paths: dict, counts: dict, seed: int, cfg: SynthConfig) -> None:
    wanted = json.loads(json.dumps(recorded_config(cfg)))  # tuples as JSON has them
    for split, path in paths.items():
        doc = json.loads(path.read_text(encoding="utf-8"))
        info = doc.get("info") if isinstance(doc, dict) else None
        if not (isinstance(info, dict) and str(info.get("description", "")).startswith("SynthPose")):
            return  # not SynthPose: nothing of ours to compare
        have = {"images": len(doc.get("images") or []), "seed": info.get("seed"), "config": info.get("config")}
        want = {"images": counts[split], "seed": seed, "config": wanted}
        diff = [f"{k} {have[k]!r} (asked: {want[k]!r})" for k in ("images", "seed") if have[k] != want[k]]
        if have["config"] != wanted:
            diff += [f"{k}={(have['config'] or {}).get(k)!r} (asked: {v!r})" for k, v in wanted.items()
                     if (have["config"] or {}).get(k) != v]
        if diff:
            raise ValueError(f"{out} holds another SynthPose dataset than the one asked for: {split} split has "
                             f"{'; '.join(diff)}. Delete the folder to make the one asked for, or point the run "
                             "(data=, or the profile's data: out) at another folder")


def _run(jobs, workers, progress, desc):
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc=desc, disable=not progress, mininterval=1.0)
    if workers <= 1:
        return [_render_to_file(job) for job in tqdm(jobs, **bar)]
    import multiprocessing as mp

    # one OpenCV thread per worker process: the workers already fill the cores
    with mp.get_context("spawn").Pool(workers, initializer=cv2.setNumThreads, initargs=(1,)) as pool:
        return list(tqdm(pool.imap_unordered(_render_to_file, jobs, chunksize=16), **bar))
