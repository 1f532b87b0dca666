"""The study's tables and figures, as functions of its results records.

``load_runs`` reads every training record under a results folder into one tidy frame (one row per run and flip-test
setting); ``aggregate`` and ``paired`` summarise it over seeds as mean ± 95 % confidence half-width (``ufpa.stats``:
Student t, so three seeds give wide intervals, as they should); the table functions return numeric frames that
``write_table`` saves as Markdown, CSV and LaTeX; the figure functions draw from the same frames. Nothing here trains or
evaluates: a number that is not in a record cannot appear in a table.

Conventions: AP and AR are COCO keypoint AP/AR in [0, 1] (tables print them as such); end-point error, |bias| and flip
consistency are in pixels of the original image; an alignment's gain is its paired difference to the baseline run with
the same model, head, codec, nominal input size, flip-test setting and seed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import integrity, records, stats, viz
from .evaluate import FOUND_RADIUS
from .models import ALL_ALIGNMENTS
from .models._layers import PADDING_MODE, UPSAMPLE_MODE
from .train import arm_name, condition

# Method order of the paper's tables is the registry's (ALL_ALIGNMENTS); an alignment keeps its colour in every figure.
COLOURS = viz.ALIGNMENT_COLOURS
METRICS = ("AP", "AP50", "AP75", "AR", "epe_px", "abs_bias_px", "flip_consistency_px")
LABELS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "AR": "AR", "epe_px": "EPE (px)", "abs_bias_px": "|bias| (px)",
          "abs_bias_floor_px": "|bias| noise floor (px)",
          "flip_consistency_px": "flip cons. (px)", "params_M": "params (M)", "gflops": "GFLOPs",
          "size": "nominal size", "input_size": "run at"}
PUBLISHED = Path(__file__).resolve().parent / "reference" / "published_coco_val.csv"


# --- records into a frame --------------------------------------------------------------------------------------------

def _size(hw) -> str:
    return f"{int(hw[0])}x{int(hw[1])}"


# A run has converged when its val AP (no flip) gained less than this over the last quarter of its epochs (issue 21).
PLATEAU_AP = 0.005


def _evaluations(record: dict) -> list[tuple[int, float]]:
    """(epoch, val AP no flip) of every evaluation in the run's learning curve, in order."""
    return [(h["epoch"], h["val_AP"]) for h in record["results"]["learning_curve"] if h.get("val_AP") is not None]


def plateau(record: dict) -> tuple[bool, float]:
    """(met, gain): the val AP (no flip) the run gained from its last evaluation at or before 3/4 of its epochs to its
    end (the final evaluation); met when that gain is below ``PLATEAU_AP``. A run with no evaluation that early has
    not shown a plateau (met False, gain NaN)."""
    epochs = record["config"]["epochs"]
    early = [ap for epoch, ap in _evaluations(record) if epoch <= 0.75 * epochs]
    if not early:
        return False, float("nan")
    gain = record["results"]["no_flip"]["AP"] - early[-1]
    return bool(gain < PLATEAU_AP), float(gain)


def plateau_trend(record: dict) -> float:
    """The val AP (no flip) gain over the last quarter of training read from the least-squares line through every
    evaluation there (the final one included), not from two of them. A post-hoc reading, beside the registered
    ``plateau``: two evaluations differ by eval noise alone (SD up to 0.009 AP on a run near AP 0.73), a line through
    ~19 of them much less. NaN with fewer than 3 evaluations in that quarter."""
    epochs = record["config"]["epochs"]
    points = [(epoch, ap) for epoch, ap in _evaluations(record) if 0.75 * epochs <= epoch < epochs]
    points.append((epochs, record["results"]["no_flip"]["AP"]))
    if len(points) < 3:
        return float("nan")
    epoch, ap = np.asarray(points, float).T
    return float(np.polyfit(epoch, ap, 1)[0] * epochs / 4)


def run_rows(record: dict) -> list[dict]:
    """Two rows (no flip, flip test) of the tidy frame from one ``train_run`` record."""
    cfg, res, prov = record["config"], record["results"], record["provenance"]
    curve = res["learning_curve"]
    mis = res.get("misalignment") or {}
    converged, late_gain = plateau(record)
    trend_gain = plateau_trend(record)
    rows = []
    for key, flip in (("no_flip", False), ("flip", True)):
        m = res[key]
        rows.append({
            "run_id": res["run_id"], "model": cfg["model"], "alignment": cfg["alignment"], "head": cfg["head"],
            "codec": cfg["codec"], "size": _size(cfg["input_size"]), "input_size": _size(res["input_size"]),
            "pixels": int(cfg["input_size"][0]) * int(cfg["input_size"][1]), "seed": cfg["seed"], "flip_test": flip,
            "epochs": cfg["epochs"], "data": Path(cfg["data"]).name, "data_fingerprint": res.get("data_fingerprint"),
            "AP": m["AP"], "AP50": m["AP50"], "AP75": m["AP75"], "AR": m["AR"], "epe_px": m["epe_mean"],
            "epe_median_px": m["epe_median"], "abs_bias_px": abs_bias(m["bias_x_per_joint"], m["bias_y_per_joint"]),
            "abs_bias_floor_px": abs_bias_floor(m),
            "flip_consistency_px": m["flip_consistency_px"], "pck_0.05": m.get("pck@0.05", np.nan),
            "found_rate": m.get("found_rate", np.nan), "epe_found_px": m.get("epe_found", np.nan),
            "swap_rate": m.get("swap_rate", np.nan), "pck_0.01": m.get("pck@0.01", np.nan),
            "pck_0.02": m.get("pck@0.02", np.nan),
            "padding": cfg.get("padding", ""),
            "arm": arm_name(cfg["alignment"], cfg.get("padding", ""), res["input_size"], cfg["codec"]),
            "params_M": res["params"] / 1e6, "gflops": res["gflops"], "wall_s": res["wall_s"],
            "images_per_s": res["images_per_s"], "final_loss": curve[-1]["loss"] if curve else None,
            "plateau": converged, "late_gain_AP": late_gain,
            "trend_gain_AP": trend_gain,
            "misalignment_px": mis.get("max_abs_px", np.nan), "misalignment_mean_px": mis.get("mean_abs_px", np.nan),
            "border_misalignment_px": mis.get("border_max_abs_px", np.nan),
            "git_commit": prov["git_commit"][:10], "device": prov["device"], "torch": prov["torch"],
            "time_utc": prov["time_utc"],
        })
    return rows


def run_records(results_dir) -> list[tuple[Path, dict]]:
    """Every training record under ``results_dir/runs`` (COCO result files and failure notes are not records)."""
    folder = Path(results_dir) / "runs"
    if not folder.is_dir():
        raise FileNotFoundError(f"no training records in {folder}; run `make study` (or `python -m ufpa sweep "
                                f"profiles/cpu.yaml`) first")
    out = [(p, records.read_record(p, kind="train_run")) for p in records.run_record_paths(folder)]
    for path, rec in out:
        integrity.check_record_identity(path, rec)  # a record is the run its name says, or nothing is reported
    for path, rec in out:  # a results file left by another write of this run must not pass as this record's
        want, results = rec["results"].get("keypoints_sha256"), path.with_suffix(".keypoints.json")
        if want and results.is_file() and hashlib.sha256(results.read_bytes()).hexdigest() != want:
            raise ValueError(f"{results} is not the results file of the record {path.name} (its hash differs): the "
                             "run was written twice or cut short between the two; re-run it")
    return out


_RECORD_METRICS = ("AP", "AP50", "AP75", "AR", "epe_mean", "epe_median", "flip_consistency_px", "bias_x", "bias_y")


def _condition(rec: dict) -> dict:
    """What must be equal between the seeds of one condition: the run's identity but the seed
    (``train.condition``: where things lived and how they were executed do not count, the data by its folder's name),
    and the data's fingerprint."""
    return {**condition(rec["config"]), "data_fingerprint": rec["results"].get("data_fingerprint")}


def code_identity(rec: dict) -> str:
    """The version of the code a run's numbers came from: the training code's fingerprint
    (``records.code_fingerprint``), or, for a record made before there was one, its commit."""
    code = rec["results"].get("code_fingerprint")
    return f"code {code}" if code else f"commit {rec['provenance']['git_commit'][:10]}"


def check_pooling(recs: list[tuple[Path, dict]], one_commit: bool = True) -> None:
    """What a report may pool, checked before anything is averaged: each record once; every metric a finite number;
    the seeds of a condition (model, head, codec, size, alignment) distinct seeds of one identical config (everything
    but the seed equal, the data's folder name and fingerprint included); and, unless ``one_commit=False``, every
    record made with one training code (``code_identity``), or with codes an equivalence record joins
    (``runs.reproduce``). Anything else is refused with the files and the difference named."""
    seen = {}
    for path, rec in recs:
        rid = rec["results"]["run_id"]
        if rid in seen:
            raise ValueError(f"{path.name} and {seen[rid].name} are the same run ({rid}): a copied record would count "
                             "twice; remove one")
        seen[rid] = path
        for name in ("no_flip", "flip"):
            for key in _RECORD_METRICS:
                value = rec["results"][name].get(key)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"{path.name}: {name} {key} is {value!r}, not a finite number: the run failed or "
                                     "the record was edited; re-run it (a seed must not drop out silently)")
    groups: dict = {}
    for path, rec in recs:
        cfg = rec["config"]
        key = (cfg["model"], cfg["head"], cfg["codec"], _size(cfg["input_size"]), cfg["alignment"],
               cfg.get("padding") or "own padding")
        groups.setdefault(key, []).append((path, rec))
    for key, members in groups.items():
        first_path, first = members[0]
        for path, rec in members[1:]:
            a, b = _condition(first), _condition(rec)
            diff = [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            if diff:
                raise ValueError(f"{first_path.name} and {path.name} are seeds of one condition {'/'.join(key)} but "
                                 f"of different configs ({'; '.join(diff)}): report them apart (another results "
                                 "folder) or re-run one")
        seeds = [rec["config"]["seed"] for _, rec in members]
        if len(set(seeds)) != len(seeds):
            twice = sorted({s for s in seeds if seeds.count(s) > 1})
            raise ValueError(f"condition {'/'.join(key)} has seed(s) {twice} more than once: a seed counts once")
    integrity.check_data(recs)
    codes = {code_identity(rec) for _, rec in recs}
    if one_commit and len(codes) > 1 and len(integrity.code_groups(codes, {p.parent.parent for p, _ in recs})) > 1:
        named = ", ".join(sorted(codes))
        raise ValueError(f"the records were made with {len(codes)} versions of the training code ({named}): a report "
                         "is of one, or of codes shown to compute the same numbers (`python -m ufpa reproduce "
                         "<record>` re-trains a record at the code checked out and, if it repeats bit for bit, says "
                         "so in <results>/equivalence/); else re-run the others at one commit, or pass "
                         "one_commit=False to pool them knowingly")


def load_runs(results_dir, one_commit: bool = True) -> pd.DataFrame:
    """The tidy frame of every training record in ``results_dir`` (see ``run_rows``), after ``check_pooling``."""
    recs = run_records(results_dir)
    check_pooling(recs, one_commit)
    integrity.check_named(recs, design_records(results_dir))
    rows = [row for _, rec in recs for row in run_rows(rec)]
    if not rows:
        raise ValueError(f"{Path(results_dir) / 'runs'} holds no training records; run a sweep first")
    frame = pd.DataFrame(rows)
    frame["alignment"] = pd.Categorical(frame["alignment"], [v for v in ALL_ALIGNMENTS if v in set(frame["alignment"])])
    return frame.sort_values(["model", "pixels", "alignment", "codec", "flip_test", "seed"]).reset_index(drop=True)


def learning_curves(results_dir) -> pd.DataFrame:
    """One row per (run, epoch) of every training record: loss and, where evaluated, val AP and end-point error (no
    flip); the last epoch takes the final evaluation's no-flip numbers, so every curve ends where the record does."""
    rows = []
    for _, rec in run_records(results_dir):
        cfg, res = rec["config"], rec["results"]
        curve = res["learning_curve"]
        for i, h in enumerate(curve):
            last = i == len(curve) - 1 and h["epoch"] == cfg["epochs"]
            ap = res["no_flip"]["AP"] if last else h.get("val_AP")
            epe = res["no_flip"]["epe_mean"] if last else h.get("val_epe_mean")
            rows.append({"run_id": res["run_id"], "model": cfg["model"], "alignment": cfg["alignment"],
                         "arm": arm_name(cfg["alignment"], cfg.get("padding", ""), res["input_size"], cfg["codec"]),
                         "size": _size(cfg["input_size"]), "seed": cfg["seed"], "epoch": h["epoch"],
                         "loss": h["loss"], "lr": h.get("lr"), "val_AP": ap, "val_epe_px": epe})
    return pd.DataFrame(rows)


def compare_field(results_dir, field: str, metrics=("AP", "epe_px"), flip_test: bool = True) -> pd.DataFrame:
    """Runs of one results folder that differ only in the config ``field`` (two values, e.g. ``bf16`` off and on),
    compared per metric: each value's mean and 95 % CI over its seeds, and the paired difference (second value minus
    first, same seed) with its CI and the sign-flip p-value. Each value's runs must pool on their own
    (``check_pooling``)."""
    recs = run_records(results_dir)
    values = sorted({json.dumps(rec["config"].get(field)) for _, rec in recs})
    if len(values) != 2:
        raise ValueError(f"{results_dir}: the records hold {len(values)} values of {field!r} ({values}); comparing "
                         "needs exactly two")
    frames = []
    for value in values:
        group = [(p, r) for p, r in recs if json.dumps(r["config"].get(field)) == value]
        check_pooling(group)
        frame = pd.DataFrame([row for _, r in group for row in run_rows(r)])
        frames.append(frame[frame["flip_test"] == flip_test].set_index(["model", "size", "alignment", "seed"]))
    common = frames[0].index.intersection(frames[1].index)
    rows = []
    for m in metrics:
        diff = (frames[1].loc[common, m] - frames[0].loc[common, m]).to_numpy(float)
        row = {"metric": m, "pairs": len(common)}
        for name, frame in zip(values, frames):
            row[f"{field}={name}"], row[f"{field}={name}_ci"], _ = stats.mean_ci(frame[m])
        row["difference"], row["difference_ci"], _ = stats.mean_ci(diff)
        row["p_sign_flip"] = stats.sign_flip_test(diff)
        rows.append(row)
    return pd.DataFrame(rows).set_index("metric")


# --- aggregation -----------------------------------------------------------------------------------------------------

KEYS = ["model", "head", "codec", "size", "alignment", "padding", "flip_test"]


def aggregate(frame: pd.DataFrame, metrics=METRICS, level: float = 0.95) -> pd.DataFrame:
    """Mean and confidence half-width (``<metric>_ci``) over seeds per model, head, codec, size, alignment, flip test
    (``stats.aggregate`` on the study's condition columns)."""
    return stats.aggregate(frame, KEYS, metrics, level, first=("input_size", "pixels", "params_M", "gflops"))


def paired(frame: pd.DataFrame, metrics=METRICS, level: float = 0.95) -> pd.DataFrame:
    """Per alignment: its difference to the baseline run of the same model, head, codec, size, flip test and seed,
    as mean and confidence half-width over the seeds both have (``pairs``), plus the per-seed differences
    (``stats.paired`` with the baseline as control)."""
    return stats.paired(frame, KEYS, metrics, arm="alignment", control="baseline", level=level, first=("pixels",))


# --- the pre-registered design (issue 21) ----------------------------------------------------------------------------

def design_records(results_dir) -> list[dict]:
    """The designs registered in ``results_dir/design/`` (one per profile; ``sweep.register_design`` wrote each
    before its first run trained)."""
    return [integrity.check_design_record(p, records.read_record(p, kind="design"))
            for p in integrity.check_designs(Path(results_dir) / "design")]


def _confirms(rec: dict) -> str | None:
    """The profile a design record confirms (``sweep.register_design``), None for the study's own design."""
    return rec["config"].get("confirms")


def _own_family(rec: dict) -> bool:
    """Whether a design record is judged as its own family beside the study's: a confirmatory design (``confirms``)
    or one registered with ``family: own`` (e.g. on another metric). Its comparisons never join the study's family."""
    return bool(_confirms(rec)) or rec["config"].get("family") == "own"


def _seen_at_registration(rec: dict, times: dict) -> tuple[set, str]:
    """The runs a design record had seen when it registered, and how that is known: the ones it names
    (``seen_at_registration``: started or recorded, as ``sweep.register_design`` writes it), else, for an older
    record, its runs whose records (``times``: run id -> time_utc) were written no later than it registered (to the
    second: a tie counts as seen)."""
    res = rec["results"]
    if "seen_at_registration" in res:
        return set(res["seen_at_registration"]), "had started"
    ids = {i for ids in res["arms"].values() for i in ids}
    return {i for i in ids if i in times and times[i] <= rec["provenance"]["time_utc"]}, "had records"


_SEED = re.compile(r"-s(\d+)-[0-9a-f]+$")  # train.run_id ends in -s<seed>-<hash>


def _posthoc_seeds(rec: dict, comparison: dict, seen: set) -> list[int]:
    """The seeds of a comparison whose control and treatment runs had both been seen when ``rec`` registered it: its
    difference on them could have been read before the plan was fixed."""
    arms = rec["results"]["arms"]
    sides = [{int(_SEED.search(i).group(1)) for i in arms.get(comparison[s], ()) if i in seen}
             for s in ("control", "treatment")]
    return sorted(sides[0] & sides[1])


def registration_note(rec: dict, times: dict) -> str:
    """When a design registered against its runs, in words the page and findings print: before any had started (or,
    for a record made before designs named what they had seen, before any had a record), or after how many, and
    whether any compared pair was among them (then those comparisons read post hoc)."""
    seen, basis = _seen_at_registration(rec, times)
    total = len({i for ids in rec["results"]["arms"].values() for i in ids})
    if not seen:
        return "before any of its runs " + ("had started" if basis == "had started" else "had a record")
    pairs = [(c["name"], seeds) for c in rec["results"]["comparisons"]
             if (seeds := _posthoc_seeds(rec, c, seen))]
    where = "named in its record" if basis == "had started" else "read from their records' times"
    tail = ("; among them both runs of a compared pair (" + "; ".join(f"{n}: seeds {s}" for n, s in pairs)
            + "), so those comparisons read post hoc" if pairs else "; none of them both runs of a pair it compares")
    return f"after {len(seen)} of its {total} runs {basis} ({where}){tail}"


def _family_level(d: dict) -> float:
    """The level of each of a design's secondary intervals: Bonferroni over its family, 1 - (1 - level) / m."""
    return 1 - (1 - d["level"]) / max(len(d["secondary"]), 1)


def design(results_dir) -> dict | None:
    """The study's design from every registered one (own-family designs apart: ``own_family_designs``): their
    common setting (metric, flip test, level), the primary comparison (at most one across designs) and the secondary
    comparisons as one family (each once), with the profiles and registration times. None when nothing is
    registered."""
    recs = [r for r in design_records(results_dir) if not _own_family(r)]
    if not recs:
        return None
    settings = {(r["config"]["metric"], r["config"]["flip_test"], r["config"]["level"]) for r in recs}
    if len(settings) > 1:
        raise ValueError(f"{results_dir}/design: the registered designs disagree on metric, flip test or level "
                         f"({sorted(settings)}): one study has one; register the others with `family: own` (each "
                         "its own family) or in their own reports folder")
    metric, flip, level = settings.pop()
    primary, secondary, seen = [], [], set()
    for r in recs:
        for c in r["results"]["comparisons"]:
            key = (c["control"], c["treatment"])
            if key in seen:
                continue
            seen.add(key)
            (primary if c["role"] == "primary" else secondary).append({**c, "profile": r["config"]["profile"]})
    if len(primary) > 1:
        raise ValueError(f"{results_dir}/design: {len(primary)} primary comparisons registered "
                         f"({[(c['control'], c['treatment']) for c in primary]}); a study has one")
    return _study(recs, metric, flip, level, primary, secondary)


def _study(recs: list[dict], metric: str, flip: bool, level: float, primary: list, secondary: list) -> dict:
    """The shape ``design`` and ``own_family_designs`` share: setting, comparisons, and when each record
    registered."""
    return {"metric": metric, "flip_test": flip, "level": level, "primary": primary[0] if primary else None,
            "secondary": secondary,
            "registered": [{"profile": r["config"]["profile"], "time_utc": r["provenance"]["time_utc"],
                            "git_commit": r["provenance"]["git_commit"][:10]} for r in recs]}


def own_family_designs(results_dir) -> list[dict]:
    """The designs registered in ``results_dir/design/`` that are judged as their own family: confirmatory ones (a
    profile with ``confirms``: an exploratory result of another profile tested on runs that had no record when it
    registered) and ``family: own`` ones (e.g. a codec axis on another metric than the study's). Each is its own study
    with the shape ``design`` returns plus ``confirms`` (None for ``family: own``), ``arms`` (arm -> its registered
    run ids) and ``run_ids``: only those runs count for it."""
    out = []
    for rec in design_records(results_dir):
        if not _own_family(rec):
            continue
        cfg, comps = rec["config"], rec["results"]["comparisons"]
        primary = [{**c, "profile": cfg["profile"]} for c in comps if c["role"] == "primary"]
        arms = rec["results"]["arms"]
        secondary = [{**c, "profile": cfg["profile"]} for c in comps if c["role"] != "primary"]
        out.append({**_study([rec], cfg["metric"], cfg["flip_test"], cfg["level"], primary, secondary),
                    "confirms": cfg.get("confirms"), "profile": cfg["profile"], "arms": arms,
                    "run_ids": {i for ids in arms.values() for i in ids}})
    return out


def shown_flip_test(results_dir) -> bool:
    """The flip setting a folder's tables and figures show: its registered design's (on markers data a flip swaps the
    labels and not the joints' colours, so that design reads every metric without it), else flip test on, as the
    paper reports."""
    d = design(results_dir)
    return True if d is None else bool(d["flip_test"])


def equivalence_lines(results_dir) -> list[str]:
    """The equivalence records that let these records pool across training codes, as the page states them: each
    checked (``integrity.check_equivalence``), and those that keep no repeat (``integrity.legacy_equivalence``) said
    to, so that their second code rests on the record's word."""
    paths = integrity.equivalence_paths([results_dir])
    if not paths:
        return []
    legacy = [p.stem for p in paths if integrity.legacy_equivalence(p)]
    codes = {c for p in paths for c in integrity.check_equivalence(p)}
    n, k = len(paths), len(legacy)
    return [f"- **Training codes pooled**: {len(codes)} codes joined by {n} equivalence record{'s' * (n != 1)} "
            "(`python -m ufpa reproduce`: a record re-trained under another code, bit for bit on its CPU type)"
            + (f"; {k} of them, made before issue 41, keep{'s' * (k == 1)} no repeat, so "
               f"{'its' if k == 1 else 'their'} second code rests on the record's word "
               f"({', '.join(f'`{s}`' for s in legacy)})" if legacy else "")
            + "."]


def design_markdown(results_dir) -> str:
    """The registered design as the page states it (Markdown): when and at which commit each profile registered it,
    the primary comparison, the secondary family, and for each registered arm how many of its runs have records here
    (which records the page shows)."""
    d = design(results_dir)
    if d is None:
        return "No design is registered in these records: the comparisons below are each alignment against the " \
               "baseline, without a pre-registered primary.\n"
    present: dict = {}
    times = {}
    for _, rec in run_records(results_dir) if (Path(results_dir) / "runs").is_dir() else []:  # none trained yet
        cfg, res = rec["config"], rec["results"]
        present.setdefault(arm_name(cfg["alignment"], cfg.get("padding", ""), res["input_size"], cfg["codec"]),
                           set()).add(res["run_id"])
        times[res["run_id"]] = rec["provenance"]["time_utc"]
    lines, confirm = [], []
    for rec in design_records(results_dir):
        arms = rec["results"]["arms"]
        have = ", ".join(f"`{_arm_label(a)}` {len(present.get(a, set()) & set(ids))}/{len(ids)}"
                         for a, ids in arms.items())
        line = (f"- Profile **{rec['config']['profile']}**, registered {rec['provenance']['time_utc']} at commit "
                f"{rec['provenance']['git_commit'][:10]}, {registration_note(rec, times)}; runs with records here: "
                f"{have}.")
        if _confirms(rec):
            confirm.append(line.replace("**,", f"** (confirmatory: the comparisons of `{_confirms(rec)}` on "
                                               f"{rec['config']['metric']}, on its own runs only; its own family, "
                                               "below),", 1))
        elif _own_family(rec):
            confirm.append(line.replace("**,", f"** (its own family, on {rec['config']['metric']} and its own runs "
                                               "only, below),", 1))
        else:
            lines.append(line)
    lines += equivalence_lines(results_dir)
    p = d["primary"]
    lines.append("- **Primary**: " + (_vs(p["control"], p["treatment"], "`", " against ") if p else "none registered")
                 + f", {d['metric']}, {_flip_note(d['flip_test'])}, {100 * d['level']:.0f} % interval.")
    m = len(d["secondary"])
    lines.append(f"- **Secondary family** ({m}; Holm-adjusted p, simultaneous intervals at "
                 f"{_pct(_family_level(d))} %): "
                 + "; ".join(_vs(c["control"], c["treatment"], "`") for c in d["secondary"])
                 + ".")
    return "\n".join(lines + confirm) + "\n"


def _per_image(metric: str):
    """A metric computed from a run's per-image results (``<run_id>.instances.json``) on resampled val images, or
    None where those results cannot give it."""
    from .evaluate import single_person_ap

    ratio = {"epe_px": ("epe_sum", "visible"), "epe_found_px": ("epe_found_sum", "found"),
             "found_rate": ("found", "visible"), "swap_rate": ("swapped", "visible")}
    if metric == "AP":
        return lambda d, rows: single_person_ap(d["oks"][rows], d["score"][rows]) if d.get("oks") is not None \
            else float("nan")
    if metric in ratio:
        top, bottom = ratio[metric]
        return lambda d, rows: float(d[top][rows].sum() / max(d[bottom][rows].sum(), 1))
    return None


def _named_sidecar(results_dir, run_id: str, suffix: str, key: str) -> tuple[Path, str | None]:
    """Where a run's file ``<run_id><suffix>`` lies beside its record, and the hash the record names for it under
    ``key`` (None: it names none)."""
    path = Path(results_dir) / "runs" / f"{run_id}{suffix}"
    return path, records.read_record(path.with_name(f"{run_id}.json"), kind="train_run")["results"].get(key)


def _sidecar(results_dir, run_id: str, suffix: str, key: str, what: str) -> bytes | None:
    """A file a run wrote beside its record (``<run_id><suffix>``), checked against the hash the record names under
    ``key``; None when the record names none or the file is missing."""
    path, want = _named_sidecar(results_dir, run_id, suffix, key)
    if not want or not path.is_file():
        return None
    text = path.read_bytes()
    if hashlib.sha256(text).hexdigest() != want:
        raise ValueError(f"{path} is not the {what} file of the record {run_id}.json (its hash differs): the run "
                         "was written twice or cut short between the two; re-run it")
    return text


def _sidecar_missing(results_dir, run_id: str, suffix: str = ".instances.json", key: str = "instances_sha256") -> bool:
    """Whether a run's record names a file beside it (by its hash) that is not there."""
    path, want = _named_sidecar(results_dir, run_id, suffix, key)
    return bool(want) and not path.is_file()


def run_instances(results_dir, run_id: str, flip_test: bool) -> dict | None:
    """A run's per-image results at one flip setting (numpy arrays), checked against the hash in its record; None for
    a record made before runs wrote them."""
    text = _sidecar(results_dir, run_id, ".instances.json", "instances_sha256", "per-image")
    if text is None:
        return None
    data = json.loads(text)["flip" if flip_test else "no_flip"]
    return {k: (np.asarray(v, float) if v is not None else None) for k, v in data.items()}


def compare_arms(frame: pd.DataFrame, results_dir, control: str, treatment: str, metric: str = "AP",
                 flip_test: bool = True, level: float = 0.95, interval_level: float | None = None,
                 resamples: int = 2000) -> dict:
    """Paired comparison of two arms (``train.arm`` names) on the seeds both have: mean difference (treatment minus
    control), its interval over seeds (Student t at ``interval_level``, default ``level``: a corrected family passes
    its Bonferroni level), the same-level hierarchical bootstrap over seeds and val images (``stats.
    hierarchical_bootstrap``; NaN where the runs have no per-image results or the metric cannot be recomputed from
    them), the t-test and sign-flip p-values, whether every run met the plateau criterion, and the paired seeds a
    test at ``1 - interval_level`` with 80 % power would need for a difference this size."""
    interval_level = level if interval_level is None else interval_level
    sub = frame[frame["flip_test"] == flip_test]
    arms = {a: sub[sub["arm"] == a].set_index("seed") for a in (control, treatment)}
    for a, g in arms.items():
        if g.empty:
            raise ValueError(f"no runs of arm {a!r} in {results_dir} (its arms: {sorted(set(sub['arm']))}); train "
                             "them (the profile that registered the design) or compare other arms")
        if g["model"].nunique() > 1 or g.index.duplicated().any():
            raise ValueError(f"arm {a!r} holds runs of {g['model'].nunique()} models or a seed twice: compare one "
                             "model's arms")
    seeds = sorted(set(arms[control].index) & set(arms[treatment].index))
    c, t = arms[control].loc[seeds], arms[treatment].loc[seeds]
    diff = (t[metric] - c[metric]).to_numpy(float)
    mean, half, n = stats.mean_ci(diff, interval_level)
    row = {"control": control, "treatment": treatment, "metric": metric, "flip_test": flip_test, "pairs": n,
           "seeds": seeds, "control_mean": float(c[metric].mean()), "treatment_mean": float(t[metric].mean()),
           "diff": mean, "diff_lo": mean - half, "diff_hi": mean + half, "interval_level": interval_level,
           "p_t": stats.t_test(diff) if n > 1 else float("nan"), "p_sign_flip": stats.sign_flip_test(diff),
           "per_seed": diff.tolist(), "ready": True}
    row["boot_lo"] = row["boot_hi"] = float("nan")
    statistic = _per_image(metric)
    row["withheld"] = ""
    if statistic is not None and n:
        lost = [f"{rid}.instances.json" for rid in (*c["run_id"], *t["run_id"]) if _sidecar_missing(results_dir, rid)]
        if lost:  # named in its record, so the bootstrap is owed: without it the verdict would rest on t alone
            row["withheld"] = (f"withheld: {Path(results_dir) / 'runs' / lost[0]} is missing"
                               + (f" (and {len(lost) - 1} more)" if len(lost) > 1 else "")
                               + ", though its record names its hash, and the verdict needs the bootstrap over images "
                               "it holds: restore it (`git checkout`) or re-run the run")
    if statistic is not None and n and not row["withheld"]:
        data = [(run_instances(results_dir, c.loc[s, "run_id"], flip_test),
                 run_instances(results_dir, t.loc[s, "run_id"], flip_test)) for s in seeds]
        usable = all(a is not None and b is not None and np.array_equal(a["image_id"], b["image_id"])
                     for a, b in data)
        if usable:
            row["boot_lo"], row["boot_hi"] = stats.hierarchical_bootstrap(
                [len(a["image_id"]) for a, _ in data], lambda g, rows: statistic(data[g][1], rows)
                - statistic(data[g][0], rows), interval_level, resamples)
    runs = pd.concat([c, t])
    row["unconverged"] = int((~runs["plateau"].astype(bool)).sum())
    row["unconverged_trend"] = _trend_unconverged(runs)
    row["runs"] = len(runs)
    sd = float(np.std(diff, ddof=1)) if n > 1 else float("nan")
    row["sd"] = sd
    row["seeds_for_power"] = stats.seeds_for_power(mean, sd, alpha=1 - interval_level) if n > 1 else None
    return row


def _verdict(row: dict) -> str:
    """What a comparison may claim: a direction only when every run met the plateau criterion and both its
    (corrected) intervals, over seeds and over seeds and images, exclude zero."""
    if not row.get("ready", True):
        return row["awaiting"]
    if row.get("withheld"):
        return row["withheld"]
    # before all its registered seeds are in, a verdict is an interim look, not the design's answer
    want = row.get("registered_pairs") or 0
    missing = row.get("missing") or []
    named = (f", no record of {', '.join(missing[:3])}" + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
             if missing else "")
    interim = f"; interim: {row['pairs']} of {want} registered seeds{named}" if row["pairs"] < want else ""
    trend = row.get("unconverged_trend", float("nan"))  # NaN: a run too short to fit a trend; no reading then
    if row["unconverged"]:
        claim = f"no claim: {row['unconverged']} of its {row['runs']} runs had not plateaued"
        if trend == 0:  # eval noise, not training, failed them: say what they show
            claim += (f"; post-hoc, with all {row['runs']} plateaued by the fitted last-quarter trend, it reads "
                      f"{_direction(row, interim)}")
        return claim
    # the post-hoc reading is shown both ways: where it would also block a claim the registered rule allows, too
    return _direction(row, interim) + (f"; post-hoc, {int(trend)} of its {row['runs']} runs had not plateaued by "
                                       "the fitted last-quarter trend" if trend > 0 else "")


def _trend_note(runs: pd.DataFrame, lead: str = " (", close: str = ")") -> str:
    """How many runs the post-hoc fitted-trend reading counts as plateaued, where it differs from the registered
    criterion's count (empty otherwise), between ``lead`` and ``close``."""
    unconverged = _trend_unconverged(runs)
    if not np.isfinite(unconverged) or len(runs) - unconverged == int(runs["plateau"].astype(bool).sum()):
        return ""
    return f"{lead}{len(runs) - int(unconverged)} by the fitted last-quarter trend, a post-hoc reading{close}"


def _trend_unconverged(runs: pd.DataFrame) -> float:
    """Runs whose fitted last-quarter trend (``plateau_trend``) gains ``PLATEAU_AP`` or more; NaN when a run is too
    short to fit one (then there is no post-hoc reading at all)."""
    gains = runs["trend_gain_AP"].to_numpy(float)
    return float((gains >= PLATEAU_AP).sum()) if np.isfinite(gains).all() else float("nan")


def _direction(row: dict, interim: str) -> str:
    ends = [row["diff_lo"], row["diff_hi"]] + ([row["boot_lo"], row["boot_hi"]] if np.isfinite(row["boot_lo"])
                                                else [])
    if all(e > 0 for e in ends):
        return f"higher (its intervals exclude zero{interim})"
    if all(e < 0 for e in ends):
        return f"lower (its intervals exclude zero{interim})"
    return f"not resolved (an interval includes zero{interim})"


def design_table(frame: pd.DataFrame, results_dir, resamples: int = 2000, d: dict | None = None) -> pd.DataFrame:
    """The registered design's comparisons at its metric and flip setting: the primary at the design's level, the
    secondary family with Holm-adjusted p-values and simultaneous intervals (Bonferroni: each at 1 - (1 - level) /
    m), and each one's verdict (``_verdict``). ``d``: an own-family design (``own_family_designs``), judged on its
    own registered runs only; default the study's design. Empty when no design is registered."""
    d = design(results_dir) if d is None else d
    if d is None:
        return pd.DataFrame()
    times = dict(zip(frame["run_id"], frame["time_utc"]))
    by_profile = {r["config"]["profile"]: r for r in design_records(results_dir)}
    frame = design_frame(frame, results_dir, d)
    check_judged(frame, results_dir, d)
    rows = []
    registered = _registered_runs(results_dir) if "arms" not in d else {a: set(i) for a, i in d["arms"].items()}
    for role, comps, lvl in (("primary", [d["primary"]] if d["primary"] else [], d["level"]),
                             ("secondary", d["secondary"], _family_level(d))):
        family = [(compare_arms(frame, results_dir, c["control"], c["treatment"], d["metric"], d["flip_test"],
                                d["level"], lvl, resamples) if _paired_seeds(frame, c, d["flip_test"]) >= 2
                   else _awaiting(frame, c, d, lvl, registered)) | {"role": role, "name": c["name"],
                                                                    "profile": c["profile"]}
                  for c in comps]
        # Holm over the registered family whatever has been trained: a comparison still awaiting its runs counts
        # with p = 1, so the adjusted p of the others can only fall as runs arrive (conservative, never optimistic)
        ps = [r["p_t"] if r["ready"] else 1.0 for r in family]
        adjusted = stats.holm(ps) if role == "secondary" else ps
        for c, r, p in zip(comps, family, adjusted):
            r["p_holm"] = p if r["ready"] else float("nan")
            r["registered_pairs"] = min(len(registered.get(c[side], ())) for side in ("control", "treatment"))
            r["missing"] = sorted(set().union(*(registered.get(c[side], set()) for side in ("control", "treatment")))
                                  - set(frame["run_id"]))
            r["verdict"] = _verdict(r)
            rec = by_profile[c["profile"]]
            seen, basis = _seen_at_registration(rec, times)
            late = _posthoc_seeds(rec, c, seen)
            if late:  # a difference that could be read before the plan was fixed is no pre-registered test
                r["verdict"] = (f"post hoc (both its runs of seed(s) {late} {basis} when {c['profile']} registered "
                                f"it): {r['verdict']}")
            rows.append(r)
    cols = ["role", "profile", "name", "control", "treatment", "metric", "flip_test", "ready", "pairs", "seeds",
            "control_mean", "treatment_mean", "diff", "diff_lo", "diff_hi", "boot_lo", "boot_hi", "interval_level",
            "p_t", "p_holm", "p_sign_flip", "runs", "unconverged", "unconverged_trend", "sd", "seeds_for_power",
            "verdict", "per_seed"]
    return pd.DataFrame(rows)[cols]


# A design metric's field in a record's results.<no_flip|flip> (the report's column names differ).
RECORD_FIELD = {"epe_px": "epe_mean", "epe_found_px": "epe_found", "pck_0.01": "pck@0.01", "pck_0.02": "pck@0.02",
                "pck_0.05": "pck@0.05"}


def check_judged(frame: pd.DataFrame, results_dir, d: dict) -> None:
    """The runs a design judges (``design_frame``) hold its metric as a finite number and each compared pair ran on
    one dataset: a null metric would drop a seed without a word, and an arm on other data would be compared as if
    it were the same experiment."""
    sub = frame[frame["flip_test"] == d["flip_test"]]
    comps = ([d["primary"]] if d["primary"] else []) + list(d["secondary"])
    judged = sub[sub["arm"].isin({c[side] for c in comps for side in ("control", "treatment")})]
    key, name = "flip" if d["flip_test"] else "no_flip", RECORD_FIELD.get(d["metric"], d["metric"])
    for rid in judged["run_id"]:  # read as written: pandas would take the text '0.9' for a number
        path = Path(results_dir) / "runs" / f"{rid}.json"
        value = records.read_record(path, kind="train_run")["results"][key].get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path}: results.{key}.{name} is {value!r}, not a finite number, and the design judges "
                             f"the run on it ({d['metric']}): restore the record if it was edited (`git checkout`); "
                             "if the run has no such value (e.g. it found no keypoint), the design cannot judge this "
                             "seed and says so here rather than drop it")
    for c in comps:
        pair = sub[sub["arm"].isin([c["control"], c["treatment"]])]
        data = pair.groupby(["data", "data_fingerprint"], dropna=False)["arm"]
        if data.ngroups > 1:
            seen = "; ".join(f"{', '.join(sorted(set(arms)))} on {name} ({fp})" for (name, fp), arms in data)
            raise ValueError(f"{results_dir}: {c['name']} compares runs on different data ({seen}): a comparison is "
                             "of one dataset; re-run the other arm on the study's data")


def design_frame(frame: pd.DataFrame, results_dir, d: dict | None = None) -> pd.DataFrame:
    """The runs a design is judged on: an own-family design's registered runs and no others; for the study's design
    (default), each arm's registered runs, so runs of a registered arm that another design added (e.g. a
    confirmatory design's new seeds) never join the study's pairs; an arm no design of the study names keeps all its
    runs."""
    d = design(results_dir) if d is None else d
    if d is None:
        return frame
    if "run_ids" in d:
        return frame[frame["run_id"].isin(d["run_ids"])]
    registered = _registered_runs(results_dir)
    keep = [arm not in registered or run_id in registered[arm] for arm, run_id in zip(frame["arm"], frame["run_id"])]
    return frame[np.asarray(keep, dtype=bool)]


def _paired_seeds(frame: pd.DataFrame, comparison: dict, flip_test: bool) -> int:
    sub = frame[frame["flip_test"] == flip_test]
    seeds = [set(sub.loc[sub["arm"] == comparison[side], "seed"]) for side in ("control", "treatment")]
    return len(seeds[0] & seeds[1])


def _registered_runs(results_dir) -> dict:
    """Arm -> the run ids the study's registered designs name for it (how many runs a comparison waits for; a
    design of its own family counts its own, ``design_table``)."""
    out: dict = {}
    for rec in design_records(results_dir):
        if _own_family(rec):
            continue
        for arm, ids in rec["results"]["arms"].items():
            out.setdefault(arm, set()).update(ids)
    return out


def _awaiting(frame: pd.DataFrame, c: dict, d: dict, level: float, registered: dict) -> dict:
    """A registered comparison with fewer than two paired seeds in the records (a study part-way through its runs):
    no estimate, and a verdict that says how many of its registered runs exist."""
    sub = frame[frame["flip_test"] == d["flip_test"]]
    have = {side: int((sub["arm"] == c[side]).sum()) for side in ("control", "treatment")}
    want = {side: len(registered.get(c[side], ())) for side in ("control", "treatment")}
    nan = float("nan")
    return {"control": c["control"], "treatment": c["treatment"], "metric": d["metric"], "flip_test": d["flip_test"],
            "ready": False, "pairs": _paired_seeds(frame, c, d["flip_test"]), "control_mean": nan,
            "treatment_mean": nan, "diff": nan, "diff_lo": nan, "diff_hi": nan, "boot_lo": nan, "boot_hi": nan,
            "interval_level": level, "p_t": nan, "p_sign_flip": nan, "runs": have["control"] + have["treatment"],
            "unconverged": 0, "unconverged_trend": nan, "sd": nan, "seeds_for_power": None, "seeds": [], "per_seed": [],
            "awaiting": "awaiting runs: " + ", ".join(
                f"{label} {have[side]}" + (f"/{want[side]}" if want[side] else "")
                for side, label in zip(("control", "treatment"), _pair_labels(c["control"], c["treatment"])))
            + " (two paired seeds make the first estimate)"}


def ready(table: pd.DataFrame) -> pd.DataFrame:
    """The comparisons of ``design_table`` that have an estimate (at least two paired seeds)."""
    return table if table.empty else table[table["ready"].astype(bool)].reset_index(drop=True)


def design_summary(table: pd.DataFrame) -> pd.DataFrame:
    """``design_table`` as the page and README show it: one row per comparison, its intervals as columns."""
    if table.empty:
        return table
    out = pd.DataFrame({"role": table["role"],
                        "comparison": [_vs(c, t) for c, t in
                                       zip(table["control"], table["treatment"])],
                        "level": table["interval_level"], "pairs": table["pairs"],
                        "control": table["control_mean"], "treatment": table["treatment_mean"],
                        "diff": table["diff"], "lo": table["diff_lo"], "hi": table["diff_hi"],
                        "boot_lo": table["boot_lo"], "boot_hi": table["boot_hi"], "p_t": table["p_t"],
                        "p_holm": table["p_holm"], "p_sign_flip": table["p_sign_flip"],
                        "not_plateaued": [f"{u}/{n}" if ok else "–" for u, n, ok in
                                          zip(table["unconverged"], table["runs"], table["ready"])],
                        "seeds_80pct": pd.array([int(v) if pd.notna(v) else None for v in table["seeds_for_power"]],
                                                dtype="Int64"),  # a count, whatever awaiting rows made the dtype
                        "verdict": table["verdict"]})
    return out.reset_index(drop=True)

def decomposition_chain(table: pd.DataFrame) -> pd.DataFrame:
    """The registered steps that lead from the primary comparison's control to its treatment, in order: the longest
    such chain over every design of the study (a control design may register steps that split one of the primary's
    design into finer ones, e.g. baseline -> corner alignment -> the exact grid's +1 pixel -> its padding). Empty when
    there is no primary or no chain of steps reaches it."""
    if table.empty or not (table["role"] == "primary").any():
        return pd.DataFrame()
    total = table[table["role"] == "primary"].iloc[0]
    steps = table[table["name"].str.startswith("step ")].reset_index(drop=True)
    edges: dict = {}
    for i, r in steps.iterrows():
        edges.setdefault(r["control"], []).append((i, r["treatment"]))
    best: list = []

    def walk(arm, path, seen):
        nonlocal best
        if arm == total["treatment"]:
            if len(path) > len(best):  # the first longest in registration order wins a tie
                best = list(path)
            return
        for i, nxt in edges.get(arm, []):
            if nxt not in seen:
                walk(nxt, path + [i], seen | {nxt})

    walk(total["control"], [], {total["control"]})
    return steps.loc[best].reset_index(drop=True)


def _on_seeds(row, seeds) -> float:
    """A comparison's mean paired difference over ``seeds`` (a subset of those it has)."""
    by_seed = dict(zip(row["seeds"], row["per_seed"]))
    return float(np.mean([by_seed[s] for s in seeds])) if seeds else float("nan")


def decomposition_table(table: pd.DataFrame) -> pd.DataFrame:
    """The primary comparison's change split into registered steps (``decomposition_chain``): each step as the design
    table has it (its paired difference with its simultaneous interval, Holm p, verdict) and its difference on the
    seeds every step and the total share, on which the steps sum to the total exactly (while a control design is
    part-way through its seeds, the registered differences are over different seeds and need not). A step's share of
    the total is given only when the total's verdict claims a direction: a share of a change not told from zero is
    noise. Empty until the total and every step of the chain have an estimate."""
    chain = decomposition_chain(table)
    if chain.empty:
        return pd.DataFrame()
    total = table[table["role"] == "primary"].iloc[0]
    if not (bool(total["ready"]) and chain["ready"].astype(bool).all()):
        return pd.DataFrame()  # a sum of steps needs every step (and the total) estimated
    shared = sorted(set(total["seeds"]).intersection(*map(set, chain["seeds"])))
    total_shared = _on_seeds(total, shared)
    resolved = total["verdict"].startswith(("higher", "lower"))
    cols = ["control", "treatment", "pairs", "diff", "diff_lo", "diff_hi", "boot_lo", "boot_hi", "p_holm", "verdict"]
    out = chain[cols].copy()
    out.insert(0, "part", [f"{r.control} -> {r.treatment}" for r in chain.itertuples()])
    out["shared_seeds"] = len(shared)
    out["diff_shared"] = [_on_seeds(r, shared) for _, r in chain.iterrows()]
    summed = float(out["diff_shared"].sum())
    out["share_of_total"] = out["diff_shared"] / total_shared if resolved else np.nan
    summary = pd.DataFrame([
        {"part": "sum of the steps", "control": total["control"], "treatment": total["treatment"],
         "pairs": len(shared), "diff": summed, "shared_seeds": len(shared), "diff_shared": summed,
         "share_of_total": 1.0 if resolved else np.nan,
         "verdict": "chains from the primary's control to its treatment: on the shared seeds the steps sum to the "
                    "total"},
        {**{k: total[k] for k in cols}, "part": "primary (total)", "shared_seeds": len(shared),
         "diff_shared": total_shared, "share_of_total": 1.0 if resolved else np.nan}])
    return pd.concat([out, summary], ignore_index=True)


def _network(row) -> dict:
    """What a run's network does where paths meet, from its settings: how it upsamples (``models._layers``'
    mode per alignment; 'learned' for the learned aligner), its input size and how its 3x3 convs pad."""
    alignment = row["alignment"]
    return {"upsampling": "learned" if alignment == "learned" else UPSAMPLE_MODE[alignment],
            "input": row["input_size"], "padding": row["padding"] or PADDING_MODE[alignment]}


def step_change(frame: pd.DataFrame, control: str, treatment: str) -> str:
    """What one step of a decomposition changes in the network, read from its arms' runs (``_network``): e.g.
    `ufpa` with zero padding at 97x65 upsamples as `bilinear_corners` does, so the step from `bilinear_corners` at
    96x64 to it is the input's +1 pixel alone."""
    a, b = (_network(frame[frame["arm"] == arm].iloc[0]) for arm in (control, treatment))
    return ", ".join(f"{k} {a[k]} → {b[k]}" for k in a if a[k] != b[k]) or "no setting differs"


def _records_key(frame: pd.DataFrame, results_dir, metric: str) -> tuple:
    """What a cached result computed from a folder's runs depends on: the folder, and each run's value of ``metric``
    per flip setting (a new or changed record makes a new key)."""
    return (str(Path(results_dir).resolve()), metric,
            tuple(sorted(zip(frame["run_id"], frame["flip_test"], frame[metric]))))


_DECOMPOSITION_CACHE: dict = {}


def decomposition_on(frame: pd.DataFrame, results_dir, metric: str = "epe_found_px", flip_test: bool | None = None,
                     resamples: int = 500) -> pd.DataFrame:
    """The decomposition's steps and total (``decomposition_chain``) on another metric than the design's: each
    paired over the seeds both arms have, 95 % intervals over seeds and over seeds and images, uncorrected
    (exploratory: the registered family is at the design's metric). ``flip_test``: default the design's."""
    table = cached_design_table(frame, results_dir)
    chain = decomposition_chain(table)
    if chain.empty:
        return pd.DataFrame()
    flip_test = bool(table["flip_test"].iloc[0]) if flip_test is None else flip_test
    frame = design_frame(frame, results_dir)
    key = _records_key(frame, results_dir, metric) + (flip_test, resamples)
    if key not in _DECOMPOSITION_CACHE:
        total = table[table["role"] == "primary"].iloc[0]
        pairs = [("step", c) for _, c in chain.iterrows()] + [("total", total)]
        _DECOMPOSITION_CACHE.clear()  # one study at a time: its findings and figure read the same
        _DECOMPOSITION_CACHE[key] = pd.DataFrame([
            compare_arms(frame, results_dir, c["control"], c["treatment"], metric, flip_test, resamples=resamples)
            | {"part": part} for part, c in pairs])
    return _DECOMPOSITION_CACHE[key]


LOCALISATION = ("found_rate", "epe_found_px", "swap_rate", "pck_0.01", "pck_0.02", "epe_px", "abs_bias_px",
                "abs_bias_floor_px")


def localisation_table(frame: pd.DataFrame, flip_test: bool = True) -> pd.DataFrame:
    """Per arm, where alignment should act, beside AP: keypoints found (within ``evaluate.FOUND_RADIUS`` of the box
    size and not swapped), the end-point error on those, the left/right swap rate, PCK at 1 % and 2 % of the box
    size, the end-point error of all keypoints, |bias| (the length of each joint's mean signed error, averaged
    over joints) and its noise floor (``abs_bias_floor``): mean ± 95 % CI over seeds."""
    sub = frame[frame["flip_test"] == flip_test]
    return stats.aggregate(sub, ["model", "arm"], ("AP",) + LOCALISATION)


def localisation_comparisons(frame: pd.DataFrame, results_dir, flip_test: bool = True,
                             resamples: int = 1000) -> pd.DataFrame:
    """The design's comparisons on the localisation metrics (exploratory: not in the registered family, 95 %
    intervals, uncorrected), with the hierarchical bootstrap where the per-image results give the metric."""
    d = design(results_dir)
    if d is None:
        return pd.DataFrame()
    comps = ([d["primary"]] if d["primary"] else []) + d["secondary"]
    frame = design_frame(frame, results_dir, d)
    rows = []
    for c in comps:
        if _paired_seeds(frame, c, flip_test) < 2:
            continue
        for metric in ("found_rate", "epe_found_px", "swap_rate", "pck_0.01", "epe_px"):
            r = compare_arms(frame, results_dir, c["control"], c["treatment"], metric, flip_test,
                             resamples=resamples)
            rows.append({k: r[k] for k in ("control", "treatment", "metric", "pairs", "control_mean",
                                           "treatment_mean", "diff", "diff_lo", "diff_hi", "boot_lo", "boot_hi",
                                           "p_sign_flip")})
    return pd.DataFrame(rows)


def convergence_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per arm: runs, how many met the plateau criterion (val AP, no flip, gained < ``PLATEAU_AP`` over the last
    quarter of training), the median and largest gain there, the same read from the fitted last-quarter trend
    (post-hoc, ``plateau_trend``), and the final val AP (no flip)."""
    runs = frame[~frame["flip_test"]]
    out = []
    for (model, arm), g in runs.groupby(["model", "arm"], sort=False):
        out.append({"model": model, "arm": arm, "epochs": int(g["epochs"].iloc[0]), "runs": len(g),
                    "plateaued": int(g["plateau"].astype(bool).sum()),
                    "late_gain_median": float(np.nanmedian(g["late_gain_AP"])),
                    "late_gain_max": float(np.nanmax(g["late_gain_AP"])),
                    "trend_plateaued": int((g["trend_gain_AP"] < PLATEAU_AP).sum()),
                    "trend_gain_max": float(np.nanmax(g["trend_gain_AP"])), "AP_no_flip": float(g["AP"].mean())})
    return pd.DataFrame(out)


def gain_by_epoch(curves: pd.DataFrame, comparisons: list[tuple[str, str]], level: float = 0.95) -> pd.DataFrame:
    """Each comparison's paired val AP difference (no flip) at every evaluated epoch: mean and CI over seeds. Whether
    a gain holds, grows or shrinks with training is its own result (learning faster is not being more accurate)."""
    rows = []
    ev = curves.dropna(subset=["val_AP"])
    for control, treatment in comparisons:
        a = ev[ev["arm"] == control].set_index(["seed", "epoch"])["val_AP"]
        b = ev[ev["arm"] == treatment].set_index(["seed", "epoch"])["val_AP"]
        common = a.index.intersection(b.index)
        diff = (b.loc[common] - a.loc[common]).reset_index()
        for epoch, g in diff.groupby("epoch"):
            mean, half, n = stats.mean_ci(g["val_AP"], level)
            rows.append({"control": control, "treatment": treatment, "epoch": int(epoch), "pairs": n,
                         "diff": mean, "diff_ci": half})
    return pd.DataFrame(rows)


def power_table(frame: pd.DataFrame, flip_test: bool = True, alpha: float = 0.05, power: float = 0.8,
                family: int | None = None) -> pd.DataFrame:
    """From a pilot's records: each alignment's paired AP difference to the baseline (mean, SD over seeds) and the
    paired seeds a two-sided t-test would need for ``power`` at ``alpha``, and at Holm's strictest level over a
    family of ``family`` comparisons (default: as many as the pilot has). How the study's seeds were sized."""
    diff = paired(frame[frame["flip_test"] == flip_test], metrics=("AP",))
    m = family or len(diff)
    rows = []
    for _, d in diff.iterrows():
        x = np.asarray(d["d_AP_per_seed"], float)
        sd = float(x.std(ddof=1)) if len(x) > 1 else float("nan")
        rows.append({"model": d["model"], "size": d["size"], "alignment": d["alignment"], "pairs": d["pairs"],
                     "d_AP": float(x.mean()), "sd": sd,
                     "seeds_alpha": stats.seeds_for_power(x.mean(), sd, alpha, power) if len(x) > 1 else None,
                     f"seeds_holm_{m}": stats.seeds_for_power(x.mean(), sd, alpha / m, power) if len(x) > 1
                     else None})
    return pd.DataFrame(rows)


# --- tables ----------------------------------------------------------------------------------------------------------

def main_table(frame: pd.DataFrame, flip_test: bool = True) -> pd.DataFrame:
    """The paper's layout: method, backbone, input size, cost, COCO metrics and exact-ground-truth columns (mean and
    95 % CI over seeds), and the paired AP difference to the baseline with its CI. Flip test as in the paper."""
    agg = aggregate(frame[frame["flip_test"] == flip_test])
    diff = paired(frame[frame["flip_test"] == flip_test])
    cols = KEYS + ["input_size", "seeds", "params_M", "gflops"]
    table = agg[cols + [c for m in METRICS for c in (m, f"{m}_ci")]].copy()
    if len(diff):
        d = diff[KEYS + ["d_AP", "d_AP_ci", "d_epe_px", "d_epe_px_ci"]]
        table = table.merge(d, on=KEYS, how="left")
    else:
        table[["d_AP", "d_AP_ci", "d_epe_px", "d_epe_px_ci"]] = np.nan
    return table.drop(columns=["flip_test"]).rename(columns={"alignment": "method", "model": "backbone"})


def ablation_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Alignment x codec x flip test: AP and end-point error, and the paired AP gain over the baseline."""
    agg = aggregate(frame, metrics=("AP", "epe_px"))
    diff = paired(frame, metrics=("AP",))
    table = agg[KEYS + ["seeds", "AP", "AP_ci", "epe_px", "epe_px_ci"]]
    if len(diff):
        table = table.merge(diff[KEYS + ["d_AP", "d_AP_ci"]], on=KEYS, how="left")
    return table.sort_values(["model", "size", "codec", "flip_test", "alignment"]).reset_index(drop=True)


def lowres_table(frame: pd.DataFrame, flip_test: bool = True) -> pd.DataFrame:
    """The paper's central claim, tested: per nominal input size, the baseline's AP and each alignment's paired gain."""
    sub = frame[frame["flip_test"] == flip_test]
    agg = aggregate(sub, metrics=("AP",))
    diff = paired(sub, metrics=("AP", "epe_px"))
    rows = []
    for (model, head, codec, size), group in agg.groupby(["model", "head", "codec", "size"], sort=False):
        base = group[group["alignment"] == "baseline"]
        row = {"model": model, "head": head, "codec": codec, "size": size, "pixels": group["pixels"].iloc[0],
               "baseline_AP": base["AP"].iloc[0] if len(base) else np.nan,
               "baseline_AP_ci": base["AP_ci"].iloc[0] if len(base) else np.nan}
        if diff.empty:  # no alignment paired with the baseline yet (a study part-way through its runs)
            rows.append(row)
            continue
        same = (diff["model"] == model) & (diff["head"] == head) & (diff["codec"] == codec) & (diff["size"] == size)
        for _, d in diff[same].iterrows():
            row[f"{d['alignment']}_dAP"], row[f"{d['alignment']}_dAP_ci"] = d["d_AP"], d["d_AP_ci"]
            row[f"{d['alignment']}_dEPE_px"] = d["d_epe_px"]
        rows.append(row)
    return pd.DataFrame(rows).sort_values(["model", "codec", "pixels"]).drop(columns="pixels").reset_index(drop=True)


def cost_table(frame: pd.DataFrame | None, results_dir) -> pd.DataFrame:
    """Parameters, FLOPs and measured step time per variant: the ``bench models`` records (with their device) and,
    from the training records, each trained variant's cost and training throughput."""
    rows = []
    for path in sorted(Path(results_dir).glob("bench_models_*.json")):
        rec = records.read_record(path, kind="bench_models")
        res, cfg = rec["results"], rec["config"]
        base = next((r["step_s_median"] for r in res["rows"] if r["variant"] == "baseline"), None)
        for r in res["rows"]:
            rows.append({"source": path.name, "model": cfg["model"], "variant": r["variant"],
                         "input_size": _size(r["input_size"]), "device": rec["provenance"]["device"],
                         "batch": cfg["batch"], "params_M": r["params"] / 1e6, "gflops": r.get("gflops"),
                         "step_ms": 1e3 * r["step_s_median"], "images_per_s": r["images_per_s"],
                         "ratio_vs_baseline": r["step_s_median"] / base if base else np.nan,
                         "peak_memory_mb": r.get("peak_memory_mb")})
    if frame is not None and len(frame):  # training throughput (data pipeline included), per variant and size
        sub = frame[~frame["flip_test"]]
        for (model, _), group in sub.groupby(["model", "size"], sort=False):
            base = group.loc[group["alignment"] == "baseline", "images_per_s"].mean()
            for alignment, g in group.groupby("alignment", observed=True, sort=False):
                ips = g["images_per_s"].mean()
                rows.append({"source": "training records", "model": model, "variant": alignment,
                             "input_size": g["input_size"].iloc[0], "device": g["device"].iloc[0], "batch": None,
                             "params_M": g["params_M"].iloc[0], "gflops": g["gflops"].iloc[0], "step_ms": np.nan,
                             "images_per_s": ips, "ratio_vs_baseline": base / ips if ips else np.nan,
                             "peak_memory_mb": np.nan})
    return pd.DataFrame(rows)


def published_table(path=PUBLISHED) -> pd.DataFrame:
    """Published COCO val2017 anchor numbers (not reproduced here), each with its source."""
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    table = pd.DataFrame(rows)
    for c in ("ap_baseline", "ap_method", "detector"):
        table[c] = table[c].astype(float)
    table.insert(5, "gain", (table["ap_method"] - table["ap_baseline"]).round(1))
    table.insert(0, "status", "published, not reproduced")
    return table


# --- writing tables --------------------------------------------------------------------------------------------------

def _fmt(value, digits: int) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def formatted(table: pd.DataFrame, digits: dict | None = None) -> pd.DataFrame:
    """Strings for reading: ``x`` and ``x_ci`` become one ``x ± ci`` column; signed differences keep their sign."""
    digits = {"AP": 3, "AP50": 3, "AP75": 3, "AR": 3, "params_M": 3, "gflops": 3, **(digits or {})}
    out = {}
    cols = list(table.columns)
    for c in cols:
        if c.endswith("_ci") or c.endswith("_per_seed"):
            continue
        base = c[2:] if c.startswith("d_") else c.split("_dAP")[0] if c.endswith("_dAP") else c
        d = digits.get(base, 3 if "AP" in c else 2)
        sign = c.startswith("d_") or c.endswith(("_dAP", "_dEPE_px")) or c in SIGNED
        cis = table[f"{c}_ci"].tolist() if f"{c}_ci" in table.columns else [None] * len(table)
        out[_header(c)] = [_cell(v, ci, d, sign, p_value=c in P_VALUES) for v, ci in zip(table[c].tolist(), cis)]
    return pd.DataFrame(out)


P_VALUES = ("p_t", "p_holm", "p_sign_flip")


def _cell(value, ci, digits: int, signed: bool, p_value: bool = False) -> str:
    if not isinstance(value, (float, np.floating)) or not np.isfinite(value):
        return _fmt(value, digits)
    if p_value:
        return _p_format(value, digits)
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return text if ci is None or not np.isfinite(ci) else f"{text} ± {ci:.{digits}f}"


def _header(column: str) -> str:
    if column.startswith("d_"):
        return "Δ" + LABELS.get(column[2:], column[2:]) + " vs baseline"
    if column.endswith("_dAP"):
        return f"ΔAP {column[:-4]}"
    if column.endswith("_dEPE_px"):
        return f"ΔEPE {column[:-8]} (px)"
    return LABELS.get(column, column)


def markdown(table: pd.DataFrame) -> str:
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(c.replace("|", "\\|") for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines) + "\n"


def latex(table: pd.DataFrame, caption: str = "") -> str:
    def esc(s):
        return str(s).replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("%", "\\%").replace(
            "&", "\\&").replace("#", "\\#").replace("±", "$\\pm$").replace("Δ", "$\\Delta$").replace("|", "$|$")

    lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{esc(caption)}}}" if caption else "",
             "\\begin{tabular}{" + "l" * len(table.columns) + "}", "\\hline",
             " & ".join(esc(c) for c in table.columns) + " \\\\", "\\hline"]
    lines += [" & ".join(esc(v) for v in row) + " \\\\" for row in table.itertuples(False)]
    lines += ["\\hline", "\\end{tabular}", "\\end{table}"]
    return "\n".join(line for line in lines if line) + "\n"


def write_table(table: pd.DataFrame, name: str, folder, caption: str = "", digits: dict | None = None) -> pd.DataFrame:
    """``<folder>/<name>.md`` (with the caption), ``.csv`` (numbers, full precision) and ``.tex``; returns the
    formatted frame (what the Markdown and LaTeX show)."""
    folder = Path(folder)
    text = formatted(table, digits)
    records.atomic_write_text(folder / f"{name}.md", (f"{caption}\n\n" if caption else "") + markdown(text))
    records.atomic_write_text(folder / f"{name}.csv", table.to_csv(index=False, float_format="%.6g"))
    records.atomic_write_text(folder / f"{name}.tex", latex(text, caption))
    return text


# --- figures ---------------------------------------------------------------------------------------------------------

def _save(fig, path):
    if path is not None:
        viz._save(fig, path)  # atomic, reproducible PNG metadata
    return fig


def _sizes(frame) -> list[str]:
    return list(dict.fromkeys(frame.sort_values("pixels")["size"]))


# Figures: fonts of at least 9 pt, and every title says the flip setting and n.
STYLE = {"font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
         "legend.fontsize": 9, "figure.titlesize": 10}


def _styled(draw):
    """Draw under ``STYLE`` (matplotlib's defaults elsewhere stay untouched)."""
    import functools

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


def arm_order(arms) -> list[str]:
    """Arms in the registry's order of alignments, then by size, the padding control after its alignment."""
    def key(a):
        alignment = a.split(" ")[0].split("-")[0]
        h, w = a.split(" ")[1].split("x")
        return (ALL_ALIGNMENTS.index(alignment) if alignment in ALL_ALIGNMENTS else 99, int(h) * int(w), a)
    return sorted(set(arms), key=key)


def arm_colour(arm: str) -> str:
    return COLOURS.get(arm.split(" ")[0].split("-")[0], "0.4")


def _hollow(arm: str) -> bool:  # a padding control: its alignment's colour, drawn hollow / dashed
    return "pad" in arm.split(" ")[0]


def _arm_label(arm: str) -> str:
    return arm.rsplit(" ", 1)[0] if arm.endswith(" udp") else arm  # the study's codec goes without saying


def _pair_labels(control: str, treatment: str) -> tuple[str, str]:
    """A comparison's two arms as ``_arm_label`` names them, except that a comparison across codecs names both
    codecs ("baseline 96x64 udp vs baseline 96x64 msra", not "baseline 96x64 vs ...")."""
    if control.rsplit(" ", 1)[-1] != treatment.rsplit(" ", 1)[-1]:
        return control, treatment
    return _arm_label(control), _arm_label(treatment)


def _vs(control: str, treatment: str, quote: str = "", sep: str = " vs ") -> str:
    """"treatment vs control", each named by ``_pair_labels``."""
    c, t = _pair_labels(control, treatment)
    return f"{quote}{t}{quote}{sep}{quote}{c}{quote}"


def _dots(ax, x, values, arm, jitter=0.12, rng=None):
    rng = rng or np.random.default_rng(0)  # jitter only
    values = np.asarray(values, float)
    ax.scatter(x + rng.uniform(-jitter, jitter, len(values)), values, s=16, zorder=3, color=arm_colour(arm),
               facecolors="white" if _hollow(arm) else arm_colour(arm), linewidths=1)


def _seeds_note(frame) -> str:
    n = frame.groupby("arm")["seed"].nunique() if len(frame) else pd.Series(dtype=int)
    return f"n = {n.min()} seeds per arm" if len(n) and n.min() == n.max() else \
        f"n = {n.min()}–{n.max()} seeds per arm" if len(n) else "no runs"


def _flip_note(flip_test: bool) -> str:
    return f"flip test {'on' if flip_test else 'off'}"


@_styled
def accuracy_by_arm(frame: pd.DataFrame, flip_test: bool = True, path=None):
    """AP and end-point error per arm: one dot per seed, the mean ± 95 % CI over seeds beside them. Arms are
    categories (no line joins them); the AP axis spans the data, not 0–1, and says so."""
    sub = frame[frame["flip_test"] == flip_test]
    arms = arm_order(sub["arm"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    labels = ("AP (COCO OKS; axis spans the data)", "end-point error (image px)")
    for ax, m, label in zip(axes, ("AP", "epe_px"), labels):
        for i, arm in enumerate(arms):
            values = sub.loc[sub["arm"] == arm, m]
            _dots(ax, i - 0.1, values, arm)
            mean, half, _ = stats.mean_ci(values)
            ax.errorbar([i + 0.18], [mean], yerr=[0 if not np.isfinite(half) else half], fmt="D", capsize=4,
                        color=arm_colour(arm), mfc="white" if _hollow(arm) else arm_colour(arm))
        ax.set_xticks(range(len(arms)), [_arm_label(a) for a in arms], rotation=20, ha="right")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"accuracy per arm: seeds (dots), mean ± 95 % CI (diamonds); {_flip_note(flip_test)}, "
                 f"{_seeds_note(sub)}")
    return _save(fig, path)


@_styled
def design_figure(design_rows: pd.DataFrame, path=None, what: str = "registered"):
    """The registered comparisons with an estimate (``design_table``'s ready rows) as a forest plot, one row each
    (names on the left, so any number of them reads): each seed's paired difference (dots), the mean with its
    (corrected) interval over seeds (diamond) and the hierarchical bootstrap over seeds and images (thin bar below
    it). ``what`` names the design in the title ("own-family" for ``own_family_rows``)."""
    table = ready(design_rows)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 0.55 * max(len(table), 1)), constrained_layout=True)
    if table.empty:
        message = (f"no {what} design in these records" if design_rows.empty else
                   f"none of the {len(design_rows)} registered comparisons has two paired seeds yet "
                   "(the design table says which runs each awaits)")
        ax.text(0.5, 0.5, message, ha="center", transform=ax.transAxes)
        ax.set_axis_off()
        return _save(fig, path)
    rng = np.random.default_rng(0)  # jitter only
    for i, r in enumerate(table.itertuples()):
        c, seeds = arm_colour(r.treatment), np.asarray(r.per_seed, float)
        ax.scatter(seeds, i - 0.2 + rng.uniform(-0.06, 0.06, len(seeds)), s=16, zorder=3, color=c,
                   facecolors="white" if _hollow(r.treatment) else c, linewidths=1)
        ax.errorbar([r.diff], [i], xerr=[[r.diff - r.diff_lo], [r.diff_hi - r.diff]], fmt="D", capsize=4, color=c)
        if np.isfinite(r.boot_lo):
            ax.plot([r.boot_lo, r.boot_hi], [i + 0.22] * 2, color=c, lw=1.2)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(table)), _comparison_names(table))
    ax.invert_yaxis()  # the primary on top
    ax.set_xlabel(f"paired Δ{table['metric'].iloc[0]} (treatment − control)")
    ax.grid(alpha=0.3, axis="x")
    levels = ", ".join(f"{r.role} {_pct(r.interval_level)} %" for r in table.drop_duplicates("role").itertuples())
    ax.set_title(f"{what} comparisons, {_flip_note(bool(table['flip_test'].iloc[0]))}, n = "
                 f"{table['pairs'].min()}–{table['pairs'].max()} paired seeds\ndots: seeds; diamonds: mean ± interval "
                 f"over seeds ({levels}); thin bars: bootstrap over seeds and images")
    return _save(fig, path)


@_styled
def decomposition_figure(frame: pd.DataFrame, results_dir, path=None):
    """The primary's change step by step (``decomposition_chain``), one row per step and the total below: on the
    design's metric as registered (each seed's paired difference, the mean with its corrected interval, the bootstrap
    over seeds and images) and, exploratory, on EPE on found keypoints (95 %, uncorrected). Rows are named by what
    each step changes."""
    table = cached_design_table(frame, results_dir)
    chain = decomposition_chain(table)
    fig, axes = plt.subplots(1, 2, figsize=(12, 1.6 + 0.8 * (len(chain) + 1)), sharey=True, constrained_layout=True)
    if chain.empty or not chain["ready"].astype(bool).all():
        axes[0].text(0.5, 0.5, "no chain of registered steps with estimates from the primary's control to its "
                     "treatment in these records", ha="center", transform=axes[0].transAxes)
        for ax in axes:
            ax.set_axis_off()
        return _save(fig, path)
    total = table[table["role"] == "primary"]
    rows = pd.concat([chain, total], ignore_index=True)
    other = decomposition_on(frame, results_dir).reset_index(drop=True)
    names = [f"{step_change(frame, r.control, r.treatment)}\n{_arm_label(r.control)} → {_arm_label(r.treatment)}"
             f" (n = {r.pairs})" if i < len(chain) else f"total (primary)\n{_arm_label(r.control)} → "
             f"{_arm_label(r.treatment)} (n = {r.pairs})" for i, r in enumerate(rows.itertuples())]
    rng = np.random.default_rng(0)  # jitter only
    panels = ((axes[0], rows, f"registered: paired Δ{rows['metric'].iloc[0]}",
               f"steps at their simultaneous {_pct(rows['interval_level'].iloc[0])} %, total at "
               f"{_pct(rows['interval_level'].iloc[-1])} %"),
              (axes[1], other, "exploratory: paired Δ EPE on found keypoints (px)",
               "95 %, uncorrected; lower is better"))
    for ax, data, title, xlabel in panels:
        for i, r in enumerate(data.itertuples()):
            c = "black" if i == len(data) - 1 else arm_colour(r.treatment)
            seeds = np.asarray(r.per_seed, float)
            ax.scatter(seeds, i - 0.2 + rng.uniform(-0.05, 0.05, len(seeds)), s=14, zorder=3, color=c)
            ax.errorbar([r.diff], [i], xerr=[[r.diff - r.diff_lo], [r.diff_hi - r.diff]], fmt="D", capsize=4, color=c)
            if np.isfinite(r.boot_lo):
                ax.plot([r.boot_lo, r.boot_hi], [i + 0.22] * 2, color=c, lw=1.2)
        ax.axvline(0, color="grey", lw=0.8)
        ax.axhline(len(data) - 1.5, color="grey", lw=0.6, ls=":")
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(rows)), names)
    axes[0].invert_yaxis()
    fig.suptitle(f"what each step of ufpa's change does, {_flip_note(bool(rows['flip_test'].iloc[0]))}: dots seeds, "
                 "diamonds mean ± interval over seeds, thin bars bootstrap over seeds and images\nsteps from "
                 "every registered design of the study; a step with fewer seeds than the total is interim")
    return _save(fig, path)


def _comparison_names(table: pd.DataFrame) -> list[str]:
    return [f"{r.role}: " + _vs(r.control, r.treatment, sep="\nvs ") for r in table.itertuples()]


@_styled
def gain_by_epoch_figure(gains: pd.DataFrame, path=None):
    """Each registered comparison's paired val AP difference (no flip) against epoch, one panel each (a shared y axis,
    so panels compare): mean and 95 % band over seeds."""
    groups = list(gains.groupby(["control", "treatment"], sort=False)) if not gains.empty else []
    cols = 2 if len(groups) > 1 else 1
    rows = max(1, -(-len(groups) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(10, 0.6 + 2.1 * rows), sharex=True, sharey=True, squeeze=False,
                             constrained_layout=True)
    if not groups:
        axes[0, 0].text(0.5, 0.5, "no registered design in these records", ha="center",
                        transform=axes[0, 0].transAxes)
        axes[0, 0].set_axis_off()
        return _save(fig, path)
    for k, (ax, ((control, treatment), g)) in enumerate(zip(axes.flat, groups)):
        c = arm_colour(treatment)
        ax.plot(g["epoch"], g["diff"], "-o", ms=2.5, color=c)
        ax.fill_between(g["epoch"], g["diff"] - g["diff_ci"].fillna(0), g["diff"] + g["diff_ci"].fillna(0), color=c,
                        alpha=0.2, lw=0)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(f"{_vs(control, treatment)} (n = {g['pairs'].max()})")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        if k % cols == 0:
            ax.set_ylabel("paired Δ val AP")
        ax.tick_params(labelbottom=True)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.set_axis_off()
    fig.suptitle("does the gain hold with training? val AP with flip test off (the learning curve's evaluations), "
                 "paired over seeds, mean ± 95 % CI")
    return _save(fig, path)


@_styled
def per_joint_figure(results_dir, flip_test: bool = True, path=None):
    """Per joint and arm: end-point error on found keypoints and left/right swap rate, mean ± 95 % CI over seeds
    (from the records' per-joint metrics; runs recorded before those existed are left out)."""
    from .data.synthetic import KEYPOINT_NAMES

    rows = []
    for _, rec in run_records(results_dir):
        cfg, res = rec["config"], rec["results"]
        m = res["flip" if flip_test else "no_flip"]
        if "epe_found_per_joint" not in m:
            continue
        rows.append({"arm": arm_name(cfg["alignment"], cfg.get("padding", ""), res["input_size"], cfg["codec"]),
                     "found": np.asarray(m["epe_found_per_joint"], float),
                     "swap": np.asarray(m["swap_rate_per_joint"], float)})
    fig, axes = plt.subplots(2, 1, figsize=(10, 6.4), constrained_layout=True, sharex=True)
    if not rows:
        axes[0].text(0.5, 0.5, "no per-joint localisation metrics in these records", ha="center",
                     transform=axes[0].transAxes)
        return _save(fig, path)
    arms = arm_order(r["arm"] for r in rows)
    k = len(rows[0]["found"])
    names = list(KEYPOINT_NAMES) if k == len(KEYPOINT_NAMES) else [str(i) for i in range(k)]
    width = 0.8 / len(arms)
    labels = ("EPE on found keypoints (image px)", "nearer the partner's truth\n(swapped or lost between)")
    for ax, key, label in zip(axes, ("found", "swap"), labels):
        for j, arm in enumerate(arms):
            values = np.stack([r[key] for r in rows if r["arm"] == arm])
            stats_ = [stats.mean_ci(values[:, i]) for i in range(k)]
            x = np.arange(k) + width * (j - (len(arms) - 1) / 2)
            ax.errorbar(x, [s[0] for s in stats_], yerr=[0 if not np.isfinite(s[1]) else s[1] for s in stats_],
                        fmt="o", ms=4, capsize=2, color=arm_colour(arm),
                        mfc="white" if _hollow(arm) else arm_colour(arm), label=_arm_label(arm))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y")
    axes[1].set_xticks(range(k), names, rotation=45, ha="right")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=min(len(arms), 4))  # off data
    n = min(sum(r["arm"] == a for r in rows) for a in arms)
    axes[0].set_title(f"per joint, mean ± 95 % CI over seeds; {_flip_note(flip_test)}, n ≥ {n} seeds per arm;\n"
                      f"found: within {FOUND_RADIUS:g} × box size and not swapped")
    return _save(fig, path)


@_styled
def misalignment_and_gain(frame: pd.DataFrame, table: pd.DataFrame | None = None, flip_test: bool = True,
                          path=None):
    """Left: how far fused features sit apart in each trained arm (the audit every training record carries: interior
    mean and worst, border worst; a network's geometry does not depend on its seed). Right: the registered comparisons'
    paired differences with their intervals, so a reader sees the cause beside the effect."""
    sub = frame[frame["flip_test"] == flip_test]
    arms = arm_order(sub["arm"])
    rows = 0 if table is None else len(table)
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3.8, 1.2 + 0.45 * rows)), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1, 1.15]})
    ax = axes[0]
    mis = sub.groupby("arm")[["misalignment_mean_px", "misalignment_px", "border_misalignment_px"]].first()
    width = 0.27
    for i, arm in enumerate(arms):
        for j, (col, hatch) in enumerate((("misalignment_mean_px", ""), ("misalignment_px", ""),
                                          ("border_misalignment_px", "//"))):
            v = mis.loc[arm, col]
            ax.bar(i + (j - 1) * width, v, width * 0.9, color=arm_colour(arm), alpha=(0.45, 1.0, 1.0)[j],
                   fill=j < 2, hatch=hatch, edgecolor=arm_colour(arm))
            if v == 0:
                ax.text(i + (j - 1) * width, 0, "0", ha="center", va="bottom", fontsize=9)
    ax.set_xticks(range(len(arms)), [_arm_label(a) for a in arms], rotation=20, ha="right")
    ax.set_ylabel("fusion shift (input px)")
    ax.set_title("trained networks' fusions: interior mean (light),\ninterior worst (solid), border worst (hatched)")
    ax.grid(alpha=0.3, axis="y")
    ax = axes[1]
    if table is None or table.empty:
        ax.text(0.5, 0.5, "no registered design in these records", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        for i, r in enumerate(table.itertuples()):
            ax.errorbar([r.diff], [i], xerr=[[r.diff - r.diff_lo], [r.diff_hi - r.diff]], fmt="D", capsize=4,
                        color=arm_colour(r.treatment))
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_yticks(range(len(table)), _comparison_names(table))
        ax.invert_yaxis()
        ax.set_xlabel(f"paired Δ{table['metric'].iloc[0]}")
        ax.set_title(f"registered comparisons, mean ± interval over seeds\n({_flip_note(flip_test)}, n = "
                     f"{table['pairs'].min()}–{table['pairs'].max()} paired seeds)")
        ax.grid(alpha=0.3, axis="x")
    return _save(fig, path)


def _fusion_label(path: str, factor: int) -> str:
    """'stages.1.0.fuse.0.2.resample' -> 'stage 3: branch 2 -> 0 (x4)'; another model's path as it is."""
    parts = path.removesuffix(".resample").split(".")
    if len(parts) == 6 and parts[0] == "stages" and parts[3] == "fuse":
        return f"stage {int(parts[1]) + 2}: branch {parts[5]} -> {parts[4]} (x{factor})"
    return f"{path} (x{factor})"


def learned_offsets(frame: pd.DataFrame, results_dir) -> list[dict]:
    """The learned-alignment runs' offsets against the geometry (each run's ``<run_id>.offsets.json``, checked against
    the hash in its record), with the run's arm and seed; empty without such runs."""
    out = []
    runs = frame[frame["alignment"] == "learned"].drop_duplicates("run_id")
    for r in runs.itertuples():
        text = _sidecar(results_dir, r.run_id, ".offsets.json", "offsets_sha256", "offsets")
        if text is None:
            raise ValueError(f"the learned-alignment run {r.run_id} has no offsets file ({r.run_id}.offsets.json) "
                             "named in its record: it was made before runs wrote them; re-run it")
        out.append({"arm": r.arm, "seed": int(r.seed), **json.loads(text)})
    return out


def learned_offsets_table(frame: pd.DataFrame, results_dir) -> pd.DataFrame:
    """Per learned arm, fusion point, axis and region: the correction the geometry asks for (minus the zero-offset
    shift; mean and SD over outputs, input px), the learned offset (mean over seeds of each run's mean; its SD over
    seeds; and the mean within-run SD over positions and images), the RMS shift before and after, and the share of
    it removed (mean, min and max over seeds)."""
    rows = [{"arm": run["arm"], "seed": run["seed"], **row} for run in learned_offsets(frame, results_dir)
            for row in run["summary"]]
    if not rows:
        return pd.DataFrame({"learned alignment": ["no runs of alignment 'learned' in these records"]})
    data = pd.DataFrame(rows)
    out = (data.groupby(["arm", "fusion", "factor", "axis", "region"], sort=False)
           .agg(seeds=("seed", "nunique"), outputs=("outputs", "first"),
                correction_mean_px=("correction_mean_px", "first"), correction_sd_px=("correction_sd_px", "first"),
                learned_mean_px=("learned_mean_px", "mean"), learned_mean_sd_seeds=("learned_mean_px", "std"),
                learned_sd_px=("learned_sd_px", "mean"), rms_shift_px=("rms_shift_px", "first"),
                rms_residual_px=("rms_residual_px", "mean"), removed=("removed", "mean"),
                removed_min=("removed", "min"), removed_max=("removed", "max"))
           .reset_index())
    out.insert(1, "fusion point", [_fusion_label(p, f) for p, f in zip(out.pop("fusion"), out.pop("factor"))])
    return out


@_styled
def learned_offsets_figure(frame: pd.DataFrame, results_dir, path=None):
    """Per fusion point (rows) and axis (columns): the correction the geometry asks for at every output (minus the
    zero-offset shift, black ticks) and the offset the learned aligner realised there (mean over seeds, the band
    spanning the seeds), input px; the border band (one coarse sample at each end) shaded."""
    runs = learned_offsets(frame, results_dir)
    if not runs:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.text(0.5, 0.5, "no runs of alignment 'learned' in these records", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    arm = arm_order([r["arm"] for r in runs])[0]
    runs = [r for r in runs if r["arm"] == arm]
    fields = [(p["fusion"], p["axis"]) for p in runs[0]["profiles"]]
    fusions = list(dict.fromkeys(f for f, _ in fields))
    fig, axes = plt.subplots(len(fusions), 2, figsize=(10, 1.9 * len(fusions) + 0.8), squeeze=False,
                             constrained_layout=True)
    for row, fusion in enumerate(fusions):
        for col, axis in enumerate(("H", "W")):
            ax = axes[row, col]
            profile = [p for r in runs for p in r["profiles"] if p["fusion"] == fusion and p["axis"] == axis]
            if not profile:
                ax.set_axis_off()
                continue
            first, f = profile[0], profile[0]["factor"]
            n = len(first["shift_px"])
            o = np.arange(n)
            learned = np.array([p["learned_px"] for p in profile])
            ax.axvspan(-0.5, f - 0.5, color="0.92", lw=0)
            ax.axvspan(n - f - 0.5, n - 0.5, color="0.92", lw=0)
            ax.plot(o, -np.asarray(first["shift_px"]), "_", ms=9, mew=1.6, color="black",
                    label="geometry: correction (-shift)")
            ax.fill_between(o, learned.min(0), learned.max(0), color=COLOURS["learned"], alpha=0.25, lw=0)
            ax.plot(o, learned.mean(0), "o-", ms=2.5, lw=1, color=COLOURS["learned"], label="learned offset")
            ax.axhline(0, color="grey", lw=0.6)
            ax.set_title(f"{_fusion_label(fusion, f)}, along {'height' if axis == 'H' else 'width'}")
            ax.set_xlabel(f"output index along {'height' if axis == 'H' else 'width'}")
            ax.set_ylabel("input px")
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(loc="upper left")
    fig.suptitle(f"What the learned aligner ({_arm_label(arm)}) learned against the geometry at each fusion\n(mean "
                 f"over n = {len(runs)} seeds, band: their range; {runs[0]['images']} val crops; shaded: border band)")
    return _save(fig, path)


# A drawing template (an upright person, arbitrary units) to place the per-joint bias arrows; not data.
TEMPLATE = np.array([[0, -8.2], [0.35, -8.5], [-0.35, -8.5], [0.8, -8.3], [-0.8, -8.3], [1.6, -6.8], [-1.6, -6.8],
                     [2.1, -4.6], [-2.1, -4.6], [2.3, -2.6], [-2.3, -2.6], [1.0, -2.4], [-1.0, -2.4], [1.1, 1.0],
                     [-1.1, 1.0], [1.2, 4.2], [-1.2, 4.2]])
SKELETON = viz.SKELETON_0  # COCO limbs, 0-based


def abs_bias_floor(metrics: dict, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> float:
    """The |bias| an unbiased model would show from sampling alone, at its ``level`` quantile: each joint's mean
    signed error redrawn as Normal(0, its error variance / its keypoint count) per axis, |bias| (``abs_bias``) of each
    draw (a parametric bootstrap from the record's per-joint spread). A measured |bias| below it is not told apart from
    none. NaN for records made before runs recorded the spread."""
    if "error_var_x_per_joint" not in metrics:
        return float("nan")
    n = np.maximum(np.asarray(metrics["keypoints_per_joint"], float), 1)
    se = np.sqrt(np.stack([np.asarray(metrics["error_var_x_per_joint"], float),
                           np.asarray(metrics["error_var_y_per_joint"], float)], 1) / n[:, None])
    draws = np.random.default_rng(seed).normal(size=(resamples,) + se.shape) * se
    return float(np.quantile(np.nanmean(np.hypot(draws[..., 0], draws[..., 1]), 1), level))


def abs_bias(bias_x_per_joint, bias_y_per_joint) -> float:
    """|bias|, the one definition the tables, figures and findings use: the length of each joint's mean signed error
    (image px), averaged over joints."""
    return float(np.nanmean(np.hypot(np.asarray(bias_x_per_joint, float), np.asarray(bias_y_per_joint, float))))


@_styled
def bias_fields(results_dir, flip_test: bool = True, path=None, scale: float = 0.5):
    """Signed bias per joint (mean over seeds, image px) as arrows on a template skeleton, one panel per arm: what a
    systematic shift of the features leaves in the keypoints. ``scale``: template units per image px."""
    groups: dict = {}
    for _, rec in run_records(results_dir):
        cfg, res = rec["config"], rec["results"]
        m = res["flip" if flip_test else "no_flip"]
        arm = arm_name(cfg["alignment"], cfg.get("padding", ""), res["input_size"], cfg["codec"])
        groups.setdefault(arm, []).append(np.stack([m["bias_x_per_joint"], m["bias_y_per_joint"]], 1))
    arms = arm_order(groups)
    fig, axes = plt.subplots(1, len(arms), figsize=(max(2.6 * len(arms), 6), 4.2), constrained_layout=True,
                             squeeze=False)
    for ax, arm in zip(axes[0], arms):
        b = np.nanmean(np.asarray(groups[arm], float), 0)
        for a, c in SKELETON:
            ax.plot(*TEMPLATE[[a, c]].T, color="0.8", lw=1.5, zorder=1)
        ax.quiver(TEMPLATE[:, 0], TEMPLATE[:, 1], b[:, 0], b[:, 1], color=arm_colour(arm), angles="xy",
                  scale_units="xy", scale=1 / scale, width=0.012, zorder=2)
        ax.annotate("", xy=(-3 + 2 * scale, 6), xytext=(-3, 6), arrowprops=dict(arrowstyle="->", color="k"))
        ax.text(-3, 6.5, "2 px", va="top")
        ax.set_xlim(-4, 4)
        ax.set_ylim(7, -10)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{_arm_label(arm)}\n|bias| {abs_bias(b[:, 0], b[:, 1]):.2f} px, n = {len(groups[arm])}")
    fig.suptitle(f"signed bias per joint (prediction − ground truth, image px; key: 2 px),\nmean over seeds; "
                 f"{_flip_note(flip_test)}")
    return _save(fig, path)


@_styled
def flip_consistency_figure(frame: pd.DataFrame, path=None):
    """Distance between the predictions on an image and on its mirror, mapped back (image px): one dot per run and
    the mean ± 95 % CI per arm (the measure compares the two flip settings itself)."""
    sub = frame[~frame["flip_test"]]
    arms = arm_order(sub["arm"])
    fig, ax = plt.subplots(figsize=(10, 3.6), constrained_layout=True)
    for i, arm in enumerate(arms):
        values = sub.loc[sub["arm"] == arm, "flip_consistency_px"]
        _dots(ax, i - 0.1, values, arm)
        mean, half, _ = stats.mean_ci(values)
        ax.errorbar([i + 0.18], [mean], yerr=[0 if not np.isfinite(half) else half], fmt="D", capsize=4,
                    color=arm_colour(arm))
    ax.set_xticks(range(len(arms)), [_arm_label(a) for a in arms], rotation=20, ha="right")
    ax.set_ylabel("flip consistency (image px)")
    ax.set_title(f"prediction vs mirrored prediction: runs (dots), mean ± 95 % CI (diamonds);\n"
                 f"{_seeds_note(sub)}; lower is better")
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


@_styled
def learning_curve_panels(curves: pd.DataFrame, path=None):
    """Training loss, val AP (no flip) and the learning rate per epoch for every run (thin: one seed; thick: the mean
    per arm): whether the models learned, and how the schedule shaped the end of their curves."""
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.8), constrained_layout=True)
    arms = arm_order(curves["arm"])
    for arm in arms:
        g = curves[curves["arm"] == arm]
        c, ls = arm_colour(arm), "--" if _hollow(arm) else "-"
        for _, run in g.groupby("seed"):
            axes[0].semilogy(run["epoch"], run["loss"], ls, color=c, alpha=0.25, lw=0.8)
            ev = run.dropna(subset=["val_AP"])
            axes[1].plot(ev["epoch"], ev["val_AP"], ls, color=c, alpha=0.25, lw=0.8)
        mean = g.groupby("epoch")[["loss", "val_AP"]].mean()
        axes[0].semilogy(mean.index, mean["loss"], ls, color=c, lw=2, label=_arm_label(arm))
        ev = mean.dropna(subset=["val_AP"])
        axes[1].plot(ev.index, ev["val_AP"], ls, marker="o", color=c, lw=2, ms=3, label=_arm_label(arm))
    lr = curves.dropna(subset=["lr"]).drop_duplicates("epoch") if "lr" in curves else pd.DataFrame()
    if len(lr):
        axes[2].plot(lr["epoch"], lr["lr"], color="k", lw=1.5)
    for ax, label in zip(axes, ("training loss (log)", "val AP, no flip (axis spans the data)",
                                "learning rate at the epoch's end")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[1].legend()
    n = curves.groupby("arm")["seed"].nunique()
    fig.suptitle(f"learning curves: seeds (thin), mean per arm (thick); n = {n.min()}"
                 f"{'' if n.min() == n.max() else f'–{n.max()}'} seeds per arm; one schedule for every run")
    return _save(fig, path)


# --- findings --------------------------------------------------------------------------------------------------------

def findings(frame: pd.DataFrame, flip_test: bool = True, level: float = 0.95, results_dir=None) -> str:
    """The study's findings in words, every number read from the records (Markdown): from the registered design
    (``design_findings``) when ``results_dir`` holds one, else from each alignment's comparison with the baseline
    (``alignment_findings``)."""
    if results_dir is not None and design(results_dir) is not None:
        return design_findings(frame, results_dir)
    return alignment_findings(frame, flip_test, level)


def _interval(lo, hi, digits=3) -> str:
    return f"{lo:+.{digits}f} to {hi:+.{digits}f}" if np.isfinite(lo) and np.isfinite(hi) else "n/a"


POWER_CAP = 10_000  # stats.seeds_for_power's default ``most``


def _p_format(value: float, digits: int = 3) -> str:
    """A p-value at ``digits``; one that rounds to 0 reads "< 0.001": small, not impossible."""
    return f"< {10 ** -digits:.{digits}f}" if value < 0.5 * 10 ** -digits else f"{value:.{digits}f}"


def _p_text(name, value) -> str:
    return f"{name} {_p_format(value)}" if np.isfinite(value) else f"{name} n/a"


def _pct(level: float) -> str:
    """A confidence level in per cent as exactly as it was set (98.75, not 98.8: Bonferroni's levels are not round)."""
    return f"{100 * level:.4g}"


def _comparison_lines(table: pd.DataFrame, prefix: str = "") -> list[str]:
    """One findings line per comparison of a ``design_table``: its estimate, intervals, p-values, verdict and the
    seeds its spread asks for; or what it still waits for."""
    lines = []
    for r in table.itertuples():
        role = "primary" if r.role == "primary" else "secondary"
        label = f"{prefix}{role}" if prefix else role.capitalize()
        if not r.ready or r.pairs < 2:
            lines.append(f"- **{label}: {_vs(r.control, r.treatment, '`')}**: {r.verdict}.")
            continue
        p = _p_text("p", r.p_t) if r.role == "primary" else _p_text("Holm p", r.p_holm)
        need = (f"about {int(r.seeds_for_power)}" if (r.seeds_for_power or POWER_CAP) < POWER_CAP else
                f"more than {POWER_CAP:,}")  # stats.seeds_for_power's cap: a difference at or near zero
        power = (f" With this spread (SD {r.sd:.3f}), 80 % power for a difference this size at this level needs {need} "
                 "paired seeds." if r.pairs > 1 else " One paired seed: no spread, no power.")
        lines.append(
            f"- **{label}: {_vs(r.control, r.treatment, '`')}**: Δ{r.metric} {r.diff:+.3f} "
            f"({_pct(r.interval_level)} % interval over {r.pairs} paired seed{'s' if r.pairs != 1 else ''} "
            f"{_interval(r.diff_lo, r.diff_hi)}; over seeds and images {_interval(r.boot_lo, r.boot_hi)}; {p}, "
            f"{_p_text('sign-flip p', r.p_sign_flip)}; {r.control_mean:.3f} → {r.treatment_mean:.3f}): "
            f"**{r.verdict}**.{power}")
    return lines


def own_family_findings(frame: pd.DataFrame, results_dir) -> str:
    """Each own-family design's findings (Markdown; empty without one): what it tests and when it registered, its
    runs so far and their convergence, and each comparison as ``_comparison_lines`` words it. A confirmatory design's
    verdicts are the only ones that may call an exploratory result of the design it confirms a finding."""
    lines = []
    times = dict(zip(frame["run_id"], frame["time_utc"]))
    by_profile = {r["config"]["profile"]: r for r in design_records(results_dir)}
    for d in own_family_designs(results_dir):
        table = _cached(frame, results_dir, d)
        runs = design_frame(frame, results_dir, d).query("flip_test == @d['flip_test']")
        reg = d["registered"][0]
        seeds = sorted({int(_SEED.search(i).group(1)) for i in d["run_ids"]})
        m = len(d["secondary"])
        when = registration_note(by_profile[d["profile"]], times)
        if d["confirms"]:
            held_out = when.startswith("before")
            what = (f"**Confirmatory design `{d['profile']}`** (registered {reg['time_utc']} at commit "
                    f"{reg['git_commit']}, {when}{'' if held_out else ': not a held-out test'}): the comparisons of "
                    f"`{d['confirms']}` on")
        else:  # runs it shares with another design may have records from before it: it claims no held-out test
            what = (f"**Design `{d['profile']}`, its own family** (registered {reg['time_utc']} at commit "
                    f"{reg['git_commit']}, {when}): its comparisons on")
        primary = f"primary at {100 * d['level']:.0f} %, " if d["primary"] else "no primary, "
        lines.append(f"- {what} {d['metric']}, {_flip_note(d['flip_test'])}, seeds {seeds} only; {primary}{m} "
                     f"secondary as one Holm family (simultaneous {_pct(_family_level(d))} %). Runs with records: "
                     f"{len(runs)} of {len(d['run_ids'])}, {int(runs['plateau'].astype(bool).sum())} of them "
                     f"plateaued{_trend_note(runs)}.")
        lines += _comparison_lines(table, prefix="Confirmatory " if d["confirms"] else f"`{d['profile']}` ")
    return "\n".join(lines) + ("\n" if lines else "")


def _decomposition_lines(frame: pd.DataFrame, results_dir, table: pd.DataFrame, d: dict) -> list[str]:
    """The findings' decomposition: each registered step of the finest chain by what it changes, at the design's
    metric with its simultaneous interval, how the steps add up, and the same steps on EPE on found keypoints
    (exploratory)."""
    dec = decomposition_table(table)
    if dec.empty:
        return []
    steps = dec[dec["part"].str.contains("->")]
    total = dec[dec["part"] == "primary (total)"].iloc[0]
    shared = int(total["shared_seeds"])

    def piece(r, interval=True):
        interim = "; interim" if "interim" in str(getattr(r, "verdict", "")) else ""
        c, t = _pair_labels(r.control, r.treatment)
        return (f"{step_change(frame, r.control, r.treatment)} (`{c}` → `{t}`) {r.diff:+.3f}"
                + (f" ({_interval(r.diff_lo, r.diff_hi)}, {r.pairs} seeds{interim})" if interval else ""))
    resolved = total["verdict"].startswith(("higher", "lower"))
    lines = [f"- **Decomposition** of the primary's {total['diff']:+.3f} {d['metric']} into registered steps (the "
             f"finest chain over the study's designs; simultaneous {_pct(_family_level(d))} %): "
             + "; ".join(piece(r) for r in steps.itertuples())
             + f". On the {shared} seeds every step and the total share, the steps sum to the total "
             f"({total['diff_shared']:+.3f}) exactly. "
             + ("Shares of the total: " + ", ".join(f"{r.share_of_total:.2f}" for r in steps.itertuples()) + "."
                if resolved else f"The total claims no direction, its verdict being {total['verdict']}; so no "
                                 "step's share of it is stated (each step's verdict is in the design table).")]
    other = decomposition_on(frame, results_dir, flip_test=d["flip_test"])
    if len(other):
        text = "; ".join(f"{piece(r, False)} px ({_interval(r.diff_lo, r.diff_hi)} over seeds, "
                         f"{_interval(r.boot_lo, r.boot_hi)} over seeds and images, {r.pairs} seeds)"
                         for r in other[other["part"] == "step"].itertuples())
        t = other[other["part"] == "total"].iloc[0]
        lines.append(f"- **The same steps on EPE on found keypoints** (exploratory: 95 %, uncorrected, not in the "
                     f"family; lower is better): {text}; total {t['diff']:+.3f} px "
                     f"({_interval(t['diff_lo'], t['diff_hi'])}, {t['pairs']} seeds). Only a registered design's "
                     "verdict makes one a finding" + "".join(
                         f"; {step_change(frame, r.control, r.treatment)} is tested by {', '.join(tested)} (below) "
                         "on runs registered before they started" for r in steps.itertuples()
                         if (tested := _confirming(results_dir, [(r.control, r.treatment)]))) + ".")
    return lines


def _confirming(results_dir, pairs: list[tuple[str, str]]) -> list[str]:
    """The confirmatory designs (as `profile` names) that test any of these (control, treatment) comparisons."""
    return [f"`{d['profile']}`" for d in own_family_designs(results_dir) if d["confirms"]
            and {(c["control"], c["treatment"]) for c in [d["primary"] or {}, *d["secondary"]] if c} & set(pairs)]


def design_findings(frame: pd.DataFrame, results_dir) -> str:
    """Findings of a registered design: what was registered and when, convergence, the primary comparison, the
    secondary family (Holm), the decomposition, whether the gain holds with training, and the localisation metrics
    (exploratory). A direction is claimed only as ``_verdict`` allows."""
    d = design(results_dir)
    table = cached_design_table(frame, results_dir)
    times = dict(zip(frame["run_id"], frame["time_utc"]))
    frame = design_frame(frame, results_dir, d)
    sub = frame[frame["flip_test"] == d["flip_test"]]
    runs = sub.drop_duplicates("run_id")
    flip = _flip_note(d["flip_test"])
    lines = [f"- **Runs**: {len(runs)} training records ({', '.join(sorted(set(sub['model'])))}; data "
             f"{', '.join(sorted(set(sub['data'])))}; {runs['epochs'].iloc[0]} epochs; arms "
             f"{', '.join(_arm_label(a) for a in arm_order(sub['arm']))}; seeds {sorted(set(sub['seed']))}; "
             f"{', '.join(sorted(set(sub['device'])))}; commit(s) {', '.join(sorted(set(sub['git_commit'])))})."]
    by_profile = {r["config"]["profile"]: r for r in design_records(results_dir)}
    reg = "; ".join(f"profile {r['profile']}, {r['time_utc']}, commit {r['git_commit']}, "
                    f"{registration_note(by_profile[r['profile']], times)}" for r in d["registered"])
    m = len(d["secondary"])
    prim = d["primary"]
    lines.append(f"- **Design, registered** ({reg}): primary comparison "
                 + (_vs(prim["control"], prim["treatment"], "`") if prim else "none")
                 + f", {d['metric']}, {flip}, {100 * d['level']:.0f} % interval; {m} secondary comparisons as one "
                 f"family (Holm-adjusted p, simultaneous intervals at {_pct(_family_level(d))} "
                 "%). A direction is claimed only when every run behind it met the plateau criterion and both its "
                 "intervals (over seeds; over seeds and val images) exclude zero.")
    plateaued = int(runs["plateau"].astype(bool).sum())
    lines.append(f"- **Convergence**: {plateaued} of {len(runs)} runs met the plateau criterion (val AP, no flip, "
                 f"gained < {PLATEAU_AP} over the last quarter of training; median gain there "
                 f"{np.nanmedian(runs['late_gain_AP']):+.3f}, largest {np.nanmax(runs['late_gain_AP']):+.3f}"
                 f"{_trend_note(runs, '; ', '')}).")
    lines += _comparison_lines(table)
    lines += _decomposition_lines(frame, results_dir, table, d)
    gains = design_gains(results_dir)
    primary_ready = bool(len(table)) and bool(table[table["role"] == "primary"]["ready"].all())
    if prim and len(gains) and primary_ready:  # one paired seed has no interval: no sentence about its course
        g = gains[(gains["control"] == prim["control"]) & (gains["treatment"] == prim["treatment"])]
        if len(g) > 1:
            first, last = g.iloc[0], g.iloc[-1]
            peak = g.loc[g["diff"].idxmax()]
            def pm(row):
                return f"{row['diff']:+.3f}" + (f" ± {row['diff_ci']:.3f}" if np.isfinite(row["diff_ci"]) else "")
            lines.append(f"- **With training** (val AP, no flip, mean ± 95 % CI over {int(last['pairs'])} paired "
                         f"seeds): the primary's paired gain was {pm(first)} at epoch {first['epoch']}, largest "
                         f"{pm(peak)} at epoch {peak['epoch']}, and {pm(last)} at the end (epoch {last['epoch']}): "
                         "how fast an arm learns is a result of its own, apart from where it ends (the "
                         "verdict above).")
    loc = localisation_comparisons(frame, results_dir, d["flip_test"], resamples=500)
    if prim and len(loc):
        lp = loc[(loc["control"] == prim["control"]) & (loc["treatment"] == prim["treatment"])]
        names = {"found_rate": "found", "epe_found_px": "EPE on found keypoints (px)", "swap_rate": "swap rate",
                 "pck_0.01": "PCK@1 %", "epe_px": "EPE (px)"}
        text = "; ".join(f"{names[r.metric]} {r.control_mean:.3f} → {r.treatment_mean:.3f} (Δ {r.diff:+.3f}, "
                         f"{_interval(r.diff_lo, r.diff_hi)} over seeds, {_interval(r.boot_lo, r.boot_hi)} over "
                         "seeds and images)" for r in lp.itertuples() if np.isfinite(r.diff))
        if text:
            tested = _confirming(results_dir, [(prim["control"], prim["treatment"])])
            lines.append(f"- **Where alignment acts** (primary pair, {flip}, exploratory: 95 %, uncorrected): {text}."
                         + (f" The confirmatory design ({', '.join(tested)}, below) tests this on runs it registered "
                            "before they started; only its verdicts can make it a finding." if tested else ""))
    if prim:
        arms = sub[sub["arm"].isin([prim["control"], prim["treatment"]])]
        b = arms.groupby("arm")[["abs_bias_px", "abs_bias_floor_px"]].mean()
        if arms["abs_bias_floor_px"].notna().any() and {prim["control"], prim["treatment"]} <= set(b.index):
            lines.append(f"- **|bias|** (the length of each joint's mean signed error, averaged over joints; mean over "
                         f"seeds): `{_arm_label(prim['control'])}` {b.loc[prim['control'], 'abs_bias_px']:.2f} px, "
                         f"`{_arm_label(prim['treatment'])}` {b.loc[prim['treatment'], 'abs_bias_px']:.2f} px; an "
                         f"unbiased model would show up to {b['abs_bias_floor_px'].mean():.2f} px from its val images "
                         "alone (95 % quantile of a parametric bootstrap of the per-joint means).")
    errors = _gross_error_share(results_dir, prim["control"] if prim else None, d["flip_test"])
    if errors:
        lines.append(errors)
    lines += learned_findings(frame, results_dir)
    return "\n".join(lines) + "\n"


def learned_shift_removed(frame: pd.DataFrame, results_dir) -> pd.DataFrame:
    """Per learned run and region (interior, border): the RMS shift the geometry predicts at zero offset and the RMS
    left after the learned offsets, pooled over every fusion point and axis (each weighted by its outputs), in input
    px, and the share removed."""
    rows = []
    for run in learned_offsets(frame, results_dir):
        data = pd.DataFrame(run["summary"])
        for region, g in data.groupby("region", sort=False):
            w = g["outputs"].to_numpy(float)
            before = float(np.sqrt((w * g["rms_shift_px"] ** 2).sum() / w.sum()))
            after = float(np.sqrt((w * g["rms_residual_px"] ** 2).sum() / w.sum()))
            rows.append({"arm": run["arm"], "seed": run["seed"], "region": region, "rms_shift_px": before,
                         "rms_residual_px": after, "removed": 1 - after / before if before > 0 else float("nan")})
    return pd.DataFrame(rows)


def learned_findings(frame: pd.DataFrame, results_dir) -> list[str]:
    """What each learned arm's samplers learned against the geometry, pooled over fusion points (one line per arm;
    none without learned runs): a description of the trained networks, not an estimate of an effect."""
    table = learned_shift_removed(frame, results_dir)
    lines = []
    for arm, g in table.groupby("arm", sort=False) if len(table) else ():
        parts = []
        for region in ("interior", "border"):
            r = g[g["region"] == region]
            if len(r):
                parts.append(f"{region}: RMS shift {r['rms_shift_px'].mean():.2f} → {r['rms_residual_px'].mean():.2f} "
                             f"px, {100 * r['removed'].mean():.0f} % removed (seeds {100 * r['removed'].min():.0f} "
                             f"to {100 * r['removed'].max():.0f} %)")
        lines.append(f"- **What the learned aligner learned** (`{_arm_label(arm)}`, {g['seed'].nunique()} seeds; "
                     "the shift the geometry predicts for its nearest upsampling, pooled over every fusion point and "
                     f"axis, input px): {'; '.join(parts)}. Per fusion point: table `learned_offsets` and figure "
                     "`06_learned_offsets`.")
    return lines


# Where the CPU study's gross errors sit (wrists first: the findings read the first two as the wrists).
GROSS_ERROR_JOINTS = ("left_wrist", "right_wrist", "left_ankle", "right_ankle")
# Extremities missed by more than this many times the trunk's error: detection, not localisation, rules the errors
# (easy with the preset's head: about 7x; markers with the official head: about 1.4x)
GROSS_ERROR_RATIO = 3.0


def _gross_error_share(results_dir, arm: str | None, flip_test: bool) -> str:
    """Where the control arm's error sits: the wrists' and ankles' share of the summed per-joint mean end-point
    error, their mean error, and the wrists' swap rate (mean over seeds)."""
    from .data.synthetic import KEYPOINT_NAMES

    per = []
    for _, rec in run_records(results_dir):
        cfg, res = rec["config"], rec["results"]
        if arm_name(cfg["alignment"], cfg.get("padding", ""), res["input_size"], cfg["codec"]) != arm:
            continue
        m = res["flip" if flip_test else "no_flip"]
        if "swap_rate_per_joint" in m:
            per.append((np.asarray(m["epe_per_joint"], float), np.asarray(m["swap_rate_per_joint"], float)))
    if not per or len(per[0][0]) != len(KEYPOINT_NAMES):
        return ""
    epe = np.mean([e for e, _ in per], 0)
    swap = np.mean([w for _, w in per], 0)
    far = [KEYPOINT_NAMES.index(n) for n in GROSS_ERROR_JOINTS]
    wrists = far[:2]
    near = [KEYPOINT_NAMES.index(n) for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")]
    gross = epe[far].mean() > GROSS_ERROR_RATIO * epe[near].mean()
    reading = ("A sub-pixel shift cannot move errors of that size, so AP measures detection here more than "
               "localisation." if gross else
               "The extremities are found about as well as the trunk, so localisation, not detection, limits "
               "accuracy here: the errors alignment acts on.")
    return (f"- **Where the error is** (`{_arm_label(arm)}`, mean over {len(per)} seeds): wrists and ankles (4 of "
            f"{len(epe)} joints) carry {100 * epe[far].sum() / epe.sum():.0f} % of the summed per-joint end-point "
            f"error (mean {epe[far].mean():.1f} px, against {epe[near].mean():.1f} px at shoulders and hips); "
            f"{100 * swap[wrists].mean():.1f} % of wrist predictions lie nearer the other wrist's ground truth than "
            f"their own (swapped, or lost between the two). {reading}")


def alignment_findings(frame: pd.DataFrame, flip_test: bool = True, level: float = 0.95) -> str:
    """Findings without a registered design (e.g. the pilot), every number read from the records. The alignments' paired
    comparisons with the baseline at one flip setting are one family: each gets its t-test p-value adjusted by Holm
    and its exact sign-flip p-value, and a simultaneous interval (Bonferroni: each at 1 - (1 - level) / m). A finding
    says "higher" or "lower" only when that corrected interval excludes zero and every run in it met the plateau
    criterion (``plateau``); otherwise it says what the runs cannot tell, and the seeds a test would need."""
    sub = frame[frame["flip_test"] == flip_test]
    agg = aggregate(sub, metrics=("AP", "epe_px"))
    diff = paired(sub, metrics=("AP", "epe_px"))
    lines = []
    n_runs = sub["run_id"].nunique()
    models = ", ".join(sorted(set(sub["model"])))
    seeds = sorted(set(sub["seed"]))
    lines.append(f"- **Runs**: {n_runs} training records ({models}; data {', '.join(sorted(set(sub['data'])))}; "
                 f"seeds {seeds}; {', '.join(sorted(set(sub['device'])))}; commit(s) "
                 f"{', '.join(sorted(set(sub['git_commit'])))}). Metrics with flip test"
                 f"{'' if flip_test else ' off'}; ± is the 95 % CI over seeds (Student t).")
    runs = sub.drop_duplicates("run_id")
    unconverged = runs[~runs["plateau"].astype(bool)]
    lines.append(f"- **Convergence**: {len(runs) - len(unconverged)} of {len(runs)} runs met the plateau criterion "
                 f"(val AP, no flip, gained < {PLATEAU_AP} over the last quarter of training; median gain there "
                 f"{np.nanmedian(runs['late_gain_AP']):+.3f}{_trend_note(runs, '; ', '')}). A comparison with a run "
                 "that had not plateaued makes no claim: more accurate cannot be told from learning faster.")

    def pm(value, ci, digits):
        return f"{value:.{digits}f}" + (f" ± {ci:.{digits}f}" if np.isfinite(ci) else " (one seed: no interval)")

    base = agg[agg["alignment"] == "baseline"]
    for _, b in base.iterrows():
        lines.append(f"- **Baseline** {b['model']} at {b['size']}: AP {pm(b['AP'], b['AP_ci'], 3)}, "
                     f"end-point error {pm(b['epe_px'], b['epe_px_ci'], 2)} px.")
    m = len(diff)
    if m:
        p_holm = stats.holm([stats.t_test(d) for d in diff["d_AP_per_seed"]])
        lines.append(f"- **Family**: the {m} paired comparisons with the baseline below (flip test "
                     f"{'on' if flip_test else 'off'}); p-values Holm-adjusted over them, intervals simultaneous "
                     f"(Bonferroni, each at {_pct(1 - (1 - level) / m)} %).")
    for i, (_, d) in enumerate(diff.iterrows()):
        size = sub.loc[(sub["alignment"] == d["alignment"]) & (sub["size"] == d["size"]), "input_size"].iloc[0]
        head = f"- **{d['alignment']}** ({d['model']}, {d['size']} nominal, run at {size}): ΔAP {d['d_AP']:+.3f}"
        per_seed = np.asarray(d["d_AP_per_seed"], float)
        if len(per_seed) < 2:
            lines.append(f"{head} ({d['pairs']} paired seed: no interval), ΔEPE {d['d_epe_px']:+.2f} px.")
            continue
        sd = per_seed.std(ddof=1)
        half = stats.t_quantile(1 - (1 - level) / m / 2, len(per_seed) - 1) * sd / np.sqrt(len(per_seed))
        lo, hi = d["d_AP"] - half, d["d_AP"] + half
        cells = sub[(sub["model"] == d["model"]) & (sub["size"] == d["size"]) & (sub["codec"] == d["codec"])
                    & sub["alignment"].isin(["baseline", d["alignment"]]) & sub["seed"].isin(d["seeds"])]
        waiting = int((~cells.drop_duplicates("run_id")["plateau"].astype(bool)).sum())
        if waiting:
            verdict = f"no claim: {waiting} of its {cells['run_id'].nunique()} runs had not plateaued"
        elif lo > 0 or hi < 0:
            verdict = f"{'higher' if lo > 0 else 'lower'} than the baseline (corrected interval excludes zero)"
        else:
            verdict = "not resolved by these runs (the corrected interval includes zero)"
        need = stats.seeds_for_power(d["d_AP"], sd, alpha=(1 - level) / m)
        lines.append(f"{head} (corrected interval {lo:+.3f} to {hi:+.3f}, {d['pairs']} paired seeds; Holm p "
                     f"{p_holm[i]:.2f}, sign-flip p {stats.sign_flip_test(per_seed):.2f}), ΔEPE "
                     f"{d['d_epe_px']:+.2f} px: {verdict}. 80 % power for a gain this size needs about {need} "
                     "paired seeds.")
    if len(diff):
        for alignment, g in diff.groupby("alignment", observed=True):
            g = g.sort_values("pixels")
            if len(g) > 1:
                lo, hi = g.iloc[0], g.iloc[-1]
                trend = "larger" if lo["d_AP"] > hi["d_AP"] else "smaller"
                apart = abs(lo["d_AP"] - hi["d_AP"]) > (lo["d_AP_ci"] + hi["d_AP_ci"])  # intervals do not overlap
                lines.append(f"- **Resolution** ({alignment}): the gain is {trend} at the lowest input size "
                             f"({lo['size']}: {lo['d_AP']:+.3f}) than at the highest ({hi['size']}: "
                             f"{hi['d_AP']:+.3f}); " + ("the intervals do not overlap." if apart else
                                                         "their 95 % intervals overlap, so the trend is not resolved "
                                                         "by these runs."))
    return "\n".join(lines) + "\n"


DIGITS = {"gain": 1, "ap_baseline": 1, "ap_method": 1, "detector": 1, "batch": 0, "share_of_total": 2,
          **dict.fromkeys(("control", "treatment", "control_mean", "treatment_mean", "diff", "diff_shared", "lo",
                           "hi", "diff_lo", "diff_hi", "boot_lo", "boot_hi", "p_t", "p_holm", "p_sign_flip", "level",
                           "sd", "late_gain_median", "late_gain_max", "found_rate", "swap_rate", "pck_0.01",
                           "pck_0.02"), 3)}
SIGNED = {"diff", "diff_shared", "lo", "hi", "diff_lo", "diff_hi", "boot_lo", "boot_hi", "late_gain_median",
          "late_gain_max", "d_AP"}  # printed with their sign
TABLES = {  # name -> (function of (frame, results_dir, flip_test), caption)
    "main": (lambda f, r, flip=True: main_table(f, flip),
             "Main comparison: mean ± 95 % CI over seeds; Δ is the paired difference to the baseline run of the same "
             "seed."),
    "ablation": (lambda f, r, flip=True: ablation_table(f),
                 "Ablation: alignment variant × codec × flip test (mean ± 95 % CI)."),
    "low_resolution": (lambda f, r, flip=True: lowres_table(f, flip),
                       "Gain vs input size: baseline AP and each variant's paired ΔAP (± 95 % CI) and ΔEPE."),
    "cost": (lambda f, r, flip=True: cost_table(f, r),
             "Cost: parameters, FLOPs and measured step time (bench records, with their device); training throughput "
             "from the training records (two runs shared the CPU, so their ratios are rough)."),
    "published": (lambda f, r, flip=True: published_table(),
                  "Published COCO val2017 AP (%), not reproduced here; sources listed."),
    "design": (lambda f, r, flip=True: design_summary(cached_design_table(f, r)),
               "The registered comparisons at the design's metric and flip setting (fixed before the runs, whatever "
               "the page's flip setting): paired difference (treatment − control) with its interval over seeds "
               "(Student t; primary at the design's level, the secondary family simultaneous by Bonferroni), the "
               "hierarchical bootstrap over seeds and val images at the same level, t-test p (Holm-adjusted over the "
               "secondary family), sign-flip p, runs that had not plateaued (val AP, whatever the design's metric), "
               "the paired seeds 80 % power would need if the observed difference and SD were the truth (post hoc: "
               "unreliable at few seeds), and the verdict (interim until all registered seeds are in)."),
    "decomposition": (lambda f, r, flip=True: decomposition_table(cached_design_table(f, r)),
                      "The primary comparison's change split into registered steps, the finest chain over every "
                      "design of the study (a control design may split a step of the primary's): each step as the "
                      "design table has it (paired difference over its seeds, simultaneous interval, Holm p, "
                      "verdict), then on the seeds every step and the total share (diff_shared), where the steps sum "
                      "to the total exactly; a step's share of the total only when the total's verdict claims a "
                      "direction."),
    "convergence": (lambda f, r, flip=True: convergence_table(f),
                    f"Convergence per arm: runs whose val AP (no flip) gained < {PLATEAU_AP} over the last quarter "
                    "of training (the registered plateau criterion: last evaluation at or before 3/4 of the epochs "
                    "to the final one), the gain there; post-hoc, the runs whose least-squares line through every "
                    "evaluation of that quarter gains < the same amount (trend_plateaued) and its largest gain; and "
                    "the final val AP (no flip)."),
    "localisation": (lambda f, r, flip=True: localisation_table(f, flip),
                     "Where alignment acts, per arm (mean ± 95 % CI over seeds): keypoints found (within "
                     f"{FOUND_RADIUS:g} × box size, not swapped), EPE on found keypoints (px), left/right swap rate, "
                     "PCK at 1 % and 2 % of the box size, EPE of all keypoints, |bias| (px) and the |bias| an unbiased "
                     "model would reach by sampling alone (95 % quantile; px)."),
    "learned_offsets": (lambda f, r, flip=True: learned_offsets_table(f, r),
                        "Learned alignment against the geometry, per fusion point and axis (input px): the correction "
                        "the geometry asks for (minus the shift at zero offset; mean and SD over outputs), the learned "
                        "offset (mean over seeds, its SD over seeds, the mean SD within a run over positions and val "
                        "crops), the RMS shift before and after, and the share removed (mean, min, max over seeds). "
                        "Border: one coarse sample at each end."),
    "own_family": (lambda f, r, flip=True: own_family_table(f, r),
                   "Designs judged as their own family, each at its own metric and flip setting on the runs it "
                   "registered (and no others): confirmatory designs (the comparisons of the design each confirms, "
                   "on runs that had no record when it registered) and `family: own` designs (e.g. the codec axis); "
                   "intervals, p-values and verdicts as in the design table (lower is better for an error in px)."),
    "localisation_comparisons": (lambda f, r, flip=True: localisation_comparisons(f, r, flip),
                                 "The registered comparisons on the localisation metrics: exploratory (95 %, "
                                 "uncorrected, not in the family), with the bootstrap over seeds and images."),
}
FLIP_TABLES = ("main", "low_resolution", "localisation", "localisation_comparisons")  # tables of one flip setting
FIGURES = {  # file stem -> function of (frame, results_dir, flip_test)
    "06_learning_curves": lambda f, r, flip=True: learning_curve_panels(learning_curves(r)),  # training: no flip test
    "06_accuracy_by_arm": lambda f, r, flip=True: accuracy_by_arm(f, flip),
    "06_design": lambda f, r, flip=True: design_figure(cached_design_table(f, r)),  # the design's flip setting
    "06_decomposition": lambda f, r, flip=True: decomposition_figure(f, r),  # the design's flip setting
    "06_own_family": lambda f, r, flip=True: design_figure(own_family_rows(f, r), what="own-family"),
    "06_gain_by_epoch": lambda f, r, flip=True: gain_by_epoch_figure(design_gains(r)),  # learning curve: no flip
    "06_per_joint": lambda f, r, flip=True: per_joint_figure(r, flip),
    "06_misalignment_and_gain": lambda f, r, flip=True: misalignment_and_gain(f, ready(cached_design_table(f, r)),
                                                                              flip),
    "06_bias_fields": lambda f, r, flip=True: bias_fields(r, flip_test=flip),
    "06_flip_consistency": lambda f, r, flip=True: flip_consistency_figure(f),  # compares the two settings itself
    "06_learned_offsets": lambda f, r, flip=True: learned_offsets_figure(f, r),  # a property of the trained network
}


OWN_FAMILY_OUTPUTS = {"own_family", "06_own_family"}  # drawn only where an own-family design is registered
_DESIGN_CACHE: dict = {}


def cached_design_table(frame: pd.DataFrame, results_dir) -> pd.DataFrame:
    """``design_table`` once per results folder and set of runs (its bootstrap takes seconds; the tables, figures and
    findings all read it)."""
    return _cached(frame, results_dir, None)


def _cached(frame: pd.DataFrame, results_dir, d: dict | None) -> pd.DataFrame:
    metric = (d or design(results_dir) or {"metric": "AP"})["metric"]
    key = _records_key(frame, results_dir, metric) + (json.dumps(d, sort_keys=True, default=sorted) if d else None,)
    if key not in _DESIGN_CACHE:
        if len(_DESIGN_CACHE) > 8:
            _DESIGN_CACHE.clear()
        _DESIGN_CACHE[key] = design_table(frame, results_dir, d=d)
    return _DESIGN_CACHE[key]


def own_family_rows(frame: pd.DataFrame, results_dir) -> pd.DataFrame:
    """Every own-family design's ``design_table``, one after the other (empty without one)."""
    parts = [_cached(frame, results_dir, d) for d in own_family_designs(results_dir)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def own_family_table(frame: pd.DataFrame, results_dir) -> pd.DataFrame:
    """Every own-family design's comparisons (``design_summary`` of each, on its own runs), with the profile and the
    metric; empty without one."""
    parts = [design_summary(_cached(frame, results_dir, d)).assign(design=d["profile"], metric=d["metric"])
             for d in own_family_designs(results_dir)]
    if not parts:
        return pd.DataFrame()
    out = pd.concat(parts, ignore_index=True)
    return out[["design", "metric"] + [c for c in out.columns if c not in ("design", "metric")]]


def design_gains(results_dir) -> pd.DataFrame:
    """``gain_by_epoch`` for the registered comparisons (empty without a design)."""
    d = design(results_dir)
    if d is None:
        return pd.DataFrame()
    comps = ([d["primary"]] if d["primary"] else []) + d["secondary"]
    return gain_by_epoch(design_frame(learning_curves(results_dir), results_dir, d),
                         [(c["control"], c["treatment"]) for c in comps])


def table(name: str, frame: pd.DataFrame, results_dir, tables_dir, flip_test: bool = True) -> pd.DataFrame:
    """Build table ``name`` (see ``TABLES``) with or without flip test, write it to ``tables_dir`` and return what it
    shows."""
    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}; the tables are {list(TABLES)}")
    build, caption = TABLES[name]
    if name in FLIP_TABLES:  # the others show both settings, or none
        caption = f"{caption} Flip test {'on' if flip_test else 'off'}."
    return write_table(build(frame, results_dir, flip_test), name, tables_dir, caption, DIGITS)


def figure(name: str, frame: pd.DataFrame, results_dir, figures_dir, flip_test: bool = True):
    """Draw figure ``name`` (see ``FIGURES``) with or without flip test and save it as ``figures_dir/<name>.png``."""
    if name not in FIGURES:
        raise ValueError(f"unknown figure {name!r}; the figures are {list(FIGURES)}")
    return _save(FIGURES[name](frame, results_dir, flip_test), Path(figures_dir) / f"{name}.png")


def render_all(results_dir, tables_dir, figures_dir, flip_test: bool = True) -> dict:
    """Every table and figure of the study from ``results_dir`` (one flip-test setting for all); returns the shown
    tables by name."""
    frame = load_runs(results_dir)
    skip = set() if own_family_designs(results_dir) else OWN_FAMILY_OUTPUTS  # nothing to show, no file
    out = {name: table(name, frame, results_dir, tables_dir, flip_test) for name in TABLES if name not in skip}
    for name in FIGURES:
        if name not in skip:
            plt.close(figure(name, frame, results_dir, figures_dir, flip_test))
    return out


def fill_markers(text: str, blocks: dict) -> str:
    """Replace each ``<!-- ufpa:NAME -->`` ... ``<!-- /ufpa:NAME -->`` block of ``text`` with ``blocks[NAME]``, so a
    README quotes the generated tables and findings instead of typing numbers."""
    import re

    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- ufpa:{re.escape(name)} -->\n).*?(<!-- /ufpa:{re.escape(name)} -->)", re.S)
        text = pattern.sub(lambda m, body=body: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)
    return text


def readme_blocks(results_dir, tables_dir) -> dict:
    """What the README quotes: each generated table's Markdown, the findings, and the speed measurements."""
    blocks = {name: Path(tables_dir, f"{name}.md").read_text(encoding="utf-8") for name in TABLES
              if Path(tables_dir, f"{name}.md").is_file()}
    blocks["findings"] = findings(load_runs(results_dir), results_dir=results_dir)
    blocks["speed"] = speed_summary(results_dir)
    blocks["localise_check"] = data_check_summary(results_dir)
    blocks["converged"] = converged_summary(results_dir, CONVERGED)
    blocks["markers"] = converged_summary(results_dir, MARKERS)
    return blocks


def speed_summary(results_dir) -> str:
    """The CPU loop's speed-ups (``bench train``), what each alignment costs against its goal and the ops that hold a
    missed one back (``bench models``), and whether bf16 trains as well as fp32 (``reports/bf16_check``), as Markdown
    from those records."""
    results_dir = Path(results_dir)
    lines = []
    loop = results_dir / "bench_train_cpu.json"
    if loop.is_file():
        rec = records.read_record(loop, "bench_train")
        rows = rec["results"]["loops"]
        steps = "; ".join(f"{r['mode']} {r['loop_ms_per_image']:.2f} ms (x{r['loop_vs_today']:.2f})" for r in rows)
        first, last = rows[0], rows[-1]
        lines.append(f"- **Training loop, ms per image** (`bench train`, {rows[0]['model']} at "
                     f"{'x'.join(map(str, rec['config']['input_size']))}, batch {rec['config']['batch']}, one "
                     f"thread, {rec['provenance']['device']}; each mode adds one change to the one before): {steps}. "
                     f"Data {first['data_ms_per_image']:.2f} -> {last['data_ms_per_image']:.2f} ms, step "
                     f"{first['step_ms_per_image']:.2f} -> {last['step_ms_per_image']:.2f} ms. Goal x"
                     f"{rec['results']['goal_loop_vs_today']}: "
                     f"{'met' if last['loop_vs_today'] <= rec['results']['goal_loop_vs_today'] else 'missed'}.")
    for path in sorted(results_dir.glob("bench_models_*_cpu.json")):
        res = records.read_record(path, "bench_models")["results"]
        if "goal_over_flops" not in res:
            continue  # made before goals were relative to FLOPs
        for variant, ratio in res["ratio_vs_baseline"].items():
            text = (f"- `{path.name}`: {variant} x{ratio:.2f} of the baseline's step (goal x"
                    f"{res['goal_ratio'][variant]:.2f}, {res['goal_over_flops'][variant]} x its FLOP ratio): "
                    f"{'met' if res['goal_met'][variant] else 'missed'}")
            held = res["excess_ops"].get(variant)
            if held:
                text += "; held back by " + ", ".join(f"`{o['op']}` +{o['extra_ms_per_step']:.1f} ms"
                                                      for o in held["ops"][:3]) + " per step"
            lines.append(text + ".")
    check = results_dir.parent / "bf16_check" / "results"
    if (check / "runs").is_dir():
        table = compare_field(check, "bf16")
        ap, epe = table.loc["AP"], table.loc["epe_px"]
        late = [plateau(rec) for _, rec in run_records(check)]
        gains = [g for _, g in late if np.isfinite(g)]
        lines.append(f"- **bf16 autocast on CPU at the pilot recipe's length** (`profiles/bf16_check.yaml`, "
                     f"{int(ap['pairs'])} seeds each): flip AP {ap['bf16=true']:.3f} ± {ap['bf16=true_ci']:.3f} "
                     f"against fp32's {ap['bf16=false']:.3f} ± {ap['bf16=false_ci']:.3f}; paired difference "
                     f"{ap['difference']:+.3f} ± {ap['difference_ci']:.3f} AP (sign-flip p = {ap['p_sign_flip']:.2f}), "
                     f"end-point error {epe['difference']:+.2f} ± {epe['difference_ci']:.2f} px. "
                     f"{sum(ok for ok, _ in late)} of its {len(late)} runs met the plateau criterion (val AP still "
                     f"rising by a median {np.median(gains):+.3f} over the last quarter): this compares bf16 with "
                     "fp32 at the recipe's length, not at convergence.")
    return "\n".join(lines)


def data_check_summary(results_dir) -> str:
    """What limits accuracy on each SynthPose setting of ``reports/localise_check`` (a sibling of ``results_dir``'s
    folder), per dataset and flip augmentation, from its records (no flip test: a mirrored image mirrors a colour
    cue too): AP, keypoints found, the end-point error on them, the swap rate
    (all joints, and the wrists'), and the wrists' and ankles' share of the summed per-joint end-point error. Empty
    when there are no such records."""
    from .data.synthetic import KEYPOINT_NAMES

    check = Path(results_dir).parent / "localise_check" / "results"
    if not records.run_record_paths(check / "runs"):
        return ""
    lines = []
    for _, rec in sorted(run_records(check), key=lambda r: (r[1]["config"]["data"], -r[1]["config"]["flip"],
                                                             r[1]["config"]["head"] != "udp", r[1]["config"]["head"])):
        m, cfg = rec["results"]["no_flip"], rec["config"]
        if "swap_rate_per_joint" not in m:
            continue
        epe, swap = np.asarray(m["epe_per_joint"], float), np.asarray(m["swap_rate_per_joint"], float)
        far = [KEYPOINT_NAMES.index(n) for n in GROSS_ERROR_JOINTS]
        lines.append(f"- `{Path(cfg['data']).name}`, flip augmentation {cfg['flip']:g} ({cfg['alignment']} "
                     f"{_size(cfg['input_size'])}, head {cfg['head']}, {cfg['epochs']} epochs, seed {cfg['seed']}): "
                     f"AP {m['AP']:.3f}; "
                     f"found {100 * m['found_rate']:.1f} % of "
                     f"keypoints, EPE on them {m['epe_found']:.2f} px (all keypoints {m['epe_mean']:.2f} px); swaps "
                     f"{100 * m['swap_rate']:.1f} % of keypoints, {100 * swap[far[:2]].mean():.1f} % of wrists; wrists "
                     f"and ankles carry {100 * epe[far].sum() / epe.sum():.0f} % of the summed per-joint error.")
    return "\n".join(lines)


# The converged studies' folders, beside the study's results: cpu_converged.yaml (easy, the preset's head; stopped
# after seed 0) and cpu_markers.yaml (markers, the official head)
CONVERGED, MARKERS = "converged", "markers"


def converged_summary(results_dir, study: str = CONVERGED) -> str:
    """A converged study (``profiles/cpu_converged.yaml`` or ``cpu_markers.yaml``, in its own folder
    ``reports/<study>`` beside ``results_dir``'s) as far as its records go, as Markdown: its registered design and which
    of its runs exist, the design table (comparisons still awaiting their runs say so) and its findings. Empty without
    a registered design there."""
    folder = Path(results_dir).parent / study / "results"
    if not design_records(folder):
        return ""
    lines = [design_markdown(folder)]
    if records.run_record_paths(folder / "runs"):
        frame = load_runs(folder)
        table = design_summary(cached_design_table(frame, folder))
        lines += [markdown(formatted(table, DIGITS)).rstrip("\n"), "", design_findings(frame, folder)]
        own = own_family_table(frame, folder)
        if len(own):
            lines += [markdown(formatted(own, DIGITS)).rstrip("\n"), "", own_family_findings(frame, folder)]
    return "\n".join(lines)


def is_study_folder(results_dir) -> bool:
    """Whether ``results_dir`` is the committed study's own ``reports/results`` (only it may speak in the README)."""
    return Path(results_dir).resolve() == (records.REPO_ROOT / "reports" / "results").resolve()


def update_readme(readme, results_dir, tables_dir) -> bool:
    """Fill the README's marker blocks from the tables and records; returns whether the file changed. The README
    states the committed study: records elsewhere (``UFPA_REPORTS_DIR``, a scratch folder) never rewrite it."""
    if not is_study_folder(results_dir):
        raise ValueError(f"{results_dir} is not the study's reports/results: the README shows the committed study "
                         "only; render tables and figures from other records without updating the README")
    readme = Path(readme)
    old = readme.read_text(encoding="utf-8")
    new = fill_markers(old, readme_blocks(results_dir, tables_dir))
    if new != old:
        records.atomic_write_text(readme, new)
    return new != old
