"""visionops: an image-classification MLOps pipeline (Airflow, MLflow, PyTorch, Optuna, Great Expectations)."""

__version__ = "0.1.0"
