"""What a study's claims rest on, checked wherever records are read:

- a design was fixed before its runs and never changed since: ``sweep.register_design`` writes it once and adds its
  sha256 to the folder's ``results/design/registered.sha256`` (``sha256sum -c`` reads it); a design record missing
  from the index, absent while the index names it, or changed since is refused, and the runs a design had seen when it
  registered are named in it (``seen_at_registration``), so "registered before its runs" is computed, never assumed;
- a record is the run its name says: its run id is recomputed from its config and must be both its ``results.run_id``
  and its file name;
- records of two training codes pool only where an equivalence record proves it: the record it names exists and is
  what it says, and it holds both records' hashes and the repeated record itself, which must equal the first bit for
  bit (an older one, without them, is checked for the rest).

Every refusal is one line naming the file, the problem and the fix. Nothing here is imported by training, so the
training code's fingerprint does not cover it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from pathlib import Path

from . import records

INDEX = "registered.sha256"  # in <results>/design/: one "<sha256>  <name>.json" line per registered design
DESIGN_METRICS = ("AP", "AP50", "AP75", "AR", "epe_px", "epe_found_px", "found_rate", "swap_rate", "pck_0.01",
                  "pck_0.02", "pck_0.05")
DESIGN_KEYS = ("metric", "flip_test", "level", "primary", "decomposition", "secondary", "confirms", "family")
_HEX16 = re.compile(r"^[0-9a-f]{16}$")
RESTORE = "restore it from version control (`git checkout -- {path}`)"
NEW_PLAN = "a new plan is a new design: give it its own profile name"


def sha256_file(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- designs: validated, registered once, never changed -------------------------------------------------------------

def _comparison(value, where: str, named: bool = True) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{where} must be a mapping {{control: ARM, treatment: ARM{', name: TEXT' * named}}}, "
                         f"not {type(value).__name__} ({value!r:.60})")
    unknown = set(value) - {"control", "treatment", "name"}
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; a comparison has control, treatment and name")
    for side in ("control", "treatment"):
        if not isinstance(value.get(side), str) or not value.get(side):
            raise ValueError(f"{where}: {side} must name an arm (text such as 'baseline 96x64 udp'), got "
                             f"{value.get(side)!r}")
    if "name" in value and not (isinstance(value["name"], str) and value["name"]):
        raise ValueError(f"{where}: name must be text, got {value['name']!r}")
    if value["control"] == value["treatment"]:
        raise ValueError(f"{where}: control and treatment are the same arm ({value['control']!r}); a comparison "
                         "compares two arms")


def check_design_fields(design, where: str, record: bool = False) -> dict:
    """A design's fields checked for type and range before anything reads them (a profile's ``design:`` block, or a
    design record's config): known keys; ``metric`` one of ``DESIGN_METRICS``; ``flip_test`` a boolean (not 'no');
    ``level`` a number in (0, 1) (0.95, not 95 or '0.95'); ``primary`` one mapping; ``decomposition`` a list of two or
    more arms; ``secondary`` a list of mappings; no comparison of an arm with itself. Returns the design with its
    defaults (metric AP, flip test on, level 0.95)."""
    if not isinstance(design, dict):
        raise ValueError(f"{where}: must be a mapping with keys {DESIGN_KEYS}, not {type(design).__name__}")
    unknown = set(design) - set(DESIGN_KEYS) - ({"profile"} if record else set())
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}; a design has {DESIGN_KEYS}")
    design = {"metric": "AP", "flip_test": True, "level": 0.95, **design}
    metric = design["metric"]
    if not isinstance(metric, str) or metric not in DESIGN_METRICS:
        raise ValueError(f"{where}: metric {metric!r} is not one of {DESIGN_METRICS}; name one as text, e.g. "
                         "metric: epe_found_px")
    if not isinstance(design["flip_test"], bool):
        raise ValueError(f"{where}: flip_test {design['flip_test']!r} is not a boolean; write flip_test: true or "
                         "flip_test: false (YAML reads 'no' in quotes as text)")
    level = design["level"]
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not (math.isfinite(level) and 0 < level < 1):
        raise ValueError(f"{where}: level {level!r} is not a number in (0, 1); give the interval's level as a "
                         "fraction, e.g. level: 0.95")
    if design.get("primary") is not None:
        _comparison(design["primary"], f"{where}: primary")
    chain = design.get("decomposition")
    if chain is not None and (not isinstance(chain, list) or len(chain) < 2
                              or not all(isinstance(a, str) and a for a in chain)):
        raise ValueError(f"{where}: decomposition must be a list of two or more arms (text), got {chain!r:.80}")
    if chain and len(set(chain)) != len(chain):
        raise ValueError(f"{where}: decomposition names an arm twice ({chain}); each step compares two arms")
    secondary = design.get("secondary")
    if secondary is not None:
        if not isinstance(secondary, list):
            raise ValueError(f"{where}: secondary must be a list of comparisons (- {{control: ..., treatment: ...}}), "
                             f"not {type(secondary).__name__}")
        for i, c in enumerate(secondary):
            _comparison(c, f"{where}: secondary[{i}]")
    if "confirms" in design and not (isinstance(design["confirms"], str) and design["confirms"]):
        raise ValueError(f"{where}: confirms must name the profile whose exploratory result this design tests on "
                         f"runs not yet trained (got {design['confirms']!r})")
    if "family" in design and (design["family"] != "own" or design.get("confirms")):
        raise ValueError(f"{where}: family must be 'own' (the design is judged as its own Holm family, on its own "
                         "metric and runs, beside the study's) or left out (its comparisons join the study's family); "
                         f"a confirmatory design is its own family already (got {design['family']!r})")
    return design


def check_design_record(path, rec: dict) -> dict:
    """A design record's config (``check_design_fields``) and results (``arms``: arm -> run ids; ``comparisons``: each
    naming registered arms) checked for shape; returns the record."""
    where = f"design record {path}"
    check_design_fields(rec["config"], where, record=True)
    res = rec["results"]
    arms = res.get("arms")
    if not isinstance(arms, dict) or not all(isinstance(a, str) and isinstance(ids, list)
                                             and all(isinstance(i, str) for i in ids) for a, ids in arms.items()):
        raise ValueError(f"{where}: results.arms must map each arm to its run ids (text); {RESTORE.format(path=path)}")
    comps = res.get("comparisons")
    if not isinstance(comps, list) or not comps:
        raise ValueError(f"{where}: results.comparisons must be a list of comparisons; {RESTORE.format(path=path)}")
    for i, c in enumerate(comps):
        if not isinstance(c, dict) or c.get("role") not in ("primary", "secondary"):
            raise ValueError(f"{where}: comparisons[{i}] needs role primary or secondary; "
                             f"{RESTORE.format(path=path)}")
        _comparison({k: v for k, v in c.items() if k != "role"}, f"{where}: comparisons[{i}]")
    seen = res.get("seen_at_registration", [])
    if not isinstance(seen, list) or not all(isinstance(i, str) for i in seen):
        raise ValueError(f"{where}: results.seen_at_registration must list run ids; {RESTORE.format(path=path)}")
    return rec


def design_index(folder) -> dict[str, str]:
    """``<folder>/registered.sha256`` as {file name: sha256}; empty when there is none."""
    path = Path(folder) / INDEX
    if not path.is_file():
        return {}
    out = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = re.fullmatch(r"([0-9a-f]{64})  ([\w.-]+\.json)", line.strip())
        if not m or m[2] in out:
            raise ValueError(f"{path}, line {n}: {line!r:.80} is not one '<sha256>  <name>.json' entry given once; "
                             f"{RESTORE.format(path=path)}")
        out[m[2]] = m[1]
    return out


def check_designs(folder) -> list[Path]:
    """The design records of ``<results>/design/``, each checked against the index: every one listed there with its
    hash (registered by ``sweep``, unchanged since) and every listed one present. Returns their paths, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    index = design_index(folder)
    paths = sorted(folder.glob("*.json"))
    if paths and not (folder / INDEX).is_file():
        raise ValueError(f"{folder} holds designs but no {INDEX} (a folder registered before designs were "
                         f"indexed, or its index removed): check each design against version control (`git diff -- "
                         f"{folder}`), then write the index once by hand (`cd {folder} && sha256sum *.json > {INDEX}`)")
    for path in paths:
        if path.name not in index:
            raise ValueError(f"{path} is not in {folder / INDEX}: a design is registered only by `python -m ufpa "
                             "sweep PROFILE` (or --register), which writes both; a file placed by hand is no "
                             "registration: remove it and register its profile")
        if sha256_file(path) != index[path.name]:
            raise ValueError(f"{path} changed after it registered (its sha256 is not the one in {INDEX}): "
                             f"{RESTORE.format(path=path)}; {NEW_PLAN}")
    for name in sorted(set(index) - {p.name for p in paths}):
        raise ValueError(f"{folder / name} is registered ({INDEX} names it) but missing, so its verdicts would vanish "
                         f"without a word: {RESTORE.format(path=folder / name)}; a registered design is never removed")
    return paths


def index_design(path) -> None:
    """Add a just-written design record to its folder's index (write-once: a name already there is refused)."""
    path = Path(path)
    index = design_index(path.parent)
    if path.name in index:
        raise ValueError(f"{path.parent / INDEX} already names {path.name}: a registered design is written once; "
                         f"{NEW_PLAN}")
    index[path.name] = sha256_file(path)
    records.atomic_write_text(path.parent / INDEX, "".join(f"{h}  {n}\n" for n, h in sorted(index.items())))


# --- a record is its run ----------------------------------------------------------------------------------------------

def recorded_run_id(config: dict) -> str:
    """The run id a record's config gives (``train.run_id``); a field the record lacks takes TrainConfig's default,
    as when the run was made. ``threads: 0`` (torch's default, the machine's cores) counts as this machine's cores."""
    from .train import TrainConfig, run_id

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.items() if k in fields}
    return run_id(TrainConfig(**values))


def check_record_identity(path, rec: dict) -> None:
    """A training record is the run its name says: the run id recomputed from its config, its ``results.run_id`` and
    its file name agree, or the error names the file and the field that differs."""
    path = Path(path)
    said = rec["results"]["run_id"]
    if path.name != f"{said}.json":
        raise ValueError(f"{path} holds the record of run {said}: a record is named after its run; rename it "
                         f"{said}.json (or remove the copy)")
    try:
        again = recorded_run_id(rec["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: its config is not a run's config ({err}); {RESTORE.format(path=path)} or re-run "
                         "it") from err
    if again == said:
        return
    cfg = rec["config"]
    readable = {"model": cfg.get("model"), "alignment": cfg.get("alignment"), "codec": cfg.get("codec"),
                "seed": f"s{cfg.get('seed')}", "input_size": "x".join(map(str, cfg.get("input_size") or ()))}
    named = [f"config.{k} is {v!r} but the run id says otherwise" for k, v in readable.items()
             if f"-{v}-" not in f"-{said}-"]
    if cfg.get("threads") == 0 and any(recorded_run_id({**cfg, "threads": n}) == said for n in range(1, 1025)):
        return  # torch's default thread count was the training machine's cores, which the record does not name
    what = named[0] if named else (f"a config field the id's hash covers (lr, epochs, data, ...) differs from the run "
                                   f"it names (hash {again.rsplit('-', 1)[1]}, the id's {said.rsplit('-', 1)[1]})")
    raise ValueError(f"{path}: {what}; its config gives run {again}, not {said}: the record was edited or is "
                     f"another run's. {RESTORE.format(path=path)}, or re-run it")


def check_data(recs: list[tuple[Path, dict]]) -> None:
    """Records that name one dataset folder name one dataset: the same data fingerprint (a whole arm trained on other
    data would else be compared with the rest)."""
    first: dict = {}
    for path, rec in recs:
        name = Path(rec["config"]["data"]).name
        fp = rec["results"].get("data_fingerprint")
        if name not in first:
            first[name] = (path, fp)
        elif fp != first[name][1] and None in (fp, first[name][1]):
            older = path.name if fp is None else first[name][0].name
            raise ValueError(f"{older} has no data_fingerprint (made before runs recorded one) and another record on "
                             f"data '{name}' has one: whether they ran on the same data cannot be told; report them "
                             "apart (another results folder) or re-run the older one")
        elif fp != first[name][1]:
            raise ValueError(f"{path.name} and {first[name][0].name} both ran on data '{name}' but on different data "
                             f"(data_fingerprint {fp} vs {first[name][1]}): report them apart (another results "
                             "folder) or re-run one on the study's data")


def check_named(recs: list[tuple[Path, dict]], designs: list[dict]) -> None:
    """Every record of an arm whose runs a registered design names is one of those runs: a record copied in from
    elsewhere would otherwise join the tables as one more seed without a word. (An arm no design names keeps all its
    records, as ``report.design_frame`` keeps them.)"""
    from .train import arm_name

    named: dict = {}
    for d in designs:
        for arm, ids in d["results"]["arms"].items():
            named.setdefault(arm, set()).update(ids)
    for path, rec in recs:
        cfg, res = rec["config"], rec["results"]
        arm = arm_name(cfg["alignment"], cfg.get("padding", ""), res["input_size"], cfg["codec"])
        if named.get(arm) and res["run_id"] not in named[arm]:
            raise ValueError(f"{path} is a record of arm '{arm}', whose runs the designs registered in "
                             f"{path.parent.parent / 'design'} name, but no design names this one: a record from "
                             "elsewhere would join the tables as another seed; move it to its own results folder (or "
                             "register, under a new profile name, a design that names it)")


# --- equivalence records: one training code standing in for another ---------------------------------------------------

def identical_differences(a: dict, b: dict) -> list[str]:
    """Everything two records of one config computed that differs at all (the learning curve's losses and val AP,
    every metric of both flip settings, the per-image results' hash): empty when the second run repeated the first bit
    for bit."""
    ra, rb = a["results"], b["results"]
    if ra["run_id"] != rb["run_id"]:
        raise ValueError(f"records of two configs ({ra['run_id']}, {rb['run_id']}) are not runs to compare")
    out = []
    for x, y in zip(ra["learning_curve"], rb["learning_curve"]):
        for key in ("loss", "val_AP", "val_epe_mean"):
            if x.get(key) != y.get(key):
                out.append(f"epoch {x['epoch']} {key}: {x.get(key)!r} vs {y.get(key)!r}")
    if len(ra["learning_curve"]) != len(rb["learning_curve"]):
        out.append(f"learning curves of {len(ra['learning_curve'])} and {len(rb['learning_curve'])} epochs")
    for name in ("no_flip", "flip"):
        for key in sorted(set(ra[name]) | set(rb[name])):
            if ra[name].get(key) != rb[name].get(key):
                out.append(f"{name} {key}: {str(ra[name].get(key))[:40]} vs {str(rb[name].get(key))[:40]}")
    for key in ("keypoints_sha256", "instances_sha256", "offsets_sha256"):
        if ra.get(key) and rb.get(key) and ra[key] != rb[key]:
            out.append(f"{key} differs")
    return out


def check_equivalence(path) -> tuple[str, str]:
    """An equivalence record checked against what it claims; returns its two codes. The record it names (in the
    ``runs/`` beside its own ``equivalence/`` folder) must exist and be what it says (that run, made by the first
    code, on the CPU type named); one that holds the hashes (``record_sha256``) and the repeated record (``repeat``)
    is checked against both: the first record unchanged, the repeat of the second code and equal to it bit for bit.
    An older one holds neither and is checked for the rest (``legacy_equivalence``)."""
    path = Path(path)
    rec = records.read_record(path, kind="code_equivalence")
    res, fix = rec["results"], f"remove {path} and make it with `python -m ufpa reproduce <record>`"
    codes = res.get("codes")
    if not (isinstance(codes, list) and len(codes) == 2 and all(isinstance(c, str) and _HEX16.match(c)
                                                                for c in codes) and codes[0] != codes[1]):
        raise ValueError(f"{path}: codes {codes!r:.80} is not two different training-code fingerprints (16 hex "
                         f"digits each); {fix}")
    named = rec["config"].get("record")
    # the record in this results folder's runs/ (a copied study is checked against its own records)
    first_path = path.parent.parent / "runs" / Path(named).name if isinstance(named, str) and named else None
    if first_path is None or not first_path.is_file():
        raise ValueError(f"{path} names the record {named!r}, which does not exist: an equivalence proves itself "
                         f"only by the record it repeated; {fix}")
    first = records.read_record(first_path, kind="train_run")
    checks = [("run_id", first["results"]["run_id"], res.get("run_id")),
              ("first code", first["results"].get("code_fingerprint"), codes[0]),
              ("device", first["provenance"]["device"], res.get("device")),
              ("cpu_capability", first["provenance"].get("cpu_capability"), res.get("cpu_capability"))]
    for what, theirs, ours in checks:
        if theirs != ours:
            raise ValueError(f"{path}: its {what} {ours!r} is not the one of the record it names ({named}: "
                             f"{theirs!r}); {fix}")
    if "record_sha256" in res or "repeat" in res:
        if sha256_file(first_path) != res.get("record_sha256"):
            raise ValueError(f"{path}: the record it names ({named}) is not the one it repeated (its sha256 differs "
                             f"from record_sha256): restore that record, or {fix}")
        repeat = res.get("repeat")
        if not isinstance(repeat, dict) or not isinstance(repeat.get("results"), dict):
            raise ValueError(f"{path}: it names no repeated record (results.repeat); {fix}")
        body = json.dumps(repeat, indent=1) + "\n"
        if hashlib.sha256(body.encode()).hexdigest() != res.get("repeat_sha256"):
            raise ValueError(f"{path}: its repeated record is not the one it hashed (repeat_sha256); {fix}")
        if repeat["results"].get("code_fingerprint") != codes[1]:
            raise ValueError(f"{path}: its repeat was made by code {repeat['results'].get('code_fingerprint')}, not "
                             f"{codes[1]}; {fix}")
        diffs = identical_differences(first, repeat)
        if diffs:
            raise ValueError(f"{path}: its repeat differs from {named} ({diffs[0]}): no equivalence; {fix}")
    return codes[0], codes[1]


def legacy_equivalence(path) -> bool:
    """Whether an equivalence record predates the hashes (its repeat was not kept: checked for the rest only)."""
    return "repeat" not in records.read_record(path, kind="code_equivalence")["results"]


def equivalence_paths(folders) -> list[Path]:
    return [p for folder in folders for p in sorted((Path(folder) / "equivalence").glob("*.json"))]


def code_groups(codes: set, folders) -> list[set]:
    """The code identities (``"code <fingerprint>"``) joined by the checked equivalence records of ``folders``
    (``check_equivalence``; one that fails is refused, never skipped): the groups whose records may pool, and whose
    records a resumed sweep may keep."""
    parent = {c: c for c in codes}

    def root(c):
        while parent.setdefault(c, c) != c:
            c = parent[c]
        return c
    for path in equivalence_paths(folders):
        a, b = (f"code {c}" for c in check_equivalence(path))
        parent[root(a)] = root(b)
    groups: dict = {}
    for c in codes:
        groups.setdefault(root(c), set()).add(c)
    return list(groups.values())
