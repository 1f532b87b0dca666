"""ufpa: unbiased feature position alignment for pose estimation, as a reproducible study package."""

__version__ = "0.1.0"
