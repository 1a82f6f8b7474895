"""hwd-tune: Holistic Weighted Distillation for semantic segmentation, tuned with Ray + Optuna."""

__version__ = "0.1.0"
