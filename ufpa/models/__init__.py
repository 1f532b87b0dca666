"""Pose models, timm-style: one file per architecture, small named presets, ``create_model`` / ``list_models``."""

from . import hourglass, hrnet, simple_baseline  # noqa: F401  (registers the presets)
from ._registry import (
                        ALIGNMENTS,
                        ALL_ALIGNMENTS,
                        LEARNED_ALIGNMENTS,
                        create_model,
                        list_models,
                        model_cost,
                        register_model,
                        run_size,
)
from .heads import HEADS, HRNET_HEADS, OFFSET_HEADS

__all__ = ["ALIGNMENTS", "ALL_ALIGNMENTS", "LEARNED_ALIGNMENTS", "HEADS", "HRNET_HEADS", "OFFSET_HEADS", "create_model",
           "list_models", "model_cost", "register_model", "run_size"]
