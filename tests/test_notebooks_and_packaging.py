"""Notebook structure (pyhf-style), a papermill run asserting on what it records, the CLI, and packaging."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from ufpa import records

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_exist_and_are_numbered():
    names = [nb.name for nb in NOTEBOOKS]
    assert "01_derivation.ipynb" in names and "02_numerical_verification.ipynb" in names
    assert all(re.match(r"\d\d_[a-z0-9_]+\.ipynb$", n) for n in names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exactly_one_literal_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    tree = ast.parse(tagged[0].source)
    for stmt in tree.body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.dump(stmt)
        ast.literal_eval(stmt.value)  # raises on anything but a literal


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_keep_outputs_and_stay_thin(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "execute with `make notebooks` before committing"
    assert not any(re.search(r"^\s*(def|class) ", c.source, re.M) for c in code), "logic belongs in ufpa"


def test_papermill_run_records_a_passing_verification(tmp_path):
    import papermill as pm

    out_nb = tmp_path / "02.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "02_numerical_verification.ipynb"), str(out_nb),
                        parameters=dict(n_cases=1000, seed=5, reports=str(tmp_path / "reports")),
                        cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    record = json.loads((tmp_path / "reports" / "results" / "numerical_verification.json").read_text())
    assert record["kind"] == "numerical_verification" and record["config"]["seed"] == 5
    assert record["results"]["configs"] == 1000 and record["results"]["passed"] is True
    assert record["results"]["worst_interior_px"] <= 1e-9
    assert record["provenance"]["torch"]
    for name in ("02_deviations.png", "02_sampling_grids.png", "02_shift_profiles.png", "02_misalignment_levels.gif"):
        assert (tmp_path / "reports" / "figures" / name).stat().st_size > 1000
    gif = (tmp_path / "reports" / "figures" / "02_misalignment_levels.gif").read_bytes()
    assert gif[:6] == b"GIF89a"


def test_papermill_model_audit_notebook_records_its_tables(tmp_path):
    import papermill as pm

    pm.execute_notebook(str(ROOT / "notebooks" / "03_misalignment_in_models.ipynb"), str(tmp_path / "03.ipynb"),
                        parameters=dict(model="hrnet_w8_tiny", sizes=[[128, 96]], focus_size=[128, 96],
                                        other_models=["hourglass_small"],
                                        other_size=[128, 96], cost_size=[128, 96],
                                        reports=str(tmp_path / "reports")),
                        cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    record = json.loads((tmp_path / "reports" / "results" / "misalignment_audit.json").read_text())
    assert record["config"]["model"] == "hrnet_w8_tiny"
    hrnet = record["results"]["hrnet"]
    assert {row["alignment"] for row in hrnet} == {"baseline", "bilinear", "bilinear_corners", "ufpa", "ufpa_any"}
    worst = {row["up_levels"]: row["max_abs_px"] for row in hrnet
             if row["alignment"] == "baseline" and row["stride"] == 4 and row["up_levels"] > 0}
    assert worst == {1: 4.0, 2: 12.0, 3: 28.0}
    assert record["results"]["empirical_max_dev_px"] <= 1e-9
    heatmap = {row["alignment"]: row["params"] for row in record["results"]["costs"] if row["head"] == "heatmap"}
    assert len({heatmap.pop("learned")} | set(heatmap.values())) == 2 and len(set(heatmap.values())) == 1
    fits = record["results"]["learned_fit"]  # the synthetic-shift test, at every factor HRNet upsamples by
    assert {f["factor"] for f in fits} == {2, 4, 8} and all(f["max_error"] < 0.01 for f in fits)
    points = record["results"]["fusion_points"]
    per_variant = {a: [p for p in points if p["alignment"] == a] for a in {p["alignment"] for p in points}}
    assert len(per_variant) == 5 and len({len(v) for v in per_variant.values()}) == 1  # same fusions, every variant
    assert [p["order"] for p in per_variant["baseline"]] == list(range(len(per_variant["baseline"])))
    assert max(p["max_abs_px"] for p in per_variant["baseline"]) == 28.0
    assert max(max(p["max_abs_px"], p["border_max_abs_px"]) for p in per_variant["ufpa"]) <= 1e-9
    assert sum(p["max_abs_px"] == 0 for p in per_variant["baseline"]) > 0  # aligned fusions stay in, as zeros
    from ufpa import study
    others = study.other_models_summary(record["results"]).set_index("alignment")
    assert others.loc["baseline", "upsampled in (px)"] > 0 == others.loc["ufpa", "upsampled in (px)"]
    for name in ("03_fusion_points.png", "03_shift_map.png", "03_corner_error_across_width.png"):
        assert (tmp_path / "reports" / "figures" / name).stat().st_size > 1000


def test_papermill_data_notebook_records_codecs_and_data(tmp_path):
    import papermill as pm

    pm.execute_notebook(str(ROOT / "notebooks" / "04_data_and_codecs.ipynb"), str(tmp_path / "04.ipynb"),
                        parameters=dict(n_train=6, n_val=3, seed=2, gallery_images=2, roundtrip_samples=50,
                                        reports=str(tmp_path / "reports")),
                        cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    record = json.loads((tmp_path / "reports" / "results" / "data_and_codecs.json").read_text())["results"]
    assert record["self_ap"] == 1.0 and record["statistics"]["images"] == 6
    errors = {row["codec"]: row["max_error"] for row in record["codecs"]}
    assert errors["udp"] <= 0.01 and errors["dark"] <= 0.05 and errors["msra"] > errors["dark"]
    assert any(row["codec"].startswith("msra, legacy") for row in record["flip"])
    border = {(row["codec"], row["map"]): row for row in record["border"]}
    assert border[("udp", "64x48")]["0 from border"] <= 1e-3 and border[("dark", "64x48")]["2 from border"] <= 0.25
    for name in ("04_synthpose_gallery.jpg", "04_codec_subpixel_error.png", "04_training_targets.png",
                 "04_target_heatmaps.png"):
        assert (tmp_path / "reports" / "figures" / name).stat().st_size > 1000
    assert not list((ROOT / "notebooks").glob("synthpose*"))  # generated data stays out of the repo


def test_cli(tmp_path):
    run = [sys.executable, "-m", "ufpa"]
    out = subprocess.run(run + ["aligned-size", "256", "193"], capture_output=True, text=True, check=True).stdout
    assert "256: not aligned; use 257" in out and "193: aligned" in out
    rec = tmp_path / "v.json"
    res = subprocess.run(run + ["verify", "--cases", "40", "--quiet", "--out", str(rec)], capture_output=True,
                         text=True)
    assert res.returncode == 0 and "passed" in res.stdout and rec.is_file()
    bad = subprocess.run(run + ["verify", "--cases", "0"], capture_output=True, text=True)
    assert bad.returncode != 0 and "--cases" in bad.stderr
    rec = tmp_path / "bench.json"
    res = subprocess.run(run + ["bench", "models", "model=hrnet_w8_tiny", "batch=1", "steps=1", "warmup=0",
                                "input_size=[64, 64]", "--out", str(rec)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    bench = json.loads(rec.read_text())
    assert bench["kind"] == "bench_models" and bench["config"]["model"] == "hrnet_w8_tiny"
    rows = {row["variant"]: row for row in bench["results"]["rows"]}
    assert set(rows) == {"baseline", "ufpa", "ufpa_any", "learned"} and rows["ufpa"]["input_size"] == [65, 65]
    assert rows["learned"]["params"] > rows["baseline"]["params"]
    assert all(row["images_per_s"] > 0 and row["peak_memory_mb"] > 0 for row in rows.values())
    assert rows["baseline"]["step_time_ratio_vs_baseline"] == 1.0
    assert 0 < rows["baseline"]["gflops"] < rows["ufpa"]["gflops"]  # 65x65 computes more than 64x64
    bad = subprocess.run(run + ["bench", "models", "colour=red"], capture_output=True, text=True)
    assert bad.returncode != 0 and "valid keys: model, input_size" in bad.stderr
    stages = ("render", "render_encode", "generate")
    for what, extra, check in (
            ("codecs", [], lambda r: {row["codec"] for row in r["rows"]} == {"dark", "msra", "sr", "udp"}),
            ("synth", ["repeats=1"], lambda r: min(r[f"{s}_images_per_s"] for s in stages) > 0 and r["images"] == 5)):
        rec = tmp_path / f"{what}.json"
        res = subprocess.run(run + ["bench", what, "n=5", *extra, "--out", str(rec)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert check(json.loads(rec.read_text())["results"])
    synth = subprocess.run(run + ["synth", "--out", str(tmp_path / "sp"), "--train", "3", "--val", "2", "--workers",
                                  "1", "--quiet"], capture_output=True, text=True)
    assert synth.returncode == 0 and (tmp_path / "sp" / "annotations" / "person_keypoints_val.json").is_file()


def _names(requirements):
    return {re.split(r"[<>=!~ \[]", r.strip(), maxsplit=1)[0].lower(): r.strip() for r in requirements}


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    listed = _names(conda + [p for p in pip if not p.startswith("-")])
    listed["torch"] = listed.pop("pytorch")  # conda's name for torch
    listed.pop("python"), listed.pop("pip")
    assert set(listed) == set(wanted), set(listed) ^ set(wanted)
    for name, spec in wanted.items():  # same lower bounds
        assert re.sub(r"^[a-z0-9_.-]+", "", spec.lower()) == re.sub(r"^[a-z0-9_.-]+", "", listed[name].lower()), name


def test_cpu_constraint_pins_torch_and_the_makefile_uses_it():
    pins = [line for line in (ROOT / "environments" / "constraints-cpu.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins == ["torch==2.13.0"]
    make = (ROOT / "Makefile").read_text()
    assert "-c environments/constraints-cpu.txt" in make and "-e '.[dev]'" in make
    assert re.search(r"^study:", make, re.M) and re.search(r"^test:", make, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "torch>=2.4" in project["dependencies"] and project["requires-python"] == ">=3.10"


def test_readme_documents_the_contract():
    readme = (ROOT / "README.md").read_text()
    for needle in ("make study", "make test", "x = i", "ufpa/", "notebooks/", "reports/"):
        assert needle in readme, needle


def test_training_notebook_takes_every_config_field():
    import dataclasses

    from ufpa import sweep, train

    names = sweep.notebook_parameters(ROOT / "notebooks" / "05_train.ipynb")
    assert {f.name for f in dataclasses.fields(train.TrainConfig)} <= names


def test_notebook_05_and_the_cli_share_their_defaults():
    """The parameters cell is runs.parameters_cell(): TrainConfig's defaults and comments, smoke values marked
    (run `python -m ufpa notebook-parameters` after changing TrainConfig)."""
    from ufpa import runs

    nb = nbformat.read(ROOT / "notebooks" / "05_train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    assert cell.source == runs.parameters_cell()


def test_the_parameters_command_rewrites_a_cell_out_of_step_and_check_says_so(tmp_path):
    from ufpa import __main__ as cli
    from ufpa import runs

    copy = tmp_path / "05.ipynb"
    nb = nbformat.read(ROOT / "notebooks" / "05_train.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    cell.source = cell.source.replace("epochs = 2", "epochs = 3")  # a field's default edited by hand
    nbformat.write(nb, copy)
    assert cli.main(["notebook-parameters", str(copy), "--check"]) == 1
    assert cli.main(["notebook-parameters", str(copy)]) == 0
    assert runs.parameters_cell_of(copy) == runs.parameters_cell()
    assert cli.main(["notebook-parameters", str(copy), "--check"]) == 0


def test_notebook_parameter_checks_name_the_parameter(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match="n_cases=50 is not valid.*>= 1000"):
        pm.execute_notebook(str(ROOT / "notebooks" / "02_numerical_verification.ipynb"), str(tmp_path / "02.ipynb"),
                            parameters=dict(n_cases=50, reports=str(tmp_path / "reports")),
                            cwd=str(ROOT / "notebooks"), progress_bar=False, kernel_name="python3")
    assert not (tmp_path / "reports" / "results" / "numerical_verification.json").exists()  # nothing overwritten


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_parameter_says_what_it_is(path):
    """Each parameter has a comment (meaning, unit, valid range) on its line or on the line above."""
    nb = nbformat.read(path, as_version=4)
    lines = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])).source.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\w+ = ", line):
            assert "#" in line or (i and lines[i - 1].startswith("#")), f"{path.name}: {line!r} has no comment"
    # papermill parses the cell itself (for -p and --help-notebook); a comment it cannot read hides the parameter
    from papermill.translators import PythonTranslator

    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    seen = {p.name for p in PythonTranslator.inspect(cell)}
    assert seen == {t.id for s in ast.parse(cell.source).body for t in s.targets}, path.name


def test_derivation_levels_beyond_hrnets_branches_are_refused(tmp_path):
    import papermill as pm

    with pytest.raises(pm.PapermillExecutionError, match=r"levels=\[1, 2, 3, 4\] is not valid.*1\.\.3"):
        pm.execute_notebook(str(ROOT / "notebooks" / "01_derivation.ipynb"), str(tmp_path / "01.ipynb"),
                            parameters=dict(levels=[1, 2, 3, 4]), cwd=str(ROOT / "notebooks"), progress_bar=False,
                            kernel_name="python3")


def test_a_notebook_run_by_hand_writes_to_scratch(tmp_path, monkeypatch):
    """The README's papermill example rewrote committed records and figures (issue 18): by default a notebook writes
    to scratch/; only `make study` passes reports ../reports."""
    import papermill as pm

    monkeypatch.delenv("UFPA_REPORTS_DIR", raising=False)
    committed = (ROOT / "reports" / "results" / "numerical_verification.json").read_bytes()
    pm.execute_notebook(str(ROOT / "notebooks" / "02_numerical_verification.ipynb"), str(tmp_path / "02.ipynb"),
                        parameters=dict(n_cases=1000, seed=7), cwd=str(ROOT / "notebooks"), progress_bar=False,
                        kernel_name="python3")
    scratch = json.loads((ROOT / "scratch" / "results" / "numerical_verification.json").read_text())
    assert scratch["config"]["seed"] == 7
    assert (ROOT / "reports" / "results" / "numerical_verification.json").read_bytes() == committed


def test_ad_hoc_commands_write_to_scratch():
    """`python -m ufpa verify --cases 30` rewrote the committed record (issue 18): without --out, verify and bench
    write to scratch/results/; the study's records are made with an explicit --out."""
    env = {k: v for k, v in os.environ.items() if k != "UFPA_REPORTS_DIR"}
    committed = {n: (ROOT / "reports" / "results" / n).read_bytes()
                 for n in ("numerical_verification.json", "bench_codecs.json")}
    for args in (["verify", "--cases", "40", "--quiet"], ["bench", "codecs", "n=5"]):
        res = subprocess.run([sys.executable, "-m", "ufpa", *args], capture_output=True, text=True, cwd=ROOT, env=env)
        assert res.returncode == 0, res.stderr
    for name, data in committed.items():
        assert (ROOT / "scratch" / "results" / name).is_file()
        assert (ROOT / "reports" / "results" / name).read_bytes() == data


_ufpa_imports = records.module_imports


def test_no_import_runs_back_up_the_house():
    """Each module imports only from floors below its own (ufpa.FLOORS, described in the package docstring), so there
    is no import circle; a package's files may import each other."""
    import ufpa

    package = ROOT / "ufpa"
    floor = {name: i for i, names in enumerate(ufpa.FLOORS) for name in names}
    modules = {p.relative_to(package).parts[0].removesuffix(".py") for p in package.glob("*") if
               (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").is_file()}
    assert modules - {"reference"} == set(floor), "every module has a floor in ufpa.FLOORS"
    upward = []
    for path in sorted(package.rglob("*.py")):
        owner = path.relative_to(package).parts[0].removesuffix(".py")
        if owner in ("__init__", "reference"):
            continue
        for target in _ufpa_imports(path, package) - {owner}:
            if floor[target] >= floor[owner]:
                upward.append(f"{path.relative_to(ROOT)} (floor {floor[owner]}) imports {target} (floor "
                              f"{floor[target]})")
    assert upward == []


def test_the_house_test_sees_imports():
    package = ROOT / "ufpa"
    assert _ufpa_imports(package / "train.py", package) >= {"audit", "evaluate", "records", "runtime", "models"}
    assert _ufpa_imports(package / "data" / "coco.py", package) == {"records"}
    assert _ufpa_imports(package / "models" / "hrnet.py", package) == {"geometry", "models"}  # its own: allowed
