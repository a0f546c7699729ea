"""Names every layer shares, each defined once: MLflow tag prefix, registry aliases, image suffixes, TTA views."""

from __future__ import annotations

# Every tag the pipeline writes on runs, versions and registered models starts with this.
TAG_PREFIX = "visionops."

# Registry aliases (never stages): the model in service, the version that passed the gate, the one
# the last promotion replaced (what rollback restores).
CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous_champion"

# Files read as images wherever images are listed: data sources, batch scoring, `visionops predict`.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pgm", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The Pillow decoders images are opened with (``Image.open(..., formats=IMAGE_FORMATS)``): the
# formats above (PGM is Pillow's "PPM"), and nothing else: not EPS/PS (Ghostscript), PDF, etc.
IMAGE_FORMATS = ("PNG", "JPEG", "PPM", "BMP", "GIF", "TIFF", "WEBP")

# Test-time augmentation views a served model may apply (see visionops.serving.tta).
TTA_VIEWS = ("hflip", "shift", "crop")

# MLflow caps tag values at 5,000 characters (8,000 on newer servers); long texts are cut here.
MAX_TAG_CHARS = 4900
REASON_SEPARATOR = "; "

# The experiment tag MLflow 3 reads for an experiment's kind, and the kind of every pipeline experiment
# (model training, not a GenAI app): the values of MLflow's ExperimentKind.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# The MLflow 3.17 UI chooses its GenAI or its model-training view from a switch in its sidebar that the
# browser remembers (GenAI when it never chose), not from the experiment's kind; a link with this query
# opens the model-training view whatever the browser remembers.
MLFLOW_ML_VIEW_QUERY = "workflowType=machine_learning"
