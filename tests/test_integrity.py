"""Issue 41: a registration that cannot be rewritten, a record that is its run, an equivalence that proves itself.
Each test is a fault a careless or hurried user makes on a copy of a study, refused (or labelled) in one line that
names the file, the problem and the fix. README's "Bad input" table names each test here."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_report import _edit, fake_id, fake_record, register, write_instances

from ufpa import __main__ as cli
from ufpa import integrity, records, report, runs, sweep

ROOT = Path(__file__).resolve().parent.parent
ON_EPE = {"metric": "epe_found_px", "flip_test": False, "level": 0.95,
          "primary": {"control": "baseline 96x64 udp", "treatment": "ufpa 97x65 udp"}}
ARMS = (("baseline", "96x64"), ("ufpa", "97x65"))


@pytest.fixture()
def study(tmp_path):
    """Four paired seeds of baseline and ufpa with per-image results, a design on EPE on found keypoints registered
    with their run ids (ufpa lowers it by 0.1 px at every seed)."""
    folder = tmp_path / "results"
    for seed in range(4):
        for alignment, epe in (("baseline", 1.0), ("ufpa", 0.9)):
            fake_record(folder, alignment, (96, 64), seed, 0.5)
            _edit(folder / "runs" / f"{fake_id(alignment, seed)}.json",
                  lambda r, e=epe + 0.01 * seed: [r["results"][k].update(epe_found=e) for k in ("flip", "no_flip")]
                  + [r["results"].update(data_fingerprint="e" * 16)])
            write_instances(folder, fake_id(alignment, seed), np.full(20, 0.7), seed)
            scaled(folder, fake_id(alignment, seed), epe)
    register(folder, ON_EPE, "s", ARMS, range(4), seen=[])
    return folder


def scaled(folder, run_id, factor):
    """A run's per-image EPE on found keypoints scaled by ``factor`` (its hash put in its record again)."""
    path = folder / "runs" / f"{run_id}.instances.json"
    doc = json.loads(path.read_text())
    for flip in doc.values():
        flip["epe_found_sum"] = [v * factor for v in flip["epe_found_sum"]]
    text = json.dumps(doc, separators=(",", ":"))
    path.write_text(text)
    _edit(folder / "runs" / f"{run_id}.json",
          lambda r: r["results"].update(instances_sha256=integrity.hashlib.sha256(text.encode()).hexdigest()))


def verdict(folder) -> str:
    report._DESIGN_CACHE.clear()
    return report.design_table(report.load_runs(folder), folder, resamples=50).iloc[0]["verdict"]


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


# --- 1. registration that binds --------------------------------------------------------------------------------------

def test_a_design_registered_after_its_runs_names_them_and_reads_post_hoc(study, tmp_path, capsys):
    assert verdict(study).startswith("lower")
    assert "before any of its runs had started" in report.design_markdown(study), "computed, not assumed"
    # the same plan registered after both runs of seeds 0 and 1 had started: named in its record, labelled post hoc
    (study / "design" / "s.json").unlink()
    (study / "design" / integrity.INDEX).unlink()
    register(study, ON_EPE, "s", ARMS, range(4),
             seen=[fake_id(a, s) for a in ("baseline", "ufpa") for s in (0, 1)] + [fake_id("ufpa", 2)])
    assert verdict(study).startswith("post hoc (both its runs of seed(s) [0, 1] had started when s registered it): "
                                     "lower")
    assert "after 5 of its 8 runs had started (named in its record); among them both runs of a compared pair " \
           "(primary: seeds [0, 1]), so those comparisons read post hoc" in report.design_markdown(study)
    # a design made before designs named what they had seen: read from its runs' records' times (fakes came first)
    (study / "design" / "s.json").unlink()
    (study / "design" / integrity.INDEX).unlink()
    register(study, ON_EPE, "s", ARMS, range(4), seen=None)
    assert "after 8 of its 8 runs had records (read from their records' times)" in report.design_markdown(study)
    assert verdict(study).startswith("post hoc (both its runs of seed(s) [0, 1, 2, 3] had records when s")
    # the sweep names the runs it has seen when it registers, and says so at once
    doc = {**sweep.load_grid(ROOT / "profiles" / "smoke.yaml"), "reports": str(tmp_path / "r"),
           "design": {"primary": {"control": "baseline 96x64 udp", "treatment": "ufpa_any 96x64 udp"}}}
    every = sweep.expand(doc)
    sweep.record_path(every[0]).parent.mkdir(parents=True)
    sweep.record_path(every[0]).write_text("{}")
    rec = records.read_record(sweep.register_design(doc, every), kind="design")
    assert rec["results"]["seen_at_registration"] == [sweep.run_id(every[0])]


def test_a_registered_design_cannot_be_removed_rewritten_or_placed_by_hand(study, tmp_path):
    design = study / "design" / "s.json"
    kept = design.read_bytes()
    design.unlink()  # its verdicts would vanish
    with pytest.raises(ValueError, match=r"s.json is registered \(registered.sha256 names it\) but missing.*"
                                         r"git checkout -- ") as err:
        report.design(study)
    assert "delete" not in one_line(err)
    design.write_bytes(kept.replace(b'"ufpa 97x65 udp"', b'"ufpa 97x65 udp" ', 1))
    with pytest.raises(ValueError, match="changed after it registered .* give it its own profile name"):
        report.design(study)
    design.write_bytes(kept)
    assert report.design(study)["primary"]["treatment"] == "ufpa 97x65 udp"
    records.write_record(study / "design" / "mine.json", "design", {"profile": "mine", **ON_EPE},
                         {"arms": {}, "comparisons": sweep.comparisons(ON_EPE)})
    with pytest.raises(ValueError, match="mine.json is not in .*registered.sha256.* a file placed by hand is no "
                                         "registration"):
        report.design(study)
    # the sweep refuses to register beside a removed design, and never advises deleting one
    (study / "design" / "mine.json").unlink()
    doc = {**sweep.load_grid(ROOT / "profiles" / "cpu.yaml"), "reports": str(tmp_path / "r")}
    every = sweep.expand(doc)
    first = sweep.register_design(doc, every)
    changed = {**doc, "design": {**doc["design"], "primary": {"control": "baseline 96x64 udp",
                                                              "treatment": "ufpa-zerospad 97x65 udp"}}}
    with pytest.raises(ValueError, match="would not be pre-registered; a new plan is a new design") as err:
        sweep.register_design(changed, every)
    assert "delete" not in one_line(err)
    first.unlink()
    with pytest.raises(ValueError, match="registered .* but missing"):
        sweep.register_design(changed, every)
    assert not first.exists(), "nothing re-registered"


def test_shards_starting_together_register_one_design(tmp_path):
    """An array job's shards start at once: one registers, the others find the same design (a lock per folder)."""
    from concurrent.futures import ThreadPoolExecutor

    doc = {**sweep.load_grid(ROOT / "profiles" / "gpu.yaml"), "reports": str(tmp_path)}
    every = sweep.expand(doc)
    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: sweep.register_design(doc, every), range(4)))
    assert len(set(paths)) == 1 and integrity.check_designs(paths[0].parent) == [paths[0]]


def test_a_design_folder_without_its_index_says_how_to_check_it(study):
    (study / "design" / integrity.INDEX).unlink()
    with pytest.raises(ValueError, match=r"holds designs but no registered.sha256 .* check each design against "
                                         r"version control .* sha256sum \*.json > registered.sha256"):
        report.design(study)


def test_design_fields_are_typed_and_ranged_in_profiles_and_records(study):
    doc = sweep.load_grid(ROOT / "profiles" / "cpu.yaml")
    every = sweep.expand(doc)
    base = doc["design"]
    for bad, message in [
        ({"flip_test": "no"}, "flip_test 'no' is not a boolean"),
        ({"flip_test": "false"}, "flip_test 'false' is not a boolean"),
        ({"level": 95}, r"level 95 is not a number in \(0, 1\)"),
        ({"level": "0.95"}, r"level '0.95' is not a number in \(0, 1\)"),
        ({"level": 0}, r"level 0 is not a number in \(0, 1\)"),
        ({"level": True}, r"level True is not a number"),
        ({"metric": ["AP"]}, r"metric \['AP'\] is not one of"),
        ({"metric": 5}, "metric 5 is not one of"),
        ({"primary": [base["primary"]]}, "primary must be a mapping"),
        ({"secondary": {"control": "a", "treatment": "b"}}, "secondary must be a list"),
        ({"primary": {"control": "baseline 96x64 udp", "treatment": "baseline 96x64 udp"}},
         "control and treatment are the same arm"),
        ({"decomposition": ["baseline 96x64 udp"]}, "decomposition must be a list of two or more arms"),
        ({"profile": "other"}, "unknown keys"),
    ]:
        with pytest.raises(ValueError, match=message) as err:
            sweep.check_design({**doc, "design": {**base, **bad}}, every)
        assert "profile 'cpu', design" in one_line(err)
    # the same checks on a design record's JSON (made by hand, then indexed as if registered)
    path = study / "design" / "s.json"
    _edit(path, lambda r: r["config"].update(flip_test="false"))
    (study / "design" / integrity.INDEX).unlink()
    integrity.index_design(path)
    with pytest.raises(ValueError, match=r"design record .*s.json: flip_test 'false' is not a boolean"):
        report.design(study)
    for change, message in [(lambda r: r["config"].update(flip_test=False) or r["results"].update(arms=[]),
                             "results.arms must map each arm to its run ids"),
                            (lambda r: r["results"].update(arms={}, comparisons={"role": "primary"}),
                             "results.comparisons must be a list")]:
        _edit(path, change)
        (study / "design" / integrity.INDEX).unlink()
        integrity.index_design(path)
        with pytest.raises(ValueError, match=message):
            report.design(study)


def test_a_study_has_one_primary_registered_before_or_with_its_runs_named(tmp_path):
    markers = {**sweep.load_grid(ROOT / "profiles" / "cpu_markers.yaml"), "reports": str(tmp_path)}
    sweep.register_design(markers, sweep.expand(markers, reports=str(tmp_path)))
    controls = {**sweep.load_grid(ROOT / "profiles" / "cpu_markers_controls.yaml"), "reports": str(tmp_path)}
    second = {**controls, "design": {**controls["design"],
                                     "primary": {"control": "baseline 96x64 udp", "treatment": "bilinear 96x64 udp"}}}
    with pytest.raises(ValueError, match="the study it would join has one already .* a study has one primary"):
        sweep.register_design(second, sweep.expand(second, reports=str(tmp_path)))


# --- 2. a record is its run ------------------------------------------------------------------------------------------

def test_a_record_whose_config_is_not_its_run_is_refused(study):
    a, b = (study / "runs" / f"{fake_id('ufpa', s)}.json" for s in (1, 2))
    _edit(a, lambda r: r["config"].update(seed=2))  # seeds swapped between two records: a silent mispairing
    _edit(b, lambda r: r["config"].update(seed=1))
    with pytest.raises(ValueError, match=r"config.seed is 's2' but the run id says otherwise; its config gives run "
                                         r".*-s2-.*not .*-s1-") as err:
        report.load_runs(study)
    assert fake_id("ufpa", 1) in one_line(err)
    _edit(a, lambda r: r["config"].update(seed=1))
    _edit(b, lambda r: r["config"].update(seed=2))
    for seed in range(4):  # one arm's lr changed in every record: another experiment under the same names
        _edit(study / "runs" / f"{fake_id('ufpa', seed)}.json", lambda r: r["config"].update(lr=0.01))
    with pytest.raises(ValueError, match="a config field the id's hash covers .* differs"):
        report.load_runs(study)


def test_a_record_of_torchs_default_thread_count_is_checked_too(study):
    """``threads: 0`` is the training machine's cores, which the record does not name: the id is checked against
    every count, and an edited field is still refused."""
    old = study / "runs" / f"{fake_id('ufpa', 0)}.json"
    rec = json.loads(old.read_text())
    rec["config"]["threads"] = 0
    rec["results"]["run_id"] = integrity.recorded_run_id({**rec["config"], "threads": 16})  # made on 16 cores
    new = old.with_name(f"{rec['results']['run_id']}.json")
    old.unlink()
    new.write_text(json.dumps(rec))
    integrity.check_record_identity(new, rec)
    rec["config"]["lr"] = 0.01
    with pytest.raises(ValueError, match="a config field the id's hash covers"):
        integrity.check_record_identity(new, rec)


def test_a_renamed_record_is_named_not_reported_missing(study):
    path = study / "runs" / f"{fake_id('ufpa', 3)}.json"
    path.rename(path.with_name("copy.json"))
    with pytest.raises(ValueError, match=f"copy.json holds the record of run {fake_id('ufpa', 3)}.* rename it"):
        report.load_runs(study)


def test_a_record_no_design_names_is_refused_where_designs_name_their_runs(study):
    copied = fake_record(study, "baseline", (96, 64), 9, 0.5)  # from another folder: one more seed in every table
    _edit(copied, lambda r: r["results"].update(data_fingerprint="e" * 16))
    with pytest.raises(ValueError, match=f"{fake_id('baseline', 9)}.json is a record of arm 'baseline 96x64 udp', "
                                         "whose runs the designs .* name, but no design names this one: .* move it"):
        report.load_runs(study)


def test_a_null_design_metric_never_drops_a_seed(study):
    victim = study / "runs" / f"{fake_id('ufpa', 2)}.json"
    for value, shown in ((None, "None"), ("0.9", "'0.9'")):  # null, or text pandas would read as a number
        _edit(victim, lambda r, v=value: r["results"]["no_flip"].update(epe_found=v))
        with pytest.raises(ValueError, match=rf"s2-.*\.json: results.no_flip.epe_found is {shown}, not a finite "
                                             r"number, and the design judges the run on it"):
            verdict(study)


def test_an_arm_on_other_data_is_refused(study):
    for seed in range(4):  # an arm recorded before runs recorded their data's fingerprint
        _edit(study / "runs" / f"{fake_id('ufpa', seed)}.json", lambda r: r["results"].pop("data_fingerprint"))
    with pytest.raises(ValueError, match="has no data_fingerprint .* whether they ran on the same data cannot be "
                                         "told"):
        report.load_runs(study)
    for seed in range(4):
        _edit(study / "runs" / f"{fake_id('ufpa', seed)}.json",
              lambda r: r["results"].update(data_fingerprint="f" * 16))
    with pytest.raises(ValueError, match="both ran on data 'synthpose-easy' but on different data \\(data_fingerprint "
                                         "f{16} vs e{16}\\)"):
        report.load_runs(study)


def test_a_compared_pair_on_two_datasets_is_refused(tmp_path):
    folder = tmp_path / "results"
    ids = {}
    for seed in range(2):
        for alignment, data in (("baseline", "synthpose-easy"), ("ufpa", "synthpose-hard")):
            rec = records.read_record(fake_record(tmp_path / "made", alignment, (96, 64), seed, 0.5))
            config = {**rec["config"], "data": f"/x/{data}"}
            rid = integrity.recorded_run_id(config)
            ids.setdefault(alignment, []).append(rid)
            found = {k: {**rec["results"][k], "epe_found": 1.0} for k in ("flip", "no_flip")}
            records.write_record(folder / "runs" / f"{rid}.json", "train_run", config,
                                 {**rec["results"], **found, "run_id": rid, "data_fingerprint": data})
    path = records.write_record(folder / "design" / "s.json", "design", {"profile": "s", **ON_EPE},
                                {"arms": {"baseline 96x64 udp": ids["baseline"], "ufpa 97x65 udp": ids["ufpa"]},
                                 "comparisons": sweep.comparisons(ON_EPE), "seen_at_registration": []})
    integrity.index_design(path)
    with pytest.raises(ValueError, match=r"primary compares runs on different data \(baseline 96x64 udp on "
                                         r"synthpose-easy .*ufpa 97x65 udp on synthpose-hard"):
        verdict(folder)


def test_a_missing_judged_record_or_sidecar_is_named(study):
    (study / "runs" / f"{fake_id('ufpa', 3)}.instances.json").unlink()
    text = verdict(study)
    assert text.startswith("withheld: ") and f"{fake_id('ufpa', 3)}.instances.json is missing" in text
    assert "verdict needs the bootstrap" in text
    (study / "runs" / f"{fake_id('ufpa', 3)}.json").unlink()
    assert verdict(study) == (f"lower (its intervals exclude zero; interim: 3 of 4 registered seeds, no record of "
                              f"{fake_id('ufpa', 3)})")


# --- 3. equivalence that proves itself -------------------------------------------------------------------------------

def _two_codes(study) -> tuple[Path, str, str]:
    old, new = "a" * 16, "b" * 16
    paths = records.run_record_paths(study / "runs")
    for i, path in enumerate(paths):
        _edit(path, lambda r, i=i: r["results"].update(code_fingerprint=old if i % 2 else new))
    return paths[1], old, new


def test_a_forged_or_malformed_equivalence_is_refused(study):
    first, old, new = _two_codes(study)
    rec = records.read_record(first)
    target = study / "equivalence" / f"{old}-{new}.json"
    good = {"codes": [old, new], "run_id": rec["results"]["run_id"], "device": rec["provenance"]["device"],
            "cpu_capability": rec["provenance"]["cpu_capability"]}
    for config, results, message in [
        ({"record": "nothing.json"}, good, "names the record 'nothing.json', which does not exist"),
        ({"record": str(first)}, {**good, "device": "cpu:nothing"}, "its device 'cpu:nothing' is not the one"),
        ({"record": str(first)}, {**good, "codes": [new, old]}, "its first code .* is not the one of the record"),
        ({"record": str(first)}, {**good, "codes": [old]}, "is not two different training-code fingerprints"),
        ({"record": str(first)}, {**good, "codes": "ab"}, "is not two different training-code fingerprints"),
        ({"record": str(first)}, {**good, "record_sha256": "0" * 64}, "is not the one it repeated"),
    ]:
        records.write_record(target, "code_equivalence", config, results)
        with pytest.raises(ValueError, match=message) as err:
            report.load_runs(study)
        assert str(target) in one_line(err) and "python -m ufpa reproduce" in one_line(err)
    records.write_record(target, "code_equivalence", {"record": str(first)}, good)  # as made before issue 41
    assert integrity.legacy_equivalence(target) and len(report.load_runs(study)) == 16
    assert report.equivalence_lines(study) == [
        f"- **Training codes pooled**: 2 codes joined by 1 equivalence record (`python -m ufpa reproduce`: a record "
        f"re-trained under another code, bit for bit on its CPU type); 1 of them, made before issue 41, keeps no "
        f"repeat, so its second code rests on the record's word (`{old}-{new}`)."]
    repeat = {**rec, "results": {**rec["results"], "code_fingerprint": new}}
    made = {**good, "record_sha256": integrity.sha256_file(first), "repeat": repeat,
            "repeat_sha256": integrity.hashlib.sha256((json.dumps(repeat, indent=1) + "\n").encode()).hexdigest()}
    records.write_record(target, "code_equivalence", {"record": str(first)}, made)
    assert not integrity.legacy_equivalence(target) and len(report.load_runs(study)) == 16
    assert "rests on the record's word" not in report.equivalence_lines(study)[0]
    copied = study.parent / "copy" / "results"  # a copied study is checked against its own records
    shutil.copytree(study, copied)
    _edit(copied / "runs" / first.name, lambda r: r["results"]["flip"].update(AP=0.1))
    with pytest.raises(ValueError, match=f"{copied / 'equivalence'}.* is not the one it repeated"):
        report.load_runs(copied)
    repeat["results"]["flip"]["AP"] += 0.01  # a repeat that did not repeat
    made["repeat_sha256"] = integrity.hashlib.sha256((json.dumps(repeat, indent=1) + "\n").encode()).hexdigest()
    records.write_record(target, "code_equivalence", {"record": str(first)}, made)
    with pytest.raises(ValueError, match="its repeat differs from .*flip AP"):
        report.load_runs(study)


def test_reproduce_compares_the_run_it_just_trained_and_refuses_an_edited_record(study, tmp_path, monkeypatch):
    from ufpa import train

    record = records.run_record_paths(study / "runs")[0]
    original = records.read_record(record)
    _edit(record, lambda r: r["results"].update(code_fingerprint="a" * 16))
    trained = []

    def repeat(cfg):  # a bit-for-bit repeat under the code checked out, as train would write it
        trained.append(cfg)
        again = records.read_record(record)
        records.write_record(train.record_path(cfg), "train_run", again["config"],
                             {**again["results"], "code_fingerprint": records.code_fingerprint()})
    monkeypatch.setattr(train, "train", repeat)
    scratch = tmp_path / "again"
    stale = scratch / "results" / "runs" / record.name
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({**original, "results": {**original["results"], "code_fingerprint": "c" * 16}}))
    out = runs.reproduce(record, scratch)
    assert len(trained) == 1 and out["identical"] and out["new_code"] == records.code_fingerprint(), "not the stale one"
    equivalence = records.read_record(out["equivalence"], kind="code_equivalence")["results"]
    assert equivalence["record_sha256"] == integrity.sha256_file(record) and equivalence["repeat"]["results"]
    assert integrity.check_equivalence(out["equivalence"]) == ("a" * 16, records.code_fingerprint())
    _edit(record, lambda r: r["config"].update(seed=9))  # an edited record would train another run
    with pytest.raises(ValueError, match="config.seed is 's9' but the run id says otherwise"):
        runs.reproduce(record, scratch)
    assert len(trained) == 1, "refused before training"


# --- 4. profiles, sweeps and notebook 05 -----------------------------------------------------------------------------

def test_reports_and_out_are_accepted_in_one_place_only(tmp_path):
    doc = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    for change, message in [
        (lambda d: d["base"].update(reports="../reports/markers"), "'reports' is given in base; .* top level"),
        (lambda d: d["grid"].update(reports=["g1", "g2"]), "'reports' is given in grid"),
        (lambda d: d["grid"].update(out=["a", "b"]), "'out' is given in grid; .* base"),
    ]:
        bad = json.loads(json.dumps(doc))
        change(bad)
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(bad))
        with pytest.raises(ValueError, match=message) as err:
            sweep.load_grid(path)
        assert str(path) in one_line(err)


def test_a_stop_request_is_obeyed_by_the_sweep_it_was_for(tmp_path, monkeypatch):
    """A second sweep of the profile, started after the first was asked to stop, neither removes the request nor obeys
    it: the first stops between runs, the second trains."""
    doc = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    doc["grid"] = {"seed": [0, 1]}
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(doc))
    stop = sweep.stop_file(sweep.load_grid(grid))
    stop.parent.mkdir(parents=True, exist_ok=True)
    stop.unlink(missing_ok=True)
    second = []

    def fake_run_one(cfg, notebook=None, force=False, keep=False):
        if cfg.reports.endswith("first") and cfg.seed == 0:
            stop.write_text("")  # the user asks the first sweep to stop; then starts another one
            second.extend(sweep.run_sweep(grid, reports=str(tmp_path / "second"), progress=False))
            assert stop.is_file(), "the second sweep left the first one's request alone"
        return sweep._row(cfg, "done", sweep.record_path(cfg))

    monkeypatch.setattr(sweep, "run_one", fake_run_one)
    monkeypatch.setattr(sweep, "ensure_data", lambda doc, progress=False: None)
    first = sweep.run_sweep(grid, reports=str(tmp_path / "first"), progress=False)
    assert [r["status"] for r in first] == ["done", "stopped"]
    assert [r["status"] for r in second] == ["done", "done"]
    stop.unlink()


def test_keep_says_which_records_it_trains_again(tmp_path, monkeypatch, capsys):
    doc = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    doc["grid"] = {"seed": [0]}
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump(doc))
    cfg = sweep.expand(sweep.load_grid(grid), reports=str(tmp_path / "r"))[0]
    fake = fake_record(tmp_path / "x", "baseline", (96, 64), 0, 0.5)
    rec = records.read_record(fake)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sweep.asdict(cfg).items()}
    records.write_record(sweep.record_path(cfg), "train_run", config,
                         {**rec["results"], "run_id": sweep.run_id(cfg), "code_fingerprint": "0" * 16})
    monkeypatch.setattr(sweep, "run_one", lambda cfg, *a, **k: sweep._row(cfg, "done", sweep.record_path(cfg)))
    monkeypatch.setattr(sweep, "ensure_data", lambda doc, progress=False: None)
    sweep.run_sweep(grid, reports=str(tmp_path / "r"), progress=False, keep=True)
    said = capsys.readouterr().out
    assert f"--keep trains {sweep.run_id(cfg)} again: its record was made by training code {'0' * 16}" in said


def test_notebook_05_refuses_paths_outside_the_repository_and_bad_display_parameters():
    for namespace, message in [
        ({"reports": "../scratch/nb"}, "reports='../scratch/nb' leaves the repository"),
        ({"out": "../../runs"}, "out='../../runs' leaves the repository"),
        ({"show": -1}, "show=-1 is not valid: show must be a whole number"),
        ({"show": True}, "show=True is not valid"),
        ({"compare_with": ["foo"]}, r"compare_with=\['foo'\] is not valid: .*\(\['foo'\] are not\)"),
        ({"compare_with": "ufpa"}, "compare_with='ufpa' is not valid"),
    ]:
        with pytest.raises(ValueError, match=message):
            runs.notebook_config(namespace)
    assert runs.notebook_config({"reports": "scratch/nb", "data": "data/x"}).reports == str(ROOT / "scratch" / "nb")
    runs.inside_repository(runs.TrainConfig(out="runs/../runs"))  # by its words: a linked runs/ is inside
    with pytest.raises(ValueError, match="out='runs/../../x' leaves the repository"):
        runs.inside_repository(runs.TrainConfig(out="runs/../../x"))


def test_every_test_here_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Bad input"):]
    named = set(re.findall(r"tests/test_integrity\.py::(test_\w+)", table))
    here = set(re.findall(r"^def (test_\w+)", Path(__file__).read_text(encoding="utf-8"), re.M))
    here.discard("test_every_test_here_is_in_the_readme_table")
    assert here == named, f"missing from README: {sorted(here - named)}; named but absent: {sorted(named - here)}"


def test_the_cli_says_a_registration_fault_in_one_line(study, tmp_path, capsys):
    shutil.copytree(study, tmp_path / "copy" / "results")
    (tmp_path / "copy" / "results" / "design" / "s.json").unlink()
    doc = {**yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text()), "reports": str(tmp_path / "copy")}
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert cli.main(["report", "--tables-only", "--profile", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "registered (registered.sha256 names it) but missing" in err
