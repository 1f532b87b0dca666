"""Dataclass configs from ``key=value`` strings and plain dicts, typed by the dataclass's own annotations.

One place checks every override, for the CLI (``python -m ufpa train lr=1e-3``), sweeps and notebook parameters: an
unknown key names the valid ones, a value of the wrong type names the expected type. Values are read as Python
literals (``ast.literal_eval``, never evaluated as code); a bare word is a string.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import types
import typing


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(name: str, value, tp):
    """``value`` as the annotated type ``tp``, or a ValueError naming the field and the type it needs."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ValueError as err:
                errors.append(str(err))
        none = " (or None)" if type(None) in args else ""
        if len(errors) == 1:
            raise ValueError(errors[0] + none)
        raise ValueError(f"{name}={value!r}: expected {' or '.join(_type_name(a) for a in args)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name}={value!r}: expected a tuple such as {name}=[1,2] (got {type(value).__name__})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(name, v, args[0]) for v in value)
        if len(value) != len(args):
            raise ValueError(f"{name}={value!r}: expected {len(args)} values, e.g. {name}=[128,96]")
        return tuple(_coerce(name, v, a) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):  # the shell's spelling of a flag
            return value.lower() == "true"
        raise ValueError(f"{name}={value!r}: expected True or False")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"{name}={value!r}: expected an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ValueError(f"{name}={value!r}: expected a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{name}={value!r}: expected a string")
    return value


def parse_value(raw: str):
    """A command-line value: a Python literal if it is one, a list of values if it is bracketed (bare words in it
    are strings: ``variants=[baseline,ufpa:zeros]``), else the bare string."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        text = raw.strip()
        if len(text) >= 2 and text[0] + text[-1] in ("[]", "()"):
            return [parse_value(item.strip()) for item in text[1:-1].split(",") if item.strip()]
        return raw


def replace(cfg, values: dict):
    """A copy of dataclass ``cfg`` with ``values`` (field -> value) checked against the field types."""
    hints = typing.get_type_hints(type(cfg))
    fields = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in values.items():
        if key not in hints or key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown {type(cfg).__name__} key {key!r}{hint}; valid keys: {', '.join(fields)}")
        changes[key] = _coerce(key, value, hints[key])
    return dataclasses.replace(cfg, **changes)


def from_overrides(cfg, pairs: list[str]):
    """nanoGPT-style ``key=value`` overrides of dataclass ``cfg``."""
    values = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"bad override {pair!r}: use key=value, e.g. epochs=5")
        if key.strip() in values:  # which one was meant is a guess: refuse rather than keep the last
            raise ValueError(f"{key.strip()} is given twice ({key.strip()}={values[key.strip()]!r} and {pair!r}); "
                             "give each key once")
        values[key.strip()] = parse_value(raw)
    return replace(cfg, values)


def check_parameter(name: str, value, ok: bool, valid: str):
    """A notebook parameter check: raise a ValueError naming the parameter, what is valid and how to pass it."""
    if not ok:
        raise ValueError(f"notebook parameter {name}={value!r} is not valid: {name} must be {valid}; pass another "
                         f"with papermill, e.g. `-p {name} VALUE`, or edit the parameters cell")


_KERNEL_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


def check_known_parameters(namespace: dict, known) -> None:
    """Refuse a notebook parameter the notebook does not have: papermill only warns about ``-p n_case 1000`` and the
    notebook would run its defaults. Call it in the cell after the parameters (papermill's injected cell comes
    before); modules, functions and private names are not parameters."""
    import types as _types

    known = set(known)
    unknown = sorted(k for k, v in namespace.items()
                     if not k.startswith("_") and k not in known and k not in _KERNEL_NAMES
                     and not callable(v) and not isinstance(v, _types.ModuleType))
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(f"unknown notebook parameter {', '.join(hints)}; this notebook's parameters are "
                         f"{', '.join(sorted(known))} (papermill passes them with -p NAME VALUE)")


def parameters_cell(nb, path="notebook"):
    """The one cell tagged ``parameters`` of a notebook (an ``nbformat`` node); papermill injects after it."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path} needs exactly one cell tagged 'parameters', has {len(cells)}")
    return cells[0]


def field_comments(cls) -> dict[str, str]:
    """Each field's one-line comment in the dataclass's source (``name: type = default  # comment``), so help texts
    read the comments the config itself carries."""
    import inspect
    import re

    out = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+):[^#]*#\s*(.+)$", line)
        if m:
            out[m[1]] = m[2].strip()
    return out


def help_table(cls) -> str:
    """Every field of a config dataclass as ``key=default  comment`` lines, for ``--help``."""
    comments = field_comments(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((f"{f.name}={default!r}", comments.get(f.name, "")))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {c}" for k, c in rows)
