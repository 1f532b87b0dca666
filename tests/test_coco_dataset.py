"""ufpa.data.coco: the crop pipeline is unbiased end to end, augmentation is reproducible, bad input is reported."""

import json

import cv2
import numpy as np
import pytest

from ufpa import codecs
from ufpa.data import coco, synthetic


def write_dataset(root, keypoints, boxes, size=(120, 100), file_names=None, draw=True):
    """PNG images (lossless) with a bright disc at each instance's first keypoint, and their annotation file."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for i, (kp, box) in enumerate(zip(keypoints, boxes)):
        image, scene = np.zeros((*size, 3), np.float32), synthetic.Scene(*size)
        if draw:
            scene.disc(kp[0, :2], 3.0, (250.0, 250.0, 250.0), 0)
        scene.render(image)
        name = file_names[i] if file_names else f"{i}.png"
        cv2.imwrite(str(root / "images" / f"{i}.png"), np.clip(image, 0, 255).astype(np.uint8))
        images.append({"id": i + 1, "file_name": name, "height": size[0], "width": size[1]})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "bbox": list(box),
                     "area": float(box[2] * box[3]), "num_keypoints": int((kp[:, 2] > 0).sum()),
                     "keypoints": kp.reshape(-1).tolist()})
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 1, "name": "person", "keypoints": list(synthetic.KEYPOINT_NAMES)}]}
    (root / "ann.json").write_text(json.dumps(doc))
    return root / "ann.json", root / "images"


def one_keypoint(x, y, k=17):
    kp = np.zeros((k, 3))
    kp[0] = (x, y, 2)
    kp[5:, :] = np.array([x, y, 2])  # enough labelled points for every augmentation
    return kp


def test_crops_are_unbiased_under_flip_rotation_and_scale(tmp_path):
    rng = np.random.default_rng(0)
    kps = [one_keypoint(*rng.uniform(40, 60, 2)) for _ in range(6)]
    ann, images = write_dataset(tmp_path, kps, [[20.3, 25.7, 55, 70]] * 6)
    aug = coco.Augment(flip=0.5, scale=0.3, rotation=40, rotation_prob=1.0, half_body=0.0)
    ds = coco.CocoKeypoints(ann, images, input_size=(128, 96), train=True, augment=aug, seed=1)
    flips = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            img = item["image"].transpose(1, 2, 0) * coco.STD + coco.MEAN
            lum = np.clip(img.mean(-1) - 5, 0, None)
            ys, xs = np.mgrid[: lum.shape[0], : lum.shape[1]]
            centroid = np.array([(lum * xs).sum(), (lum * ys).sum()]) / lum.sum()
            # after a flip keypoint 0 (nose) stays keypoint 0: it has no pair
            assert np.abs(centroid - item["keypoints"][0]).max() < 0.05
            flips.add(item["flipped"])
    assert flips == {True, False}


def test_box_to_centre_scale_uses_pixel_centres():
    centre, size = coco.box_to_centre_scale([10, 20, 40, 40], aspect=0.75, padding=1.25)
    assert np.allclose(centre, [29.5, 39.5]) and np.allclose(size, [50, 200 / 3])  # 40x40 -> 40x53.3 -> x1.25
    m = coco.crop_transform(centre, size, (256, 192))
    assert np.allclose(coco.apply_transform(m, centre), [95.5, 127.5])
    inv = coco.invert_transform(m)
    assert np.allclose(coco.apply_transform(inv, coco.apply_transform(m, [[3.0, 7.0]])), [[3.0, 7.0]])


def test_epochs_are_reproducible_and_differ(tmp_path):
    ann, images = write_dataset(tmp_path, [one_keypoint(50, 50)] * 2, [[20, 20, 60, 70]] * 2)
    make = lambda: coco.CocoKeypoints(ann, images, (64, 48), codecs.create_codec("dark", (64, 48), (16, 12)),  # noqa: E731
                                      train=True, seed=7)
    a, b = make(), make()
    assert np.array_equal(a[0]["image"], b[0]["image"]) and np.array_equal(a[0]["target"], b[0]["target"])
    b.set_epoch(1)
    assert not np.array_equal(a[1]["matrix"], b[1]["matrix"])


def test_targets_come_from_the_codec(tmp_path):
    ann, images = write_dataset(tmp_path, [one_keypoint(50, 50)], [[20, 20, 60, 70]])
    codec = codecs.create_codec("udp", (128, 96), (32, 24))
    item = coco.CocoKeypoints(ann, images, (128, 96), codec)[0]
    assert item["target"].shape == (51, 32, 24) and item["target_weight"].shape == (17,)
    decoded, _ = codec.decode(item["target"][None])
    assert np.abs(decoded[0][item["visible"] > 0] - item["keypoints"][item["visible"] > 0]).max() < 1e-3


def test_bad_input_is_reported(tmp_path):
    ann, images = write_dataset(tmp_path, [one_keypoint(50, 50)] * 3, [[20, 20, 60, 70], [5, 5, 0, 10],
                                                                       [20, 20, 60, 70]])
    doc = json.loads(ann.read_text())
    doc["annotations"][2]["keypoints"][15:18] = [500.0, 40.0, 2]  # keypoint 5 far outside the image
    ann.write_text(json.dumps(doc))
    ds = coco.CocoKeypoints(ann, images, (64, 48))
    assert ds.report.skipped == {"zero-area box": 1} and ds.report.keypoints_outside_image == 1 and len(ds) == 2
    assert "1 zero-area box" in ds.summary()

    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(ValueError, match="not valid JSON"):
        coco.CocoKeypoints(bad, images)
    bad.write_text('{"images": []}')
    with pytest.raises(ValueError, match="lacks"):
        coco.CocoKeypoints(bad, images)
    with pytest.raises(FileNotFoundError, match="python -m ufpa synth"):
        coco.CocoKeypoints(tmp_path / "none.json", images)


def test_missing_images_are_listed_or_skipped(tmp_path):
    ann, images = write_dataset(tmp_path, [one_keypoint(50, 50)] * 3, [[20, 20, 60, 70]] * 3)
    (images / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images are missing, e.g. \[.*1.png"):
        coco.CocoKeypoints(ann, images)
    ds = coco.CocoKeypoints(ann, images, skip_missing_images=True)
    assert len(ds) == 2 and ds.report.skipped == {"missing image": 1}


@pytest.mark.parametrize("name", ["../escape.png", "/etc/passwd", "sub/../../x.png"])
def test_file_names_must_stay_inside_the_image_folder(tmp_path, name):
    ann, images = write_dataset(tmp_path, [one_keypoint(50, 50)], [[20, 20, 60, 70]], file_names=[name])
    with pytest.raises(ValueError, match="escapes the image folder"):
        coco.CocoKeypoints(ann, images)


def test_detection_boxes_for_testing(tmp_path):
    ann, images = write_dataset(tmp_path, [one_keypoint(50, 50)] * 2, [[20, 20, 60, 70]] * 2)
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9},
            {"image_id": 2, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.1}]
    ds = coco.CocoKeypoints(ann, images, detections=dets, detection_threshold=0.5)
    assert len(ds) == 1 and ds[0]["score"] == pytest.approx(0.9)
    assert ds.report.skipped == {"detection below threshold": 1}


def test_serves_synthpose(tmp_path):
    synthetic.generate(tmp_path, train=4, val=0, seed=0, progress=False)
    ds = coco.CocoKeypoints(tmp_path / "annotations" / "person_keypoints_train.json", tmp_path / "images" / "train",
                            codec=codecs.create_codec("msra", (256, 192), (64, 48)), train=True)
    assert len(ds) >= 4 and ds[0]["image"].shape == (3, 256, 192)


def test_keypoints_outside_the_crop_are_weighed_by_the_codec(tmp_path):
    """As in the HRNet and UFPA code: a labelled keypoint just outside the crop keeps its label and trains the part of
    its Gaussian (and offsets) on the map; one beyond the Gaussian's reach gets weight 0."""
    codec = codecs.create_codec("udp", (128, 96), (32, 24), sigma=2.0)  # reach 6 heatmap samples, 24 input px
    kp = one_keypoint(50, 50)
    first = coco.CocoKeypoints(*write_dataset(tmp_path / "a", [kp], [[30, 30, 40, 40]], size=(200, 200)), (128, 96),
                               codec)[0]
    # image points at crop x = -8 (2 samples off the map) and x = 95 + 60 (15 samples off), both at crop y = 64
    wanted = np.array([[-8.0, 64.0], [155.0, 64.0]])
    kp[1:3, :2] = coco.apply_transform(coco.invert_transform(first["matrix"]), wanted)
    kp[1:3, 2] = 2
    item = coco.CocoKeypoints(*write_dataset(tmp_path / "b", [kp], [[30, 30, 40, 40]], size=(200, 200)), (128, 96),
                              codec)[0]
    assert np.allclose(item["keypoints"][1:3], wanted, atol=1e-3) and item["visible"][1:3].tolist() == [2, 2]
    assert item["target_weight"][1] == 1 and item["target_weight"][2] == 0
    assert item["target"][1].max() > 0.1 and item["target"][2].max() == 0


def test_normalise_is_the_whole_array_expression_bit_for_bit():
    crop = np.random.default_rng(3).integers(0, 256, size=(37, 29, 3), dtype=np.uint8)
    whole = np.ascontiguousarray(((crop[..., ::-1].astype(np.float32) - coco.MEAN) / coco.STD).transpose(2, 0, 1))
    fast = coco.normalise(crop)
    assert fast.dtype == np.float32 and fast.shape == (3, 37, 29)
    assert np.array_equal(fast, whole)


def test_the_image_cache_keeps_items_bit_for_bit_within_its_budget(tmp_path):
    ann, images = write_dataset(tmp_path, [one_keypoint(50, 50)] * 3, [[20, 20, 60, 70]] * 3)
    codec = codecs.create_codec("udp", (64, 48), (16, 12))
    plain = coco.CocoKeypoints(ann, images, (64, 48), codec, train=True, seed=1)
    cached = coco.CocoKeypoints(ann, images, (64, 48), codec, train=True, seed=1, cache_mb=1)
    for epoch in (0, 1):  # the second epoch reads from the cache
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for i in range(3):
            a, b = plain[i], cached[i]
            assert all(np.array_equal(a[k], b[k]) for k in ("image", "target", "keypoints", "matrix"))
    one_image = next(iter(cached.cache.values())).nbytes  # 120x100x3 bytes
    assert len(cached.cache) == 3 and not plain.cache
    small = coco.CocoKeypoints(ann, images, (64, 48), codec, cache_mb=1.5 * one_image / 2**20)
    for i in range(3):
        small[i]
    assert len(small.cache) == 1  # the budget holds: first come, first kept, nothing evicted


def test_a_half_body_crop_of_coinciding_points_keeps_the_persons_box(tmp_path):
    """All labelled points of a body half at one place span no box: the crop was NaN (found by the cache test)."""
    ann, images = write_dataset(tmp_path, [one_keypoint(50, 50)], [[20, 20, 60, 70]])
    ds = coco.CocoKeypoints(ann, images, (64, 48), codecs.create_codec("udp", (64, 48), (16, 12)), train=True,
                            augment=coco.Augment(flip=0, scale=0, rotation=0, half_body=1.0), seed=1)
    for epoch in range(4):
        ds.set_epoch(epoch)
        assert np.isfinite(ds[0]["matrix"]).all() and np.isfinite(ds[0]["target"]).all()
