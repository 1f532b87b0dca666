"""Misalignment audit: where every fusion point of a PyTorch model puts its incoming features.

``audit(model, input_size)`` traces the model with torch.fx, propagates shapes with a real forward pass, and carries a
``ufpa.geometry`` position map per spatial axis through every node, from the input image onwards. At every fusion point
(an add or a channel concat of feature maps) each incoming tensor is compared with the first one, the fusion target:
one row per (fusion point, incoming tensor, axis). Interior statistics cover outputs whose samples lie inside every map
on the way; border statistics report the rest, with the positions the ops really read there. An op the audit has no
map for stops it with a message naming the op, never a silent zero.

``empirical_positions(model, input_size)`` is the independent check: it runs a linearised float64 copy of the model
(uniform conv kernels, identity batch norm, average instead of max pooling, padding by linear extrapolation, positive
inputs so ReLUs pass) on coordinate ramps and ones, and reads the realised position of every fusion operand as
ramp / ones. Each fusion passes its target on, as the audit does, so every operand is checked on its own path.
"""

from __future__ import annotations

import copy
import inspect
import operator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from . import geometry

AXES = ("H", "W")

_IDENTITY_MODULES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm, nn.GroupNorm, nn.InstanceNorm2d, nn.LayerNorm,
                     nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
                     nn.Sigmoid, nn.Tanh, nn.Identity, nn.Dropout, nn.Dropout2d)
_IDENTITY_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid, F.sigmoid,
                       torch.tanh, F.dropout, operator.neg, operator.mul, torch.mul, operator.truediv}
_IDENTITY_METHODS = {"relu", "relu_", "sigmoid", "contiguous", "float", "double", "half", "bfloat16", "to", "clone",
                     "mul", "div"}
_FUSE_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_CAT_FUNCTIONS = {torch.cat, torch.concat}


class AuditError(ValueError):
    """The audit met an op it has no position map for, or a fusion it cannot read."""


def _has_position_map(module: nn.Module) -> bool:
    fn = getattr(module, "position_map", None)
    return callable(fn) and len(inspect.signature(fn).parameters) == 2


class _Tracer(fx.Tracer):
    """Standard leaves, plus any module that declares ``position_map(in_size, out_size)`` (e.g. ``Resample``)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # convs are leaves whatever their class (ufpa's replicate-padding conv subclasses nn.Conv2d)
        return _has_position_map(m) or isinstance(m, nn.Conv2d) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, input_size) -> fx.GraphModule:
    """fx-trace ``model`` and attach shapes from one forward pass at ``input_size`` (H, W); the model is untouched."""
    graph = _Tracer().trace(model)
    gm = fx.GraphModule(model, graph)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            param = next(model.parameters(), None)
            dtype = param.dtype if param is not None else torch.float32
            device = param.device if param is not None else "cpu"
            ShapeProp(gm).propagate(torch.zeros(1, 3, *input_size, dtype=dtype, device=device))
    finally:
        model.train(was_training)
    return gm


def _spatial(node: fx.Node) -> tuple[int, int] | None:
    meta = node.meta.get("tensor_meta")
    shape = getattr(meta, "shape", None)
    return tuple(shape[-2:]) if shape is not None and len(shape) == 4 else None


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _module_maps(module: nn.Module, in_hw, out_hw, where: str):
    """Per-axis geometry maps of one leaf module, or None for a position-preserving one."""
    if isinstance(module, _IDENTITY_MODULES):
        return None
    if _has_position_map(module):
        return [module.position_map(i, o) for i, o in zip(in_hw, out_hw)]
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, nn.ConvTranspose2d)):
        if getattr(module, "ceil_mode", False):
            raise AuditError(f"{where}: ceil_mode pooling has no position map in ufpa.geometry yet")
        if isinstance(module.padding, str):
            raise AuditError(f"{where}: padding={module.padding!r} is not supported; give padding as integers")
        ks, st, pd_ = _pair(module.kernel_size), _pair(module.stride or module.kernel_size), _pair(module.padding)
        dl = _pair(getattr(module, "dilation", 1))
        if isinstance(module, nn.ConvTranspose2d):
            op = _pair(module.output_padding)
            return [geometry.transposed_conv(ks[a], st[a], pd_[a], dl[a], op[a]) for a in range(2)]
        return [geometry.conv(ks[a], st[a], pd_[a], dl[a]) for a in range(2)]
    if isinstance(module, (nn.ZeroPad2d, nn.ConstantPad2d, nn.ReplicationPad2d, nn.ReflectionPad2d)):
        left, right, top, bottom = module.padding
        return [geometry.pad(top, bottom), geometry.pad(left, right)]
    if isinstance(module, nn.PixelShuffle):
        return [geometry.pixel_shuffle(module.upscale_factor)] * 2
    if isinstance(module, nn.Upsample):
        return _interpolate_maps(module.mode, module.align_corners, module.scale_factor, in_hw, out_hw, where)
    raise AuditError(f"{where}: no position map for module {type(module).__name__}; give it a method "
                     "position_map(in_size, out_size) returning a ufpa.geometry map, or add it to ufpa.audit")


def _interpolate_maps(mode, align_corners, scale_factor, in_hw, out_hw, where):
    sfs = _pair(scale_factor) if scale_factor is not None else (None, None)
    if isinstance(sfs[0], fx.Node):
        sfs = (None, None)
    if mode in ("nearest", "nearest-exact"):
        return [geometry.nearest(i, o, exact=mode == "nearest-exact") if sf is None
                else geometry.nearest(i, None, sf, exact=mode == "nearest-exact")
                for i, o, sf in zip(in_hw, out_hw, sfs)]
    if mode in ("bilinear", "linear"):
        return [geometry.resize(i, o if sf is None else None, bool(align_corners), None if align_corners else sf)
                for i, o, sf in zip(in_hw, out_hw, sfs)]
    raise AuditError(f"{where}: interpolate mode {mode!r} has no position map")


def _maps_for(node: fx.Node, gm: fx.GraphModule, env: dict, where: str):
    """Per-axis maps of ``node``'s output, built on its tensor input's maps; None when not a feature map."""
    out_hw = _spatial(node)
    tensor_args = [a for a in node.args if isinstance(a, fx.Node) and a in env]
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        src = tensor_args[0]
        own = _module_maps(module, _spatial(src), out_hw, where)
        return env[src] if own is None else [m0.then(m1) for m0, m1 in zip(env[src], own)]
    if node.op == "call_function" and node.target is F.interpolate:
        src = tensor_args[0]
        kw = dict(node.kwargs)
        own = _interpolate_maps(kw.get("mode", "nearest"), kw.get("align_corners"), kw.get("scale_factor"),
                                _spatial(src), out_hw, where)
        return [m0.then(m1) for m0, m1 in zip(env[src], own)]
    if (node.op == "call_function" and node.target in _IDENTITY_FUNCTIONS) or (
            node.op == "call_method" and node.target in _IDENTITY_METHODS):
        return env[tensor_args[0]] if tensor_args else None
    raise AuditError(f"{where}: no position map for {node.op} {getattr(node.target, '__name__', node.target)}; "
                     "add it to ufpa.audit or wrap it in a module with position_map(in_size, out_size)")


def _fusion_operands(node: fx.Node, env: dict) -> list[fx.Node] | None:
    if node.op == "call_function" and node.target in _FUSE_FUNCTIONS:
        return [a for a in node.args[:2] if isinstance(a, fx.Node) and a in env]
    if node.op == "call_method" and node.target in ("add", "add_"):
        return [a for a in node.args[:2] if isinstance(a, fx.Node) and a in env]
    if node.op == "call_function" and node.target in _CAT_FUNCTIONS:
        dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
        if dim not in (1, -3):
            raise AuditError(f"{node.name}: concat along dim {dim} of feature maps has no position meaning")
        return [a for a in node.args[0] if isinstance(a, fx.Node) and a in env]
    return None


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1]
    return path[0] if isinstance(path, tuple) else str(path)


def _walk(gm: fx.GraphModule, input_size):
    """Yield (fusion node, operand nodes, per-node maps) while propagating maps through the graph."""
    env: dict[fx.Node, list[geometry.PositionMap]] = {}
    for node in gm.graph.nodes:
        where = f"node {node.name}"
        if node.op == "placeholder":
            if _spatial(node) != tuple(input_size):
                raise AuditError(f"{where}: the model input must be an (N, 3, H, W) image of size {input_size}")
            env[node] = [geometry.identity(), geometry.identity()]
            continue
        if node.op in ("output", "get_attr") or _spatial(node) is None:
            continue
        operands = _fusion_operands(node, env)
        if operands is not None:
            if len(operands) >= 2:
                yield node, operands, env
            if operands:
                env[node] = env[operands[0]]
            continue
        env[node] = _maps_for(node, gm, env, where)


def audit(model: nn.Module, input_size) -> pd.DataFrame:
    """One row per (fusion point, incoming tensor, axis): misalignment in input pixels against the fusion target.

    Columns: ``node`` (fx name), ``module`` (owning module path), ``operand`` (index in the fusion), ``source`` (the
    incoming tensor's node), ``axis``, ``size`` (samples along the axis), ``up_levels`` (x2 steps by which the
    operand's last op upsampled: 0 for convs and residuals), ``stride`` (input px per sample of the target),
    ``max_abs_px`` / ``mean_abs_px`` (interior), ``interior_outputs``, ``border_width`` (outputs outside the interior)
    and ``border_max_abs_px`` (what the ops really read there).
    """
    input_size = tuple(int(s) for s in input_size)
    gm = trace(model, input_size)
    rows = []
    for node, operands, env in _walk(gm, input_size):
        target = operands[0]
        for k, src in enumerate(operands[1:], start=1):
            before = next((a for a in src.args if isinstance(a, fx.Node) and _spatial(a)), None)
            for a, axis in enumerate(AXES):
                fs = geometry.fusion_shift(env[target][a], env[src][a], input_size[a])
                # x2 steps of the operand's last op, from real sizes (robust to 2n vs 2n-1 conventions)
                up = round(np.log2(len(fs.shift) / _spatial(before)[a])) if before is not None else 0
                rows.append(dict(node=node.name, module=_module_path(node), operand=k, source=src.name, axis=axis,
                                 size=len(fs.shift), up_levels=up, stride=env[target][a].scale, max_abs_px=fs.max_abs,
                                 mean_abs_px=fs.mean_abs, interior_outputs=int(fs.interior.sum()),
                                 border_width=fs.border_width, border_max_abs_px=fs.border_max_abs))
    return pd.DataFrame(rows)


def shift_fields(model: nn.Module, input_size) -> list[dict]:
    """The audit's shift per output sample, for every fusion operand that a module (a leaf such as ``Resample``)
    made: ``module`` (its path), ``node`` (the fusion), and per axis in ``axes`` the ``geometry.FusionShift`` and the
    stride (input px per sample) of the map the module read, so a learned offset in its samples converts to pixels."""
    input_size = tuple(int(s) for s in input_size)
    gm = trace(model, input_size)
    out = []
    for node, operands, env in _walk(gm, input_size):
        for src in operands[1:]:
            before = next((a for a in src.args if isinstance(a, fx.Node) and a in env), None)
            if src.op != "call_module" or before is None:
                continue
            axes = {axis: {"shift": geometry.fusion_shift(env[operands[0]][a], env[src][a], input_size[a]),
                           "source_stride": env[before][a].scale} for a, axis in enumerate(AXES)}
            out.append({"module": src.target, "node": node.name, "axes": axes})
    return out


def summarize(table: pd.DataFrame) -> pd.DataFrame:
    """Worst case over fusion points, per target stride and upsampling depth (both axes together)."""
    return (table.groupby(["stride", "up_levels"])
            .agg(fusions=("node", "nunique"), max_abs_px=("max_abs_px", "max"), mean_abs_px=("mean_abs_px", "max"),
                 border_width=("border_width", "max"), border_max_abs_px=("border_max_abs_px", "max"))
            .reset_index())


def variant_audits(name: str, sizes, alignments=None, head: str = "heatmap"):
    """Yield ``(requested, alignment, input_size, audit table)`` of model ``name`` for every requested input size and
    alignment variant; 'ufpa' runs at the next 32m+1 size."""
    from .models import ALIGNMENTS, create_model, run_size

    for requested in sizes:
        for alignment in alignments or ALIGNMENTS:
            size = run_size(name, alignment, requested)
            model = create_model(name, alignment=alignment, head=head, input_size=size)
            yield tuple(requested), alignment, size, audit(model, size)


def labelled(table: pd.DataFrame, name, requested, alignment, size) -> pd.DataFrame:
    """``table`` with the model, variant, requested and actual input size in front (the audit records' keys)."""
    table = table.copy()
    table.insert(0, "input_size", f"{size[0]}x{size[1]}")
    table.insert(0, "requested", f"{requested[0]}x{requested[1]}")
    table.insert(0, "alignment", alignment)
    table.insert(0, "model", name)
    return table


def audit_variants(name: str, sizes, alignments=None, head: str = "heatmap") -> pd.DataFrame:
    """``summarize(audit(...))`` of model ``name`` for every alignment variant and requested input size; 'ufpa' runs
    at the next 32m+1 size. Columns add ``model``, ``alignment``, ``head``, ``requested`` and ``input_size``."""
    return pd.concat([labelled(summarize(table), name, requested, alignment, size)
                      for requested, alignment, size, table in variant_audits(name, sizes, alignments, head)],
                     ignore_index=True)


def fusion_points_of(table: pd.DataFrame) -> pd.DataFrame:
    """The cross-resolution fusions of one ``audit`` table in network order, one row per incoming tensor: ``order``
    (position in the forward pass), ``module`` (the fusion unit, e.g. ``stages.1.0``), ``source`` (fx name),
    ``up_levels``, ``target_stride``, worst interior and worst border shift over both axes. Residual adds inside
    branches and ResNet layers (both operands on one grid) are left out; zeros stay in."""
    table = table[~table["module"].str.contains(r"(?:^|\.)(?:branches|layer\d)", regex=True)]
    rows = (table.groupby(["node", "operand"], sort=False)
            .agg(module=("module", "first"), source=("source", "first"), up_levels=("up_levels", "first"),
                 target_stride=("stride", "first"), max_abs_px=("max_abs_px", "max"),
                 border_max_abs_px=("border_max_abs_px", "max"))
            .reset_index().drop(columns=["node"]))
    rows.insert(0, "order", range(len(rows)))
    return rows


def output_grids(names, input_size, alignments=None, heads=("heatmap",)) -> pd.DataFrame:
    """Where each model variant's output grid sits: output o at input x = scale * o + offset along the height axis
    (the head's own map composed with the network's), with its output stride and parameter count."""
    from .models import ALIGNMENTS, create_model, run_size

    rows = []
    for name in names:
        for head in heads:
            for alignment in alignments or ALIGNMENTS:
                size = run_size(name, alignment, input_size)
                model = create_model(name, alignment=alignment, head=head, input_size=size)
                pm = model.output_position_map()
                n_out = model.output_size()[0]
                rows.append(dict(model=name, head=head, alignment=alignment, input_size=f"{size[0]}x{size[1]}",
                                 output_size="x".join(map(str, model.output_size())),
                                 output_stride=model.output_stride, grid_scale=round(pm.scale, 6),
                                 grid_offset_px=round(pm.offset, 6),
                                 # the grid's span against the image's samples 0 .. n-1 (height axis)
                                 first_sample_px=round(float(pm.positions(n_out)[0]), 6),
                                 last_sample_px=round(float(pm.positions(n_out)[-1]), 6), last_pixel=size[0] - 1,
                                 params=sum(p.numel() for p in model.parameters())))
    return pd.DataFrame(rows)


# --- the empirical cross-check ------------------------------------------------------------------------------------

def _extrapolate(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Pad by continuing each row/column linearly, so a ramp stays a ramp and ones stay ones."""
    for dim, pad in ((-2, pad_h), (-1, pad_w)):
        if pad == 0:
            continue
        n = x.shape[dim]
        first, last = x.narrow(dim, 0, 1), x.narrow(dim, n - 1, 1)
        step_lo = x.narrow(dim, 1, 1) - first if n > 1 else torch.zeros_like(first)
        step_hi = last - x.narrow(dim, n - 2, 1) if n > 1 else torch.zeros_like(last)
        k = torch.arange(1, pad + 1, dtype=x.dtype, device=x.device)
        shape = [1] * x.dim()
        shape[dim] = pad
        k = k.view(shape)
        x = torch.cat([first - k.flip(dim) * step_lo, x, last + k * step_hi], dim=dim)
    return x


def _linearised(model: nn.Module) -> nn.Module:
    """A float64 copy in which every op is linear, positive on positive inputs, and pads by linear extrapolation:
    a coordinate ramp then flows through convolutions and pooling unchanged in shape, so ramp / ones reads positions
    exactly, borders included. Position-wise the window centres are those of the real model."""
    lin = copy.deepcopy(model).double().eval()
    for name, module in list(lin.named_modules()):
        if isinstance(module, nn.MaxPool2d):  # max picks the last tap of a ramp; the average realises the centre
            parent = lin.get_submodule(name.rpartition(".")[0]) if "." in name else lin
            module = nn.AvgPool2d(module.kernel_size, module.stride, module.padding)
            setattr(parent, name.rpartition(".")[2], module)
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():  # any positive constant: ramp / ones cancels the scale
                module.weight.fill_(1.0 / module.weight[0].numel())
                if module.bias is not None:
                    module.bias.zero_()
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_parameters()  # mean 0, var 1, weight 1, bias 0: a pure scale
        if isinstance(module, (nn.Conv2d, nn.AvgPool2d)):
            pad_h, pad_w = _pair(module.padding)
            if pad_h or pad_w:
                module.padding = 0 if isinstance(module, nn.AvgPool2d) else (0, 0)
                if isinstance(module, nn.Conv2d):
                    module.padding_mode = "zeros"
                module.register_forward_pre_hook(lambda _m, args, ph=pad_h, pw=pad_w: (_extrapolate(args[0], ph, pw),)
                                                 + tuple(args[1:]))
    return lin


class _TargetConvention(fx.Interpreter):
    """Runs the graph, but each fusion passes its target (first operand) through, as the audit's maps do, and the
    operands of every fusion are recorded."""

    def __init__(self, gm, fusions):
        super().__init__(gm)
        self.fusions = {node: operands for node, operands in fusions}
        self.values = {}

    def run_node(self, n):
        if n in self.fusions:
            operands = self.fusions[n]
            for src in operands:
                self.values[(n.name, src.name)] = self.env[src].detach()
            return self.env[operands[0]]
        return super().run_node(n)


def empirical_positions(model: nn.Module, input_size, offset: float = 1000.0) -> pd.DataFrame:
    """Realised positions of every fusion operand from real forward passes, against the audit's prediction.

    Returns one row per (node, operand, axis): ``max_dev_px`` is the largest |realised - predicted| over all outputs
    along the central row/column, where realised = ramp / ones (the ramp lifted by ``offset`` so every ReLU passes it)
    and predicted = the sampled positions of the operand's geometry map (the nominal ones wherever nothing clamps).
    """
    input_size = tuple(int(s) for s in input_size)
    maps = {}  # (fusion, operand) names -> the original model's per-axis maps
    for node, operands, env in _walk(trace(model, input_size), input_size):
        maps.update({(node.name, src.name): env[src] for src in operands})
    gm = trace(_linearised(model), input_size)  # same graph, node for node: the copy keeps the module structure
    nodes = {n.name: n for n in gm.graph.nodes}
    fusions = []
    for fusion, source in maps:
        node = nodes[fusion]
        if not fusions or fusions[-1][0] is not node:
            fusions.append((node, []))
        fusions[-1][1].append(nodes[source])
    h, w = input_size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    ones = torch.ones(h, w, dtype=torch.float64)
    batch = torch.stack([ys + offset, xs + offset, ones])[:, None].expand(3, 3, h, w).contiguous()
    runner = _TargetConvention(gm, fusions)
    with torch.no_grad():
        runner.run(batch)
    rows = []
    for node, operands in fusions:
        for k, src in enumerate(operands):
            value = runner.values[(node.name, src.name)].mean(dim=1)  # channels agree under uniform kernels
            for a, axis in enumerate(AXES):
                realised = (value[a] / value[2] - offset).numpy()
                line = realised[:, realised.shape[1] // 2] if a == 0 else realised[realised.shape[0] // 2]
                predicted = maps[(node.name, src.name)][a].sampled_positions(input_size[a])
                rows.append(dict(node=node.name, operand=k, source=src.name, axis=axis,
                                 max_dev_px=float(np.max(np.abs(line - predicted)))))
    return pd.DataFrame(rows)
