"""Evaluation: per-class metrics, per-fold scoring, summaries across folds and experiments, report figures."""
