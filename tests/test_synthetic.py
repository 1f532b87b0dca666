"""SynthPose: the renderer honours the pixel-centre convention; datasets are deterministic, valid COCO."""

import hashlib
import json

import numpy as np
import pytest

from ufpa import evaluate
from ufpa.data import synthetic


def centroid(image):
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]]
    return np.array([(image * xs).sum() / image.sum(), (image * ys).sum() / image.sum()])


@pytest.mark.parametrize("shape", ["disc", "capsule"])
def test_symmetric_shapes_have_their_centroid_at_the_ground_truth(shape):
    """Pixel i's centre is x = i: a symmetric blob at a random sub-pixel position has its intensity centroid there."""
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(200):
        centre = rng.uniform(40, 56, 2)  # every shape lies well inside the 96 x 96 canvas
        scene = synthetic.Scene(96, 96)
        if shape == "disc":
            scene.disc(centre, rng.uniform(1.5, 9), (1.0, 1.0, 1.0), 0)
        else:  # a straight, untapered limb is symmetric about its midpoint
            half = np.clip(rng.normal(0, 6, 2), -15, 15)
            r = rng.uniform(1.5, 4)
            scene.capsule(centre - half, centre + half, r, r, (1.0, 1.0, 1.0), 0)
        image = np.zeros((96, 96, 3), np.float32)
        scene.render(image)
        worst = max(worst, np.abs(centroid(image[..., 0]) - centre).max())
    assert worst <= 0.01


def signed_distance(params, xs, ys):
    """A shape's definition: distance to its segment minus its tapered radius."""
    ax, ay, ux, uy, length, radius_a, slope = params[:7]
    along, across = (xs - ax) * ux + (ys - ay) * uy, (ys - ay) * ux - (xs - ax) * uy
    clamped = np.clip(along, 0, length)
    return np.hypot(along - clamped, across) - (radius_a + slope * clamped)


def reference_render(scene, image):
    """The renderer's definition, shape by shape on the whole float64 grid: logistic edge, over-blend, owner."""
    image = image.astype(np.float64)
    owner = np.full(image.shape[:2], -1)
    ys, xs = np.mgrid[: image.shape[0], : image.shape[1]].astype(np.float64)
    for (x0, y0, x1, y1), params, (who, texture) in zip(scene.windows, scene.params, scene.styles):
        colour = params[7:]
        signed = signed_distance(params, xs, ys)
        alpha = np.zeros_like(xs)
        alpha[y0:y1, x0:x1] = (1 / (1 + np.exp(signed / synthetic.EDGE)))[y0:y1, x0:x1]
        paint = np.array(colour) * (texture(xs, ys)[..., None] if texture else 1.0)
        image += alpha[..., None] * (paint - image)
        owner[alpha > 0.5] = who
    return image, owner


def test_scene_renders_its_definition_and_windows_lose_nothing():
    """The flat, windowed, cv2-blended renderer against the plain definition, with shapes crossing the border."""
    rng = np.random.default_rng(1)
    scene = synthetic.Scene(70, 50)
    for i in range(40):
        a, b = rng.uniform(-10, 60, 2), rng.uniform(-10, 60, 2)
        texture = synthetic.stripes(rng) if i % 3 == 0 else None
        colour = rng.uniform(0, 255, 3)
        if i % 4 == 0:
            scene.disc(a, rng.uniform(0.5, 12), colour, i, texture)
        else:
            scene.capsule(a, b, rng.uniform(0.5, 8), rng.uniform(0.5, 8), colour, i, texture)
    background = rng.uniform(0, 255, (70, 50, 3)).astype(np.float32)
    image = background.copy()
    owner = scene.render(image)
    expected, expected_owner = reference_render(scene, background)
    assert len(scene.windows) > 30  # some shapes fall wholly outside and are dropped
    assert np.abs(image - expected).max() < 0.01  # grey levels: float32 against float64
    assert (owner == expected_owner).mean() > 0.999  # a pixel at coverage 0.5 may fall either way
    # the windows hold every pixel a shape visibly covers
    ys, xs = np.mgrid[:70, :50]
    for (x0, y0, x1, y1), params in zip(scene.windows, scene.params):
        inside = np.zeros((70, 50), bool)
        inside[y0:y1, x0:x1] = True
        assert (signed_distance(params, xs, ys)[~inside] >= synthetic.REACH).all()


def test_render_keeps_no_state_between_images():
    """Scratch buffers are reused across images: an image is the same whatever was rendered before it."""
    cfg = synthetic.SynthConfig()
    first, _ = synthetic.render_image(np.random.default_rng(5), cfg)
    synthetic.render_image(np.random.default_rng(9), synthetic.SynthConfig(height=300, width=220))
    synthetic._SCRATCH.__dict__.clear()
    again, _ = synthetic.render_image(np.random.default_rng(5), cfg)
    assert np.array_equal(first, again)


def test_opencv_antialiasing_would_not_pass():
    """Why the renderer is our own: OpenCV's anti-aliased circle misses the centre by far more than 0.01 px."""
    import cv2

    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(50):
        centre, r = rng.uniform(20, 40, 2), rng.uniform(3, 8)
        img = np.zeros((64, 64), np.float32)
        cv2.circle(img, tuple(int(round(c * 256)) for c in centre), int(round(r * 256)), 1.0, -1, cv2.LINE_AA, 8)
        worst = max(worst, np.abs(centroid(img) - centre).max())
    assert worst > 0.05


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    synthetic.generate(out, train=12, val=6, seed=3, workers=1, progress=False)
    return out


def digest(folder):
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            h.update(path.relative_to(folder).as_posix().encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_whatever_the_workers(dataset, tmp_path):
    synthetic.generate(tmp_path, train=12, val=6, seed=3, workers=2, progress=False)
    assert digest(tmp_path) == digest(dataset)
    other = tmp_path / "other"
    synthetic.generate(other, train=12, val=6, seed=4, workers=1, progress=False)
    assert digest(other) != digest(dataset)


def test_annotations_are_coco_keypoints(dataset):
    doc = json.loads((dataset / "annotations" / "person_keypoints_train.json").read_text())
    assert doc["categories"][0]["keypoints"][0] == "nose" and len(doc["categories"][0]["skeleton"]) == 19
    assert len(doc["images"]) == 12 and all((dataset / "images" / "train" / im["file_name"]).is_file()
                                            for im in doc["images"])
    sizes = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
    for ann in doc["annotations"]:
        k = np.array(ann["keypoints"]).reshape(17, 3)
        w, h = sizes[ann["image_id"]]
        assert set(k[:, 2]) <= {0, 1, 2} and ann["num_keypoints"] == int((k[:, 2] > 0).sum()) > 0
        labelled = k[k[:, 2] > 0]
        assert (labelled[:, 0] >= 0).all() and (labelled[:, 0] <= w - 1).all() and (labelled[:, 1] <= h - 1).all()
        assert (k[k[:, 2] == 0, :2] == 0).all()
        x, y, bw, bh = ann["bbox"]
        assert bw > 0 and bh > 0 and ann["area"] > 0 and ann["iscrowd"] == 0
    vis = np.concatenate([np.array(a["keypoints"]).reshape(17, 3)[:, 2] for a in doc["annotations"]])
    assert (vis == 1).any() and (vis == 2).any()  # occlusion happens


def test_pycocotools_scores_ground_truth_at_ap_1(dataset):
    path = dataset / "annotations" / "person_keypoints_val.json"
    doc = json.loads(path.read_text())
    results = [dict(image_id=a["image_id"], category_id=1, keypoints=a["keypoints"], score=1.0)
               for a in doc["annotations"]]
    stats = evaluate.coco_keypoint_ap(path, results)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR"] == pytest.approx(1.0)


def test_bad_requests():
    with pytest.raises(ValueError, match="at least one image"):
        synthetic.generate("/tmp/never", train=0, val=0)


def test_a_run_cut_short_leaves_no_annotation_file(tmp_path, monkeypatch):
    """Images are written in place, so the annotation file of a split being rewritten goes first and comes last."""
    synthetic.generate(tmp_path, train=4, val=2, seed=1, workers=1, progress=False)
    render = synthetic.render_image
    calls = []

    def failing(rng, cfg):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return render(rng, cfg)

    monkeypatch.setattr(synthetic, "render_image", failing)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate(tmp_path, train=4, val=2, seed=2, workers=1, progress=False)
    assert not (tmp_path / "annotations" / "person_keypoints_train.json").exists()


def test_scene_rejects_an_image_it_cannot_blend_into():
    scene = synthetic.Scene(8, 6)
    with pytest.raises(ValueError, match=r"C-contiguous float32 \(8, 6, 3\) image, got uint8"):
        scene.render(np.zeros((8, 6, 3), np.uint8))
    with pytest.raises(ValueError, match=r"got float32 \(6, 8, 3\)"):
        scene.render(np.zeros((6, 8, 3), np.float32))


def _beside_easy(tmp_path, difficulty: str, train: int, seed: int):
    """The train annotations of 'easy' and of ``difficulty`` made with one seed, and the latter's folder."""
    out = {}
    for name in ("easy", difficulty):
        synthetic.generate(tmp_path / name, train=train, val=2, seed=seed, cfg=synthetic.synth_config(name),
                           workers=1, progress=False)
        out[name] = json.loads((tmp_path / name / "annotations" / "person_keypoints_train.json").read_text())
    return out["easy"], out[difficulty], tmp_path / difficulty


def _rgb(folder, image: dict) -> np.ndarray:
    import cv2

    return cv2.imread(str(folder / "images" / "train" / image["file_name"]))[..., ::-1].astype(float)


def test_localise_tints_the_sides_apart_and_leaves_easy_as_it_was(tmp_path):
    """'localise' draws the same people as 'easy' (the tint takes no random draw) with the person's left limbs red
    and right limbs blue; 'easy' annotation files do not mention the new field, so they keep their bytes."""
    a, b, localise = _beside_easy(tmp_path, "localise", train=8, seed=3)
    assert [x["keypoints"] for x in a["annotations"]] == [x["keypoints"] for x in b["annotations"]]
    assert "side_tint" not in a["info"]["config"] and b["info"]["config"]["side_tint"] == 0.7
    assert b["info"]["difficulty"] == "localise"
    redder = []
    for im, ann in zip(b["images"], b["annotations"]):
        pixels = _rgb(localise, im)
        k = np.asarray(ann["keypoints"]).reshape(17, 3)
        for joint, left in ((9, True), (10, False), (15, True), (16, False)):  # wrists and ankles
            x, y, v = k[joint]
            if v > 0:
                r, _, blue = pixels[int(round(y)), int(round(x))]
                redder.append((r > blue) == left)
    assert np.mean(redder) > 0.8  # a limb drawn over another may hide a few


def test_markers_put_each_joints_colour_on_its_keypoint_and_leave_easy_as_it_was(tmp_path):
    """'markers' draws the same people as 'easy' (the markers take no random draw) with a disc of the joint's own
    colour centred on every visible keypoint; 'easy' annotation files do not mention the new field."""
    a, b, markers = _beside_easy(tmp_path, "markers", train=6, seed=5)
    assert [x["bbox"] for x in a["annotations"]] == [x["bbox"] for x in b["annotations"]]
    assert "joint_markers" not in a["info"]["config"] and b["info"]["config"]["joint_markers"] == 0.6
    assert b["info"]["difficulty"] == "markers"
    colours = np.asarray(synthetic.MARKER_COLOURS)
    hits = []
    for im, ann in zip(b["images"], b["annotations"]):
        pixels = _rgb(markers, im)
        k = np.asarray(ann["keypoints"]).reshape(17, 3)
        for joint in range(5, 17):  # the body's joints (the face's markers are small and may overlap)
            x, y, v = k[joint]
            if v == 2:
                nearest = np.argmin(np.abs(colours - pixels[int(round(y)), int(round(x))]).sum(1))
                hits.append(nearest == joint)
    assert len(hits) > 40 and np.mean(hits) > 0.9  # JPEG and a marker drawn over another may blur a few
