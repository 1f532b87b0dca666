"""The report: records into tables (paired differences, formats), schema errors, figures, the page, and
the committed tables agreeing with the committed records."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ufpa import page, records, report

ROOT = Path(__file__).resolve().parent.parent


def fake_record(folder, alignment, size, seed, ap, epe=5.0, bias=(0.5, -0.25), late_gain=0.0):
    """A train_run record with known numbers (the fields the report reads), written like train writes them."""
    metrics = {"AP": ap, "AP50": 0.9, "AP75": ap / 2, "AR": ap + 0.05, "epe_mean": epe, "epe_median": epe / 2,
               "bias_x": bias[0], "bias_y": bias[1], "bias_x_per_joint": [bias[0]] * 17,
               "bias_y_per_joint": [bias[1]] * 17, "pck@0.05": 0.7, "flip_consistency_px": 3.0 + seed}
    eff = [s + 1 for s in size] if alignment == "ufpa" else list(size)
    rid = f"hrnet_w8_tiny-{alignment}-{size[0]}x{size[1]}-udp-s{seed}-00000000"
    config = {"model": "hrnet_w8_tiny", "alignment": alignment, "head": "udp", "codec": "udp",
              "input_size": list(size), "seed": seed, "epochs": 2, "data": "/x/synthpose-easy"}
    results = {"run_id": rid, "no_flip": {**metrics, "AP": ap - 0.02, "flip_test": False},
               "flip": {**metrics, "flip_test": True},
               "learning_curve": [{"epoch": 1, "loss": 1.0, "val_AP": ap - 0.02 - late_gain, "val_epe_mean": 9.0,
                                   "images_per_s": 1,
                                   "seconds": 1}, {"epoch": 2, "loss": 0.5, "images_per_s": 1, "seconds": 1}],
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
    shown = report.render_all(results, tmp_path / "tables", tmp_path / "figures")
    assert set(shown) == set(report.TABLES)
    for name in report.TABLES:
        for ext in ("md", "csv", "tex"):
            assert (tmp_path / "tables" / f"{name}.{ext}").stat().st_size > 50
    for name in report.FIGURES:
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


@pytest.mark.skipif(not (ROOT / "reports" / "tables").is_dir(), reason="no committed tables yet")
@pytest.mark.parametrize("name", ["main", "ablation", "low_resolution"])
def test_committed_tables_agree_with_committed_records(name):
    frame = report.load_runs(COMMITTED)
    fresh = report.TABLES[name][0](frame, COMMITTED)
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
def test_readme_quotes_the_generated_tables_and_findings():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = report.readme_blocks(COMMITTED, ROOT / "reports" / "tables")
    assert "<!-- ufpa:findings -->" in readme
    assert report.fill_markers(readme, blocks) == readme, "README differs from the records: run `make report`"


def test_every_run_notebook_has_its_record():
    for nb in (ROOT / "reports" / "runs").glob("*.ipynb"):
        assert (COMMITTED / "runs" / f"{nb.stem}.json").is_file(), f"{nb.name} has no record behind it"
    for path in COMMITTED.rglob("*.json"):
        if not path.name.endswith((".keypoints.json", ".failed.json")):
            records.read_record(path)  # every committed record passes the schema


def test_one_seed_says_it_has_no_interval(tmp_path):
    fake_record(tmp_path, "baseline", (96, 64), 0, 0.5)
    fake_record(tmp_path, "ufpa", (96, 64), 0, 0.6)
    text = report.findings(report.load_runs(tmp_path))
    assert "no interval" in text and "nan" not in text and "ΔAP +0.100" in text


def test_records_elsewhere_never_rewrite_the_readme_and_a_fresh_clone_reports(tmp_path):
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
    paths = page.execute_notebooks(root / "profiles" / "cpu.yaml", scratch)
    assert [p.name for p in paths] == ["05_train.ipynb", "06_figures_and_tables.ipynb"]
    assert (scratch / "notebooks" / "05_train.ipynb").read_bytes() == committed_05  # kept, nothing re-trained
    assert (scratch / "notebooks" / "06_figures_and_tables.ipynb").stat().st_size > 10_000


def _edit(path, change):
    rec = json.loads(Path(path).read_text())
    change(rec)
    Path(path).write_text(json.dumps(rec))


@pytest.mark.parametrize("change, message", [
    (lambda r: r["config"].update(epochs=8), r"seeds of one condition .* different configs \(epochs 2 vs 8\)"),
    (lambda r: r["results"]["flip"].update(AP=None), r"flip AP is None, not a finite number"),
    (lambda r: r["results"]["flip"].update(AP="0.9"), r"flip AP is '0.9', not a finite number"),
    (lambda r: r["provenance"].update(git_commit="f" * 40), r"2 versions of the training code .*commit ffffffffff"),
    (lambda r: r["config"].update(seed=0), r"seed\(s\) \[0\] more than once"),
])
def test_a_report_pools_only_seeds_of_one_identical_config(results, change, message):
    """A 2-epoch and an 8-epoch record of one variant were pooled as seeds; a null metric dropped a seed silently;
    a text metric died in numpy; two commits were pooled into one CI (issue 18)."""
    victim = next((results / "runs").glob("hrnet_w8_tiny-ufpa-96x64-udp-s1-*.json"))
    _edit(victim, change)
    with pytest.raises(ValueError, match=message):
        report.load_runs(results)


def test_a_copied_record_counts_once_and_commits_pool_only_when_asked(results):
    first = next((results / "runs").glob("hrnet_w8_tiny-ufpa-96x64-udp-s1-*.json"))
    _edit(first, lambda r: r["provenance"].update(git_commit="f" * 40))
    assert len(report.load_runs(results, one_commit=False)) == 36
    copy = first.with_name("copy.json")
    copy.write_bytes(first.read_bytes())
    with pytest.raises(ValueError, match="are the same run"):
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

    for name in ("main_table", "lowres_table", "accuracy_vs_size", "paired_gain", "misalignment_and_gain",
                 "bias_fields"):
        spy(name)
    report.render_all(results, tmp_path / "t", tmp_path / "f", flip_test=False)
    assert settings == dict.fromkeys(settings, False) and len(settings) == 6


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
