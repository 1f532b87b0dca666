"""Command line: ``python -m ufpa <command>``; ``python -m ufpa --help`` lists the commands."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path


def _record_out(out):
    """``--out`` checked before any work: it must name a file (a record), not a folder, so a long run's results are
    never lost at the end."""
    if out is None:
        return None
    path = Path(out)
    if path.is_dir():
        raise SystemExit(f"--out {out} is a folder; name the record file instead, e.g. --out {path / 'record.json'}")
    if path.parent.exists() and not path.parent.is_dir():
        raise SystemExit(f"--out {out}: {path.parent} is a file, not a folder")
    return path


def _verify(args) -> int:
    from . import probe, records

    # an ad-hoc check: scratch/ unless told (notebook 02 makes the study's record)
    out = _record_out(args.out) or records.reports_dir(records.SCRATCH) / "results" / "numerical_verification.json"
    _, summary = probe.run_verification(args.cases, args.seed, out, progress=not args.quiet)
    status = "passed" if summary["passed"] else "FAILED"
    print(f"{summary['configs']} configurations {status}: worst interior {summary['worst_interior_px']:.3g} px, "
          f"worst border {summary['worst_border_px']:.3g} px (tolerance {summary['tolerance_px']:g}); record: {out}")
    return 0 if summary["passed"] else 1


def _expected_errors() -> tuple:
    """What bad input, a missing dataset or a stopped run raise: shown as one line, not a traceback."""
    from .records import Busy
    from .runtime import TrainingError

    return (ValueError, OSError, TrainingError, Busy)  # OSError: missing files and folders, permissions, full disks


def _aligned_size(args) -> int:
    from . import geometry

    bad = [n for n in args.sizes if n < 1]
    if bad:
        raise SystemExit(f"aligned-size: {bad} are not image sizes; give sizes >= 1, e.g. aligned-size 256 192")
    for n in args.sizes:
        size = geometry.aligned_size(n, args.levels, args.stem_stride)
        note = "aligned" if size == n else f"not aligned; use {size}"
        print(f"{n}: {note} (branch sizes at {size}: {geometry.branch_sizes(size, args.levels)})")
    return 0


def _parse_overrides(pairs, cfg):
    """nanoGPT-style ``key=value`` overrides of a dataclass config, typed by its fields (never evaluated)."""
    from . import config

    try:
        return config.from_overrides(cfg, pairs)
    except ValueError as err:
        raise SystemExit(f"bad override: {err}") from err


def _train(args) -> int:
    from . import records, train

    cfg = _parse_overrides(args.overrides, train.TrainConfig())
    # a path given here is taken from the current folder; a default (data/, runs/) from the repository root
    given = {pair.partition("=")[0] for pair in args.overrides}
    mine = {name: os.path.abspath(getattr(cfg, name)) for name in train.PATH_FIELDS
            if name in given and getattr(cfg, name)}
    cfg = train.resolve_paths(dataclasses.replace(cfg, **mine))
    try:
        train.validate(cfg)
    except ValueError as err:
        raise SystemExit(f"train: {err}") from err
    run_dir = train.train(cfg)
    rec = records.read_record(train.record_path(cfg), "train_run")["results"]
    for name in ("no_flip", "flip"):
        m = rec[name]
        print(f"{name:8s} AP {m['AP']:.3f}  AP50 {m['AP50']:.3f}  end-point error {m['epe_mean']:.2f} px  "
              f"bias ({m['bias_x']:+.2f}, {m['bias_y']:+.2f}) px  flip consistency {m['flip_consistency_px']:.2f} px")
    print(f"run: {run_dir}; record: {train.record_path(cfg)}")
    return 0


def _sweep(args) -> int:
    from . import sweep

    try:
        i, n = (int(v) for v in args.shard.split("/"))
    except ValueError:
        raise SystemExit(f"--shard {args.shard!r}: use i/n, e.g. --shard 0/4") from None
    try:
        rows = sweep.run_sweep(args.grid, jobs=args.jobs, shard=(i, n), force=args.force, progress=not args.quiet,
                               keep=args.keep, register_only=args.register)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"sweep: {err}") from err
    if args.register:
        return 0
    print(sweep.summary_table(rows))
    print()
    print(sweep.aggregate_table(rows))
    return 1 if any(r["status"] == "failed" for r in rows) else 0


def _device_bench(fn, cfg, kind: str, stem: str, out=None):
    """Run a benchmark whose record is named after the device kind (cpu/cuda); returns (results, record path)."""
    from . import bench, records

    results = fn(cfg)
    device = "cuda" if cfg.device.startswith("cuda") else "cpu"
    # ad hoc by default: the study's bench records are made with --out reports/results/<stem>_<device>.json
    out = out or records.reports_dir(records.SCRATCH) / "results" / f"{stem}_{device}.json"
    records.write_record(out, kind, bench.config_dict(cfg), results, cfg.seed)
    return results, out


def _bench_config(overrides):
    from . import bench

    cfg = _parse_overrides(overrides, bench.BenchConfig())
    try:
        return bench.validate(cfg)
    except ValueError as err:
        raise SystemExit(f"bench: {err}") from err


def _bench(args) -> int:
    from . import bench, records

    args.out = _record_out(args.out)
    if args.what in ("codecs", "synth"):
        fn = bench.bench_codecs if args.what == "codecs" else bench.bench_synth
        kwargs = {}
        for pair in args.overrides:
            key, _, raw = pair.partition("=")
            allowed = ("n", "seed", "repeats") if args.what == "synth" else ("n", "seed")
            if key not in allowed:
                takes = ", ".join(f"{a}=..." for a in allowed)
                raise SystemExit(f"bad override {pair!r}: bench {args.what} takes {takes}")
            try:
                kwargs[key] = int(raw)
            except ValueError:
                raise SystemExit(f"bad override {pair!r}: {key} must be an integer") from None
            if kwargs[key] < (0 if key == "seed" else 1):
                raise SystemExit(f"bad override {pair!r}: {key} must be >= {0 if key == 'seed' else 1}")
        results = fn(**kwargs)
        out = args.out or records.reports_dir(records.SCRATCH) / "results" / f"bench_{args.what}.json"
        records.write_record(out, f"bench_{args.what}", kwargs, results, kwargs.get("seed", 0))
        print(json.dumps(results, indent=1)[:2000])
        print(f"record: {out}")
        return 0
    if args.what == "train":
        cfg = _parse_overrides(args.overrides, bench.TrainBenchConfig())
        results, out = _device_bench(bench.bench_train, cfg, "bench_train", "bench_train", args.out)
        for row in results["data"]:
            print(f"data pipeline, {row['workers']} workers: {row['images_per_s']:8.1f} img/s")
        for row in results["loops"]:
            print(f"{row['model']:14s} {row['mode']:15s} data {row['data_ms_per_image']:6.3f}  step "
                  f"{row['step_ms_per_image']:6.3f}  loop {row['loop_ms_per_image']:6.3f} ms/img (x"
                  f"{row['loop_vs_today']:.2f} of today's)  eval {row['eval_ms_per_image']:6.3f} ms/img")
        print(f"data keeps up with the fastest step: {results['data_keeps_up']}; record: {out}")
        return 0
    if args.what == "profile":
        cfg = _bench_config(args.overrides)
        results, out = _device_bench(bench.profile_models, cfg, "profile_models", f"profile_models_{cfg.model}",
                                     args.out)
        for row in results["rows"]:
            groups = ", ".join(f"{k} {v:.1f}" for k, v in row["groups_ms_per_step"].items())
            print(f"{row['variant']:10s} {row['input_size']} {row['ms_per_step']:8.1f} ms/step ({groups})")
        print(f"record: {out}")
        return 0
    if args.what != "models":
        raise SystemExit(f"unknown benchmark {args.what!r}; available: models, profile, train, codecs, synth")
    cfg = _bench_config(args.overrides)
    results, out = _device_bench(bench.bench_models, cfg, "bench_models", f"bench_models_{cfg.model}", args.out)
    for row in results["rows"]:
        print(f"{row['variant']:10s} {row['input_size']} {row['images_per_s']:8.2f} img/s  step "
              f"{row['step_s_median'] * 1e3:8.1f} ms  x{row['step_time_ratio_vs_baseline'] or 0:.3f}  "
              f"{row['gflops']:.3f} GFLOPs/img  "
              f"peak {row['peak_memory_mb']:.0f} MB ({row['peak_memory_kind']})")
    for variant, ratio in results["ratio_vs_baseline"].items():
        print(f"{variant}/baseline step time x{ratio:.3f} (goal <= {results['goal_ratio'][variant]:.3f}: "
              f"{results['goal_over_flops'][variant]} x its FLOP ratio): "
              f"{'met' if results['goal_met'][variant] else 'missed'}")
        held = results["excess_ops"].get(variant)
        if held:
            ops = ", ".join(f"{o['op']} +{o['extra_ms_per_step']:.1f}" for o in held["ops"][:3])
            print(f"  held back by (ms per step beyond the baseline's {held['extra_ms_per_step']:.1f}): {ops}")
    print(f"record: {out}")
    return 0


def _synth(args) -> int:
    from .data import synthetic

    if args.train < 0 or args.val < 0 or args.seed < 0 or args.workers < 1:
        raise SystemExit("synth: --train/--val/--seed must be >= 0 and --workers >= 1")
    try:  # checked before generate touches the output folder
        cfg = synthetic.synth_config(args.difficulty, height=args.height, width=args.width)
    except ValueError as err:
        raise SystemExit(f"synth: {err}") from err
    try:
        paths = synthetic.generate(args.out, args.train, args.val, args.seed, cfg, workers=args.workers,
                                   progress=not args.quiet)
    except (ValueError, RuntimeError) as err:
        raise SystemExit(f"synth: {err}") from err
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def _report(args) -> int:
    from . import page, records, report, sweep

    root = sweep.reports_folder(sweep.load_grid(args.profile))  # the profile's own folder, never another's
    if args.tables_only:  # tables and figures from the records, no notebooks (seconds)
        shown = report.render_all(root / "results", root / "tables", root / "figures",
                                  flip_test=report.shown_flip_test(root / "results"))
        if report.is_study_folder(root / "results"):
            changed = report.update_readme(records.REPO_ROOT / "README.md", root / "results", root / "tables")
            readme = "updated" if changed else "already up to date"
        else:  # e.g. UFPA_REPORTS_DIR=/scratch: those records never speak for the committed study
            readme = f"left alone ({root} is not the study's reports/)"
        print(f"tables {sorted(shown)} in {root / 'tables'}; figures in {root / 'figures'}; README {readme}")
        return 0
    if args.check_only:
        print(page.check_in_browser(root / "study.html", root / "figures" / "study_page.png"))
        return 0
    out = page.make_report(args.profile, root, screenshot=not args.no_browser, progress=not args.quiet)
    print(f"page: {out['page']}")
    if "browser" in out:
        print(f"browser check: {out['browser']}")
    return 0


def _gpu_check(args) -> int:
    from . import gpu_check, records

    # given: from the current folder, as every path on the command line; the default: the clone's scratch/
    out = Path(os.path.abspath(args.out)) if args.out else records.SCRATCH / "gpu_check"
    summary = gpu_check.gpu_check(out)
    ok = sum(r["status"] == "ok" for r in summary["steps"])
    print(f"gpu-check {'passed' if summary['passed'] else 'FAILED'}: {ok}/{len(summary['steps'])} steps; records in "
          f"{out / 'results'}")
    return 0 if summary["passed"] else 1


def _notebook_parameters(args) -> int:
    from . import records, runs

    path = Path(args.notebook)
    if not path.is_file():
        raise SystemExit(f"notebook-parameters: no notebook at {path}; give notebook 05's path")
    if args.check:
        current = runs.parameters_cell_of(path)
        if current != runs.parameters_cell():
            print(f"{path}: its parameters cell is out of step with ufpa.train.TrainConfig; run `python -m ufpa "
                  f"notebook-parameters {path}`", file=sys.stderr)
            return 1
        print(f"{path}: parameters cell in step with TrainConfig")
        return 0
    changed = runs.write_parameters_cell(path)
    print(f"{records.repo_relative(path)}: parameters cell {'rewritten' if changed else 'already in step'} from "
          "TrainConfig" + ("; re-execute the notebook (make notebooks) so its outputs follow" if changed else ""))
    return 0


def _reproduce(args) -> int:
    from . import runs

    record = Path(os.path.abspath(args.record))
    if not record.is_file():
        raise SystemExit(f"reproduce: no record at {record}; give a training record (results/runs/<run_id>.json)")
    out = runs.reproduce(record, os.path.abspath(args.scratch) if args.scratch else None)
    if out["identical"]:
        print(f"{out['run_id']}: repeated bit for bit (code {out['old_code']} then {out['new_code']}, "
              f"{'same' if out['same_cpu'] else 'another'} CPU type)"
              + (f"; equivalence recorded in {out['equivalence']}" if out["equivalence"] else ""))
        return 0
    print(f"{out['run_id']}: differs from its record ({len(out['differences'])} numbers), e.g. "
          + "; ".join(out["differences"][:3]) + ("" if out["same_cpu"] else ". It ran on another CPU type, where "
                                                 "runs differ by rounding: compare within ufpa.runs."
                                                 "CROSS_CPU_TOLERANCE, or reproduce on the record's CPU type"),
          file=sys.stderr)
    return 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ufpa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser("verify", help="check ufpa.geometry against the real torch ops and write a record")
    verify.add_argument("--cases", type=int, default=2400, help="random configurations to probe")
    verify.add_argument("--seed", type=int, default=0)
    verify.add_argument("--out", help="record path (default: scratch/results/numerical_verification.json)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(run=_verify)

    sizes = sub.add_parser("aligned-size", help="smallest aligned input size >= each request (HRNet: 32m+1)")
    sizes.add_argument("sizes", type=int, nargs="+")
    sizes.add_argument("--levels", type=int, default=4, help="branches (HRNet: 4)")
    sizes.add_argument("--stem-stride", type=int, default=4)
    sizes.set_defaults(run=_aligned_size)

    synth = sub.add_parser("synth", help="generate a SynthPose dataset in COCO format",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    synth.add_argument("--out", required=True, help="dataset folder (images/ and annotations/ go inside)")
    synth.add_argument("--train", type=int, default=2000, help="training images")
    synth.add_argument("--val", type=int, default=200, help="val images")
    synth.add_argument("--seed", type=int, default=0, help="the dataset's seed (same seed, same images)")
    synth.add_argument("--height", type=int, default=256, help="image height (px)")
    synth.add_argument("--width", type=int, default=192, help="image width (px)")
    synth.add_argument("--difficulty", default="standard", help="standard, easy (the cpu profile's data, with "
                       "--train 4000 --val 400) or localise (easy, each side's limbs tinted apart)")
    synth.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes rendering images")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(run=_synth)

    bench = sub.add_parser("bench", help="benchmarks that write records, e.g. `bench models model=hrnet_w32 batch=8`")
    bench.add_argument("what", help="models, profile (where a step's time goes), train, codecs or synth")
    bench.add_argument("overrides", nargs="*", help="key=value overrides of ufpa.bench.BenchConfig")
    bench.add_argument("--out", help="record path (default: scratch/results/bench_models_<model>_<device>.json; the "
                       "study's records: --out reports/results/...)")
    bench.set_defaults(run=_bench)

    from . import config
    from .train import TrainConfig

    train = sub.add_parser("train", help="train and evaluate one model, e.g. `train model=hrnet_w8_tiny epochs=5`",
                           formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="keys (key=default, then what it is):\n" + config.help_table(TrainConfig))
    train.add_argument("overrides", nargs="*", help="key=value overrides of ufpa.train.TrainConfig")
    train.set_defaults(run=_train)

    sweep = sub.add_parser("sweep", help="run a YAML grid of training runs through notebook 05 (resumable)")
    sweep.add_argument("grid", help="grid file, e.g. profiles/cpu.yaml")
    sweep.add_argument("--jobs", type=int, default=1, help="runs at once")
    sweep.add_argument("--shard", default="0/1", help="i/n: run only runs i, i+n, ... (cluster array jobs)")
    sweep.add_argument("--force", action="store_true", help="re-run runs whose record exists")
    sweep.add_argument("--keep", action="store_true", help="keep committed records this machine would reproduce "
                       "(same training code, data, CPU type, torch) instead of re-training them: resume a study "
                       "split over sessions on a fresh machine")
    sweep.add_argument("--register", action="store_true", help="register the profile's design and train nothing "
                       "(a design whose runs another sweep is training)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(run=_sweep)

    gpu = sub.add_parser("gpu-check", help="the GPU measurements (bench eager and CUDA graph, 3 min of HRNet-W32 "
                         "training) as one script of at most 8 minutes; refuses a machine without CUDA")
    gpu.add_argument("--out", help="folder for its records and logs (default: the clone's scratch/gpu_check; the "
                     "study's: reports/gpu_check)")
    gpu.set_defaults(run=_gpu_check)

    params = sub.add_parser("notebook-parameters", help="write notebook 05's parameters cell from "
                            "ufpa.train.TrainConfig (after changing a field, its default or its comment)")
    params.add_argument("notebook", nargs="?", default="notebooks/05_train.ipynb")
    params.add_argument("--check", action="store_true", help="only say whether it is in step (exit 1 if not)")
    params.set_defaults(run=_notebook_parameters)

    again = sub.add_parser("reproduce", help="re-train a recorded run with the code checked out now and compare it "
                           "bit for bit; if it repeats under another training code, record that the two codes "
                           "pool")
    again.add_argument("record", help="a training record, e.g. reports/results/runs/<run_id>.json")
    again.add_argument("--scratch", default=None, help="where the re-run goes (default: scratch/reproduce)")
    again.set_defaults(run=_reproduce)

    rep = sub.add_parser("report", help="notebooks 05 and 06, the tables and figures, and reports/study.html")
    rep.add_argument("--profile", default="profiles/cpu.yaml", help="the sweep whose baseline run notebook 05 shows")
    rep.add_argument("--tables-only", action="store_true", help="only the tables and figures, from the records")
    rep.add_argument("--check-only", action="store_true", help="only check reports/study.html in headless Chromium")
    rep.add_argument("--no-browser", action="store_true", help="skip the Chromium check")
    rep.add_argument("--quiet", action="store_true", help="no progress bars")
    rep.set_defaults(run=_report)

    args = parser.parse_args(argv)
    if getattr(args, "cases", 1) < 1:
        parser.error("--cases must be >= 1")
    try:
        return args.run(args)
    except _expected_errors() as err:
        # an expected error is one clear line (its message names the problem and the fix); UFPA_TRACEBACK=1 shows
        # where it came from
        if os.environ.get("UFPA_TRACEBACK"):
            raise
        print(f"ufpa {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
