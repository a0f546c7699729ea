"""Data stages: sources, ingest, validate, preprocess."""
