"""Sweeps: a YAML grid expands into papermill executions of ``notebooks/05_train.ipynb``, one per run.

A grid file (see ``profiles/``; its relative paths are taken from the file's own folder, ``with_absolute_paths``)::

    name: cpu
    data: {out: ../data/synthpose-easy, difficulty: easy, train: 4000, val: 400, seed: 0}  # made if missing
    base: {model: hrnet_w8_tiny, epochs: 8, threads: 1}     # TrainConfig fields shared by every run
    grid:                                                   # the product of these lists is the set of runs
      alignment: [baseline, ufpa, ufpa_any]
      input_size: [[96, 64], [128, 96]]
      seed: [0, 1, 2]
      codec_head: [{codec: dark}, {codec: udp, head: udp}]  # mappings set fields together

Each run executes the notebook into ``<reports>/runs/<run_id>.ipynb`` and leaves its record in
``<reports>/results/runs/<run_id>.json``. A run that finished on this machine (its record and its run directory's
``done.json`` exist) is skipped (``force`` re-runs it), so a killed sweep resumes where it stopped, while a fresh clone
re-trains the committed records (on CPU to the same numbers) unless ``keep`` (``--keep``) keeps those this machine would
reproduce (same training code, data, CPU type and torch: a study split over sessions); a run that fails gets
``<run_id>.failed.json`` (its error) and the sweep goes on.
``jobs`` runs that many at once (each run's result depends only on its config, threads included, so it is the same
serial or parallel); ``shard=(i, n)`` takes runs i, i+n, i+2n, ... for a cluster array job.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import itertools
import json
import os
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import yaml

from . import config, integrity, records
from .train import (
    DONE,
    PATH_FIELDS,
    TrainConfig,
    arm,
    condition_id,
    data_fingerprint,
    finished,
    record_path,
    resolve_paths,
    run_dir,
    run_id,
    validate,
)

NOTEBOOK = records.REPO_ROOT / "notebooks" / "05_train.ipynb"
GRID_KEYS = ("name", "data", "base", "grid", "notebook", "reports", "design")
# What a design may say (checked by ``integrity.check_design_fields``, for profiles and design records alike).
DESIGN_METRICS, DESIGN_KEYS = integrity.DESIGN_METRICS, integrity.DESIGN_KEYS


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last without a word, so
    ``alignment: [baseline]`` then ``alignment: [ufpa_any]`` would drop a grid value)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                lines = f"lines {seen[key] + 1} and {key_node.start_mark.line + 1}"
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice ({lines}); give each key once", key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_grid(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no sweep grid at {path}; the profiles are in {records.REPO_ROOT / 'profiles'}")
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ValueError(f"{path} must be a mapping with keys {GRID_KEYS}")
    unknown = set(doc) - set(GRID_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; a grid has {GRID_KEYS}")
    for key in ("base", "grid", "data"):
        if not isinstance(doc.get(key) or {}, dict):
            raise ValueError(f"{path}: '{key}' must be a mapping")
    if not doc.get("grid"):  # else the product of no lists is one run of `base`, which nobody asked for by name
        raise ValueError(f"{path}: no 'grid' (or an empty one): a grid names at least one field with a list of "
                         "values, e.g. grid: {seed: [0]}")
    for key, values in doc["grid"].items():
        if not isinstance(values, list) or not values:
            raise ValueError(f"{path}: grid '{key}' must be a non-empty list, e.g. {key}: [a, b]")
    # where records and run folders go is said in one place each, or a run's records land where nobody looks
    placed = {"reports": "the profile's top level (reports: ../reports/NAME)", "out": "base (out: ../runs)"}
    for where, fields in [("base", [doc.get("base") or {}]), ("grid", [doc["grid"]] + [
            v for values in doc["grid"].values() for v in values if isinstance(v, dict)])]:
        for name, home in placed.items():
            if any(name in f for f in fields) and not (name == "out" and where == "base"):
                raise ValueError(f"{path}: '{name}' is given in {where}; it is accepted in one place only, "
                                 f"{home}: move it there")
    if doc.get("data"):
        data = doc["data"]
        if "out" not in data:
            raise ValueError(f"{path}: the 'data' section needs 'out', the folder to make SynthPose in, e.g. "
                             "data: {out: data/synthpose-easy, difficulty: easy, train: 4000, val: 400, seed: 0}")
        from .data import synthetic

        try:
            synthetic.check_request(**{k: v for k, v in data.items() if k != "out"})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: data section: {err}") from err
    doc.setdefault("name", path.stem)
    return with_absolute_paths(doc, path.resolve().parent)


def with_absolute_paths(doc: dict, folder: Path) -> dict:
    """A profile's paths (``reports``, ``notebook``, the ``data`` block's ``out``, and ``data`` / ``out`` /
    ``reports`` in ``base`` and ``grid``) taken from ``folder``, the profile file's own folder, once, before anything
    is written: a profile means the same from any working directory (issue 26). Fields a profile leaves out keep
    TrainConfig's defaults, which notebook 05 takes from the repository root."""
    def absolute(value):
        return value if Path(value).is_absolute() else os.path.abspath(folder / value)

    def fields(mapping):
        return {k: absolute(v) if k in PATH_FIELDS and isinstance(v, str) and v else v for k, v in mapping.items()}

    doc = dict(doc)
    for key in ("reports", "notebook"):
        if doc.get(key):
            doc[key] = absolute(doc[key])
    if doc.get("data"):
        doc["data"] = {**doc["data"], "out": absolute(doc["data"]["out"])}
    doc["base"] = fields(doc.get("base") or {})
    doc["grid"] = {k: [fields(v) if isinstance(v, dict) else (absolute(v) if k in PATH_FIELDS and
                                                                isinstance(v, str) and v else v) for v in values]
                   for k, values in doc["grid"].items()}
    return doc


def reports_folder(doc: dict) -> Path:
    """Where a profile's records, executed notebooks and page go: ``$UFPA_REPORTS_DIR`` when set, else the profile's
    ``reports:`` (the study's profiles say ``../reports``, the committed study), else ``scratch/<name>``: a profile of
    one's own (or the smoke profile) never writes into the committed study."""
    own = records.from_repo(doc["reports"]) if doc.get("reports") else records.SCRATCH / doc["name"]
    return records.reports_dir(own)


def expand(doc: dict, reports: str | None = None) -> list[TrainConfig]:
    """Every run of the grid as a validated TrainConfig, in a fixed order (the grid's keys vary last-fastest)."""
    base = dict(doc.get("base") or {})
    if doc.get("data"):
        base.setdefault("data", doc["data"]["out"])
    base["reports"] = str(reports if reports is not None else reports_folder(doc))
    grid = doc.get("grid") or {}
    keys = list(grid)
    runs, seen = [], set()
    for values in itertools.product(*(grid[k] for k in keys)):
        fields = dict(base)
        for key, value in zip(keys, values):
            fields.update(value if isinstance(value, dict) else {key: value})
        try:
            cfg = validate(config.replace(TrainConfig(progress=False), fields))
        except ValueError as err:
            raise ValueError(f"sweep {doc['name']!r}, run {dict(zip(keys, values))}: {err}") from err
        if run_id(cfg) not in seen:
            seen.add(run_id(cfg))
            runs.append(cfg)
    return runs


def comparisons(design: dict) -> list[dict]:
    """A design's comparisons, primary first: each {role, name, control, treatment}. The decomposition's consecutive
    steps come before the other secondary comparisons; together they are one family."""
    out = []
    if design.get("primary"):
        out.append({"role": "primary", "name": design["primary"].get("name", "primary"),
                    "control": design["primary"]["control"], "treatment": design["primary"]["treatment"]})
    chain = design.get("decomposition") or []
    for a, b in zip(chain, chain[1:]):
        out.append({"role": "secondary", "name": f"step {a} -> {b}", "control": a, "treatment": b})
    for c in design.get("secondary") or []:
        out.append({"role": "secondary", "name": c.get("name", f"{c['treatment']} vs {c['control']}"),
                    "control": c["control"], "treatment": c["treatment"]})
    return out


def check_design(doc: dict, runs: list[TrainConfig]) -> dict:
    """The profile's pre-registered design, checked against its grid: known keys, every comparison between two arms
    the grid trains (``train.arm`` names them) on the same seeds, and a metric the report knows. Returns the design
    with its defaults (metric AP, flip test on, level 0.95)."""
    where = f"profile {doc['name']!r}, design"
    design = integrity.check_design_fields(doc["design"], where)
    seeds: dict = {}
    for cfg in runs:
        seeds.setdefault(arm(cfg), set()).add(cfg.seed)
    pairs = comparisons(design)
    if not pairs:
        raise ValueError(f"{where}: names no comparison; give a primary (control and treatment arms) or secondary "
                         "ones")
    for c in pairs:
        for side in ("control", "treatment"):
            if c[side] not in seeds:
                raise ValueError(f"{where}: {c['name']}: {side} {c[side]!r} is not an arm of the grid; its arms "
                                 f"are {sorted(seeds)} (alignment[-<padding>pad] HxW-as-run codec)")
        if seeds[c["control"]] != seeds[c["treatment"]]:
            raise ValueError(f"{where}: {c['name']}: the two arms have different seeds ({sorted(seeds[c['control']])} "
                             f"vs {sorted(seeds[c['treatment']])}); paired comparisons need the same seeds")
    return design


def seen_runs(runs: list[TrainConfig]) -> list[str]:
    """The runs that have started (a run directory: its learning curve is being logged) or have a record."""
    return [run_id(cfg) for cfg in runs if record_path(cfg).is_file() or run_dir(resolve_paths(cfg)).exists()]


@contextlib.contextmanager
def _registering(folder: Path):
    """One registration at a time in a design folder: an advisory lock on ``<folder>/.register.lock`` (``flock``:
    blocks until another sweep's registration ends, freed by the kernel if that sweep dies; threads too)."""
    import fcntl

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".register.lock", "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def register_design(doc: dict, runs: list[TrainConfig]) -> Path:
    """Write the design as a record (``<reports>/results/design/<name>.json``) and its sha256 into that folder's
    ``registered.sha256`` (``integrity``): the pre-registration, with its time and commit, written once. A design
    already registered stays as it was; a different one is refused (changing the plan after seeing results is not
    pre-registration), and so is registering in a folder whose registered designs are missing or changed. The runs it
    has already seen (started or recorded) are named in it (``seen_at_registration``), and the page says so: a
    comparison whose two runs of a seed it had seen reads post hoc. A confirmatory design (``confirms``: a profile
    whose exploratory result it tests) registers only while none of its runs has started: it is judged on runs nobody
    had seen when it was written. A design that joins the folder's study (neither ``confirms`` nor ``family: own``)
    must have its metric, flip setting and level, and the study has one primary comparison."""
    design = check_design(doc, runs)
    arms: dict = {}
    for cfg in runs:
        arms.setdefault(arm(cfg), []).append(run_id(cfg))
    path = Path(runs[0].reports) / "results" / "design" / f"{doc['name']}.json"
    config_doc = json.loads(json.dumps({"profile": doc["name"], **design}))
    results = {"arms": arms, "comparisons": comparisons(design)}
    with _registering(path.parent):  # array shards start together: one registers, the others find it
        return _register(doc, design, runs, path, config_doc, results)


def _register(doc: dict, design: dict, runs: list[TrainConfig], path: Path, config_doc: dict, results: dict) -> Path:
    """``register_design``'s checks and write, under its folder's registration lock."""
    registered = integrity.check_designs(path.parent)  # none missing, none changed, none placed by hand
    if path.is_file():
        old = records.read_record(path, kind="design")
        if old["config"] != config_doc or {k: old["results"].get(k) for k in results} != results:
            raise ValueError(f"{path} registered another design for profile {doc['name']!r} at "
                             f"{old['provenance']['time_utc']}: changing it now would not be pre-registered; "
                             f"{integrity.NEW_PLAN} (a registered design is never removed or rewritten)")
        return path
    joins = not (design.get("confirms") or design.get("family"))
    others = [records.read_record(p, kind="design") for p in registered]
    for other, cfg in zip(registered, (o["config"] for o in others)):
        if not joins or cfg.get("confirms") or cfg.get("family"):
            continue
        setting = (design["metric"], design["flip_test"], design["level"])
        if (cfg["metric"], cfg["flip_test"], cfg["level"]) != setting:  # one family has one setting
            raise ValueError(f"profile {doc['name']!r}: its design ({setting[0]}, flip test {setting[1]}, level "
                             f"{setting[2]}) would join the study registered in {other} ({cfg['metric']}, flip "
                             f"test {cfg['flip_test']}, level {cfg['level']}), and one family has one setting: "
                             "give it `family: own` (its own Holm family) or its own reports folder")
        if design.get("primary") and cfg.get("primary"):
            raise ValueError(f"profile {doc['name']!r}: its design names a primary comparison, and the study it would "
                             f"join has one already ({other}): a study has one primary; make this comparison "
                             "secondary, or give the design `family: own` or its own reports folder")
    seen = seen_runs(runs)
    if design.get("confirms"):
        confirmed = path.with_name(f"{design['confirms']}.json")
        if not confirmed.is_file():
            raise ValueError(f"profile {doc['name']!r} confirms {design['confirms']!r}, which has no design registered "
                             f"in this reports folder ({confirmed}): a confirmatory design tests a registered "
                             "study's comparisons on its own runs, in its folder")
        if seen:  # held out means not started, not merely not finished
            raise ValueError(f"profile {doc['name']!r} confirms {design['confirms']!r} on runs that have started or "
                             f"have records ({', '.join(seen)}): a confirmatory design registers before any of its "
                             "runs starts. Give it seeds not yet trained")
    path = records.write_record(path, "design", config_doc, {**results, "seen_at_registration": seen})
    integrity.index_design(path)
    return path


def notebook_parameters(path=NOTEBOOK) -> set[str]:
    """Names assigned in a notebook's ``parameters`` cell."""
    import nbformat

    cell = config.parameters_cell(nbformat.read(path, as_version=4), path)
    return {t.id for stmt in ast.parse(cell.source).body for t in getattr(stmt, "targets", [])}


def check_parameters(parameters: dict, path=NOTEBOOK):
    """papermill only warns about a parameter the notebook does not have; a sweep makes that an error."""
    unknown = set(parameters) - notebook_parameters(path)
    if unknown:
        raise ValueError(f"{Path(path).name} has no parameter(s) {sorted(unknown)}; its parameters are "
                         f"{sorted(notebook_parameters(path))}")


def ensure_data(doc: dict, progress: bool = False):
    """Generate the grid's SynthPose dataset if its annotation files are missing (never for other datasets)."""
    spec = dict(doc.get("data") or {})
    if spec:
        from .data import synthetic

        out = spec.pop("out")
        synthetic.ensure(records.from_repo(out), progress=progress, **spec)  # a profile file's is absolute


def recorded_here(cfg: TrainConfig) -> bool:
    """The run's record exists and was made by the training code checked out now (or one an equivalence record joins
    to it: ``python -m ufpa reproduce``), on the same data, on this CPU type with this torch: on CPU it would train to
    the same numbers (issue 11), so a study resumed on a fresh machine may keep it (``keep``) rather than train it
    again. A record of other code, data, CPU or torch is trained again (``not_kept`` says why)."""
    return record_path(cfg).is_file() and not_kept(cfg) is None


def not_kept(cfg: TrainConfig) -> str | None:
    """Why ``keep`` would train this run again though it has a record (None: it keeps it, or there is none)."""
    path = record_path(cfg)
    if not path.is_file():
        return None
    rec = records.read_record(path, kind="train_run")
    integrity.check_record_identity(path, rec)
    res, made, here = rec["results"], rec["provenance"], records.provenance()
    made_by, now = f"code {res.get('code_fingerprint')}", f"code {_code()}"
    if made_by != now and not any({made_by, now} <= group
                                  for group in integrity.code_groups({made_by, now}, [path.parent.parent])):
        return (f"made by training {made_by}, not the {now} checked out, and no equivalence record joins them "
                "(`python -m ufpa reproduce` one record first to keep them)")
    if res.get("data_fingerprint") != data_fingerprint(resolve_paths(cfg)):
        return f"made on other data ({res.get('data_fingerprint')}, the folder now holds another)"
    for key in ("device", "cpu_capability", "torch"):
        if made.get(key) != here.get(key):
            return f"made on {key} {made.get(key)!r}, not this machine's {here.get(key)!r}"
    return None


_CODE: list[str] = []


def _code() -> str:  # the training code's fingerprint, once per process (it hashes every file train imports)
    if not _CODE:
        _CODE.append(records.code_fingerprint())
    return _CODE[0]


def is_done(cfg: TrainConfig, force: bool = False, keep: bool = False) -> bool:
    """Whether a sweep skips the run: finished on this machine, or (``keep``) recorded by this code (or an equivalent
    one), data, CPU type and torch; ``force`` trains it whatever exists."""
    return not force and (finished(cfg) or (keep and recorded_here(cfg)))


def run_one(cfg: TrainConfig, notebook=NOTEBOOK, force: bool = False, keep: bool = False) -> dict:
    """Execute the training notebook for one run; returns a summary row (status: done, skipped, failed, or busy:
    another sweep holds the run's lock)."""
    import papermill as pm

    rid = run_id(cfg)
    rec = record_path(cfg)
    failed = rec.with_suffix(".failed.json")
    where = run_dir(resolve_paths(cfg))  # where notebook 05 trains it (an absolute out stays as it is)
    if is_done(cfg, force, keep):  # finished here (or kept); a fresh clone re-trains committed records unless kept
        return _row(cfg, "skipped", rec)
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    params["synth"] = None  # the sweep made its data (ensure_data); the notebook's own default must not check it
    check_parameters(params, notebook)
    out_nb = rec.parent.parent.parent / "runs" / f"{rid}.ipynb"
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    # papermill writes as it goes: the run executes into a temporary copy, which replaces the notebook only once the
    # run finished, so a killed sweep never leaves a half-run notebook in place of a finished one
    partial = out_nb.with_name(f".{rid}.partial.ipynb")
    start, wall = time.perf_counter(), time.time()
    step = "executing notebook 05"
    try:
        with records.folder_lock(where, ".sweep.lock", "another sweep",
                                 "let that sweep train this run"):
            pm.execute_notebook(str(notebook), str(partial), parameters=params, cwd=str(records.REPO_ROOT),
                                progress_bar=False, kernel_name="python3", log_output=False)
            step = f"saving the executed notebook as {out_nb}"
            partial.replace(out_nb)
    except records.Busy as err:  # two sweeps of one profile: the other one trains this run
        return _row(cfg, "busy", rec, error=[str(err)])
    except Exception as err:
        message = str(err).strip().splitlines()[-1:] or [type(err).__name__]
        if partial.is_file():  # the notebook as far as it ran, for reading; a finished one stays where it is
            partial.replace(out_nb.with_suffix(".failed.ipynb"))
        done = where / DONE
        if done.is_file() and done.stat().st_mtime >= wall and rec.is_file():
            # trained, evaluated and recorded: a later step failed, which must not turn the run into a failure (a
            # re-run of the sweep finds it done and does not train it again)
            return _row(cfg, "done", rec, time.perf_counter() - start,
                        warning=f"the run finished and its record stands, but {step} failed: {message[0]}")
        records.atomic_write_text(failed, json.dumps({"run_id": rid, "config": params, "step": step,
                                                      "error": str(err)[-4000:],
                                                      "traceback": traceback.format_exc()[-4000:],
                                                      "provenance": records.provenance(cfg.seed)}, indent=1))
        return _row(cfg, "failed", rec, time.perf_counter() - start, error=[f"{step}: {message[0]}"])
    failed.unlink(missing_ok=True)
    out_nb.with_suffix(".failed.ipynb").unlink(missing_ok=True)
    return _row(cfg, "done", rec, time.perf_counter() - start)


def _row(cfg, status, rec, seconds=0.0, error=None, warning=None) -> dict:
    """A summary row; its AP and end-point error are read from the record the run wrote (never for a failed run,
    whose folder may hold an older record)."""
    row = {"run_id": run_id(cfg), "status": status, "model": cfg.model, "alignment": cfg.alignment,
           "input_size": "x".join(map(str, cfg.input_size)), "codec": cfg.codec, "seed": cfg.seed,
           "condition": condition_id(cfg), "minutes": round(seconds / 60, 2), "record": str(rec)}
    if status in ("done", "skipped") and rec.is_file():
        res = records.read_record(rec)["results"]
        row.update(AP=res["flip"]["AP"], epe_px=res["flip"]["epe_mean"])
    if error:
        row["error"] = error[0] if error else ""
    if warning:
        row["warning"] = warning
    return row


def run_sweep(grid_path, jobs: int = 1, shard: tuple[int, int] = (0, 1), force: bool = False,
              reports: str | None = None, progress: bool = True, keep: bool = False,
              register_only: bool = False) -> list[dict]:
    """Run (or resume) every run of a grid file; returns one summary row per run of this shard. With ``progress``
    it prints its estimate first and then keeps one status line: runs done, each running run's epoch, and the
    estimated finish from measured epoch times (``Progress``). ``keep``: skip runs whose committed record this
    machine would reproduce (``recorded_here``), so a study split over sessions resumes on a fresh machine.
    ``register_only``: register the design and train nothing (a design that shares its runs with a sweep in flight)."""
    i, n = shard
    began = _file_clock(records.SCRATCH)  # a stop request from here on is this sweep's (the stop file's clock)
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {i}/{n}: use i/n with 0 <= i < n, e.g. --shard 0/4")
    if jobs < 1:
        raise ValueError(f"jobs={jobs}: must be >= 1")
    doc = load_grid(grid_path)
    notebook = records.from_repo(doc["notebook"]) if doc.get("notebook") else NOTEBOOK
    every = expand(doc, reports)
    runs = per_job_workers(every[i::n], jobs)
    if register_only and not doc.get("design"):
        raise ValueError(f"profile {doc['name']!r} has no design to register")
    if doc.get("design"):
        path = register_design(doc, every)
        seen = records.read_record(path, kind="design")["results"].get("seen_at_registration")
        if seen:  # said at once, not only on the page
            print(f"sweep {doc['name']}: its design ({records.repo_relative(path)}) registered after {len(seen)} of "
                  f"its {len(every)} runs had started; its record names them and the page says so (a comparison of "
                  "a seed whose two runs it had seen reads post hoc)", flush=True)
    if register_only:
        print(f"sweep {doc['name']}: design registered as {path}; nothing trained")
        return []
    ensure_data(doc, progress)
    from tqdm.auto import tqdm

    if keep and not force:  # a record it will not keep is said, never re-trained silently
        for cfg in runs:
            if not finished(cfg) and (why := not_kept(cfg)):
                print(f"sweep {doc['name']}: --keep trains {run_id(cfg)} again: its record was {why}", flush=True)
    status = Progress(runs, jobs, force, keep)
    stop = stop_file(doc)
    asked = threading.Event()

    def stop_asked() -> bool:
        # a request made after this sweep began is this sweep's (and stays so: another sweep of the profile that
        # starts later neither removes it nor obeys it); an older file is spent, and so is one of the same clock tick
        if not asked.is_set() and stop.is_file() and stop.stat().st_mtime > began:
            asked.set()
        return asked.is_set()
    if progress:
        print(f"sweep {doc['name']}: {status.start_line()}\n  to stop after the running runs finish: touch {stop}",
              flush=True)

    def one(j):
        if stop_asked() and not is_done(runs[j], force, keep):  # asked to stop: start nothing new
            return _row(runs[j], "stopped", record_path(runs[j]))
        status.started(j)
        try:
            return run_one(runs[j], notebook, force, keep)
        finally:
            status.finished(j)

    # Seed by seed (a sweep cut short leaves whole paired seeds), longest runs first within a seed (pixels x epochs),
    # so parallel jobs finish together; rows come back in grid order.
    order = sorted(range(len(runs)), key=lambda j: (runs[j].seed, -_cost(runs[j])))
    rows: list = [None] * len(runs)
    with tqdm(total=len(runs), desc=f"sweep {doc['name']}", disable=not progress, unit="run",
              bar_format="{desc}: {n_fmt}/{total_fmt} runs [{elapsed}]{postfix}") as bar:
        quit_watch = threading.Event()

        def refresh():  # the bar's line follows the running runs' epochs between finished runs
            while not quit_watch.wait(10.0):
                bar.set_postfix_str(status.line(), refresh=True)
        watcher = threading.Thread(target=refresh, daemon=True)
        if progress:
            watcher.start()
        try:
            with ThreadPoolExecutor(max_workers=jobs) as pool:  # each run is its own kernel process
                for j, row in zip(order, pool.map(one, order)):
                    rows[j] = row
                    bar.update()
                    bar.set_postfix_str(f"last {row['status']}; {status.line()}")
        finally:
            quit_watch.set()
    return rows


def _file_clock(folder: Path) -> float:
    """Now, on the clock file times are stamped with (coarser than ``time.time``: a file touched just after it may
    carry an earlier time)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".clock.", dir=folder)
    os.close(fd)
    try:
        return os.stat(probe).st_mtime
    finally:
        os.unlink(probe)


def stop_file(doc: dict) -> Path:
    """The file that stops the sweeps of this profile running when it is touched, between runs (``touch`` it): runs
    already training finish and write their records and notebooks; the runs not started are reported ``stopped`` and a
    later sweep resumes them (it began after the request, so the request is not its own; nobody deletes it). Stopping a
    run by hand instead (killing it) cuts its notebook short."""
    return records.SCRATCH / f"sweep-{doc['name']}.stop"


def per_job_workers(runs: list[TrainConfig], jobs: int, cores: int | None = None) -> list[TrainConfig]:
    """Each run's DataLoader workers capped so ``jobs`` runs at once never ask for more processes than the machine has
    cores (each run: its own process plus its workers; threads as the profile sets them). ``workers`` changes how
    a run executes, not what it computes (not part of the run id), so the cap changes no result."""
    cores = cores or os.cpu_count() or 1
    out = []
    for cfg in runs:
        cap = max(0, cores // jobs - max(cfg.threads, 1))
        out.append(dataclasses.replace(cfg, workers=min(cfg.workers, cap)))
    return out


def _cost(cfg) -> float:
    h, w = cfg.input_size
    return h * w * cfg.epochs


# Evaluation and the notebook around a run add to its training loop (measured: evaluations ~2 %, papermill and the
# kernel ~3.5 % of `make study`); used until this sweep has timed a whole run.
OVERHEAD = 1.06


class Progress:
    """What a sweep can say about its time while it runs, from measurements only: seconds per training pixel-epoch per
    model, taken from the epochs this sweep's runs log (``log.jsonl``) and, before any has logged one, from the
    records already in its results folder (e.g. the committed study's, with the device they ran on). A run's time
    scales with its pixels x epochs; the estimate is the work left over the jobs, never less than the longest run
    left."""

    def __init__(self, runs: list[TrainConfig], jobs: int, force: bool = False, keep: bool = False, clock=time.time):
        self.runs, self.jobs, self.clock = runs, jobs, clock
        self.state = {}  # index -> 'running' | 'finished'
        self.began = {}
        self.lock = threading.Lock()
        self.todo = [j for j, cfg in enumerate(runs) if not is_done(cfg, force, keep)]
        self.prior, self.prior_source = self._prior_rates()
        # a running run is named by the fields the grid varies (e.g. "96x64 ufpa s1", "bf16 s2")
        values = [asdict(c) for c in runs]
        self.varying = [k for k in (values[0] if values else {}) if k not in ("reports", "out")
                        and len({repr(v[k]) for v in values}) > 1]

    # --- what is known -------------------------------------------------------------------------------------------
    def started(self, j: int):
        with self.lock:
            self.state[j], self.began[j] = "running", self.clock()

    def finished(self, j: int):
        with self.lock:
            self.state[j] = "finished"

    def epochs_logged(self, j: int) -> list[dict]:
        """The epochs run ``j`` has logged (a resumed run's redone epochs count once: the last)."""
        path = run_dir(resolve_paths(self.runs[j])) / "log.jsonl"
        entries = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    entries[int(entry["epoch"])] = entry
                except (ValueError, KeyError, TypeError):
                    continue  # a line being written
        return [entries[k] for k in sorted(entries)]

    def _prior_rates(self) -> tuple[dict, str]:
        """Seconds per pixel-epoch per model from the records in the runs' results folder (their training time)."""
        if not self.runs:
            return {}, ""
        folder = record_path(self.runs[0]).parent
        seconds: dict = {}
        devices, count = set(), 0
        for path in records.run_record_paths(folder):
            try:
                rec = records.read_record(path, "train_run")
            except (ValueError, OSError):
                continue
            cfg = rec["config"]
            units = cfg["input_size"][0] * cfg["input_size"][1] * cfg["epochs"]
            s, u = seconds.get(cfg["model"], (0.0, 0.0))
            seconds[cfg["model"]] = (s + rec["results"]["wall_s"] * OVERHEAD, u + units)
            devices.add(rec["provenance"].get("device", "?"))
            count += 1
        rates = {m: s / u for m, (s, u) in seconds.items() if u}
        where = records.repo_relative(folder)
        return rates, (f"{count} record{'s' * (count != 1)} in {where} ({', '.join(sorted(devices))})" if rates else "")

    def rates(self) -> dict:
        """Seconds per pixel-epoch per model: this sweep's logged epochs where there are any, else the prior."""
        seconds: dict = {}
        for j in self.todo:
            h, w = self.runs[j].input_size
            for entry in self.epochs_logged(j):
                s, u = seconds.get(self.runs[j].model, (0.0, 0.0))
                seconds[self.runs[j].model] = (s + entry["seconds"] * OVERHEAD, u + h * w)
        measured = {m: s / u for m, (s, u) in seconds.items() if u}
        return {**self.prior, **measured}

    # --- what is left ---------------------------------------------------------------------------------------------
    def seconds_left(self) -> float | None:
        """Estimated seconds until the sweep ends, or None while some model has no measurement yet."""
        rates = self.rates()
        left = []
        for j in self.todo:
            if self.state.get(j) == "finished":
                continue
            cfg = self.runs[j]
            if cfg.model not in rates:
                return None
            h, w = cfg.input_size
            epochs = cfg.epochs - len(self.epochs_logged(j)) if self.state.get(j) == "running" else cfg.epochs
            left.append(max(epochs, 0) * h * w * rates[cfg.model])
        if not left:
            return 0.0
        return max(sum(left) / self.jobs, max(left))

    def start_line(self) -> str:
        skipped = len(self.runs) - len(self.todo)
        head = f"{len(self.todo)} of {len(self.runs)} runs to train ({skipped} finished here), {self.jobs} at once"
        if not self.todo:
            return head
        left = self.seconds_left()
        if left is None:
            return head + "; no measured run time yet to estimate from (the estimate follows the first epochs)"
        return (head + f"; estimated {_duration(left)} (ends about {_clock(self.clock() + left)}), from "
                f"{self.prior_source}")

    def label(self, j: int) -> str:
        def show(name, value):
            if isinstance(value, bool):
                return name if value else f"no {name}"
            if isinstance(value, (tuple, list)):
                return "x".join(map(str, value))
            if name in PATH_FIELDS and isinstance(value, str):
                return Path(value).name  # a dataset by its folder's name, as the run id counts it
            return f"s{value}" if name == "seed" else str(value)
        cfg = asdict(self.runs[j])
        return " ".join(show(k, cfg[k]) for k in self.varying) or run_id(self.runs[j])

    def line(self) -> str:
        with self.lock:
            running = [j for j, st in self.state.items() if st == "running"]
            done = sum(self.state.get(j) == "finished" for j in self.todo)  # skipped runs pass through too
        parts = [f"{done}/{len(self.todo)} trained"]
        for j in running:
            parts.append(f"{self.label(j)} epoch {len(self.epochs_logged(j))}/{self.runs[j].epochs}")
        left = self.seconds_left()
        parts.append("ETA estimating" if left is None else
                     f"ETA {_duration(left)} (about {_clock(self.clock() + left)})")
        return "; ".join(parts)


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def _clock(when: float) -> str:
    return time.strftime("%H:%M", time.localtime(when))


def summary_table(rows: list[dict]) -> str:
    cols = ["status", "model", "alignment", "input_size", "codec", "seed", "AP", "epe_px", "minutes", "run_id"]
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c, "")
            cells.append(f"{v:.3f}" if isinstance(v, float) else str(v))
        lines.append(" | ".join(cells))
    failed = [r for r in rows if r["status"] == "failed"]
    lines.append(f"\n{len(rows)} runs: {sum(r['status'] == 'done' for r in rows)} done, "
                 f"{sum(r['status'] == 'skipped' for r in rows)} skipped (record exists), {len(failed)} failed"
                 + (f", {sum(r['status'] == 'busy' for r in rows)} busy (another sweep is training them)"
                    if any(r["status"] == "busy" for r in rows) else "")
                 + (f", {sum(r['status'] == 'stopped' for r in rows)} stopped (not started: the stop file was "
                    "there; run the sweep again to resume)" if any(r["status"] == "stopped" for r in rows) else ""))
    for r in failed:
        lines.append(f"failed {r['run_id']}: {r.get('error', '')}")
    for r in rows:
        if r.get("warning"):
            lines.append(f"note {r['run_id']}: {r['warning']}")
    return "\n".join(lines)


def aggregate_table(rows: list[dict]) -> str:
    """Mean ± standard deviation over seeds of AP (flip test) and end-point error, per condition: only seeds of one
    identical config pool (model, size, alignment and codec name it; the condition hash tells apart what else the grid
    varies, e.g. bf16)."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if "AP" in row:
            key = (row["model"], row["input_size"], row["alignment"], row["codec"], row["condition"])
            groups.setdefault(key, []).append(row)

    def spread(values):
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.3f} ± {sd:.3f}"

    lines = ["model | input | alignment | codec | condition | seeds | AP (flip) | EPE px (flip)",
             " | ".join(["---"] * 8)]
    for key, members in groups.items():
        lines.append(" | ".join(map(str, key)) + f" | {len(members)} | {spread([m['AP'] for m in members])} | "
                     f"{spread([m['epe_px'] for m in members])}")
    return "\n".join(lines)
