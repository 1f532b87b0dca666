"""Reproducibility as the README states it: bit for bit on the same CPU type and torch build, within
``runs.CROSS_CPU_TOLERANCE`` under another kernel dispatch. Notebook 05's smoke run is trained under this machine's
dispatch and under AVX2 / scalar kernels (``ATEN_CPU_CAPABILITY`` for torch, ``ONEDNN_MAX_CPU_ISA`` for oneDNN)."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ufpa import records, runs, train
from ufpa.data import synthetic

ROOT = Path(__file__).resolve().parent.parent
DISPATCH = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
            "scalar": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"}}
RUN = """
import sys, torch
from ufpa import train
cfg = train.TrainConfig(**{cfg!r})
train.train(cfg)
print(torch.backends.cpu.get_cpu_capability())
"""


def notebook_smoke(data, tmp_path) -> train.TrainConfig:
    """Notebook 05's defaults (the run nbval executes), with its outputs under tmp_path."""
    return replace(train.TrainConfig(**runs.NOTEBOOK_SMOKE), data=str(data), out=str(tmp_path / "runs"),
                   reports=str(tmp_path / "reports"))


@pytest.mark.skipif(not torch.backends.cpu.get_cpu_capability().startswith("AVX"),
                    reason="kernel dispatch can be changed on x86 CPUs with AVX2 or AVX-512 only")
def test_notebook_smoke_run_is_within_tolerance_under_other_kernels(tmp_path):
    data = tmp_path / "data"
    synthetic.ensure(data, "easy", train=160, val=32, seed=0, workers=2)
    native = torch.backends.cpu.get_cpu_capability()
    others = ["scalar"] + (["avx2"] if native.startswith("AVX512") else [])
    procs, cfgs = {}, {}
    for name in ["native", *others]:
        cfg = notebook_smoke(data, tmp_path / name)
        cfgs[name] = cfg
        fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()}
        env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")}
        procs[name] = subprocess.Popen([sys.executable, "-c", RUN.format(cfg=fields)], cwd=ROOT,
                                       env={**env, **DISPATCH[name]}, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True)
    used = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        used[name] = out.split()[-1]
    assert len(set(used.values())) == len(used), f"the dispatch settings did not take: {used}"
    recs = {name: records.read_record(train.record_path(cfg)) for name, cfg in cfgs.items()}
    for name in others:
        a, b = recs["native"]["results"], recs[name]["results"]
        # the kernels really differ (else this test proves nothing) ...
        assert json.dumps(a["flip"], sort_keys=True) != json.dumps(b["flip"], sort_keys=True), name
        # ... and the numbers stay within the stated tolerance
        assert runs.cross_cpu_differences(recs["native"], recs[name]) == [], (used, name)


def test_tolerance_names_what_is_out_of_it():
    rec = {"results": {"run_id": "r", "learning_curve": [{"epoch": 1, "loss": 2.0}],
                       "flip": {"AP": 0.5, "AR": 0.6, "epe_mean": 10.0, "epe_median": 8.0, "flip_consistency_px": 3.0,
                                "bias_x": 0.1, "bias_y": -0.2}}}
    rec["results"]["no_flip"] = dict(rec["results"]["flip"])
    other = json.loads(json.dumps(rec))
    assert runs.cross_cpu_differences(rec, other) == []
    other["results"]["flip"]["epe_mean"] = 11.0  # 9 % off
    other["results"]["learning_curve"][0]["loss"] = 2.001  # 0.05 %: within
    assert [d.split(":")[0] for d in runs.cross_cpu_differences(rec, other)] == ["flip epe_mean"]
    other["results"]["run_id"] = "s"
    with pytest.raises(ValueError, match="two configs"):
        runs.cross_cpu_differences(rec, other)


def test_the_committed_cross_cpu_records_are_within_tolerance():
    """What the README states: the study run re-trained under AVX-512 and AVX2 kernels (reports/cross_cpu/) agrees with
    the committed record (the pilot's: the study profile it re-trained was the pilot then) within the tolerance, each
    record naming the kernels it ran on."""
    name = "hrnet_w8_tiny-baseline-96x64-udp-s0-4d8f0c5b.json"
    committed = records.read_record(ROOT / "reports" / "pilot" / "results" / "runs" / name)
    others = {isa: records.read_record(ROOT / "reports" / "cross_cpu" / isa / "results" / "runs" / name)
              for isa in ("avx512", "avx2")}
    assert {isa: r["provenance"]["cpu_capability"] for isa, r in others.items()} == {"avx512": "AVX512",
                                                                                     "avx2": "AVX2"}
    assert runs.cross_cpu_differences(others["avx512"], others["avx2"]) == []
    for rec in others.values():
        assert rec["config"] | {"data": "", "out": "", "reports": ""} == committed["config"] | {
            "data": "", "out": "", "reports": ""}
        assert runs.cross_cpu_differences(committed, rec) == []
    # the numbers the README quotes are these records' (flip AP committed / AVX-512 / AVX2)
    quoted = " / ".join(f"{r['results']['flip']['AP']:.3f}" for r in (committed, others["avx512"], others["avx2"]))
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"flip AP {quoted};" in readme


def test_the_code_fingerprint_follows_what_training_imports(tmp_path):
    """A run's identity includes its code: the modules train reaches by import and notebook 05's code cells, and
    nothing the report alone uses (so records pool across commits that changed only the report)."""
    import shutil

    package = tmp_path / "ufpa"
    shutil.copytree(records.REPO_ROOT / "ufpa", package)
    notebook = tmp_path / "05.ipynb"
    shutil.copy(records.TRAINING_NOTEBOOK, notebook)
    before = records.code_fingerprint(notebook=notebook, package=package)
    assert before == records.code_fingerprint(notebook=notebook, package=package)
    for name in ("report.py", "stats.py", "data/synthetic.py"):  # the report's, and the data's (data fingerprint)
        (package / name).write_text((package / name).read_text() + "\n# a change\n")
        assert records.code_fingerprint(notebook=notebook, package=package) == before, name
    assert {"train.py", "evaluate.py", "data/coco.py", "models/hrnet.py", "codecs/udp.py"} <= {
        p.relative_to(package).as_posix() for p in records.training_files(package=package)}
    (package / "models" / "hrnet.py").write_text((package / "models" / "hrnet.py").read_text() + "\n# a model change\n")
    changed = records.code_fingerprint(notebook=notebook, package=package)
    assert changed != before
    nb = json.loads(notebook.read_text())
    nb["cells"][-1]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "an output\n"}]
    notebook.write_text(json.dumps(nb))
    assert records.code_fingerprint(notebook=notebook, package=package) == changed  # outputs do not count
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["source"] = "".join(code["source"]) + "\nx = 1\n"
    notebook.write_text(json.dumps(nb))
    assert records.code_fingerprint(notebook=notebook, package=package) != changed


def test_reproduce_repeats_a_run_and_records_that_two_codes_compute_alike(tmp_path):
    """`python -m ufpa reproduce`: the run re-trained at the code checked out repeats its record bit for bit; under
    another code fingerprint that becomes an equivalence record (what lets the report pool the two codes); a record
    whose numbers were not what its config computes is caught."""
    data = tmp_path / "data"
    synthetic.ensure(data, "easy", train=24, val=6, seed=0)
    cfg = train.TrainConfig(data=str(data), epochs=1, batch_size=8, train_limit=16, warmup_steps=2, eval_every=1,
                            out=str(tmp_path / "runs"), reports=str(tmp_path / "reports"), progress=False)
    train.train(cfg)
    record = train.record_path(cfg)
    rec = json.loads(record.read_text())
    rec["results"]["code_fingerprint"] = "0" * 16  # as if made by another training code
    record.write_text(json.dumps(rec))
    out = runs.reproduce(record, tmp_path / "again")
    assert out["identical"] and out["same_cpu"] and out["differences"] == []
    equivalence = records.read_record(out["equivalence"], kind="code_equivalence")
    assert equivalence["results"]["codes"] == ["0" * 16, records.code_fingerprint()]
    rec["results"]["flip"]["AP"] += 0.01
    record.write_text(json.dumps(rec))
    out = runs.reproduce(record, tmp_path / "third")
    assert not out["identical"] and any(d.startswith("flip AP") for d in out["differences"])
