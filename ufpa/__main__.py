"""Command line: ``python -m ufpa <command>``; ``python -m ufpa --help`` lists the commands."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _verify(args) -> int:
    from . import probe, records

    out = args.out or records.reports_dir() / "results" / "numerical_verification.json"
    _, summary = probe.run_verification(args.cases, args.seed, out, progress=not args.quiet)
    status = "passed" if summary["passed"] else "FAILED"
    print(f"{summary['configs']} configurations {status}: worst interior {summary['worst_interior_px']:.3g} px, "
          f"worst border {summary['worst_border_px']:.3g} px (tolerance {summary['tolerance_px']:g}); record: {out}")
    return 0 if summary["passed"] else 1


def _aligned_size(args) -> int:
    from . import geometry

    for n in args.sizes:
        size = geometry.aligned_size(n, args.levels, args.stem_stride)
        note = "aligned" if size == n else f"not aligned; use {size}"
        print(f"{n}: {note} (branch sizes at {size}: {geometry.branch_sizes(size, args.levels)})")
    return 0


def _parse_overrides(pairs, cfg):
    """nanoGPT-style ``key=value`` overrides of a dataclass config, parsed as Python literals (never evaluated)."""
    import ast
    import dataclasses

    fields = {f.name for f in dataclasses.fields(cfg)}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"bad override {pair!r}: use key=value with key one of {sorted(fields)}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word such as device=cpu
        setattr(cfg, key, tuple(value) if isinstance(value, list) else value)
    return cfg


def _bench(args) -> int:
    from . import bench, records

    if args.what in ("codecs", "synth"):
        fn = bench.bench_codecs if args.what == "codecs" else bench.bench_synth
        kwargs = {}
        for pair in args.overrides:
            key, _, raw = pair.partition("=")
            allowed = ("n", "seed", "repeats") if args.what == "synth" else ("n", "seed")
            if key not in allowed:
                takes = ", ".join(f"{a}=..." for a in allowed)
                raise SystemExit(f"bad override {pair!r}: bench {args.what} takes {takes}")
            kwargs[key] = int(raw)
        results = fn(**kwargs)
        out = args.out or records.reports_dir() / "results" / f"bench_{args.what}.json"
        records.write_record(out, f"bench_{args.what}", kwargs, results, kwargs.get("seed", 0))
        print(json.dumps(results, indent=1)[:2000])
        print(f"record: {out}")
        return 0
    if args.what != "models":
        raise SystemExit(f"unknown benchmark {args.what!r}; available: models, codecs, synth")
    cfg = _parse_overrides(args.overrides, bench.BenchConfig())
    results = bench.bench_models(cfg)
    device = "cuda" if cfg.device.startswith("cuda") else "cpu"
    out = args.out or records.reports_dir() / "results" / f"bench_models_{cfg.model}_{device}.json"
    records.write_record(out, "bench_models", bench.config_dict(cfg), results, cfg.seed)
    for row in results["rows"]:
        print(f"{row['variant']:10s} {row['input_size']} {row['images_per_s']:8.2f} img/s  step "
              f"{row['step_s_median'] * 1e3:8.1f} ms  x{row['step_time_ratio_vs_baseline'] or 0:.3f}  "
              f"peak {row['peak_memory_mb']:.0f} MB ({row['peak_memory_kind']})")
    print(f"ufpa/baseline step time {results['ufpa_vs_baseline']} (goal <= {results['goal_ratio']}); record: {out}")
    return 0


def _synth(args) -> int:
    from .data import synthetic

    cfg = synthetic.SynthConfig(height=args.height, width=args.width)
    paths = synthetic.generate(args.out, args.train, args.val, args.seed, cfg, workers=args.workers,
                               progress=not args.quiet)
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ufpa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser("verify", help="check ufpa.geometry against the real torch ops and write a record")
    verify.add_argument("--cases", type=int, default=2400, help="random configurations to probe")
    verify.add_argument("--seed", type=int, default=0)
    verify.add_argument("--out", help="record path (default: reports/results/numerical_verification.json)")
    verify.add_argument("--quiet", action="store_true", help="no progress bar")
    verify.set_defaults(run=_verify)

    sizes = sub.add_parser("aligned-size", help="smallest aligned input size >= each request (HRNet: 32m+1)")
    sizes.add_argument("sizes", type=int, nargs="+")
    sizes.add_argument("--levels", type=int, default=4, help="branches (HRNet: 4)")
    sizes.add_argument("--stem-stride", type=int, default=4)
    sizes.set_defaults(run=_aligned_size)

    synth = sub.add_parser("synth", help="generate a SynthPose dataset in COCO format")
    synth.add_argument("--out", required=True, help="dataset folder (images/ and annotations/ go inside)")
    synth.add_argument("--train", type=int, default=2000)
    synth.add_argument("--val", type=int, default=200)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--height", type=int, default=256)
    synth.add_argument("--width", type=int, default=192)
    synth.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(run=_synth)

    bench = sub.add_parser("bench", help="benchmarks that write records, e.g. `bench models model=hrnet_w32 batch=8`")
    bench.add_argument("what", help="models, codecs or synth")
    bench.add_argument("overrides", nargs="*", help="key=value overrides of ufpa.bench.BenchConfig")
    bench.add_argument("--out", help="record path (default: reports/results/bench_models_<model>_<device>.json)")
    bench.set_defaults(run=_bench)

    args = parser.parse_args(argv)
    if getattr(args, "cases", 1) < 1:
        parser.error("--cases must be >= 1")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
