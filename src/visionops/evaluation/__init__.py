"""Scoring models on a held-out test split: metrics, paired predictions, plots, the report, and the
one way to score a model version."""
