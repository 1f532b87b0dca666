"""Model registry: presets register by name; ``create_model`` and ``list_models`` are the entry points."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

import torch

_MODELS: dict[str, Callable] = {}

# The parameter-free variants (the paper's family: where fused features sit is fixed by construction) ...
ALIGNMENTS = ("baseline", "bilinear", "bilinear_corners", "ufpa", "ufpa_any")
# ... and the learned aligner (issue 22), which adds offset parameters at every fusion; every model-taking entry point
# accepts all of them, the zero-cost tables and audits loop over ALIGNMENTS.
LEARNED_ALIGNMENTS = ("learned",)
ALL_ALIGNMENTS = ALIGNMENTS + LEARNED_ALIGNMENTS


def register_model(fn: Callable | None = None, *, total_stride: int = 32):
    """Decorator for a preset function ``fn(**kwargs) -> nn.Module``; its name is the model name. ``total_stride``:
    the preset's coarsest feature stride (what its 'ufpa' input sizes, stride * m + 1, are made of); use as
    ``@register_model`` or ``@register_model(total_stride=64)``."""
    def register(fn):
        if fn.__name__ in _MODELS:
            raise ValueError(f"model {fn.__name__!r} is registered twice")
        fn.total_stride = total_stride
        _MODELS[fn.__name__] = fn
        return fn
    return register(fn) if fn is not None else register


def run_size(name: str, alignment: str, requested) -> tuple[int, int]:
    """The one rule for the (H, W) a variant runs at: the request, except that 'ufpa' runs a request that is a multiple
    of the model's total stride at the aligned size above it (256x192 -> 257x193; 96x64 -> 97x65). An aligned request
    stays; any other is the model's to refuse, naming the valid sizes (which of them was meant is a guess)."""
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {list_models()}")
    stride = _MODELS[name].total_stride
    size = tuple(int(n) for n in requested)
    if alignment != "ufpa":
        return size
    return tuple(n + 1 if n % stride == 0 else n for n in size)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern`` (e.g. 'hrnet*'), sorted."""
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def create_model(name: str, num_keypoints: int = 17, alignment: str = "baseline", head: str = "heatmap",
                 input_size: tuple[int, int] = (256, 192), **kwargs):
    """Build a registered model.

    ``alignment`` picks how features are resampled where paths meet (see ``ALIGNMENTS`` and each model's
    docstring); ``head`` the output head ('heatmap', 'udp', 'sr', 'duc'); ``input_size`` is (H, W) and is checked
    against what the alignment needs (e.g. 32m+1 for HRNet 'ufpa').
    """
    if name not in _MODELS:
        close = [m for m in _MODELS if name.split("_")[0] in m] or list_models()
        raise ValueError(f"unknown model {name!r}; choose one of {close}")
    if alignment not in ALL_ALIGNMENTS:
        raise ValueError(f"unknown alignment {alignment!r}; choose one of {ALL_ALIGNMENTS}")
    if num_keypoints < 1:
        raise ValueError(f"num_keypoints must be >= 1, got {num_keypoints}")
    size = tuple(int(s) for s in input_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be (H, W) with positive sizes, got {input_size!r}")
    model = _MODELS[name](num_keypoints=num_keypoints, alignment=alignment, head=head, input_size=size, **kwargs)
    model.register_forward_pre_hook(_check_input)
    return model


def _check_input(model, args):
    """Refuse an input of another size than the model was built for: its position maps (and, for 'ufpa', its
    alignment) hold only there, and a wrong size would otherwise run silently misaligned."""
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and tuple(x.shape[-2:]) != tuple(model.input_size):
        h, w = x.shape[-2:]
        raise ValueError(f"{type(model).__name__} ({model.alignment}) was built for {model.input_size[0]}x"
                         f"{model.input_size[1]} inputs, got {h}x{w}: resize the crops to the built size, or build "
                         f"the model with create_model(..., input_size=({h}, {w}))")


def model_cost(name: str, alignment: str = "baseline", head: str = "heatmap", input_size=(256, 192)) -> dict:
    """Parameters and forward FLOPs (one image) of a model variant at the size it runs at (``run_size``)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = run_size(name, alignment, input_size)
    model = create_model(name, alignment=alignment, head=head, input_size=size).eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, *size))
    return {"model": name, "alignment": alignment, "head": head, "input_size": list(size),
            "params": sum(p.numel() for p in model.parameters()), "gflops": counter.get_total_flops() / 1e9}
