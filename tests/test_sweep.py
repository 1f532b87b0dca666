"""Sweeps: grid expansion, papermill runs of notebook 05 with records, skip-and-resume, a failing run that does not
stop the sweep, parallel runs equal to serial ones, shards, and the unknown-parameter error."""

import dataclasses
import json
from pathlib import Path

import pytest
import yaml

from ufpa import records, sweep
from ufpa.data import synthetic

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A two-run smoke grid over a tiny dataset (made once)."""
    tmp = tmp_path_factory.mktemp("sweep")
    doc = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    doc["data"]["out"] = str(tmp / "data")
    doc["base"]["out"] = str(tmp / "runs")
    synthetic.ensure(tmp / "data", "easy", train=48, val=12, seed=0)
    path = tmp / "grid.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_profiles_expand_and_validate():
    smoke = sweep.expand(sweep.load_grid(ROOT / "profiles" / "smoke.yaml"))
    assert len(smoke) == 2
    counts = {"pilot": 18, "cpu": 21, "cpu_controls": 42, "cpu_codecs": 28, "cpu_learned": 21, "cpu_converged": 28,
              "cpu_markers": 28, "cpu_markers_controls": 42, "cpu_markers_codecs": 42, "gpu": 63}
    metric = {"cpu_markers_codecs": "epe_found_px"}  # registered on localisation: markers' AP cannot resolve it
    for name, count in counts.items():
        doc = sweep.load_grid(ROOT / "profiles" / f"{name}.yaml")
        runs = sweep.expand(doc)
        assert len({sweep.run_id(c) for c in runs}) == len(runs) == count, name
        if name != "pilot":  # the study's profiles name their comparisons before they run
            design = sweep.check_design(doc, runs)
            assert {s for c in runs for s in [c.seed]} == set(range(7)), "seeds sized by the pilot: at least 7"
            # markers: a flip swaps the labels and not the joints' colours, so that design reads AP without it
            assert design["metric"] == metric.get(name, "AP")
            assert design["flip_test"] is (not name.startswith("cpu_markers"))
    cpu = sweep.expand(sweep.load_grid(ROOT / "profiles" / "cpu.yaml"))
    want = {("baseline", "", (96, 64)), ("ufpa", "zeros", (96, 64)), ("ufpa", "", (96, 64))}
    assert {(c.alignment, c.padding, c.input_size) for c in cpu} == want
    controls = {sweep.run_id(c) for c in sweep.expand(sweep.load_grid(ROOT / "profiles" / "cpu_controls.yaml"))}
    assert len(controls & {sweep.run_id(c) for c in cpu}) == 14, "the shared arms are the same runs (skipped)"
    learned = {sweep.run_id(c) for c in sweep.expand(sweep.load_grid(ROOT / "profiles" / "cpu_learned.yaml"))}
    assert len(learned & {sweep.run_id(c) for c in cpu}) == 14, "baseline and ufpa are cpu.yaml's runs"
    converged = sweep.load_grid(ROOT / "profiles" / "cpu_converged.yaml")
    assert {c.epochs for c in sweep.expand(converged)} == {144}, "the length the convergence check measured"
    assert sweep.reports_folder(converged) != sweep.reports_folder(sweep.load_grid(ROOT / "profiles" / "cpu.yaml"))
    markers = {sweep.run_id(c) for c in sweep.expand(sweep.load_grid(ROOT / "profiles" / "cpu_markers.yaml"))}
    controls = {sweep.run_id(c) for c in sweep.expand(sweep.load_grid(ROOT / "profiles" / "cpu_markers_controls.yaml"))}
    assert len(controls & markers) == 14, "the baseline and zero-padding runs are the markers study's (skipped)"
    codecs = sweep.expand(sweep.load_grid(ROOT / "profiles" / "cpu_markers_codecs.yaml"))
    assert len({sweep.run_id(c) for c in codecs} & markers) == 14, "the udp pair is the markers study's (skipped)"
    assert {(c.codec, c.head) for c in codecs} == {("udp", "ufpa_official"), ("msra", "wide_heatmap"),
                                                   ("dark", "wide_heatmap")}, "one network under every codec"
    codec_design = sweep.check_design(sweep.load_grid(ROOT / "profiles" / "cpu_markers_codecs.yaml"), codecs)
    assert codec_design["family"] == "own", "on EPE, beside the markers study's AP family, not in it"
    corners_doc = sweep.load_grid(ROOT / "profiles" / "cpu_markers_corners.yaml")
    corners = sweep.expand(corners_doc)
    controls = sweep.expand(sweep.load_grid(ROOT / "profiles" / "cpu_markers_controls.yaml"))
    assert len(corners) == 12 and {c.seed for c in corners} == set(range(7, 13)), "seeds no profile had trained"
    def unseeded(runs):
        return {json.dumps(dataclasses.asdict(dataclasses.replace(c, seed=0)), sort_keys=True) for c in runs}
    assert unseeded(corners) <= unseeded(controls), "the controls' configs, the seed alone new"
    corners_design = sweep.check_design(corners_doc, corners)
    assert (corners_design["confirms"], corners_design["metric"]) == ("cpu_markers_controls", "epe_found_px")
    assert [(c["control"], c["treatment"]) for c in sweep.comparisons(corners_design)] == \
        [("baseline 96x64 udp", "bilinear_corners 96x64 udp")], "the step the controls found on AP"


def test_a_design_names_arms_of_its_grid_and_stays_registered(tmp_path):
    """The design is checked against the grid before anything runs, written once, and a changed design is refused
    rather than silently re-registered after results exist."""
    doc = sweep.load_grid(ROOT / "profiles" / "cpu.yaml")
    doc = {**doc, "reports": str(tmp_path)}
    runs = sweep.expand(doc, reports=str(tmp_path))
    path = sweep.register_design(doc, runs)
    rec = records.read_record(path, kind="design")
    assert rec["config"]["primary"] == {"control": "baseline 96x64 udp", "treatment": "ufpa 97x65 udp"}
    assert [c["role"] for c in rec["results"]["comparisons"]] == ["primary", "secondary", "secondary"]
    assert sorted(rec["results"]["arms"]) == ["baseline 96x64 udp", "ufpa 97x65 udp", "ufpa-zerospad 97x65 udp"]
    first = path.read_bytes()
    assert sweep.register_design(doc, runs) == path and path.read_bytes() == first  # a resumed sweep: unchanged
    changed = {**doc, "design": {**doc["design"], "primary": {"control": "baseline 96x64 udp",
                                                              "treatment": "ufpa-zerospad 97x65 udp"}}}
    with pytest.raises(ValueError, match="registered another design .* would not be pre-registered"):
        sweep.register_design(changed, runs)
    for bad, message in [
        ({"primary": {"control": "baseline 96x64 udp", "treatment": "ufpa 96x64 udp"}}, "not an arm of the grid"),
        ({"metric": "APX", "secondary": []}, "metric 'APX' is not one of"),
        ({"primery": {}}, "unknown keys"),
        ({}, "names no comparison"),
    ]:
        with pytest.raises(ValueError, match=message):
            sweep.check_design({**doc, "design": bad}, runs)
    fewer = [c for c in runs if not (c.alignment == "ufpa" and not c.padding and c.seed == 6)]
    with pytest.raises(ValueError, match="different seeds"):
        sweep.check_design(doc, fewer)


def test_a_design_joins_the_folders_study_only_at_its_setting_else_it_is_its_own_family(tmp_path):
    """A profile registered in a folder that holds a study joins that study's Holm family, so it must share its metric,
    flip setting and level: another metric is refused before anything trains (the report could not pool it), and
    ``family: own`` registers it as its own family."""
    markers = {**sweep.load_grid(ROOT / "profiles" / "cpu_markers.yaml"), "reports": str(tmp_path)}
    controls = {**sweep.load_grid(ROOT / "profiles" / "cpu_markers_controls.yaml"), "reports": str(tmp_path)}
    sweep.register_design(markers, sweep.expand(markers, reports=str(tmp_path)))
    runs = sweep.expand(controls, reports=str(tmp_path))
    on_epe = {**controls, "design": {**controls["design"], "metric": "epe_found_px"}}
    with pytest.raises(ValueError, match="would join the study registered in .*cpu_markers.json \\(AP, flip test "
                                         "False, level 0.95\\).* give it `family: own`"):
        sweep.register_design(on_epe, runs)
    assert not (tmp_path / "results" / "design" / "cpu_markers_controls.json").exists(), "nothing registered"
    own = {**on_epe, "design": {**on_epe["design"], "family": "own"}}
    rec = records.read_record(sweep.register_design(own, runs), kind="design")
    assert rec["config"]["family"] == "own" and rec["config"]["metric"] == "epe_found_px"
    for bad in ({"family": "mine"}, {"family": "own", "confirms": "cpu_markers"}):
        with pytest.raises(ValueError, match="family must be 'own'"):
            sweep.check_design({**controls, "design": {**controls["design"], **bad}}, runs)
    joined = {**controls, "name": "joins"}  # the same setting as the study's: joins its family
    assert records.read_record(sweep.register_design(joined, runs), kind="design")["config"]["metric"] == "AP"


def test_a_confirmatory_design_registers_only_before_any_of_its_runs_starts(tmp_path, monkeypatch):
    """cpu_markers_localisation tests cpu_markers' exploratory localisation result on seeds not yet trained: the same
    runs and comparisons, another metric; once one of its runs has started (or has a record) it can no longer
    register, it needs the design it confirms registered beside it, and ``--register`` registers it without training
    (its runs belong to the sweep of the study it confirms)."""
    from ufpa import __main__ as cli

    doc = sweep.load_grid(ROOT / "profiles" / "cpu_markers_localisation.yaml")
    markers = sweep.load_grid(ROOT / "profiles" / "cpu_markers.yaml")
    runs = sweep.expand(doc)
    assert {sweep.run_id(c) for c in runs} <= {sweep.run_id(c) for c in sweep.expand(markers)}, "the same runs"
    assert {c.seed for c in runs} == {3, 4, 5, 6}
    design = sweep.check_design(doc, runs)
    assert design["confirms"] == "cpu_markers" and design["metric"] == "epe_found_px"
    assert sweep.comparisons(design) == sweep.comparisons(markers["design"])
    doc = {**doc, "reports": str(tmp_path), "base": {**doc["base"], "out": str(tmp_path / "runs")}}
    runs = sweep.expand(doc, reports=str(tmp_path))
    with pytest.raises(ValueError, match="confirms 'cpu_markers', which has no design registered"):
        sweep.register_design(doc, runs)
    sweep.register_design({**markers, "reports": str(tmp_path)}, sweep.expand(markers, reports=str(tmp_path)))
    seen = sweep.record_path(runs[5])
    seen.parent.mkdir(parents=True)
    seen.write_text("{}")
    with pytest.raises(ValueError, match="registers before any of its runs starts"):
        sweep.register_design(doc, runs)
    seen.unlink()
    started = sweep.run_dir(sweep.resolve_paths(runs[2]))
    started.mkdir(parents=True)  # a run in flight: its learning curve is being logged
    with pytest.raises(ValueError, match=f"have started or have records \\({sweep.run_id(runs[2])}\\)"):
        sweep.register_design(doc, runs)
    started.rmdir()
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(doc))

    def no_training(*args, **kwargs):
        raise AssertionError("--register trains nothing and makes no data")
    monkeypatch.setattr(sweep, "ensure_data", no_training)
    monkeypatch.setattr(sweep, "run_one", no_training)
    assert cli.main(["sweep", str(path), "--register"]) == 0
    rec = records.read_record(tmp_path / "results" / "design" / "cpu_markers_localisation.json", kind="design")
    assert rec["config"]["confirms"] == "cpu_markers" and len(rec["results"]["arms"]["ufpa 97x65 udp"]) == 4
    assert not list((tmp_path / "results").glob("runs/*.json")), "nothing trained"
    seen.write_text("{}")  # registered: a resumed sweep finds it unchanged, records or not
    assert sweep.register_design(doc, runs).is_file()
    with pytest.raises(ValueError, match="confirms must name the profile"):
        sweep.check_design({**doc, "design": {**doc["design"], "confirms": ""}}, runs)


def test_bad_grids_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: {alignment: baseline}\n")
    with pytest.raises(ValueError, match="grid 'alignment' must be a non-empty list"):
        sweep.load_grid(bad)
    bad.write_text("grid: {alignment: [baseline, nope]}\n")
    with pytest.raises(ValueError, match="alignment='nope'"):
        sweep.expand(sweep.load_grid(bad))
    bad.write_text("base: {epoch: 3}\ngrid: {seed: [0]}\n")  # a grid is needed (issue 18): one run of base
    with pytest.raises(ValueError, match="did you mean 'epochs'"):
        sweep.expand(sweep.load_grid(bad))
    bad.write_text("grids: {}\n")
    with pytest.raises(ValueError, match="unknown keys"):
        sweep.load_grid(bad)
    with pytest.raises(FileNotFoundError, match="profiles"):
        sweep.load_grid(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="has no parameter"):
        sweep.check_parameters({"epoch": 3})


def test_sweep_runs_skips_resumes_and_matches_in_parallel(grid, tmp_path):
    serial = str(tmp_path / "serial")
    rows = sweep.run_sweep(grid, jobs=1, reports=serial, progress=False)
    assert [r["status"] for r in rows] == ["done", "done"]
    for row in rows:
        rec = records.read_record(Path(serial) / "results" / "runs" / f"{row['run_id']}.json", "train_run")
        assert rec["results"]["flip"]["epe_mean"] > 0
        nb = json.loads((Path(serial) / "runs" / f"{row['run_id']}.ipynb").read_text())
        assert any("papermill" in json.dumps(c.get("metadata", {})) for c in nb["cells"])
    # a second pass skips both; losing one record re-runs just that one (a killed sweep resumes)
    assert [r["status"] for r in sweep.run_sweep(grid, reports=serial, progress=False)] == ["skipped", "skipped"]
    (Path(serial) / "results" / "runs" / f"{rows[1]['run_id']}.json").unlink()
    assert [r["status"] for r in sweep.run_sweep(grid, reports=serial, progress=False)] == ["skipped", "done"]
    # two at once, into other folders (checkpoints too): the same numbers
    doc = yaml.safe_load(grid.read_text())
    doc["base"]["out"] = str(tmp_path / "runs_parallel")
    other = tmp_path / "parallel.yaml"
    other.write_text(yaml.safe_dump(doc))
    parallel = str(tmp_path / "parallel")
    rows2 = sweep.run_sweep(other, jobs=2, reports=parallel, progress=False)
    assert [r["status"] for r in rows2] == ["done", "done"]
    for a, b in zip(rows, rows2):
        ra = records.read_record(Path(serial) / "results" / "runs" / f"{a['run_id']}.json")["results"]
        rb = records.read_record(Path(parallel) / "results" / "runs" / f"{b['run_id']}.json")["results"]
        assert ra["flip"] == rb["flip"] and ra["learning_curve"][0]["loss"] == rb["learning_curve"][0]["loss"]
    assert "2 runs: 0 done, 2 skipped" in sweep.summary_table(sweep.run_sweep(other, reports=parallel,
                                                                              progress=False))


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(grid, tmp_path):
    doc = yaml.safe_load(grid.read_text())
    doc["grid"] = {"val_split": ["val", "missing_split"]}  # the second run fails inside the notebook
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(doc))
    reports = tmp_path / "reports"
    # a finished executed notebook of the failing run (from an earlier sweep) must not be replaced by a half-run one
    finished = reports / "runs" / f"{sweep.run_id(sweep.expand(sweep.load_grid(path))[1])}.ipynb"
    finished.parent.mkdir(parents=True)
    finished.write_text("finished")
    rows = sweep.run_sweep(path, reports=str(reports), progress=False)
    assert [r["status"] for r in rows] == ["done", "failed"]
    failed = reports / "results" / "runs" / f"{rows[1]['run_id']}.failed.json"
    assert "missing_split" in json.loads(failed.read_text())["error"]
    assert "1 failed" in sweep.summary_table(rows)
    assert finished.read_text() == "finished" and finished.with_suffix(".failed.ipynb").is_file()
    assert not list((reports / "runs").glob(".*partial*"))


def test_a_run_another_sweep_holds_is_left_to_it(grid, tmp_path):
    """Two sweeps of one profile: the second leaves a run the first is training (its lock names a live pid)."""
    import os

    cfg = sweep.expand(sweep.load_grid(grid), reports=str(tmp_path / "reports"))[0]
    folder = records.REPO_ROOT / sweep.run_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".sweep.lock").write_text(str(os.getppid()))
    try:
        row = sweep.run_one(cfg)
    finally:
        (folder / ".sweep.lock").unlink()
    assert row["status"] == "busy" and "another sweep (pid" in row["error"]
    assert not sweep.record_path(cfg).exists()


def test_shards_split_the_grid(grid):
    runs = sweep.expand(sweep.load_grid(grid))
    parts = [sweep.expand(sweep.load_grid(grid))[i::2] for i in range(2)]
    assert sorted(sweep.run_id(c) for p in parts for c in p) == sorted(sweep.run_id(c) for c in runs)
    with pytest.raises(ValueError, match="shard"):
        sweep.run_sweep(grid, shard=(2, 2))


def test_only_the_study_profiles_write_into_the_committed_study(monkeypatch, tmp_path):
    """`make sweep PROFILE=profiles/smoke.yaml` wrote into reports/results/runs/, so the next report pooled two
    profiles (issue 18): a profile without `reports:` writes to scratch/<name>/."""
    monkeypatch.delenv("UFPA_REPORTS_DIR", raising=False)
    smoke, cpu = (sweep.load_grid(ROOT / "profiles" / f"{n}.yaml") for n in ("smoke", "cpu"))
    assert sweep.reports_folder(smoke) == records.SCRATCH / "smoke"
    assert sweep.reports_folder(cpu) == ROOT / "reports"
    assert {c.reports for c in sweep.expand(smoke)} == {str(records.SCRATCH / "smoke")}
    assert sweep.record_path(sweep.expand(smoke)[0]).is_relative_to(records.SCRATCH / "smoke")
    monkeypatch.setenv("UFPA_REPORTS_DIR", str(tmp_path))
    assert sweep.reports_folder(cpu) == tmp_path  # the tests' way of keeping the tree clean still wins


def test_progress_estimates_from_measured_epochs_and_prior_records(tmp_path):
    """The sweep's ETA (issue 20): before any epoch, from the records already in its folder; then from the epochs
    its running runs log; the work left over the jobs, never less than the longest run left."""
    doc = {"name": "t", "base": {"model": "hrnet_w8_tiny", "epochs": 4, "out": str(tmp_path / "runs")},
           "grid": {"alignment": ["baseline", "ufpa_any"], "input_size": [[96, 64]], "seed": [0, 1]}}
    runs = sweep.expand(doc, reports=str(tmp_path / "reports"))
    clock = [1000.0]
    progress = sweep.Progress(runs, jobs=2, clock=lambda: clock[0])
    assert progress.seconds_left() is None and "no measured run time yet" in progress.start_line()
    config = {"model": "hrnet_w8_tiny", "alignment": "baseline", "head": "udp", "codec": "udp",
              "input_size": [96, 64], "seed": 0, "epochs": 2, "data": "data/x"}
    results = {"run_id": "r", "flip": {}, "no_flip": {}, "learning_curve": [], "params": 1, "gflops": 1.0,
               "input_size": [96, 64], "wall_s": 10.0, "images_per_s": 1.0}  # 10 s for 2 epochs of 96x64
    records.write_record(tmp_path / "reports" / "results" / "runs" / "r.json", "train_run", config, results, 0)
    progress = sweep.Progress(runs, jobs=2, clock=lambda: clock[0])
    per_run = 10.0 * sweep.OVERHEAD * 4 / 2
    assert progress.seconds_left() == pytest.approx(4 * per_run / 2)
    assert "4 of 4 runs to train" in progress.start_line() and "from 1 record in" in progress.start_line()
    # run 0 logs 3 of its 4 epochs, at 1 s each: measured rates replace the prior
    progress.started(0)
    log = sweep.run_dir(sweep.resolve_paths(runs[0])) / "log.jsonl"
    log.parent.mkdir(parents=True)
    log.write_text("".join(json.dumps({"epoch": e, "seconds": 1.0}) + "\n" for e in (1, 2, 3, 3)))
    assert [e["epoch"] for e in progress.epochs_logged(0)] == [1, 2, 3]  # a redone epoch counts once
    epoch = sweep.OVERHEAD
    assert progress.seconds_left() == pytest.approx(max((1 + 3 * 4) * epoch / 2, 4 * epoch))
    assert "baseline s0 epoch 3/4" in progress.line() and "0/4 trained" in progress.line()
    for j in range(4):
        progress.finished(j)
    assert progress.seconds_left() == 0.0 and "4/4 trained" in progress.line()
    progress.todo = [0, 1]  # runs 2 and 3 finished here before: skipped, they pass through but were not trained
    assert "2/2 trained" in progress.line()
    datasets = sweep.Progress(sweep.expand({**doc, "grid": {"data": ["/far/away/synthpose-a", "/x/synthpose-b"]}},
                                           reports=str(tmp_path / "reports")), jobs=1)
    assert datasets.label(0) == "synthpose-a"  # a dataset by its folder's name, not its whole path


def test_a_profile_of_ones_own_runs_from_anywhere_and_a_finished_run_is_never_failed(tmp_path, monkeypatch):
    """issue 26: a profile's relative paths are taken from its own folder (not the working directory, not the
    repository root); a step failing after training leaves the run done with its record, and the next sweep skips it
    without training it again."""
    monkeypatch.delenv("UFPA_REPORTS_DIR", raising=False)
    home = tmp_path / "pilot"
    home.mkdir()
    doc = yaml.safe_load((ROOT / "profiles" / "smoke.yaml").read_text())
    doc.update(name="pilot", reports="preports", data={**doc["data"], "out": "pdata"})
    doc["base"]["out"] = "pruns"
    profile = home / "my.yaml"
    profile.write_text(yaml.safe_dump(doc))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runs = sweep.expand(sweep.load_grid(profile))
    assert {(c.data, c.out, c.reports) for c in runs} == {(str(home / "pdata"), str(home / "pruns"),
                                                           str(home / "preports"))}
    # a step after training fails for the second run: its notebook's place is taken by a folder
    blocked = home / "preports" / "runs" / f"{sweep.run_id(runs[1])}.ipynb"
    (blocked / "in_the_way").mkdir(parents=True)
    rows = sweep.run_sweep(profile, progress=False)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert "saving the executed notebook" in rows[1]["warning"] and "note" in sweep.summary_table(rows)
    for row in rows:
        assert Path(row["record"]).is_relative_to(home / "preports" / "results" / "runs") and row["AP"] >= 0
    assert (home / "preports" / "runs" / f"{rows[0]['run_id']}.ipynb").is_file()
    assert (home / "pdata" / "annotations").is_dir() and not list(elsewhere.iterdir())  # nothing in the cwd
    assert not list((home / "preports" / "results" / "runs").glob("*.failed.json"))
    # the same profile from the repository root: the same runs; the finished ones are not trained again
    monkeypatch.chdir(ROOT)
    assert [sweep.run_id(c) for c in sweep.expand(sweep.load_grid(profile))] == [r["run_id"] for r in rows]
    again = sweep.run_sweep(profile, progress=False)
    assert [r["status"] for r in again] == ["skipped", "skipped"]
    assert [r["AP"] for r in again] == [r["AP"] for r in rows]


def test_the_sweeps_table_pools_only_seeds_of_one_config():
    """The bf16 check's sweep pooled fp32 and bf16 runs into one row (same model, size, alignment, codec)."""
    rows = [{"model": "m", "input_size": "96x64", "alignment": "baseline", "codec": "udp", "condition": c, "AP": ap,
             "epe_px": 5.0} for c, ap in (("fp32", 0.5), ("fp32", 0.6), ("bf16", 0.9))]
    table = sweep.aggregate_table(rows)
    assert "| fp32 | 2 | 0.550" in table and "| bf16 | 1 | 0.900" in table
    doc = {"name": "t", "grid": {"bf16": [False, True], "seed": [0, 1]}}
    runs = sweep.expand(doc, reports="/tmp/x")
    assert len({sweep.condition_id(c) for c in runs}) == 2
    assert sweep.condition_id(runs[0]) == sweep.condition_id(runs[1])  # two seeds of fp32


def test_parallel_jobs_never_ask_for_more_processes_than_cores():
    """issue 25: nine runs of 12 workers each at once had a load of 67 on 16 cores. Workers are capped per job;
    the run ids (what the runs compute) do not change."""
    runs = sweep.expand(sweep.load_grid(ROOT / "profiles" / "gpu.yaml"))[:8]
    assert {c.workers for c in runs} == {12}
    alone = sweep.per_job_workers(runs, jobs=1, cores=16)
    four = sweep.per_job_workers(runs, jobs=4, cores=16)
    assert {c.workers for c in alone} == {12} and {c.workers for c in four} == {3}  # 4 x (1 + 3) = 16
    assert {c.workers for c in sweep.per_job_workers(runs, jobs=9, cores=16)} == {0}
    assert [sweep.run_id(c) for c in four] == [sweep.run_id(c) for c in runs]


def test_keep_resumes_a_study_on_a_fresh_machine_from_records_it_would_reproduce(grid, tmp_path):
    """A study split over sessions: on a fresh machine (no run directories) `--keep` keeps the records this code, data,
    CPU type and torch made, and trains again any record of other training code."""
    import shutil

    doc = yaml.safe_load(grid.read_text())
    doc["base"]["out"] = str(tmp_path / "runs")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(doc))
    reports = str(tmp_path / "reports")
    rows = sweep.run_sweep(path, reports=reports, progress=False)
    shutil.rmtree(tmp_path / "runs")  # what a fresh clone has: the committed records only
    runs = sweep.expand(doc, reports=reports)
    assert all(sweep.recorded_here(c) and not sweep.is_done(c) and sweep.is_done(c, keep=True) for c in runs)
    stale = Path(reports) / "results" / "runs" / f"{rows[1]['run_id']}.json"
    rec = records.read_record(stale, "train_run")
    records.write_record(stale, "train_run", rec["config"], {**rec["results"], "code_fingerprint": "0" * 16}, 0)
    assert [r["status"] for r in sweep.run_sweep(path, reports=reports, progress=False, keep=True)] == [
        "skipped", "done"]
    # a record of other code that a reproduction joined to this one (an equivalence record) is kept too
    shutil.rmtree(tmp_path / "runs")
    rec = records.read_record(stale, "train_run")
    records.write_record(stale, "train_run", rec["config"], {**rec["results"], "code_fingerprint": "0" * 16}, 0)
    assert not sweep.recorded_here(runs[1])
    records.write_record(Path(reports) / "results" / "equivalence" / "x.json", "code_equivalence",
                         {"record": str(stale)},
                         {"codes": ["0" * 16, sweep._code()], "run_id": rec["results"]["run_id"],
                          "device": rec["provenance"]["device"], "cpu_capability": rec["provenance"]["cpu_capability"]},
                         0)
    assert sweep.recorded_here(runs[1]) and sweep.recorded_here(runs[0])


def test_a_stop_file_stops_the_sweep_between_runs(grid, tmp_path, monkeypatch):
    """Touching the stop file lets the running run finish and starts no other; the next sweep resumes."""
    doc = sweep.load_grid(grid)
    stop = sweep.stop_file(doc)
    stop.parent.mkdir(parents=True, exist_ok=True)
    stop.write_text("")  # an old request is spent by starting a sweep
    trained = []

    def fake_run_one(cfg, notebook=None, force=False, keep=False):
        trained.append(cfg.seed)
        stop.write_text("")  # the user asks to stop while this run trains
        return sweep._row(cfg, "done", sweep.record_path(cfg))

    monkeypatch.setattr(sweep, "run_one", fake_run_one)
    monkeypatch.setattr(sweep, "ensure_data", lambda doc, progress=False: None)
    rows = sweep.run_sweep(grid, jobs=1, reports=str(tmp_path / "reports"), progress=False)
    assert [r["status"] for r in rows] == ["done", "stopped"] and len(trained) == 1
    assert "1 stopped (not started" in sweep.summary_table(rows)
    rows = sweep.run_sweep(grid, jobs=1, reports=str(tmp_path / "reports"), progress=False)
    assert [r["status"] for r in rows] == ["done", "stopped"] and len(trained) == 2  # resumed: the stop was spent
    stop.unlink()
