"""Command line: ``python -m ufpa <command>``; ``python -m ufpa --help`` lists the commands."""

from __future__ import annotations

import argparse
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

    args = parser.parse_args(argv)
    if getattr(args, "cases", 1) < 1:
        parser.error("--cases must be >= 1")
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
