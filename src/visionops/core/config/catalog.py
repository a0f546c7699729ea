"""The model names a config may choose, and their families; ``visionops.models`` builds each of them.

Kept here, free of torch, so that validating a config never imports the model code (the import
order is config below models); ``visionops.models`` checks at import that it builds exactly these.
"""

from __future__ import annotations

MODEL_NAMES = (
    "small_cnn",
    "face_cnn",
    "fashion_cnn",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "resnet18",
    "vit_tiny",
    "face_embedding",
)

# Models whose builders take pretrained weights from a local file (transfer learning).
TRANSFER_MODELS = frozenset({"resnet18"})

# Models trained on frozen features instead of images: name -> the encoder computing the features
# (``visionops.data.embeddings``). They take (N, dim) float features, not uint8 images.
FEATURE_MODELS: dict[str, str] = {"face_embedding": "dlib_face_v1"}
