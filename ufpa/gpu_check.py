"""``make gpu-check``: the GPU measurements the study needs, as one prepared script for the first GPU lent.

Every step is a ``python -m ufpa`` command run in its own process under its own time limit, so a step that hangs or
dies is reported (its cause, the tail of its output) and the next one still runs; the steps' timeouts add up to at
most ``BUDGET_S`` (8 minutes). What the steps measure (records under ``<out>/results/``, the summary
``<out>/results/gpu_check.json``):

1. standard SynthPose, small (2,000 train / 200 val images), the data of step 4;
2. ``bench models`` eager, hrnet_w32 at 256x192, batch 64 and 128, every alignment and timm's hrnet_w32 beside them;
3. the same captured in one CUDA graph;
4. about three minutes of HRNet-W32 training at 256x192 through ``ufpa train`` (bf16, channels_last, CUDA graph: the
   runtime's CUDA defaults), whose record shows its loss per epoch.

It refuses a machine without CUDA (it measures nothing there); ``run_steps`` itself is tested on CPU.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import records

BUDGET_S = 480  # the whole check, every step's limit added up
ALIGNMENT_VARIANTS = "['baseline','bilinear','bilinear_corners','ufpa','ufpa_any','learned']"


@dataclass
class Step:
    name: str
    command: list[str]  # arguments after `python -m ufpa`
    timeout_s: int
    env: dict = field(default_factory=dict)


def plan(out: Path) -> list[Step]:
    """The check's steps, records written under ``out``."""
    results, data = out / "results", out / "data" / "synthpose-standard"
    steps = [Step("synthpose", ["synth", "--out", str(data), "--train", "2000", "--val", "200", "--difficulty",
                                "standard", "--quiet"], 60)]
    for graph in (False, True):
        for batch in (64, 128):
            kind = "graph" if graph else "eager"
            steps.append(Step(f"bench_{kind}_b{batch}", [
                "bench", "models", "model=hrnet_w32", "input_size=[256,192]", f"batch={batch}", "steps=20",
                "warmup=5", f"cuda_graph={graph}", f"variants={ALIGNMENT_VARIANTS}", "compare_timm=True",
                "--out", str(results / f"bench_models_hrnet_w32_{kind}_b{batch}_cuda.json")], 60))
    steps.append(Step("train_w32", [
        "train", "model=hrnet_w32", "input_size=[256,192]", "head=udp", "codec=udp", "batch_size=64", "epochs=6",
        "lr=0.001", "warmup_steps=50", "workers=8", "eval_every=2", f"data={data}", f"out={out / 'runs'}",
        f"reports={out}", "progress=False"], 170))
    return steps


def run_steps(steps: list[Step], out: Path, python: str = sys.executable) -> dict:
    """Run each step in its own process under its own limit; a step that times out or fails is reported with the
    tail of its output and the next step runs. Returns (and writes) the summary."""
    out = Path(out)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows = []
    for step in steps:
        log = logs / f"{step.name}.log"
        start = time.perf_counter()
        with open(log, "w", encoding="utf-8") as fh:
            proc = subprocess.Popen([python, "-m", "ufpa", *step.command], stdout=fh, stderr=subprocess.STDOUT,
                                    env={**os.environ, **step.env}, start_new_session=True, cwd=records.REPO_ROOT)
            try:
                code = proc.wait(timeout=step.timeout_s)
                status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # its children too (the bench's worker processes)
                proc.wait()
                status = f"timed out after {step.timeout_s} s"
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-8:]
        rows.append({"step": step.name, "status": status, "seconds": round(time.perf_counter() - start, 1),
                     "command": "python -m ufpa " + " ".join(step.command), "log": records.repo_relative(log),
                     "tail": tail})
        print(f"{step.name}: {status} in {rows[-1]['seconds']:.0f} s" + ("" if status == "ok" else
                                                                         f" — {tail[-1] if tail else 'no output'}"),
              flush=True)
    summary = {"steps": rows, "passed": all(r["status"] == "ok" for r in rows), "budget_s": BUDGET_S,
               "plan": [asdict(s) for s in steps]}
    records.write_record(out / "results" / "gpu_check.json", "gpu_check", {"steps": [s.name for s in steps]},
                         summary, 0)
    return summary


def check_device() -> str:
    """The CUDA device's name, or an error that says this check needs one."""
    import torch

    if not torch.cuda.is_available():
        raise ValueError("gpu-check measures a CUDA GPU and torch sees none here (torch "
                         f"{torch.__version__}); run it on a GPU machine with a CUDA build of torch (make gpu-check "
                         "keeps the CUDA wheel: UFPA_CPU=0)")
    return torch.cuda.get_device_name()


def gpu_check(out) -> dict:
    check_device()
    return run_steps(plan(Path(out)), Path(out))
