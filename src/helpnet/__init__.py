"""HELPNet: scribble-supervised segmentation (Zhang et al., Medical Image Analysis 2025) as a workflow."""

__version__ = "0.1.0"
