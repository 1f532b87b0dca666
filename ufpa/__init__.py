"""ufpa: unbiased feature position alignment for pose estimation, as a reproducible study package.

The house, ground floor first. A module imports only from floors below its own (``FLOORS``; ``tests/
test_notebooks_and_packaging.py`` reads every import, lazy ones included), so no import runs back up and there is no
import circle.

0. ``geometry`` (where a feature sits: the one coordinate convention), ``ops``, ``stats`` (intervals and tests on
   numbers; no files, no plots), ``records`` (results records, atomic writes), ``config`` (``key=value`` overrides),
   ``runtime`` (bf16 / channels_last / CUDA-graph defaults and the one graph capture).
1. ``models`` (``create_model``, ``run_size``: the size a model runs at, ``model_cost``), ``codecs`` (encode/decode
   pairs), ``data`` (SynthPose, COCO-format crops, ``split_paths``: both folder layouts), ``symbolic`` and ``probe``
   (the derivation and its numerical check).
2. ``evaluate`` (a model's keypoints on a dataset and every metric), ``audit`` (misalignment of any model), ``viz``.
3. ``learned`` (what a learned aligner learned, read against the audit's shifts; the synthetic-shift test).
4. ``train``: only trains (config, build, step, ``setup`` / ``train_one_epoch`` / ``evaluate_run`` / checkpoints).
5. ``integrity`` (what a claim rests on: designs registered once, records that are their runs, equivalences that
   prove themselves).
6. ``runs`` (a finished run read back), ``sweep`` (grids of runs through notebook 05), ``bench`` (records of speed).
7. ``study`` (the cross-checks notebooks 03 and 04 show), ``report`` (tables, figures and findings from records),
   ``gpu_check`` (``make gpu-check``: the GPU measurements as one script).
8. ``page`` (``reports/study.html``), then ``__main__`` (the command line) on top.

Where a notebook's helper goes: 01 ``symbolic``, 02 ``probe``, 03 and 04 ``study``, 05 ``runs``, 06 ``report``. A
notebook holds no logic of its own: its cells call these.
"""

__version__ = "0.1.0"

# Each module's floor (a package counts as one module): a module may import only from lower floors.
FLOORS = (
    ("geometry", "ops", "stats", "records", "config", "runtime"),
    ("models", "codecs", "data", "symbolic", "probe"),
    ("evaluate", "audit", "viz"),
    ("learned",),
    ("train",),
    ("integrity",),
    ("runs", "sweep", "bench"),
    ("study", "report", "gpu_check"),
    ("page",),
    ("__main__",),
)
