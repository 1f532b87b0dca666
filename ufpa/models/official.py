"""Import the released weights of the official HRNet and UFPA code into ``ufpa`` HRNets, key by key.

Sources (``source=``), and the ufpa model that computes the official forward (same weights, same outputs):

- ``'pose_hrnet'``: HRNet, ``lib/models/pose_hrnet.py`` of leoxiaobin/deep-high-resolution-net.pytorch (nearest
  upsampling, zero padding, K heatmaps): ``create_model('hrnet_w32', alignment='baseline', head='heatmap',
  input_size=(256, 192))``.
- ``'ufpa'``: UFPA, ``lib/models/pose_hrnet.py`` of WangChen100/Unbiased-Feature-Position-Alignment-for-Human-Pose-
  Estimation (bilinear align_corners=True to 32m+1 sizes, replicate padding, last fusion widened to 4*C0, 3K
  outputs): ``create_model('hrnet_w32', alignment='ufpa', head='ufpa_official', input_size=(257, 193))``.

W48 weights go into ``hrnet_w48`` the same way. The input size is the one the weights were trained at: the UFPA code
adds 1 to its config's size (384x288 runs at 385x289) and fixes its upsampling sizes to it (``feature_size``). The
weights load into any alignment variant with the same head (e.g. the official HRNet under 'ufpa_any'), which is how
the study audits or re-evaluates them under another alignment; only the two models above reproduce the official
forward (checked against the official code: bit-identical outputs in float32 on CPU).

Names map structurally (the official ``stage2.0.fuse_layers.0.1.0.weight`` is ufpa's
``stages.0.0.fuse.0.1.conv.weight``); the UFPA head's rows are permuted from the official interleaved offset order to
the ``udp`` layout (``heads.UFPAOfficialHead.official_order``). Loading is strict: every official key must have its
place and shape in the model and every model entry must be given (a missing ``num_batches_tracked``, absent from
checkpoints of torch < 0.4.1, keeps the model's value, as torch's own loading does); the first key that does not fit
raises a ValueError naming it. ``to_official`` is the reverse: the model's weights under the official names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .heads import UFPAOfficialHead
from .hrnet import HRNet

SOURCES = {"pose_hrnet": "heatmap", "ufpa": "ufpa_official"}  # source -> the head its weights need
# {'state_dict': ...}: the official training checkpoint.pth (its keys carry DataParallel's 'module.'); {'model': ...}
_WRAPPERS = ("state_dict", "model")


def _official_name(key: str) -> str:
    """The official name of a ufpa HRNet state-dict key (structure is the same; only the names differ)."""
    if m := re.fullmatch(r"stem\.(\d)\.([01])\.(.+)", key):  # stem: conv1/bn1, conv2/bn2
        return f"{('conv', 'bn')[int(m[2])]}{int(m[1]) + 1}.{m[3]}"
    if m := re.fullmatch(r"transitions\.(\d+)\.(\d+)\.(.+)", key):
        stage, branch = int(m[1]), int(m[2])
        # a new branch (one more than the stage before had) is a Sequential of one conv-bn-relu there
        new = ".0" if branch == stage + 1 else ""
        return f"transition{stage + 1}.{branch}{new}.{m[3]}"
    if m := re.fullmatch(r"stages\.(\d+)\.(\d+)\.(.+)", key):
        prefix, rest = f"stage{int(m[1]) + 2}.{m[2]}", m[3]
        if f := re.fullmatch(r"fuse\.(\d+)\.(\d+)\.(conv|bn)\.(.+)", rest):  # upsampling path: conv, BN, upsample
            return f"{prefix}.fuse_layers.{f[1]}.{f[2]}.{('conv', 'bn').index(f[3])}.{f[4]}"
        if f := re.fullmatch(r"fuse\.(\d+)\.(\d+)\.weight", rest):  # widened identity path: Sequential(conv)
            return f"{prefix}.fuse_layers.{f[1]}.{f[2]}.0.weight"
        return f"{prefix}.{rest.replace('fuse.', 'fuse_layers.', 1)}"
    if m := re.fullmatch(r"head\.conv\.(weight|bias)", key):
        return f"final_layer.{m[1]}"
    return key  # layer1.* has the official names


def official_names(model: HRNet) -> dict[str, str]:
    """{ufpa key: official key} for every entry of ``model.state_dict()``, in the official model's order."""
    names = [(key, _official_name(key)) for key in model.state_dict()]
    return dict(sorted(names, key=lambda kv: _official_sort_key(kv[1])))  # stable: the model's order within a part


def _describe(model: HRNet) -> str:
    return (f"this ufpa HRNet (widths {model.spec.widths}, head {model.head_kind!r}, {model.num_keypoints} "
            "keypoints)")


def _check_model(model, source: str) -> None:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {tuple(SOURCES)}")
    if not isinstance(model, HRNet):
        raise ValueError(f"official weights exist for HRNet only, got a {type(model).__name__}: build an hrnet_* "
                         f"model with create_model(..., head={SOURCES[source]!r})")
    if model.head_kind != SOURCES[source]:
        raise ValueError(f"source={source!r} weights need a model built with head={SOURCES[source]!r}, this one has "
                         f"head={model.head_kind!r}: build it with create_model(..., head={SOURCES[source]!r})")


def _head_order(model: HRNet, source: str) -> torch.Tensor | None:
    if source != "ufpa":
        return None
    return torch.tensor(UFPAOfficialHead.official_order(model.num_keypoints))


def _read(state_dict_or_path) -> tuple[dict, str]:
    """The state dict (wrappers and DataParallel's 'module.' prefix removed) and how to name it in errors."""
    if isinstance(state_dict_or_path, (str, os.PathLike)):
        path = Path(state_dict_or_path)
        what = str(path)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
            raise ValueError(f"{path} cannot be read ({type(err).__name__}: {str(err)[:200]}); it is missing, "
                             "truncated, corrupt or not a torch file: download the weights again") from err
    else:
        state, what = state_dict_or_path, "the state dict"
    for key in _WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state, what = state[key], f"{what}[{key!r}]"
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} is not a state dict (name -> tensor); pass the official weights file or its "
                         f"state dict")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, what


def _looks_like(state: dict) -> str | None:
    """The source whose names a state dict has: UFPA's widened last fusion has a conv on its identity path."""
    if any(re.fullmatch(r"stage4\.\d+\.fuse_layers\.0\.0\.0\.weight", k) for k in state):
        return "ufpa"
    return "pose_hrnet" if "final_layer.weight" in state else None


def load_official(model: HRNet, state_dict_or_path, source: str = "pose_hrnet") -> HRNet:
    """Copy official weights into ``model`` (in place) and return it.

    ``state_dict_or_path``: a weights file (read with ``torch.load(..., weights_only=True)``) or a state dict;
    ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers and a DataParallel ``module.`` prefix are removed.
    ``source``: 'pose_hrnet' (official HRNet; model built with head='heatmap') or 'ufpa' (official UFPA; model built
    with head='ufpa_official'). Raises a ValueError naming the first key that does not fit (missing, unexpected or of
    another shape, with both shapes) and what to do. Values are copied exactly (dtype converted to the model's).
    """
    _check_model(model, source)
    state, what = _read(state_dict_or_path)
    own = model.state_dict()
    names = official_names(model)
    ufpa_of = {official: key for key, official in names.items()}
    hint = (f"build the preset, num_keypoints and head the weights were trained with (source={source!r} needs "
            f"head={SOURCES[source]!r})")
    looks = _looks_like(state)
    if looks not in (None, source):
        hint += f"; its keys look like source={looks!r} weights (head={SOURCES[looks]!r})"
    missing = [o for o in ufpa_of if o not in state and not o.endswith("num_batches_tracked")]
    for name, value in state.items():
        if name not in ufpa_of:
            also = f"; it also lacks {missing[0]!r}, so the key may be renamed" if missing else ""
            like = " (it looks like a ufpa checkpoint: use model.load_state_dict)" if name in own else ""
            raise ValueError(f"{what} has key {name!r}, which {_describe(model)} has no place for{like}{also}: it is "
                             f"not an official {source!r} state dict of this model; {hint}")
        expected = tuple(own[ufpa_of[name]].shape)
        if tuple(value.shape) != expected:
            raise ValueError(f"{what} has {name!r} of shape {tuple(value.shape)}, but {_describe(model)} needs "
                             f"{expected} there (ufpa {ufpa_of[name]!r}); {hint}")
    if missing:
        name = missing[0]
        raise ValueError(f"{what} lacks {name!r} (shape {tuple(own[ufpa_of[name]].shape)}), which {_describe(model)} "
                         f"needs (ufpa {ufpa_of[name]!r}); {len(missing)} key(s) missing in all: the file is not the "
                         f"whole model, or {hint}")
    order = _head_order(model, source)
    converted = {}
    for key, official in names.items():
        if official not in state:  # num_batches_tracked only (checked above)
            converted[key] = own[key]
            continue
        value = state[official]
        if order is not None and key.startswith("head.conv."):
            value = value[order.to(value.device)]  # official interleaved offsets -> udp layout, row for row
        converted[key] = value
    model.load_state_dict(converted, strict=True)
    return model


def to_official(model: HRNet, source: str | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict under the official names and channel order (the inverse of ``load_official``);
    ``source`` defaults to the one the model's head belongs to."""
    source = source or next((s for s, head in SOURCES.items() if head == getattr(model, "head_kind", None)),
                            "pose_hrnet")
    _check_model(model, source)
    order = _head_order(model, source)
    own = model.state_dict()
    out = {}
    for key, official in official_names(model).items():
        value = own[key].detach().clone()
        if order is not None and key.startswith("head.conv."):
            # udp layout -> the official interleaved order
            value = torch.empty_like(value).index_copy_(0, order.to(value.device), value)
        out[official] = value
    return out


def _official_sort_key(name: str):
    """The official code's order of its state dict: stem, layer1, then per stage its transition and modules, then
    the final layer (so an exported dict lists its keys in the order the official model does)."""
    head = name.split(".")[0]
    stem = {"conv1": 0, "bn1": 1, "conv2": 2, "bn2": 3}
    if head in stem:
        return (0, stem[head])
    if head == "layer1":
        return (1, 0)
    if m := re.fullmatch(r"(transition|stage)(\d)", head):
        stage = int(m[2]) + (1 if m[1] == "transition" else 0)  # transition k comes before stage k+1
        return (2, stage, m[1] == "stage")
    return (3, 0)
