"""The report: records into tables (paired differences, formats), schema errors, figures, the page, and
the committed tables agreeing with the committed records."""

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ufpa import integrity, page, records, report

ROOT = Path(__file__).resolve().parent.parent


def fake_config(alignment, size, seed, epochs=2) -> dict:
    return {"model": "hrnet_w8_tiny", "alignment": alignment, "head": "udp", "codec": "udp", "input_size": list(size),
            "seed": seed, "epochs": epochs, "data": "/x/synthpose-easy"}


def fake_id(alignment, seed, size=(96, 64), epochs=2) -> str:
    """The run id of ``fake_record``'s record."""
    return integrity.recorded_run_id(fake_config(alignment, size, seed, epochs))


def fake_record(folder, alignment, size, seed, ap, epe=5.0, bias=(0.5, -0.25), late_gain=0.0, curve=None):
    """A train_run record with known numbers (the fields the report reads), written like train writes them.
    ``curve``: val AP (no flip) at epochs 1, 2, ... instead of the default two-epoch curve; the run lasts one epoch
    more and ends at ``ap - 0.02`` (no flip)."""
    metrics = {"AP": ap, "AP50": 0.9, "AP75": ap / 2, "AR": ap + 0.05, "epe_mean": epe, "epe_median": epe / 2,
               "bias_x": bias[0], "bias_y": bias[1], "bias_x_per_joint": [bias[0]] * 17,
               "bias_y_per_joint": [bias[1]] * 17, "pck@0.05": 0.7, "flip_consistency_px": 3.0 + seed}
    eff = [s + 1 for s in size] if alignment == "ufpa" else list(size)
    config = fake_config(alignment, size, seed, 2 if curve is None else len(curve) + 1)
    rid = integrity.recorded_run_id(config)  # a record is its run: the report recomputes the id
    results = {"run_id": rid, "no_flip": {**metrics, "AP": ap - 0.02, "flip_test": False},
               "flip": {**metrics, "flip_test": True},
               "learning_curve": [{"epoch": 1, "loss": 1.0, "val_AP": ap - 0.02 - late_gain, "val_epe_mean": 9.0,
                                   "images_per_s": 1,
                                   "seconds": 1}, {"epoch": 2, "loss": 0.5, "images_per_s": 1, "seconds": 1}]
               if curve is None else [{"epoch": e + 1, "loss": 1.0, "val_AP": v, "images_per_s": 1, "seconds": 1}
                                      for e, v in enumerate(curve)],
               "params": 175803, "gflops": 0.0166, "input_size": eff, "wall_s": 10.0, "images_per_s": 100.0,
               "misalignment": {"fusions": 21, "max_abs_px": 28.0 if alignment == "baseline" else 0.0,
                                "mean_abs_px": 1.0, "border_max_abs_px": 28.0 if alignment == "ufpa_any" else 0.0}}
    return records.write_record(Path(folder) / "runs" / f"{rid}.json", "train_run", config, results, seed)


@pytest.fixture()
def results(tmp_path):
    """Baseline, ufpa and ufpa_any at two sizes, three seeds: ufpa gains 0.01*(seed+1), ufpa_any loses 0.02."""
    folder = tmp_path / "results"
    for size in ((96, 64), (128, 96)):
        for seed in range(3):
            base = 0.5 + 0.01 * seed + (0.05 if size[0] == 128 else 0)
            fake_record(folder, "baseline", size, seed, base)
            fake_record(folder, "ufpa", size, seed, base + 0.01 * (seed + 1), epe=4.0)
            fake_record(folder, "ufpa_any", size, seed, base - 0.02)
    return folder


def test_paired_differences_are_per_seed(results):
    frame = report.load_runs(results)
    assert len(frame) == 36 and set(frame["flip_test"]) == {True, False}
    diff = report.paired(frame[frame["flip_test"]]).set_index(["alignment", "size"])
    ufpa = diff.loc[("ufpa", "96x64")]
    assert ufpa["d_AP_per_seed"] == pytest.approx([0.01, 0.02, 0.03]) and ufpa["d_AP"] == pytest.approx(0.02)
    assert ufpa["d_AP_ci"] == pytest.approx(4.3026527 * 0.01 / math.sqrt(3), rel=1e-5)
    assert diff.loc[("ufpa_any", "128x96")]["d_AP"] == pytest.approx(-0.02)
    assert diff.loc[("ufpa", "128x96")]["d_epe_px"] == pytest.approx(-1.0)


def test_tables_and_their_files(results, tmp_path):
    frame = report.load_runs(results)
    main = report.main_table(frame)
    assert list(main["method"].astype(str)) == ["baseline", "ufpa", "ufpa_any"] * 2
    row = main[(main["method"] == "ufpa") & (main["size"] == "96x64")].iloc[0]
    assert row["input_size"] == "97x65" and row["seeds"] == 3 and row["d_AP"] == pytest.approx(0.02)
    low = report.lowres_table(frame)
    assert list(low["size"]) == ["96x64", "128x96"] and low["ufpa_dAP"].tolist() == pytest.approx([0.02, 0.02])
    shown = report.write_table(main, "main", tmp_path / "tables", "caption")
    md = (tmp_path / "tables" / "main.md").read_text()
    assert md.startswith("caption") and md.count("\n| hrnet_w8_tiny") == 6 and "\\|bias\\|" in md
    assert "+0.020 ± 0.025" in shown["ΔAP vs baseline"].tolist()
    back = pd.read_csv(tmp_path / "tables" / "main.csv")
    assert back["AP"].tolist() == pytest.approx(main["AP"].tolist(), abs=1e-5)
    tex = (tmp_path / "tables" / "main.tex").read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "\\_" in tex
    pub = report.published_table()
    assert (pub["status"] == "published, not reproduced").all() and pub["source"].str.len().min() > 3
    assert pub["gain"].tolist() == pytest.approx((pub["ap_method"] - pub["ap_baseline"]).round(1).tolist())


def test_findings_read_the_records(results):
    text = report.findings(report.load_runs(results))
    assert "18 training records" in text and "ΔAP +0.020" in text and "ΔAP -0.020" in text
    assert "lower than the baseline" in text  # ufpa_any: -0.02 on every seed, so its CI excludes zero
    assert "not resolved by these runs" in text  # ufpa's corrected interval (0.02 ± 0.04) crosses zero
    assert "18 of 18 runs met the plateau criterion" in text and "Holm p" in text and "sign-flip p 0.25" in text


def test_a_comparison_with_runs_still_learning_makes_no_claim(tmp_path):
    """issue 21: ΔAP of -0.02 on every seed would read "lower", but the runs' val AP still rose at the end."""
    for seed in range(3):
        fake_record(tmp_path, "baseline", (96, 64), seed, 0.5 + 0.01 * seed, late_gain=0.03)
        fake_record(tmp_path, "ufpa_any", (96, 64), seed, 0.48 + 0.01 * seed, late_gain=0.03)
    frame = report.load_runs(tmp_path)
    assert not frame["plateau"].any() and frame["late_gain_AP"].to_numpy() == pytest.approx(0.03)
    text = report.findings(frame)
    assert "0 of 6 runs met the plateau criterion" in text and "no claim: 6 of its 6 runs" in text
    assert "lower than" not in text


def test_render_all_writes_every_table_and_figure(results, tmp_path):
    register(results)
    shown = report.render_all(results, tmp_path / "tables", tmp_path / "figures")
    assert set(shown) == set(report.TABLES) - report.OWN_FAMILY_OUTPUTS, "no own-family design: nothing to show"
    assert not list(tmp_path.glob("*/*own_family*"))
    for name in shown:
        for ext in ("md", "csv", "tex"):
            assert (tmp_path / "tables" / f"{name}.{ext}").stat().st_size > 50
    for name in set(report.FIGURES) - report.OWN_FAMILY_OUTPUTS:
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 5000
    with pytest.raises(ValueError, match="unknown table 'mian'; the tables are"):
        report.table("mian", None, results, tmp_path)


@pytest.mark.parametrize("section,field", [("provenance", "git_commit"), ("provenance", "time_utc"),
                                           ("results", "learning_curve"), ("config", "alignment")])
def test_a_record_missing_a_field_is_named(results, section, field):
    path = next((results / "runs").glob("*.json"))
    rec = json.loads(path.read_text())
    del rec[section][field]
    path.write_text(json.dumps(rec))
    with pytest.raises(ValueError, match=rf"lacks {section}\.{field}"):
        report.load_runs(results)


def test_records_that_are_not_records(tmp_path):
    (tmp_path / "runs").mkdir()
    bad = tmp_path / "runs" / "x.json"
    bad.write_text("null")
    with pytest.raises(ValueError, match="not an object"):
        report.load_runs(tmp_path)
    bad.write_text(json.dumps({"schema": 99, "kind": "train_run", "config": {}, "results": {}, "provenance": {}}))
    with pytest.raises(ValueError, match="schema 99"):
        report.load_runs(tmp_path)
    with pytest.raises(FileNotFoundError, match="make study"):
        report.load_runs(tmp_path / "nowhere")


def _six_notebooks(folder, extra_cells=()):
    """Notebooks 01-06 as the page reads them: a title, a parameters cell, then ``extra_cells`` in the first."""
    import nbformat

    paths = []
    for i, name in enumerate(page.NOTEBOOKS):
        cells = [nbformat.v4.new_markdown_cell(f"# Part {i}\n\ntext {i}"),
                 nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
        nb = nbformat.v4.new_notebook(cells=cells + (list(extra_cells) if i == 0 else []))
        paths.append(Path(folder) / f"{name}.ipynb")
        nbformat.write(nb, paths[-1])
    return paths


def _latex_output(tex):
    import nbformat

    return nbformat.v4.new_code_cell("f", outputs=[nbformat.v4.new_output(
        "execute_result", {"text/latex": tex, "text/plain": "f"}, execution_count=1)])


def test_page_from_notebooks(results, tmp_path):
    import nbformat

    formulas = [nbformat.v4.new_markdown_cell(r"Output $o$ sits at $x_{\mathrm{conv}}(o) = \frac{d(k-1)}{2} - p$:"),
                _latex_output(r"$\displaystyle x_{\mathrm{nearest}}(o) = \left\lfloor{\frac{n_{in} o}{n_{out}}}"
                              r"\right\rfloor$"),
                nbformat.v4.new_markdown_cell("$$\n\\begin{aligned} a &= b \\\\ c &= d \\end{aligned}\n$$")]
    out = page.build_page(_six_notebooks(tmp_path, formulas), tmp_path / "study.html", results)
    text = out.read_text()
    assert text.count('id="part-') == 6 and "Part 5" in text and "ΔAP +0.020" in text and "x = 1" not in text
    assert "<mtable" in text and "⌊" in text  # the aligned rows and the floor, as MathML
    assert "<script" not in text and "cdnjs" not in text  # no require.js, MathJax or mermaid from a CDN
    assert page.check_page(out)["formulas"] == 4
    with pytest.raises(FileNotFoundError, match="make report"):
        page.build_page([tmp_path / "missing.ipynb"], tmp_path / "s.html", results)
    if page.chromium() is None:
        pytest.skip("no Chromium here: the browser check runs where one is installed (make report)")
    checked = page.check_in_browser(out, tmp_path / "shot.png")
    assert checked["parts"] == 6 and checked["screenshot_std"] > 5 and checked["formulas"] == 4


@pytest.mark.parametrize("cell", ["html", "markdown", "unparsable"])
def test_page_with_a_raw_formula_is_refused(results, tmp_path, cell):
    """TeX no converter reaches (in an HTML output, which MathJax would have rendered) or cannot parse stays TeX, and
    the page is refused: by the HTML check everywhere, by the browser check where Chromium is installed."""
    import nbformat

    raw = {"html": nbformat.v4.new_code_cell("t", outputs=[nbformat.v4.new_output(
               "display_data", {"text/html": r"<p>gain $\frac{1}{2}$</p>", "text/plain": "t"})]),
           "markdown": nbformat.v4.new_markdown_cell(r"<div>where \mathrm{gain} is</div>"),
           "unparsable": _latex_output(r"$x^$")}[cell]
    out = page.build_page(_six_notebooks(tmp_path, [raw]), tmp_path / "study.html", results)
    with pytest.raises(AssertionError, match="raw TeX"):
        page.check_page(out)
    if page.chromium() is None:
        pytest.skip("no Chromium here: the browser check runs where one is installed (make report)")
    with pytest.raises(AssertionError, match="rendered: 1 formula.s. left as raw TeX"):
        page.check_in_browser(out, tmp_path / "shot.png")


# --- the committed reports -------------------------------------------------------------------------------------------

COMMITTED = ROOT / "reports" / "pilot" / "results"  # the pilot study's 18 records: a fixture of real records
STUDY = ROOT / "reports" / "results"  # the study's records, which reports/tables and the README quote
needs_study = pytest.mark.skipif(not records.run_record_paths(STUDY / "runs"), reason="no study records yet")


@needs_study
@pytest.mark.parametrize("name", ["main", "ablation", "low_resolution", "design", "decomposition", "localisation"])
def test_committed_tables_agree_with_committed_records(name):
    frame = report.load_runs(STUDY)
    fresh = report.TABLES[name][0](frame, STUDY)
    committed = pd.read_csv(ROOT / "reports" / "tables" / f"{name}.csv")
    assert list(committed.columns) == list(fresh.columns)
    for col in fresh.columns:
        if pd.api.types.is_numeric_dtype(fresh[col]) and not pd.api.types.is_bool_dtype(fresh[col]):
            assert np.allclose(committed[col].astype(float), fresh[col].astype(float), rtol=1e-5, equal_nan=True), col


def test_fill_markers():
    text = "a\n<!-- ufpa:main -->\nold\n<!-- /ufpa:main -->\nb <!-- ufpa:x --> c\n"
    assert report.fill_markers(text, {"main": "| t |\n", "other": "z"}) == \
        "a\n<!-- ufpa:main -->\n| t |\n<!-- /ufpa:main -->\nb <!-- ufpa:x --> c\n"


@pytest.mark.skipif(not (ROOT / "reports" / "tables").is_dir(), reason="no committed tables yet")
@needs_study
def test_readme_quotes_the_generated_tables_and_findings():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = report.readme_blocks(STUDY, ROOT / "reports" / "tables")
    assert "<!-- ufpa:findings -->" in readme
    assert report.fill_markers(readme, blocks) == readme, "README differs from the records: run `make report`"


@pytest.mark.parametrize("folder", [ROOT / "reports", ROOT / "reports" / "pilot"])
def test_every_run_notebook_has_its_record(folder):
    for nb in (folder / "runs").glob("*.ipynb"):
        assert (folder / "results" / "runs" / f"{nb.stem}.json").is_file(), f"{nb.name} has no record behind it"
    for path in (folder / "results").rglob("*.json"):
        if not path.name.endswith(records.SIDECARS):
            records.read_record(path)  # every committed record passes the schema


def test_one_seed_says_it_has_no_interval(tmp_path):
    fake_record(tmp_path, "baseline", (96, 64), 0, 0.5)
    fake_record(tmp_path, "ufpa", (96, 64), 0, 0.6)
    text = report.findings(report.load_runs(tmp_path))
    assert "no interval" in text and "nan" not in text and "ΔAP +0.100" in text


@needs_study
def test_records_elsewhere_never_rewrite_the_readme_and_a_fresh_clone_reports(tmp_path, monkeypatch):
    """`UFPA_REPORTS_DIR=/scratch python -m ufpa report --tables-only` rendered scratch records into the committed
    README; and `make report` on a fresh clone (records committed, no checkpoints) died on notebook 05 (issue 18)."""
    import os
    import shutil
    import subprocess
    import sys

    root = ROOT
    scratch = tmp_path / "reports"
    shutil.copytree(root / "reports" / "results", scratch / "results")
    shutil.copytree(root / "reports" / "notebooks", scratch / "notebooks")
    readme = (root / "README.md").read_bytes()
    with pytest.raises(ValueError, match="not the study's reports/results"):
        report.update_readme(root / "README.md", scratch / "results", scratch / "tables")
    res = subprocess.run([sys.executable, "-m", "ufpa", "report", "--tables-only"], capture_output=True, text=True,
                         cwd=root, env={**os.environ, "UFPA_REPORTS_DIR": str(scratch)})
    assert res.returncode == 0, res.stderr
    assert "README left alone" in res.stdout and (root / "README.md").read_bytes() == readme
    committed_05 = (scratch / "notebooks" / "05_train.ipynb").read_bytes()
    showcase = page.showcase_run  # a fresh clone has no checkpoints: not even in a checkout that trained the study
    monkeypatch.setattr(page, "showcase_run", lambda profile: dataclasses.replace(showcase(profile),
                                                                                  out=str(tmp_path / "no_runs")))
    paths = page.execute_notebooks(root / "profiles" / "cpu.yaml", scratch)
    assert [p.name for p in paths] == ["05_train.ipynb", "06_figures_and_tables.ipynb"]
    assert (scratch / "notebooks" / "05_train.ipynb").read_bytes() == committed_05  # kept, nothing re-trained
    assert (scratch / "notebooks" / "06_figures_and_tables.ipynb").stat().st_size > 10_000


def _edit(path, change):
    rec = json.loads(Path(path).read_text())
    change(rec)
    Path(path).write_text(json.dumps(rec))


def _reidentify(path) -> Path:
    """A record whose config was changed, made its run again: its run id recomputed and the file named after it (as
    if that config had been trained), so the checks after the identity check are reached."""
    rec = json.loads(Path(path).read_text())
    rec["results"]["run_id"] = integrity.recorded_run_id(rec["config"])
    Path(path).unlink()
    new = Path(path).with_name(f"{rec['results']['run_id']}.json")
    new.write_text(json.dumps(rec))
    return new


@pytest.mark.parametrize("change, message", [
    (lambda r: r["config"].update(epochs=8), r"config field the id's hash covers .* differs"),
    (lambda r: r["config"].update(seed=0), r"config.seed is 's0' but the run id says otherwise"),
    (lambda r: r["results"]["flip"].update(AP=None), r"flip AP is None, not a finite number"),
    (lambda r: r["results"]["flip"].update(AP="0.9"), r"flip AP is '0.9', not a finite number"),
    (lambda r: r["provenance"].update(git_commit="f" * 40), r"2 versions of the training code .*commit ffffffffff"),
])
def test_a_report_pools_only_seeds_of_one_identical_config(results, change, message):
    """A 2-epoch and an 8-epoch record of one variant were pooled as seeds; a null metric dropped a seed silently;
    a text metric died in numpy; two commits were pooled into one CI (issue 18). An edited config is refused as not
    its run (issue 41); made its run again, a record of another config is refused as another condition."""
    victim = next((results / "runs").glob("hrnet_w8_tiny-ufpa-96x64-udp-s1-*.json"))
    _edit(victim, change)
    with pytest.raises(ValueError, match=message):
        report.load_runs(results)
    if "hash covers" in message:  # made its run: two epoch counts under one condition
        _reidentify(victim)
        with pytest.raises(ValueError, match=r"seeds of one condition .* different configs \(epochs 2 vs 8\)"):
            report.load_runs(results)


def test_a_copied_record_counts_once_and_commits_pool_only_when_asked(results):
    first = next((results / "runs").glob("hrnet_w8_tiny-ufpa-96x64-udp-s1-*.json"))
    _edit(first, lambda r: r["provenance"].update(git_commit="f" * 40))
    assert len(report.load_runs(results, one_commit=False)) == 36
    copy = first.with_name("copy.json")
    copy.write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match="copy.json holds the record of run .* rename it"):
        report.load_runs(results, one_commit=False)


def test_runs_of_one_training_code_pool_across_commits(results):
    """A sweep resumed after a commit that touched only the report pools; one whose training code changed does not."""
    paths = sorted((results / "runs").glob("*-s?-*[0-9a-f].json"))
    for i, path in enumerate(paths):
        _edit(path, lambda r, i=i: (r["results"].update(code_fingerprint="c0de" * 4),
                                    r["provenance"].update(git_commit=f"{i % 2:x}" * 40)))
    assert len(report.load_runs(results)) == 36
    _edit(paths[0], lambda r: r["results"].update(code_fingerprint="beef" * 4))
    with pytest.raises(ValueError, match="2 versions of the training code"):
        report.load_runs(results)


def test_flip_test_off_reaches_every_table_and_figure(results, tmp_path, monkeypatch):
    """Notebook 06's flip_test=False reached only the findings; every table and figure stayed flip-on (issue 19)."""
    import inspect

    frame = report.load_runs(results)
    on = report.table("main", frame, results, tmp_path / "on", flip_test=True)
    off = report.table("main", frame, results, tmp_path / "off", flip_test=False)
    assert not on.equals(off)  # the fixture's no-flip AP is 0.02 below its flip AP
    assert "Flip test off." in (tmp_path / "off" / "main.md").read_text()
    settings = {}

    def spy(name):
        real = getattr(report, name)

        def wrapped(*args, **kwargs):
            settings[name] = inspect.signature(real).bind(*args, **kwargs).arguments.get("flip_test", True)
            return real(*args, **kwargs)
        monkeypatch.setattr(report, name, wrapped)

    names = ("main_table", "lowres_table", "accuracy_by_arm", "localisation_table", "localisation_comparisons",
             "per_joint_figure", "misalignment_and_gain", "bias_fields")
    for name in names:
        spy(name)
    register(results)  # the design's own table and figures keep its registered flip setting
    report.render_all(results, tmp_path / "t", tmp_path / "f", flip_test=False)
    assert settings == dict.fromkeys(settings, False) and len(settings) == len(names)


def test_compare_field_pairs_two_values_of_one_field_and_refuses_more():
    check = ROOT / "reports" / "bf16_check" / "results"
    table = report.compare_field(check, "bf16")
    assert list(table.index) == ["AP", "epe_px"] and (table["pairs"] == 3).all()
    recs = [records.read_record(p) for p in sorted((check / "runs").glob("*[0-9a-f].json"))]
    frame = {v: [r["results"]["flip"]["AP"] for r in recs if r["config"]["bf16"] is v] for v in (False, True)}
    assert table.loc["AP", "bf16=false"] == pytest.approx(np.mean(frame[False]))
    assert table.loc["AP", "bf16=true"] == pytest.approx(np.mean(frame[True]))
    with pytest.raises(ValueError, match="3 values of 'alignment'"):
        report.compare_field(COMMITTED, "alignment")


# --- the registered design (issue 21) --------------------------------------------------------------------------------

DESIGN = {"metric": "AP", "flip_test": True, "level": 0.95,
          "primary": {"control": "baseline 96x64 udp", "treatment": "ufpa 97x65 udp"},
          "decomposition": ["baseline 96x64 udp", "ufpa_any 96x64 udp", "ufpa 97x65 udp"],
          "secondary": [{"control": "baseline 128x96 udp", "treatment": "ufpa 129x97 udp"}]}


def register(results, design=DESIGN, profile="t", arms=None, seeds=(), seen=()):
    """A design record as ``sweep.register_design`` writes it; ``arms`` ((alignment, HxW-as-run) pairs) names the
    fake records' run ids at ``seeds`` for each (none by default); ``seen``: the run ids it names as seen when it
    registered (default none, as a design registered before its runs; None: a record made before designs named them,
    whose seen runs the report reads from the records' times)."""
    from ufpa import sweep

    ids = {f"{a} {size} udp": [fake_id(a, s) for s in seeds] for a, size in arms or ()}
    path = records.write_record(results / "design" / f"{profile}.json", "design", {"profile": profile, **design},
                                {"arms": ids, "comparisons": sweep.comparisons(design)}
                                | ({} if seen is None else {"seen_at_registration": list(seen)}))
    integrity.index_design(path)  # registered as the sweep registers it: once, its hash in the folder's index
    return path


def write_instances(results, run_id, oks, seed=0):
    """Per-image results for a fake record, its hash put in the record as train puts it."""
    import hashlib

    rng = np.random.default_rng(seed)
    n = len(oks)
    one = {"visible": [17] * n, "found": rng.integers(10, 18, n).tolist(), "swapped": [0] * n,
           "epe_sum": (17 * rng.uniform(1, 5, n)).tolist(), "epe_found_sum": (10 * rng.uniform(1, 3, n)).tolist(),
           "image_id": list(range(1, n + 1)), "score": rng.uniform(0.5, 1, n).tolist(), "oks": list(oks)}
    text = json.dumps({"no_flip": one, "flip": one}, separators=(",", ":"))
    (results / "runs" / f"{run_id}.instances.json").write_text(text)
    _edit(results / "runs" / f"{run_id}.json",
          lambda r: r["results"].update(instances_sha256=hashlib.sha256(text.encode()).hexdigest()))


def test_the_design_table_corrects_the_family_and_claims_only_what_its_intervals_allow(results):
    register(results)
    frame = report.load_runs(results)
    table = report.design_table(frame, results, resamples=200).set_index("name")
    assert list(table["role"]) == ["primary", "secondary", "secondary", "secondary"]
    primary = table.loc["primary"]
    assert primary["diff"] == pytest.approx(0.02) and primary["interval_level"] == 0.95
    assert primary["diff_lo"] < 0 < primary["diff_hi"]  # 0.01, 0.02, 0.03 over three seeds: t(2) is wide
    assert primary["verdict"].startswith("not resolved")
    secondary = table[table["role"] == "secondary"]
    assert list(secondary["interval_level"]) == pytest.approx([1 - 0.05 / 3] * 3)
    assert list(secondary["p_holm"]) == pytest.approx(report.stats.holm(list(secondary["p_t"])), nan_ok=True)
    lower = table.loc["step baseline 96x64 udp -> ufpa_any 96x64 udp"]
    assert lower["diff"] == pytest.approx(-0.02) and lower["verdict"].startswith("lower")  # every seed -0.02
    assert np.isnan(primary["boot_lo"])  # no per-image results in these records: no image bootstrap
    decomposition = report.decomposition_table(report.design_table(frame, results, resamples=50)).set_index("part")
    assert decomposition.loc["sum of the steps", "diff"] == pytest.approx(decomposition.loc["primary (total)", "diff"])
    assert decomposition.loc["sum of the steps", "verdict"].startswith("chains")


def test_a_control_design_splits_a_step_and_the_decomposition_takes_the_finest_chain(results):
    """The controls register steps that split the primary design's first step (baseline -> corner alignment ->
    ufpa_any); the decomposition chains through them, and while a control arm lacks a seed the steps sum to the
    total on the seeds all share, not on each one's own."""
    register(results)
    controls = {"metric": "AP", "flip_test": True, "level": 0.95,
                "decomposition": ["baseline 96x64 udp", "bilinear_corners 96x64 udp", "ufpa_any 96x64 udp"]}
    register(results, controls, profile="controls", arms=[("baseline", "96x64"), ("bilinear_corners", "96x64")],
             seeds=(0, 1, 2))
    for seed in (0, 1):  # seed 2 not trained yet: an interim control
        fake_record(results, "bilinear_corners", (96, 64), seed, 0.5 + 0.01 * seed + 0.004 * (seed + 1))
    frame = report.load_runs(results)
    table = report.design_table(frame, results, resamples=50)
    chain = report.decomposition_chain(table)
    assert list(zip(chain["control"], chain["treatment"])) == [
        ("baseline 96x64 udp", "bilinear_corners 96x64 udp"), ("bilinear_corners 96x64 udp", "ufpa_any 96x64 udp"),
        ("ufpa_any 96x64 udp", "ufpa 97x65 udp")]
    dec = report.decomposition_table(table).set_index("part")
    total, summed = dec.loc["primary (total)"], dec.loc["sum of the steps"]
    assert total["pairs"] == 3 and total["diff"] == pytest.approx(0.02)  # the registered total, all its seeds
    assert (dec["shared_seeds"] == 2).all() and total["diff_shared"] == pytest.approx(0.015)  # seeds 0 and 1
    assert summed["diff_shared"] == pytest.approx(total["diff_shared"]) and summed["pairs"] == 2
    first = dec.loc["baseline 96x64 udp -> bilinear_corners 96x64 udp"]
    assert first["diff"] == pytest.approx(0.006) and first["verdict"].endswith(
        f"interim: 2 of 3 registered seeds, no record of {fake_id('bilinear_corners', 2)})")
    assert dec["share_of_total"].isna().all()  # the total is not resolved: no shares of it
    assert report.step_change(frame, "bilinear_corners 96x64 udp", "ufpa_any 96x64 udp") == \
        "upsampling bilinear_corners → aligned"
    assert report.step_change(frame, "ufpa_any 96x64 udp", "ufpa 97x65 udp") == \
        "upsampling aligned → bilinear_corners, input 96x64 → 97x65, padding zeros → replicate"


def test_the_study_design_is_judged_on_its_registered_runs_only(results):
    """Runs of a registered arm that no study design names (a confirmatory design's new seeds) never join the
    study's pairs, its findings or its course with training; an arm with no registered runs keeps all of them."""
    register(results, arms=[("baseline", "96x64"), ("ufpa", "97x65")], seeds=(0, 1))
    register(results, {"confirms": "t", "metric": "epe_px", "flip_test": False, "level": 0.95,  # seed 2: another's
                       "primary": DESIGN["primary"]}, "c", arms=[("baseline", "96x64"), ("ufpa", "97x65")], seeds=(2,))
    frame = report.load_runs(results)
    table = report.design_table(frame, results, resamples=50).set_index("name")
    primary = table.loc["primary"]
    assert primary["pairs"] == 2 and primary["seeds"] == [0, 1] and primary["diff"] == pytest.approx(0.015)
    assert table.loc["ufpa 129x97 udp vs baseline 128x96 udp", "pairs"] == 3  # its arms name no runs: all seeds
    kept = report.design_frame(frame, results).groupby("arm")["seed"].agg(lambda s: sorted(set(s)))
    assert kept["baseline 96x64 udp"] == kept["ufpa 97x65 udp"] == [0, 1]
    assert kept["ufpa_any 96x64 udp"] == [0, 1, 2]
    assert set(report.design_gains(results).query("control == 'baseline 96x64 udp'")["pairs"]) == {2}
    assert "- **Runs**: 16 training records" in report.findings(frame, results_dir=results)  # 18, less 2


def test_each_step_of_the_markers_decomposition_changes_one_thing():
    """The committed markers arms, as the page's decomposition names its steps: corner alignment, then the +1 pixel
    (at 32m+1 `ufpa` with zero padding upsamples as `bilinear_corners` does), then the padding."""
    frame = report.load_runs(ROOT / "reports" / "markers" / "results")
    chain = ["baseline 96x64 udp", "bilinear_corners 96x64 udp", "ufpa-zerospad 97x65 udp", "ufpa 97x65 udp"]
    assert [report.step_change(frame, a, b) for a, b in zip(chain, chain[1:])] == [
        "upsampling nearest → bilinear_corners", "input 96x64 → 97x65", "padding zeros → replicate"]


def test_a_design_part_way_through_its_runs_reports_what_it_has_and_waits_for_the_rest(results, tmp_path):
    """A study split over sessions: the comparisons with two paired seeds are estimated, Holm-adjusted over the whole
    registered family (an awaiting one counts as p = 1); the others say how many of their runs exist."""
    register(results)
    for path in (results / "runs").glob("hrnet_w8_tiny-ufpa-128x96-*.json"):
        path.unlink()  # the secondary comparison's treatment not trained yet
    frame = report.load_runs(results)
    table = report.design_table(frame, results, resamples=50).set_index("name")
    waiting = table.loc["ufpa 129x97 udp vs baseline 128x96 udp"]
    assert not waiting["ready"] and np.isnan(waiting["diff"]) and np.isnan(waiting["p_holm"])
    assert waiting["verdict"].startswith("awaiting runs: baseline 128x96 3, ufpa 129x97 0 (two")
    steps = table[table["ready"] & (table["role"] == "secondary")]
    assert list(steps["p_holm"]) == pytest.approx(report.stats.holm(list(steps["p_t"]) + [1.0])[:2])
    assert list(report.ready(table.reset_index())["name"]) == ["primary"] + list(steps.index)
    text = report.findings(frame, results_dir=results)
    assert "**Secondary: `ufpa 129x97` vs `baseline 128x96`**: awaiting runs" in text
    shown = report.render_all(results, tmp_path / "tables", tmp_path / "figures")
    assert "awaiting runs" in (tmp_path / "tables" / "design.md").read_text() and len(shown["decomposition"]) == 4
    for path in (results / "runs").glob("hrnet_w8_tiny-ufpa-96x64-*.json"):
        path.unlink()  # the primary's treatment too: no decomposition (its total is missing)
    frame = report.load_runs(results)
    report._DESIGN_CACHE.clear()
    assert report.decomposition_table(report.design_table(frame, results, resamples=10)).empty
    report.render_all(results, tmp_path / "tables", tmp_path / "figures")
    waiting = report.design_table(frame, results, resamples=10).assign(ready=False)  # no comparison estimated yet
    message = report.design_figure(waiting).axes[0].texts[0].get_text()
    assert f"none of the {len(waiting)} registered comparisons has two paired seeds yet" in message
    assert "no registered design" in report.design_figure(waiting.iloc[:0]).axes[0].texts[0].get_text()


def test_no_claim_from_runs_that_had_not_plateaued(tmp_path):
    folder = tmp_path / "results"
    for seed in range(3):
        fake_record(folder, "baseline", (96, 64), seed, 0.5, late_gain=0.02)
        fake_record(folder, "ufpa_any", (96, 64), seed, 0.55 + 0.001 * seed)
    register(folder, {"metric": "AP", "flip_test": True, "level": 0.95,
                      "primary": {"control": "baseline 96x64 udp", "treatment": "ufpa_any 96x64 udp"}})
    frame = report.load_runs(folder)
    row = report.design_table(frame, folder, resamples=50).iloc[0]
    assert row["diff_lo"] > 0 and row["verdict"] == "no claim: 3 of its 6 runs had not plateaued"
    text = report.findings(frame, results_dir=folder)
    assert "**Design, registered** (profile t" in text and "before any of its runs had started)" in text
    assert "**no claim: 3 of its 6 runs had not plateaued**" in text
    assert "higher" not in text.split("**Primary")[1].split("\n")[0]


def test_eval_noise_that_fails_the_registered_plateau_rule_gets_a_labelled_post_hoc_reading(tmp_path):
    # flat curves that zigzag by 0.01 over 40 epochs: the registered rule (epoch 30 -> final) sees +0.010 in the
    # baseline, whose epoch 30 is a low point; the line through the last quarter's evaluations sees no gain in either
    folder = tmp_path / "results"
    for seed in range(3):
        fake_record(folder, "baseline", (96, 64), seed, 0.33, curve=[0.30 + 0.01 * (e % 2) for e in range(1, 40)])
        fake_record(folder, "ufpa_any", (96, 64), seed, 0.38 + 0.001 * seed,
                    curve=[0.35 + 0.01 * ((e + 1) % 2) for e in range(1, 40)])
    frame = report.load_runs(folder)
    runs = frame[~frame["flip_test"]]
    assert runs["late_gain_AP"].round(6).tolist().count(0.01) == 3 and not runs["plateau"].all()
    assert (runs["trend_gain_AP"].abs() < 0.005).all()
    register(folder, {"metric": "AP", "flip_test": False, "level": 0.95,
                      "primary": {"control": "baseline 96x64 udp", "treatment": "ufpa_any 96x64 udp"}})
    row = report.design_table(frame, folder, resamples=50).iloc[0]
    assert row["verdict"].startswith("no claim: 3 of its 6 runs had not plateaued; post-hoc, with all 6 plateaued by "
                                     "the fitted last-quarter trend, it reads higher")
    assert report.convergence_table(frame).set_index("arm").loc["baseline 96x64 udp", "trend_plateaued"] == 3
    allowed = frame.assign(plateau=True, trend_gain_AP=np.where(frame["arm"].str.startswith("ufpa_any"), 0.0, 0.01))
    row = report.design_table(allowed, folder, resamples=50).iloc[0]  # the post-hoc reading is shown both ways
    assert row["verdict"] == ("higher (its intervals exclude zero); post-hoc, 3 of its 6 runs had not plateaued by "
                              "the fitted last-quarter trend")
    rising = [0.30 + 0.005 * e for e in range(1, 40)]  # still learning: neither reading lets it claim
    fake_record(folder, "baseline", (96, 64), 0, 0.52, curve=rising)
    report._DESIGN_CACHE.clear()
    row = report.design_table(report.load_runs(folder), folder, resamples=50).iloc[0]
    assert row["verdict"] == "no claim: 3 of its 6 runs had not plateaued"


def test_the_image_bootstrap_reads_each_runs_per_image_results_and_checks_them(results):
    register(results)
    runs = {p.stem: json.loads(p.read_text()) for p in records.run_record_paths(results / "runs")}
    rng = np.random.default_rng(0)
    for rid, rec in runs.items():
        if rec["config"]["input_size"] == [96, 64]:
            lift = {"baseline": 0.0, "ufpa": 0.08, "ufpa_any": -0.05}[rec["config"]["alignment"]]
            write_instances(results, rid, np.clip(rng.uniform(0.4, 0.9, 50) + lift, 0, 1), rec["config"]["seed"])
    frame = report.load_runs(results)
    table = report.design_table(frame, results, resamples=300).set_index("name")
    primary = table.loc["primary"]
    assert 0 < primary["boot_lo"] < primary["boot_hi"]  # every image lifted by 0.08 OKS
    assert np.isnan(table.loc["ufpa 129x97 udp vs baseline 128x96 udp", "boot_lo"])  # no files at 128x96
    loc = report.localisation_comparisons(frame, results, resamples=100)
    assert set(loc["metric"]) == {"found_rate", "epe_found_px", "swap_rate", "pck_0.01", "epe_px"}
    victim = next((results / "runs").glob("hrnet_w8_tiny-ufpa-96x64-*.instances.json"))
    victim.write_text(victim.read_text().replace("0.", "0.1", 1))
    report._DESIGN_CACHE.clear()
    with pytest.raises(ValueError, match="is not the per-image file of the record"):
        report.design_table(frame, results, resamples=10)


def test_designs_that_disagree_are_refused(results):
    register(results)
    register(results, {**DESIGN, "primary": {"control": "baseline 128x96 udp", "treatment": "ufpa 129x97 udp"}},
             profile="other")  # as written before registration refused a second primary (issue 41)
    with pytest.raises(ValueError, match="2 primary comparisons registered"):
        report.design(results)
    register(results, {**DESIGN, "flip_test": False}, profile="third")
    with pytest.raises(ValueError, match="disagree on metric, flip test or level"):
        report.design(results)


def test_a_confirmatory_design_is_its_own_study_judged_on_its_own_runs(results, tmp_path):
    """A design that confirms another (``confirms``) is neither merged into the study's family nor refused for its
    other metric: it has its own table and findings, computed from the runs it registered and no others."""

    register(results, arms=[("baseline", "96x64"), ("ufpa", "97x65"), ("ufpa_any", "96x64")],
             seeds=(0, 1, 2))  # the study's design: AP, flip test on; it names its runs at 96x64
    confirm = {"confirms": "t", "metric": "epe_px", "flip_test": False, "level": 0.95,
               "primary": {"control": "baseline 96x64 udp", "treatment": "ufpa 97x65 udp"},
               "secondary": [{"control": "baseline 96x64 udp", "treatment": "ufpa_any 96x64 udp"}]}
    register(results, confirm, "c", (("baseline", "96x64"), ("ufpa", "97x65"), ("ufpa_any", "96x64")), (1, 2, 3))
    d = report.design(results)
    assert d["metric"] == "AP" and len(d["secondary"]) == 3, "the study's design as registered"
    frame = report.load_runs(results)
    table = report.own_family_table(frame, results).set_index("role")
    primary = table.loc["primary"]
    assert primary["design"] == "c" and primary["metric"] == "epe_px"
    assert primary["pairs"] == 2, "seeds 1 and 2: seed 0 has runs, but not registered ones; seed 3 is not trained"
    assert primary["diff"] == pytest.approx(-1.0) and primary["verdict"].startswith("lower")
    assert table.loc["secondary", "level"] == pytest.approx(0.95), "a family of one"
    assert table.loc["primary", "seeds_80pct"] == 2, "a count (1.0 would print as 1.00)"
    shown = report.formatted(report.own_family_table(frame, results)).set_index("role")
    assert shown.loc["primary", "seeds_80pct"] == "2"
    text = report.own_family_findings(frame, results)
    assert "seeds [1, 2, 3] only" in text and "Runs with records: 6 of 9" in text
    assert "the comparisons of `t` on epe_px" in text
    assert "**Confirmatory primary: `ufpa 97x65` vs `baseline 96x64`**: Δepe_px -1.000" in text
    assert "needs more than 10,000 paired seeds" in text, "ufpa_any's EPE equals the baseline's: no finite number"
    stated = report.design_markdown(results)
    assert "(confirmatory: the comparisons of `t` on epe_px" in stated
    assert stated.index("**Secondary family**") < stated.index("confirmatory"), "the study's design first"
    findings = report.design_findings(frame, results)
    assert "The confirmatory design (`c`, below) tests this" in findings, "it tests the primary pair"
    assert "; upsampling nearest → aligned is tested by `c` (below)" in findings, "and the decomposition's first step"
    assert findings.count("is tested by") == 1, "not the second step, which no confirmatory design compares"
    shown = report.render_all(results, tmp_path / "tables", tmp_path / "figures")
    fig = report.design_figure(report.own_family_rows(frame, results), what="own-family")
    assert fig.axes[0].get_title().startswith("own-family comparisons, flip test off, n = 2–2 paired seeds")
    assert "no own-family design" in report.design_figure(pd.DataFrame(), what="own-family").axes[0].texts[0] \
        .get_text()
    assert len(shown["own_family"]) == 2 and "confirmatory designs" in (tmp_path / "tables" /
                                                                        "own_family.md").read_text()


def test_a_confirmatory_family_is_corrected_on_its_own_and_waits_like_the_study(tmp_path):
    """Spread in the per-seed differences (a real interval), a second secondary still awaiting its runs (Holm counts
    it as p = 1, its interval is simultaneous over 2), a record written before the registration named, and the
    study's own awaiting counts untouched by the confirmatory arms."""

    folder = tmp_path / "results"
    for seed in range(4):
        fake_record(folder, "baseline", (96, 64), seed, 0.5, epe=5.0)
        fake_record(folder, "ufpa", (96, 64), seed, 0.5, epe=4.0 + 0.1 * seed)
        fake_record(folder, "ufpa_any", (96, 64), seed, 0.5, epe=5.0 + 0.4 * (-1) ** seed)
    register(folder, {"metric": "AP", "flip_test": True, "level": 0.95,
                      "primary": {"control": "baseline 96x64 udp", "treatment": "ufpa 97x65 udp"}},
             arms=[("baseline", "96x64"), ("ufpa", "97x65"), ("ufpa_any", "96x64")], seeds=(0,))
    confirm = {"confirms": "t", "metric": "epe_px", "flip_test": False, "level": 0.95,
               "primary": {"control": "baseline 96x64 udp", "treatment": "ufpa 97x65 udp"},
               "secondary": [{"control": "baseline 96x64 udp", "treatment": "ufpa_any 96x64 udp"},
                             {"control": "baseline 96x64 udp", "treatment": "bilinear 96x64 udp"}]}
    register(folder, confirm, "c", (("baseline", "96x64"), ("ufpa", "97x65"), ("ufpa_any", "96x64"),
                                    ("bilinear", "96x64")), (1, 2, 3))
    frame = report.load_runs(folder)
    rows = report.own_family_rows(frame, folder).set_index("treatment")
    primary, any_, waiting = (rows.loc[f"{a} udp"] for a in ("ufpa 97x65", "ufpa_any 96x64", "bilinear 96x64"))
    assert primary["pairs"] == 3 and primary["diff"] == pytest.approx(-0.8)  # seeds 1-3: -0.9, -0.8, -0.7
    assert primary["diff_lo"] < -0.8 < primary["diff_hi"] < 0 and primary["verdict"].startswith("lower")
    assert any_["interval_level"] == pytest.approx(1 - 0.05 / 2) and any_["verdict"].startswith("not resolved")
    assert any_["p_holm"] == pytest.approx(report.stats.holm([any_["p_t"], 1.0])[0])
    assert not waiting["ready"]
    assert waiting["verdict"].startswith("awaiting runs: baseline 96x64 3/3, bilinear 96x64 0/3")
    assert report._registered_runs(folder) == {f"{a} {size} udp": {fake_id(a, 0)} for a, size in (
        ("baseline", "96x64"), ("ufpa", "97x65"), ("ufpa_any", "96x64"))}, "the confirmatory ones stay apart"
    text = report.own_family_findings(frame, folder)
    assert "registered" in text and "before any of its runs had started)" in text and "held-out" not in text
    assert "Confirmatory secondary: `bilinear 96x64` vs `baseline 96x64`**: awaiting runs" in text
    assert primary["verdict"] == "lower (its intervals exclude zero)", "all registered seeds in: the design's answer"
    (folder / "runs" / f"{fake_id('ufpa', 3)}.json").unlink()  # one registered seed still out
    rows = report.own_family_rows(report.load_runs(folder), folder).set_index("treatment")
    assert rows.loc["ufpa 97x65 udp", "verdict"].endswith(f"; interim: 2 of 3 registered seeds, no record of "
                                                          f"{fake_id('ufpa', 3)})")


def test_a_design_of_its_own_family_on_another_metric_stands_beside_the_study(results):
    """``family: own`` (e.g. a codec axis judged on EPE in a study registered on AP): not merged into the study's
    family, not refused for its metric, no primary needed, no held-out claim for runs it shares with the study."""

    register(results)  # the study's design: AP, flip test on, 3 secondary comparisons
    own = {"family": "own", "metric": "epe_px", "flip_test": False, "level": 0.95,
           "secondary": [{"control": "baseline 96x64 udp", "treatment": "ufpa 97x65 udp", "name": "a"},
                         {"control": "baseline 96x64 udp", "treatment": "ufpa_any 96x64 udp", "name": "b"}]}
    register(results, own, "o", (("baseline", "96x64"), ("ufpa", "97x65"), ("ufpa_any", "96x64")), (0, 1, 2))
    d = report.design(results)
    assert d["metric"] == "AP" and len(d["secondary"]) == 3, "the study's family is as it registered"
    assert report._registered_runs(results) == {}, "the study registered no run ids; its arms stay apart"
    frame = report.load_runs(results)
    table = report.own_family_table(frame, results)
    assert list(table["design"]) == ["o", "o"] and set(table["metric"]) == {"epe_px"}
    assert list(table["role"]) == ["secondary", "secondary"]
    assert table["level"].tolist() == pytest.approx([0.975, 0.975]), "simultaneous over its own 2, not the study's"
    text = report.own_family_findings(frame, results)
    assert "**Design `o`, its own family** (registered" in text and "its comparisons on epe_px" in text
    assert "no primary, 2 secondary as one Holm family (simultaneous 97.5 %)" in text
    assert "before any of its runs had started): its comparisons on" in text and "held-out" not in text
    assert "**`o` secondary: `ufpa 97x65` vs `baseline 96x64`**: Δepe_px" in text
    stated = report.design_markdown(results)
    assert "- Profile **o** (its own family, on epe_px and its own runs only, below)," in stated
    findings = report.design_findings(frame, results)
    assert "The confirmatory design" not in findings, "it confirms nothing"


def test_the_power_table_sizes_seeds_from_a_pilot(results):
    table = report.power_table(report.load_runs(results)).set_index(["size", "alignment"])
    ufpa = table.loc[("96x64", "ufpa")]
    assert ufpa["d_AP"] == pytest.approx(0.02) and ufpa["sd"] == pytest.approx(0.01)
    assert ufpa["seeds_alpha"] == report.stats.seeds_for_power(0.02, 0.01)
    assert ufpa["seeds_holm_4"] >= ufpa["seeds_alpha"]


def test_the_bias_noise_floor_is_what_sampling_alone_gives():
    """An unbiased model's joints still show a mean error of about SE * sqrt(pi / 2) each (Rayleigh): the floor a
    measured |bias| must clear, four times the variance doubling it; records without the spread give NaN."""
    metrics = {"error_var_x_per_joint": [4.0] * 17, "error_var_y_per_joint": [4.0] * 17,
               "keypoints_per_joint": [400] * 17}
    floor = report.abs_bias_floor(metrics)
    assert 0.1 * math.sqrt(math.pi / 2) < floor < 0.2
    wider = report.abs_bias_floor({**metrics, "error_var_x_per_joint": [16.0] * 17,
                                   "error_var_y_per_joint": [16.0] * 17})
    assert wider == pytest.approx(2 * floor)
    assert math.isnan(report.abs_bias_floor({}))


def test_the_data_check_says_what_limits_accuracy_on_each_setting(tmp_path):
    folder = tmp_path / "localise_check" / "results"
    for data, swap in (("synthpose-easy", 0.5), ("synthpose-localise", 0.02)):
        path = fake_record(folder, "baseline", (96, 64), 0 if "easy" in data else 1, 0.5)
        epe = [2.0] * 17
        epe[9] = epe[10] = epe[15] = epe[16] = 10.0
        _edit(path, lambda r, data=data, swap=swap, epe=epe: (
            r["config"].update(data=f"/x/{data}", flip=0.5),
            r["results"]["no_flip"].update(found_rate=0.8, epe_found=2.0, swap_rate=swap / 4, epe_per_joint=epe,
                                        swap_rate_per_joint=[swap] * 17)))
        _reidentify(path)
    text = report.data_check_summary(tmp_path / "results")
    easy, localise = text.splitlines()
    assert easy.startswith("- `synthpose-easy`, flip augmentation 0.5") and "50.0 % of wrists" in easy
    assert localise.startswith("- `synthpose-localise`") and "2.0 % of wrists" in localise
    assert f"carry {100 * 40 / (13 * 2 + 40):.0f} %" in easy
    assert report.data_check_summary(tmp_path / "elsewhere" / "results") == ""


def test_two_training_codes_pool_only_when_a_reproduction_joined_them(results):
    """A sweep finished after the training code changed: its records pool with the earlier ones only where `python -m
    ufpa reproduce` re-trained a record at the new code and got it bit for bit (an equivalence record)."""
    paths = records.run_record_paths(results / "runs")
    for i, path in enumerate(paths):
        _edit(path, lambda r, i=i: r["results"].update(code_fingerprint="a" * 16 if i % 2 else "b" * 16))
    with pytest.raises(ValueError, match="2 versions of the training code .*python -m ufpa reproduce"):
        report.load_runs(results)
    first = records.read_record(paths[1])  # made by code aaaa (as an equivalence made before issue 41 names it)
    records.write_record(results / "equivalence" / "aaaa-bbbb.json", "code_equivalence", {"record": str(paths[1])},
                         {"codes": ["a" * 16, "b" * 16], "run_id": first["results"]["run_id"],
                          "device": first["provenance"]["device"],
                          "cpu_capability": first["provenance"]["cpu_capability"]})
    assert len(report.load_runs(results)) == 36
    _edit(paths[0], lambda r: r["results"].update(code_fingerprint="c" * 16))
    with pytest.raises(ValueError, match="3 versions of the training code"):
        report.load_runs(results)


def _learned_run(folder, seed, scale, images):
    """A learned-alignment record whose offsets file reads a model whose samplers move ``scale`` times the correction
    the geometry asks for (1: all of it, 0.5: half), so the share removed is known."""
    import torch

    from ufpa import learned
    from ufpa.models import create_model

    torch.manual_seed(0)
    model = create_model("hrnet_w8_tiny", alignment="learned", input_size=(96, 64), head="udp")
    with torch.no_grad():
        for module in learned.learned_modules(model).values():
            f = module.factor
            phase = scale * torch.arange(f, dtype=torch.float32) / f
            module.coarse_bias.copy_(torch.stack((phase.view(f, 1).expand(f, f), phase.view(1, f).expand(f, f)))
                                     .reshape(-1))
    text = json.dumps(learned.learned_alignment(model, images, (96, 64)), separators=(",", ":"))
    path = fake_record(folder, "learned", (96, 64), seed, 0.5)
    rec = json.loads(path.read_text())
    path.with_suffix(".offsets.json").write_text(text)
    rec["results"]["offsets_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    records.write_record(path, "train_run", rec["config"], rec["results"], seed)
    return path


def test_learned_offsets_are_read_against_the_geometry_over_seeds(tmp_path):
    """issue 22: the table pools each run's offsets file over seeds; a file that is not the record's is refused."""
    import torch

    folder = tmp_path / "results"
    images = torch.randn(2, 3, 96, 64)
    for seed, scale in ((0, 1.0), (1, 0.5)):
        fake_record(folder, "baseline", (96, 64), seed, 0.5)
        last = _learned_run(folder, seed, scale, images)
    frame = report.load_runs(folder)
    table = report.learned_offsets_table(frame, folder)
    inner = table[table["region"] == "interior"]
    assert (inner["seeds"] == 2).all() and inner["fusion point"].str.startswith("stage ").all()
    assert np.allclose(inner["removed_max"], 1, atol=1e-3) and np.allclose(inner["removed_min"], 0.5, atol=1e-3)
    assert np.allclose(inner["learned_mean_px"], 0.75 * inner["correction_mean_px"], atol=1e-3)
    fig = report.learned_offsets_figure(frame, folder, path=tmp_path / "offsets.png")
    assert (tmp_path / "offsets.png").stat().st_size > 5000 and len(fig.axes) == 2 * inner["fusion point"].nunique()
    pooled = report.learned_shift_removed(frame, folder).set_index(["seed", "region"])
    assert pooled.loc[(0, "interior"), "removed"] == pytest.approx(1, abs=1e-3)  # all of the correction
    assert pooled.loc[(1, "interior"), "removed"] == pytest.approx(0.5, abs=1e-3)  # half of it
    (line,) = report.learned_findings(frame, folder)
    assert "2 seeds" in line and "interior: RMS shift" in line and "75 % removed (seeds 50 to 100 %)" in line
    assert report.learned_findings(frame[frame["alignment"] != "learned"], folder) == []
    last.with_suffix(".offsets.json").write_text("{}")
    with pytest.raises(ValueError, match="is not the offsets file of the record"):
        report.learned_offsets_table(frame, folder)
    no_learned = report.learned_offsets_table(frame[frame["alignment"] != "learned"], folder)
    assert "no runs of alignment 'learned'" in no_learned.iloc[0, 0]


def test_the_converged_study_is_summarised_from_its_own_folder(tmp_path):
    """The README and page quote the converged study (reports/converged/, beside the study's results) as far as its
    records go; nothing is said where it has no registered design."""
    study = tmp_path / "reports" / "results"
    study.mkdir(parents=True)
    assert report.converged_summary(study) == "" and report.converged_summary(study, report.MARKERS) == ""
    folder = tmp_path / "reports" / report.CONVERGED / "results"
    register(folder, {"metric": "AP", "flip_test": True, "level": 0.95,
                      "primary": {"control": "baseline 96x64 udp", "treatment": "ufpa 97x65 udp"},
                      "secondary": [{"control": "baseline 96x64 udp", "treatment": "ufpa_any 96x64 udp"}]})
    assert "**Primary**: `ufpa 97x65` against `baseline 96x64`" in report.converged_summary(study)  # no runs yet
    for seed in range(3):
        fake_record(folder, "baseline", (96, 64), seed, 0.5 + 0.01 * seed)
        fake_record(folder, "ufpa", (96, 64), seed, 0.52 + 0.01 * seed)
    report._DESIGN_CACHE.clear()
    text = report.converged_summary(study)
    assert "| primary | ufpa 97x65 vs baseline 96x64 | 0.950 | 3 |" in text and "With training" in text
    assert "**Secondary: `ufpa_any 96x64` vs `baseline 96x64`**: awaiting runs: baseline 96x64 3, ufpa_any 96x64 0" \
        in text
    for path in (folder / "runs").glob("*-s[12]-*.json"):
        path.unlink()  # one paired seed left: no estimate, and no sentence about the gain's course either
    report._DESIGN_CACHE.clear()
    text = report.converged_summary(study)
    assert "**Primary: `ufpa 97x65` vs `baseline 96x64`**: awaiting runs" in text and "With training" not in text


@pytest.mark.parametrize("extremity_px, reading", [(12.0, "AP measures detection here"),
                                                   (1.5, "localisation, not detection, limits accuracy here")])
def test_where_the_error_is_reads_gross_misses_apart_from_localisation(tmp_path, extremity_px, reading):
    folder = tmp_path / "results"
    for seed in range(2):
        path = fake_record(folder, "baseline", (96, 64), seed, 0.5)
        epe = [1.0] * 17
        epe[9] = epe[10] = epe[15] = epe[16] = extremity_px
        _edit(path, lambda r, epe=epe: r["results"]["flip"].update(epe_per_joint=epe,
                                                                   swap_rate_per_joint=[0.01] * 17))
    text = report._gross_error_share(folder, "baseline 96x64 udp", True)
    assert f"mean {extremity_px:.1f} px, against 1.0 px at shoulders and hips" in text and reading in text


def test_a_folder_shows_its_design_flip_setting(results):
    """Tables and figures of a folder show the flip setting its design registered (markers: without flip test, which
    swaps the labels and not the colours); without a design, flip test on, as the paper reports."""
    assert report.shown_flip_test(results) is True  # nothing registered
    register(results, {**DESIGN, "flip_test": False})
    assert report.shown_flip_test(results) is False
    assert report.shown_flip_test(ROOT / "reports" / "markers" / "results") is False
    assert report.shown_flip_test(ROOT / "reports" / "results") is True


def test_comparisons_and_p_values_read_as_what_they_are():
    """The study's codec goes without saying in a comparison within it, but not in one across codecs, where
    "baseline 96x64 vs baseline 96x64 msra" would hide which side is udp; a p that rounds to zero reads "< 0.001"."""
    assert report._vs("baseline 96x64 udp", "ufpa 97x65 udp", "`") == "`ufpa 97x65` vs `baseline 96x64`"
    assert report._vs("baseline 96x64 msra", "ufpa 97x65 msra") == "ufpa 97x65 msra vs baseline 96x64 msra"
    assert report._vs("baseline 96x64 msra", "baseline 96x64 udp") == "baseline 96x64 udp vs baseline 96x64 msra"
    assert report._pair_labels("baseline 96x64 msra", "baseline 96x64 udp") == ("baseline 96x64 msra",
                                                                                 "baseline 96x64 udp")
    assert report._p_text("p", 0.0002) == "p < 0.001" and report._p_text("p", 0.0006) == "p 0.001"
    shown = report.formatted(pd.DataFrame({"p_holm": [0.0002, 0.048], "diff": [0.0002, 0.048]}), {"p_holm": 3})
    assert shown["p_holm"].tolist() == ["< 0.001", "0.048"] and shown["diff"].tolist()[0] == "+0.00"
