"""Entry point of the served pyfunc model ("models from code"): MLflow runs this file to build it."""

import mlflow
from visionops.serving.model import ImageClassifier

mlflow.models.set_model(ImageClassifier())
