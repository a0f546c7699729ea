"""Data: sources, ingest, faces, validation, splits, preprocessing, drift statistics, and the data stages."""
