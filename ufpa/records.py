"""Results records: every number in ``reports/`` comes from one of these JSON files.

A record holds what was run (``config``), what came out (``results``) and where it came from (``provenance``: git
commit and whether the tree was dirty, device, torch/numpy/python versions, seed, UTC time). Records are written
atomically, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import hashlib
import json
import math
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA = 1


# Where ad-hoc runs write unless told otherwise (gitignored): only the study's own commands write into reports/.
SCRATCH = REPO_ROOT / "scratch"


def reports_dir(default: str | os.PathLike = REPO_ROOT / "reports") -> Path:
    """Where reports go: ``$UFPA_REPORTS_DIR`` when set (tests use it to keep the tree clean), else ``default``."""
    return Path(os.environ.get("UFPA_REPORTS_DIR") or default)


def notebook_reports_dir(reports: str) -> Path:
    """A notebook's ``reports`` parameter made explicit: ``$UFPA_REPORTS_DIR`` when set (said aloud, never silently),
    else ``reports``. A relative path depends on the working directory, so it must already exist: from the repo
    root the default '../reports' would leave the repository."""
    env = os.environ.get("UFPA_REPORTS_DIR")
    if env:
        print(f"UFPA_REPORTS_DIR is set: records and figures go to {env} (not reports={reports!r})")
        return Path(env)
    path = Path(reports)
    if not path.is_absolute() and path.resolve() == SCRATCH.resolve():
        path.mkdir(parents=True, exist_ok=True)  # the default: scratch/ is made on first use
    if not path.is_absolute() and not path.is_dir():
        raise ValueError(f"notebook parameter reports={reports!r} names no folder from the working directory "
                         f"{Path.cwd()}: run papermill with --cwd notebooks (where the default '../reports' is the "
                         "repository's reports/), or pass -p reports with an existing folder or an absolute path")
    print(f"records and figures go to {repo_relative(path)}")
    return path


def repo_relative(path) -> str:
    """``path`` as records and pages show it: relative to the repository root when inside it (so a record reads the
    same in every clone), else absolute."""
    path = Path(path)
    resolved = path.resolve() if path.is_absolute() or path.exists() else (REPO_ROOT / path).resolve()
    try:
        return resolved.relative_to(REPO_ROOT.resolve()).as_posix() or "."
    except ValueError:
        return str(resolved)


SIDECARS = (".keypoints.json", ".instances.json", ".offsets.json", ".failed.json")


def run_record_paths(folder) -> list[Path]:
    """The training records in a ``results/runs`` folder, sorted: the files written beside them (COCO results
    ``<run_id>.keypoints.json``, per-image results ``<run_id>.instances.json``, a learned
    aligner's offsets ``<run_id>.offsets.json``, failure notes ``<run_id>.failed.json``)
    are not records. Empty if there is no folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if not p.name.endswith(SIDECARS))


def from_repo(path) -> Path:
    """The inverse of ``repo_relative``: a relative path in a record is taken from the repository root."""
    path = Path(path)
    return path if path.is_absolute() else REPO_ROOT / path


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:  # Linux names the CPU model here; platform.processor() is often empty
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{model} x{os.cpu_count()}"


def module_imports(path: Path, package: Path = REPO_ROOT / "ufpa") -> set[str]:
    """The ufpa modules a source file imports (top-level name under ufpa: 'models', 'data', ...), lazy ones too."""
    parts = Path(path).relative_to(package).with_suffix("").parts
    found = set()
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(parts[:len(parts) - node.level])  # the package the dots lead to
            target = base + (node.module.split(".") if node.module else [])
            names = [target + [alias.name] for alias in node.names] if not node.module else [target]
            found |= {n[0] for n in names if n}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ufpa."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ufpa.")}
    return found


def _resolve(parts: list[str], package: Path) -> list[Path]:
    """The files importing ``ufpa.<parts>`` executes: the module (or package ``__init__``) and every parent package's
    ``__init__``; empty if no such module."""
    if not parts:
        return [package / "__init__.py"]
    module = package.joinpath(*parts)
    found = module.with_suffix(".py") if module.with_suffix(".py").is_file() else module / "__init__.py"
    if not found.is_file():
        return []
    return [package.joinpath(*parts[:k], "__init__.py") for k in range(len(parts))] + [found]


def imported_files(path: Path, package: Path = REPO_ROOT / "ufpa") -> set[Path]:
    """The ufpa source files a file's imports execute (lazy ones too), submodules named in ``from x import y``
    included."""
    here = list(Path(path).relative_to(package).parts[:-1])  # the package the file sits in
    found: set[Path] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ufpa")):
            if node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else list(here)
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = node.module.split(".")[1:]
            found.update(_resolve(target, package))
            for alias in node.names:
                found.update(_resolve(target + [alias.name], package))  # a submodule, if the name is one
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("ufpa"):
                    found.update(_resolve(alias.name.split(".")[1:], package))
    return found


# What a training run's numbers depend on besides its config and data: the notebook that runs it and every ufpa
# source file ``train`` reaches by import. The report, the stats, the page and the SynthPose generator (whose effect
# reaches a run only through the data, which the data fingerprint covers) are not in it, so a commit that changes
# only them keeps the fingerprint and runs made before and after it still pool.
TRAINING_ENTRY = ("train.py",)
TRAINING_NOTEBOOK = REPO_ROOT / "notebooks" / "05_train.ipynb"


def training_files(entry=TRAINING_ENTRY, package: Path = REPO_ROOT / "ufpa") -> list[Path]:
    """The source files ``entry`` reaches by import, transitively, sorted."""
    seen: set[Path] = set()
    todo = [package / e for e in entry] + [package / "__init__.py"]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo += sorted(imported_files(path, package) - seen)
    return sorted(seen)


def code_fingerprint(entry=TRAINING_ENTRY, notebook: Path | None = TRAINING_NOTEBOOK,
                     package: Path = REPO_ROOT / "ufpa") -> str:
    """sha256 (16 hex digits) of the source files ``entry`` reaches by import (``training_files``) and of the
    notebook's code cells (outputs and metadata do not count)."""
    digest = hashlib.sha256()
    for path in training_files(entry, package):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    if notebook is not None:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                source = cell["source"]
                digest.update(("".join(source) if isinstance(source, list) else source).encode() + b"\0")
    return digest.hexdigest()[:16]


def provenance(seed: int | None = None) -> dict:
    import torch

    # Dirty means the code differs from the commit; reports/ is what runs write, so it does not count.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)reports")
    return {
        "git_commit": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(status) if status is not None else None,
        "device": device_description(),
        # the kernels torch dispatched (AVX512, AVX2, DEFAULT...): CPU numbers are bit-identical only within one
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "seed": seed,
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _clean(value, where: str = "record"):
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to None (JSON has no NaN; a missing metric
    reads as null, never as a number). Anything else that JSON cannot hold is an error naming its key."""
    if isinstance(value, dict):
        return {str(k): _clean(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist(), where)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise TypeError(f"{where} is a {type(value).__name__} ({value!r:.80}), which a JSON record cannot hold; convert it "
                    "to a number, string, list or dict before writing the record")


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; records are meant to be shared
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(f"could not write {path} ({write_failure(err)}); the previous {path.name}, if any, is intact: "
                      "free disk space (or fix the folder) and run again") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_failure(err: BaseException) -> str:
    """A write error in words: a full disk says so (torch.save reports it as 'unexpected pos')."""
    if getattr(err, "errno", None) == errno.ENOSPC or "unexpected pos" in str(err) or "No space left" in str(err):
        return "disk full"
    return getattr(err, "strerror", None) or str(err)


def finite_numbers(values, n: int | None = None) -> bool:
    """Whether ``values`` (read from JSON) is a list of ``n`` (any number if None) finite numbers: NaN, inf, text and
    booleans are not."""
    if not isinstance(values, (list, tuple)) or (n is not None and len(values) != n):
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)


def read_json(path, what: str, fix: str = "write it again"):
    """The JSON in file ``path``, or an error naming ``what`` it should be and the fix (missing, not UTF-8, invalid)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} at {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{what} {path} is not valid JSON ({err}); {fix}") from err


def write_record(path: str | os.PathLike, kind: str, config: dict, results: dict, seed: int | None = None) -> Path:
    """Write a results record; returns its path."""
    record = {"schema": SCHEMA, "kind": kind, "config": _clean(config, "config"),
              "results": _clean(results, "results"), "provenance": provenance(seed)}
    return atomic_write_text(path, json.dumps(record, indent=1) + "\n")  # insertion order: readable, deterministic


def read_record(path: str | os.PathLike, kind: str | None = None) -> dict:
    """Read a record and check its shape, with an error that says what is wrong and how to fix it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results record at {path}; run the notebook or command that writes it first")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON text ({err}); it may be half-written or not a record: delete it "
                         "and re-run the step that writes it") from err
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a ufpa results record (its JSON is {type(record).__name__}, not an object); "
                         f"re-run the step that writes it")
    missing = [k for k in ("schema", "kind", "config", "results", "provenance") if k not in record]
    if missing:
        raise ValueError(f"{path} is not a ufpa results record (missing {missing}); re-run the step that writes it")
    if kind is not None and record["kind"] != kind:
        raise ValueError(f"{path} holds a {record['kind']!r} record, expected {kind!r}")
    check_schema(record, path)
    return record


# Fields every record must carry (provenance) and, per kind, the ones the report reads: "section.field".
REQUIRED = {
    None: ("provenance.git_commit", "provenance.git_dirty", "provenance.device", "provenance.torch",
           "provenance.seed", "provenance.time_utc"),
    "train_run": ("config.model", "config.alignment", "config.head", "config.codec", "config.input_size",
                  "config.seed", "config.epochs", "config.data", "results.run_id", "results.flip", "results.no_flip",
                  "results.learning_curve", "results.params", "results.gflops", "results.input_size",
                  "results.wall_s", "results.images_per_s"),
}


def check_schema(record: dict, path="record"):
    """Check a record against its schema; the error names the first missing field and where it belongs."""
    if record.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {record.get('schema')!r} is not {SCHEMA}, the one this version reads; "
                         f"re-run the step that wrote it")
    for name in REQUIRED[None] + REQUIRED.get(record.get("kind"), ()):
        section, field = name.split(".")
        if not isinstance(record.get(section), dict) or field not in record[section]:
            raise ValueError(f"{path}: the {record.get('kind')!r} record lacks {name}; a record without it cannot "
                             f"back a reported number — re-run the step that wrote it")


class Busy(RuntimeError):
    """A folder another live process is writing (``folder_lock``)."""


@contextlib.contextmanager
def folder_lock(folder: Path, name: str, what: str, otherwise: str):
    """One writer per folder: ``folder/name`` holds the writer's pid. A lock whose process is gone (a killed writer on
    this machine) is taken over; a live one raises ``Busy`` naming ``what`` holds it and ``otherwise`` (the fix)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / name
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise Busy(f"{what} (pid {pid}) is writing {folder}; wait for it to finish, or {otherwise}. If none "
                           f"is active, delete {lock}") from None
            lock.unlink(missing_ok=True)  # stale: its writer is gone
    else:
        raise Busy(f"cannot take the lock {lock}; delete it if no {what} is active")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
