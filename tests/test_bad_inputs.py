"""Bad input and faults (issue 12): every row is a clear error naming the problem and the fix, and nothing good is lost.
README's "Bad input" table lists these checks; keep the two in step."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ufpa import codecs, config, evaluate, records
from ufpa.data import coco, synthetic
from ufpa.models import create_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    synthetic.generate(root, train=3, val=2, seed=5, progress=False)
    return root


def _doc(dataset, split="val"):
    return json.loads((dataset / "annotations" / f"person_keypoints_{split}.json").read_text())


def _results(doc, keypoints=None, score=0.9, category_id=1):
    out = []
    for ann in doc["annotations"]:
        kps = list(ann["keypoints"]) if keypoints is None else keypoints
        out.append({"image_id": ann["image_id"], "category_id": category_id, "keypoints": kps, "score": score})
    return out


# --- results and evaluation --------------------------------------------------------------------------------------

def test_nan_keypoints_are_refused_not_scored_as_perfect(dataset):
    doc = _doc(dataset)
    assert evaluate.coco_keypoint_ap(doc, _results(doc))["AP"] == 1.0  # the honest case still scores
    with pytest.raises(ValueError, match="finite numbers; NaN or inf would score as a perfect match"):
        evaluate.coco_keypoint_ap(doc, _results(doc, keypoints=[float("nan")] * 51))
    with pytest.raises(ValueError, match="non-finite keypoints"):
        evaluate.to_coco_results([1], np.full((1, 17, 2), np.nan), np.ones((1, 17)))


def test_nan_scores_are_refused(dataset):
    doc = _doc(dataset)
    with pytest.raises(ValueError, match="score nan is not a finite number"):
        evaluate.coco_keypoint_ap(doc, _results(doc, score=float("nan")))
    with pytest.raises(ValueError, match="non-finite keypoint scores"):
        evaluate.to_coco_results([1], np.zeros((1, 17, 2)), np.full((1, 17), np.nan))
    dets = [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": float("nan")}]
    with pytest.raises(ValueError, match="a NaN score passes no threshold test"):
        coco.CocoKeypoints(dataset / "annotations" / "person_keypoints_val.json", dataset / "images" / "val",
                           detections=dets, detection_threshold=0.5)


def test_unknown_category_is_refused(dataset):
    doc = _doc(dataset)
    with pytest.raises(ValueError, match=r"category ids \[7\] absent from the ground truth"):
        evaluate.coco_keypoint_ap(doc, _results(doc, category_id=7))


def test_results_file_with_nan_is_not_written(tmp_path):
    path = tmp_path / "results.json"
    bad = [{"image_id": 1, "category_id": 1, "keypoints": [1.0, 2.0, float("nan")] * 17, "score": 0.5}]
    with pytest.raises(ValueError, match="finite numbers"):
        evaluate.write_results(path, bad)
    assert not path.exists()


# --- annotation files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"][0]["keypoints"].__setitem__(slice(0, 3), [float("nan"), float("nan"), 2]),
     "keypoints that are not all finite"),
    (lambda d: d["annotations"][0].__setitem__("bbox", [float("nan"), 0, 10, 10]), "not four finite numbers"),
    (lambda d: d["annotations"][0].pop("bbox"), r"lacks bbox \[x, y, w, h\]"),
    (lambda d: d["annotations"][0].pop("image_id"), "lacks image_id"),
    (lambda d: d["images"][0].pop("file_name"), "lacks one of id, file_name, width, height"),
    (lambda d: d.__setitem__("categories", []), "'categories' is empty"),
])
def test_malformed_annotations_name_the_entry(dataset, tmp_path, change, message):
    doc = _doc(dataset)
    change(doc)
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(doc))  # json writes NaN tokens, as a careless tool would
    with pytest.raises(ValueError, match=message):
        coco.CocoKeypoints(path, dataset / "images" / "val")


def test_null_annotation_file(dataset, tmp_path):
    path = tmp_path / "null.json"
    path.write_text("null")
    with pytest.raises(ValueError, match="its JSON is NoneType, not an object"):
        coco.load_annotations(path)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b""), "zero bytes"),
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
])
def test_broken_images_are_found_up_front(dataset, tmp_path, damage, message):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(dataset, root)
    first = sorted((root / "images" / "val").iterdir())[0]
    damage(first)
    ann = root / "annotations" / "person_keypoints_val.json"
    with pytest.raises(ValueError, match=f"unreadable, e.g. .*{first.name}: {message}"):
        coco.CocoKeypoints(ann, root / "images" / "val")
    ds = coco.CocoKeypoints(ann, root / "images" / "val", skip_missing_images=True)
    assert ds.report.images == 1  # counted, reported skip


def test_flip_needs_the_17_coco_keypoints(dataset, tmp_path):
    doc = _doc(dataset)
    doc["categories"][0]["keypoints"] = doc["categories"][0]["keypoints"][:13]
    for ann in doc["annotations"]:
        ann["keypoints"] = ann["keypoints"][: 13 * 3]
    path = tmp_path / "k13.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="has 13 keypoints, but flip augmentation swaps COCO's 17"):
        coco.CocoKeypoints(path, dataset / "images" / "val", train=True)
    assert len(coco.CocoKeypoints(path, dataset / "images" / "val", train=True, augment=coco.Augment(flip=0)))


# --- codecs and models --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["msra", "dark", "udp"])
def test_codecs_refuse_non_finite_outputs(name):
    codec = codecs.create_codec(name, (256, 192), (64, 48))
    heat = np.zeros((1, 17 * codec.channels_per_keypoint, 64, 48), np.float32)
    heat[0, 0, 5, 5] = np.nan  # argmax would pick this sample
    with pytest.raises(ValueError, match="cannot decode an output with 1 non-finite values"):
        codec.decode(heat)


@pytest.mark.parametrize("name, kwargs, field", [
    ("msra", {"sigma": float("nan")}, "sigma=nan"), ("udp", {"kpd": float("nan")}, "kpd=nan"),
    ("dark", {"sigma": -1.0}, "sigma=-1.0"),
])
def test_codec_settings_must_be_finite(name, kwargs, field):
    with pytest.raises(ValueError, match=f"{field}: must be a finite number > 0"):
        codecs.create_codec(name, (256, 192), (64, 48), **kwargs)


def test_a_model_refuses_another_input_size():
    model = create_model("hrnet_w8_tiny", alignment="ufpa", input_size=(129, 97))
    with pytest.raises(ValueError, match="built for 129x97 inputs, got 128x96"):
        model(torch.zeros(1, 3, 128, 96))
    assert model(torch.zeros(1, 3, 129, 97)).shape[-2:] == (33, 25)


# --- records ------------------------------------------------------------------------------------------------------

def test_records_name_what_is_wrong(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not valid JSON text"):
        records.read_record(path)
    path.write_text("null")
    with pytest.raises(ValueError, match="its JSON is NoneType"):
        records.read_record(path)
    good = tmp_path / "good.json"
    records.write_record(good, "x", {"a": 1}, {"ok": 1.0})
    before = good.read_bytes()
    with pytest.raises(TypeError, match=r"results\.rows\[1\]\.when is a set"):
        records.write_record(good, "x", {"a": 1}, {"rows": [{"when": 1}, {"when": {1, 2}}]})
    assert good.read_bytes() == before  # a failed write never replaces a good record


def test_a_half_written_run_record_is_named(tmp_path):
    from ufpa import report

    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "half.json").write_text('{"schema": 1, "kind": "train_run", "config": {')
    with pytest.raises(ValueError, match="half.json is not valid JSON text"):
        report.load_runs(tmp_path)


# --- configs, CLI and notebooks ----------------------------------------------------------------------------------

def _cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "ufpa", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.parametrize("override, message", [
    ("batch=-1", "batch=-1: must be >= 1"), ("bf16=yes", "bf16='yes': expected True or False"),
    ("input_size=256", "expected a tuple"), ("variants=baseline", "expected a tuple"),
    ("variants=['baseline','upfa']", "variant 'upfa'"),
])
def test_bench_overrides_are_typed_and_checked(override, message):
    res = _cli("bench", "models", override)
    assert res.returncode != 0 and message in res.stderr, res.stderr


def test_out_naming_a_folder_is_refused_before_the_run(tmp_path):
    res = _cli("bench", "codecs", "n=5", "--out", str(tmp_path))
    assert res.returncode != 0 and "is a folder; name the record file" in res.stderr


def test_synth_checks_options_before_touching_a_dataset(tmp_path):
    out = tmp_path / "d"
    assert _cli("synth", "--out", str(out), "--train", "2", "--val", "1", "--quiet").returncode == 0
    ann = out / "annotations" / "person_keypoints_train.json"
    before = ann.read_bytes()
    for bad in (["--seed", "-1"], ["--height", "0"]):
        res = _cli("synth", "--out", str(out), "--train", "2", "--val", "1", "--quiet", *bad)
        assert res.returncode != 0 and "synth:" in res.stderr
        assert ann.read_bytes() == before  # the existing dataset is intact


def test_synth_refuses_a_folder_another_run_is_writing(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / ".synth.lock").write_text(str(os.getppid()))  # a live process holds it
    with pytest.raises(RuntimeError, match=r"another synth run \(pid \d+\) is writing"):
        synthetic.generate(out, train=1, val=0, seed=0, progress=False)
    (out / ".synth.lock").write_text("999999999")  # a writer that is gone: taken over
    synthetic.generate(out, train=1, val=0, seed=0, progress=False)
    assert not (out / ".synth.lock").exists() and (out / "annotations" / "person_keypoints_train.json").is_file()


def test_unknown_notebook_parameter_is_named():
    namespace = {"n_case": 1000, "n_cases": 2400, "seed": 0, "np": np, "check": config.check_parameter}
    with pytest.raises(ValueError, match=r"unknown notebook parameter 'n_case' \(did you mean 'n_cases'\?\)"):
        config.check_known_parameters(namespace, ["n_cases", "seed"])
    config.check_known_parameters({"n_cases": 1, "_private": 2, "In": []}, ["n_cases"])


def test_reports_parameter_relative_to_the_wrong_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("UFPA_REPORTS_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="run papermill with --cwd notebooks"):
        records.notebook_reports_dir("../reports_that_are_not_here")
    monkeypatch.setenv("UFPA_REPORTS_DIR", str(tmp_path))
    assert records.notebook_reports_dir("../reports") == tmp_path  # said aloud, see the next test


def test_env_override_of_reports_is_said(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UFPA_REPORTS_DIR", str(tmp_path))
    records.notebook_reports_dir("../reports")
    assert "UFPA_REPORTS_DIR is set" in capsys.readouterr().out


def test_notebook_with_a_bad_parameter_fails_before_writing(tmp_path):
    import papermill as pm

    reports = tmp_path / "reports"
    (reports / "results").mkdir(parents=True)
    record = reports / "results" / "numerical_verification.json"
    record.write_text("keep me")
    for params, message in ((dict(n_cases=50), "n_cases=50 is not valid"),
                            (dict(n_case=5000), "unknown notebook parameter 'n_case'")):
        with pytest.raises(pm.PapermillExecutionError, match=message):
            pm.execute_notebook(str(ROOT / "notebooks" / "02_numerical_verification.ipynb"), str(tmp_path / "o.ipynb"),
                                parameters=dict(params, reports=str(reports)), cwd=str(ROOT / "notebooks"),
                                progress_bar=False, kernel_name="python3")
        assert record.read_text() == "keep me"


# --- training (checkpoints, sweeps) --------------------------------------------------------------------------------

def test_corrupt_checkpoint_is_named(tmp_path):
    from ufpa import train

    path = tmp_path / "checkpoint.pt"
    torch.save({"config": {}, "model": {}}, path)
    with pytest.raises(ValueError, match="is not a ufpa training checkpoint"):
        train.load_checkpoint(path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="truncated or corrupt: delete it"):
        train.load_checkpoint(path)


def test_sweep_grid_with_an_unknown_key(tmp_path):
    from ufpa import sweep

    grid = tmp_path / "g.yaml"
    grid.write_text("name: x\nbase: {epochs: 1}\ngrid: {alignmnet: [baseline]}\n")
    with pytest.raises(ValueError, match="alignmnet"):
        sweep.expand(sweep.load_grid(grid))


def test_codecs_refuse_labelled_nan_keypoints():
    codec = codecs.create_codec("udp", (256, 192), (64, 48))
    keypoints = np.full((1, 17, 2), 50.0)
    keypoints[0, 3] = np.nan
    with pytest.raises(ValueError, match="1 labelled keypoints are NaN"):
        codec.encode(keypoints, np.ones((1, 17)))
    visible = np.ones((1, 17))
    visible[0, 3] = 0  # unlabelled: its coordinates do not matter
    out = codec.encode(keypoints, visible)
    assert out["target_weight"][0, 3] == 0 and np.isfinite(out["target"]).all()


# --- issue 18: silent changes now refused -----------------------------------------------------------------------
def test_a_synthpose_folder_of_another_size_is_refused(tmp_path):
    """`synth --out data/synthpose-easy` makes 2000/200 images, the cpu profile wants 4000/400 in the same folder:
    the profile must not train on half the data under its run ids."""
    root = tmp_path / "synthpose-easy"
    synthetic.ensure(root, "easy", train=3, val=2, seed=0, workers=1)
    assert synthetic.ensure(root, "easy", train=3, val=2, seed=0)  # the same request: nothing to say
    for ask, message in ((dict(train=6), r"train split has images 3 \(asked: 6\)"),
                         (dict(seed=1), r"seed 0 \(asked: 1\)"),
                         (dict(difficulty="standard"), r"max_people=1 \(asked: 3\)")):
        request = {"difficulty": "easy", "train": 3, "val": 2, "seed": 0, **ask}
        with pytest.raises(ValueError, match=message + ".*Delete the folder"):
            synthetic.ensure(root, **request)
    before = (root / "annotations" / "person_keypoints_train.json").read_bytes()
    assert (root / "annotations" / "person_keypoints_train.json").read_bytes() == before  # nothing touched


def test_duplicate_yaml_keys_and_empty_grids_are_refused(tmp_path):
    from ufpa import sweep

    grid = tmp_path / "g.yaml"
    grid.write_text("name: x\nbase: {epochs: 1}\ngrid:\n  alignment: [baseline]\n  alignment: [ufpa_any]\n")
    with pytest.raises(ValueError, match=r"'alignment' is given twice \(lines 4 and 5\)"):
        sweep.load_grid(grid)
    for text in ("name: x\nbase: {epochs: 1}\n", "name: x\nbase: {epochs: 1}\ngrid: {}\n"):
        grid.write_text(text)
        with pytest.raises(ValueError, match="no 'grid'"):
            sweep.load_grid(grid)


@pytest.mark.parametrize("data, message", [
    ("{difficulty: easy, train: 4}", "needs 'out'"),
    ("{out: d, trian: 4}", r"g.yaml: data section: unknown SynthPose option 'trian' \(did you mean 'train'\?\)"),
    ("{out: d, train: -1}", "train=-1: must be an integer >= 0"),
])
def test_a_bad_data_section_is_named_with_its_profile(tmp_path, data, message):
    from ufpa import sweep

    grid = tmp_path / "g.yaml"
    grid.write_text(f"name: x\ndata: {data}\nbase: {{epochs: 1}}\ngrid: {{seed: [0]}}\n")
    with pytest.raises(ValueError, match=message):
        sweep.load_grid(grid)


def test_an_override_given_twice_is_refused():
    from ufpa import train

    with pytest.raises(ValueError, match=r"model is given twice \(model='a' and 'model=b'\)"):
        config.from_overrides(train.TrainConfig(), ["model=a", "model=b"])


def test_duplicate_image_ids_are_refused(dataset, tmp_path):
    doc = _doc(dataset)
    doc["images"].append(dict(doc["images"][0], file_name="other.jpg"))
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"image id\(s\) \[1\] appear more than once"):
        coco.CocoKeypoints(path, dataset / "images" / "val")


def test_an_image_damaged_after_loading_is_refused_when_read(dataset, tmp_path):
    """cv2.imread decodes a truncated JPEG as a part-grey image with only a warning: the item refuses it."""
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(dataset, root)
    ds = coco.CocoKeypoints(root / "annotations" / "person_keypoints_val.json", root / "images" / "val")
    first = ds.instances[0].file
    first.write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    with pytest.raises(OSError, match=f"cannot decode image .*{first.name} \\(truncated"):
        ds[0]


def test_aligned_size_refuses_what_is_not_an_image_size():
    from ufpa import geometry

    for bad in (0, -5):
        with pytest.raises(ValueError, match="an integer >= 1"):
            geometry.aligned_size(bad)
    res = subprocess.run([sys.executable, "-m", "ufpa", "aligned-size", "--", "-5", "0"], capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode != 0 and "are not image sizes" in res.stderr and "use 33" not in res.stdout


# --- issue 18: faults that leave debris or unclear errors ----------------------------------------------------------
def _tiny_run(dataset, tmp_path, **changes):
    from dataclasses import replace

    from ufpa import train

    cfg = train.TrainConfig(data=str(dataset), input_size=(96, 64), epochs=1, batch_size=2, train_limit=2,
                            val_limit=2, warmup_steps=1, threads=1, out=str(tmp_path / "runs"),
                            reports=str(tmp_path / "reports"), progress=False, sigma=2.0)
    return replace(cfg, **changes)


def test_output_folders_are_checked_before_training(dataset, tmp_path):
    from ufpa import train

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for field in ("out", "reports"):
        cfg = _tiny_run(dataset, tmp_path, **{field: str(blocker / "sub")})
        with pytest.raises(OSError, match=f"cannot write to .*a-file/sub.*\\({field}="):
            train.train(cfg)
    assert not list(tmp_path.rglob("checkpoint.pt"))  # nothing was trained first


def test_debris_of_a_killed_run_is_cleaned_and_the_results_pair_with_their_record(dataset, tmp_path):
    from ufpa import report, train

    cfg = _tiny_run(dataset, tmp_path)
    directory, rdir = train.run_dir(cfg), train.record_path(cfg).parent
    directory.mkdir(parents=True)
    rdir.mkdir(parents=True)
    debris = [directory / ".checkpoint.pt.tmp4242", rdir / f".{train.run_id(cfg)}.keypoints.json.x1y2",
              rdir / f".{train.run_id(cfg)}.json.a9b8"]
    for path in debris:
        path.write_bytes(b"half")
    train.train(cfg)
    assert not any(p.exists() for p in debris)
    results = train.record_path(cfg).with_suffix(".keypoints.json")
    assert len(report.run_records(rdir.parent)) == 1
    results.write_text("[]")  # a results file of another write of this run
    with pytest.raises(ValueError, match="is not the results file of the record"):
        report.run_records(rdir.parent)


def test_a_full_disk_is_named_and_the_previous_file_kept(tmp_path, monkeypatch):
    import errno

    from ufpa import train

    path = tmp_path / "checkpoint.pt"
    train.save_checkpoint(path, {"epoch": 1})

    def full(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4096 vs 0")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"checkpoint .*checkpoint.pt \(disk full\); the previous checkpoint is intact"):
        train.save_checkpoint(path, {"epoch": 2})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1 and not list(tmp_path.glob(".*tmp*"))

    record = tmp_path / "r.json"
    records.atomic_write_text(record, "old")

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match=r"could not write .*r.json \(disk full\); the previous r.json, if any"):
        records.atomic_write_text(record, "new")
    assert record.read_text() == "old" and not list(tmp_path.glob(".r.json.*"))


def test_the_cli_says_an_expected_error_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "ufpa", "train", f"data={tmp_path / 'none'}", "epochs=1"],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "ufpa train: no dataset at" in res.stderr
    helped = subprocess.run([sys.executable, "-m", "ufpa", "train", "--help"], capture_output=True, text=True,
                            cwd=ROOT)
    assert "epochs=16" in helped.stdout and "passes over the training instances" in helped.stdout


def test_the_readme_table_and_this_file_are_in_step():
    """Every test here is named in README's "Bad input" table, and every test the table names exists."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Bad input"):]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| ---")][1:]
    assert all(line.count(" | ") == 2 for line in rows), "each row: input | what happens | test"
    named = {name for line in rows for name in re.findall(r"`(test_\w+)`", line.rsplit(" | ", 1)[1])}
    here = set(re.findall(r"^def (test_\w+)", Path(__file__).read_text(encoding="utf-8"), re.M))
    here.discard("test_the_readme_table_and_this_file_are_in_step")
    assert here - named == set(), f"tests missing from the README table: {sorted(here - named)}"
    assert named - here == set(), f"the README table names tests that do not exist: {sorted(named - here)}"


def test_a_run_resumes_only_on_its_data_and_code(dataset, tmp_path, monkeypatch):
    """Halve every x keypoint of the training file, or edit the code, under a run that stopped after an epoch: it
    refuses to resume (it would mix two datasets or two programs in one run) and names the fix."""
    import shutil

    from ufpa import train

    root = tmp_path / "data"
    shutil.copytree(dataset, root)
    cfg = _tiny_run(root, tmp_path)
    directory = train.train(cfg)
    state = torch.load(directory / "checkpoint.pt", weights_only=True)
    assert state["data_fingerprint"] == train.data_fingerprint(cfg) and state["code_fingerprint"]
    rec = records.read_record(train.record_path(cfg))["results"]
    assert rec["data_fingerprint"] == state["data_fingerprint"]
    (directory / "done.json").unlink()  # as if killed before the end: the next call resumes
    monkeypatch.setattr(train, "code_fingerprint", lambda: "0" * 16)
    with pytest.raises(ValueError, match="the code changed since run .* resume it with that code, or delete"):
        train.train(cfg)
    monkeypatch.undo()
    ann = root / "annotations" / "person_keypoints_train.json"
    doc = json.loads(ann.read_text())
    for a in doc["annotations"]:
        a["keypoints"][0::3] = [x / 2 for x in a["keypoints"][0::3]]
    ann.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="the data changed under run .* Restore the data it started on, or delete"):
        train.train(cfg)
