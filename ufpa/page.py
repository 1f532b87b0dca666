"""The study as one HTML page: the executed notebooks 01–06, inputs hidden, behind a narrative whose numbers come from
the records (``report.findings``), with a table of contents; and a check of the page in a real headless Chromium.

``make report`` = ``python -m ufpa report``: executes notebook 06 (figures and tables) and one training notebook 05 (a
finished run of the profile, with its sibling variants' predictions on the same crops) into ``reports/notebooks/``,
then writes ``reports/study.html`` and, where Chromium is installed, a screenshot of it.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict
from pathlib import Path

from . import records, report

NOTEBOOKS = ("01_derivation", "02_numerical_verification", "03_misalignment_in_models", "04_data_and_codecs",
             "05_train", "06_figures_and_tables")


def showcase_run(profile) -> object:
    """The run notebook 05 shows on the page: the profile's baseline at its smallest input size, first seed."""
    from . import sweep

    runs = sweep.expand(sweep.load_grid(profile))
    base = [c for c in runs if c.alignment == "baseline"] or runs
    return min(base, key=lambda c: (c.input_size[0] * c.input_size[1], c.seed, c.codec))


def execute_notebooks(profile, reports_root=None, progress: bool = False) -> list[Path]:
    """Execute notebook 05 (on a finished run: nothing is trained) and notebook 06 into ``<reports>/notebooks``."""
    import papermill as pm

    from . import sweep
    from .train import DONE, record_path, run_dir

    root = Path(reports_root) if reports_root else records.reports_dir()
    out = root / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    cfg = showcase_run(profile)
    done = records.REPO_ROOT / run_dir(cfg) / DONE
    if not (done.is_file() and record_path(cfg).is_file()):
        raise FileNotFoundError(f"the page shows run {sweep.run_id(cfg)}, which has not finished here ({done} or "
                                f"{record_path(cfg)} is missing): run `make study` first")
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    params["compare_with"] = [v for v in report.VARIANTS if v != cfg.alignment]
    sweep.check_parameters(params)
    nb = records.REPO_ROOT / "notebooks"
    pm.execute_notebook(str(nb / "05_train.ipynb"), str(out / "05_train.ipynb"), parameters=params,
                        cwd=str(records.REPO_ROOT), progress_bar=progress, kernel_name="python3")
    pm.execute_notebook(str(nb / "06_figures_and_tables.ipynb"), str(out / "06_figures_and_tables.ipynb"),
                        parameters={"results": str(root / "results"), "reports": str(root)}, cwd=str(nb),
                        progress_bar=progress, kernel_name="python3")
    return [out / "05_train.ipynb", out / "06_figures_and_tables.ipynb"]


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return "notebook"


def narrative(results_dir) -> str:
    """The page's opening: question, method, findings (numbers from the records), limits (Markdown)."""
    frame = report.load_runs(results_dir)
    sizes = ", ".join(report._sizes(frame))
    variants = ", ".join(str(v) for v in frame["alignment"].cat.categories)
    return f"""# Unbiased feature position alignment: the study

**Question.** Multi-scale pose networks such as HRNet fuse feature maps that went through strided convolutions and
interpolation; the two place samples on different grids, so fused features are shifted against each other (the *shift
error*). Wang, Zhou, Zhang and Mok (Neurocomputing 537, 2023) remove it by making convolution and interpolation agree.
Where does that alignment change accuracy?

**Method.** Notebooks 01–03 derive the shift error symbolically, verify it against real torch operations and audit it
in real networks; notebook 04 checks the data (SynthPose: procedural people with exact sub-pixel ground truth) and the
keypoint codecs; notebook 05 is one training run (here the baseline with its aligned siblings' predictions on the same
crops); notebook 06 turns every training record into the tables and figures. This page was built from
{frame['run_id'].nunique()} training records: variants {variants} at nominal input sizes {sizes}.

**Findings** (read from the records; ± is the 95 % CI over seeds):

{report.findings(frame)}
**Limits.** SynthPose is not COCO: absolute AP here is not comparable with published numbers (the published anchors in
notebook 06 are context only). The CPU profile trains a 0.18 M-parameter HRNet for minutes; three seeds give wide
intervals, so an effect smaller than the interval is not resolved, whatever its sign. The GPU profile (HRNet-W32,
SimpleBaseline-R50, five variants, three codecs, standard SynthPose) has not been run unless its records appear above.
"""


def build_page(notebook_paths, out_html, results_dir) -> Path:
    """One HTML page: the narrative, a table of contents, then each executed notebook with its inputs hidden."""
    import nbformat
    from nbconvert import HTMLExporter

    page = nbformat.v4.new_notebook()
    cells = [nbformat.v4.new_markdown_cell(narrative(results_dir))]
    toc = ["## Contents", ""]
    body = []
    for i, path in enumerate(notebook_paths):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: `make study` executes 01–04, `make report` 05 and 06")
        nb = nbformat.read(path, as_version=4)
        anchor = f"part-{i + 1}"
        toc.append(f"{i + 1}. [{html.escape(_title(nb))}](#{anchor})")
        body.append(nbformat.v4.new_markdown_cell(f'<a id="{anchor}"></a>\n\n---'))
        for cell in nb.cells:
            if "parameters" in cell.get("metadata", {}).get("tags", []) or "injected-parameters" in cell.get(
                    "metadata", {}).get("tags", []):
                continue  # parameters are inputs; the page shows results
            body.append(cell)
    cells.append(nbformat.v4.new_markdown_cell("\n".join(toc)))
    page.cells = cells + body
    page.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}, "title": "ufpa: the study"}
    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    text, _ = exporter.from_notebook_node(page)
    return records.atomic_write_text(out_html, text)


def chromium() -> str | None:
    """A headless Chromium: $CHROMIUM, else the first of chromium, chromium-browser, google-chrome on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def check_in_browser(page, screenshot=None, width: int = 1280, height: int = 2400, timeout: float = 120) -> dict:
    """Open the page in headless Chromium: its rendered DOM must hold the narrative, the contents and all six parts,
    and no error output; the screenshot must not be blank. Returns what was checked."""
    import numpy as np
    from PIL import Image

    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found: install it (Debian: apt-get install chromium) or set CHROMIUM")
    page = Path(page).resolve()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--window-size={width},{height}"]
    with tempfile.TemporaryDirectory() as profile:
        dom = subprocess.run([exe, *flags, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=timeout).stdout
    with tempfile.TemporaryDirectory() as profile:
        shot = Path(screenshot) if screenshot else Path(profile) / "page.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([exe, *flags, f"--user-data-dir={profile}", f"--screenshot={shot}", page.as_uri()],
                       capture_output=True, text=True, timeout=timeout)
        if not shot.is_file():
            raise RuntimeError(f"Chromium ({exe}) wrote no screenshot of {page}")
        pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    problems = []
    for needle in ("Unbiased feature position alignment: the study", "Contents", "Findings"):
        if needle not in dom:
            problems.append(f"the rendered page lacks {needle!r}")
    parts = len(re.findall(r'id="part-\d+"', dom))
    if parts != len(NOTEBOOKS):
        problems.append(f"the rendered page has {parts} parts, expected {len(NOTEBOOKS)}")
    if "Traceback (most recent call last)" in dom:
        problems.append("the rendered page shows a traceback")
    if pixels.std() < 5:
        problems.append(f"the screenshot is blank (pixel std {pixels.std():.1f})")
    if problems:
        raise AssertionError(f"{page}: " + "; ".join(problems))
    return {"chromium": exe, "dom_chars": len(dom), "parts": parts, "screenshot_std": float(pixels.std()),
            "screenshot": str(screenshot) if screenshot else None}


def make_report(profile, reports_root=None, screenshot: bool = True, progress: bool = False) -> dict:
    """Everything ``make report`` does; returns the paths written and the browser check."""
    root = Path(reports_root) if reports_root else records.reports_dir()
    execute_notebooks(profile, root, progress)
    paths = [root / "notebooks" / f"{name}.ipynb" for name in NOTEBOOKS]
    page = build_page(paths, root / "study.html", root / "results")
    readme = records.REPO_ROOT / "README.md"
    out = {"page": str(page), "readme_updated": report.update_readme(readme, root / "results", root / "tables")}
    if screenshot:
        if chromium() is None:
            out["browser"] = "skipped: no Chromium installed (apt-get install chromium, or set CHROMIUM)"
        else:
            out["browser"] = check_in_browser(page, root / "figures" / "study_page.png")
    return out
