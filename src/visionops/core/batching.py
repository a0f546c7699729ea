"""How many images go through a network at once when nothing is learned (validation, scoring,
serving): bounded by pixels, so that the activations of a batch stay a few hundred MB whatever the
image size (256 photos of 224 px through a first convolution of 32 channels are 1.6 GB)."""

from __future__ import annotations

__all__ = ["INFERENCE_PIXELS", "inference_batch_size"]

INFERENCE_PIXELS = 2**21  # pixels a batch holds: 256 images up to 90 px, 41 at 224 px


def inference_batch_size(pixels_per_image: int, cap: int = 256) -> int:
    """Images per inference batch for images of ``pixels_per_image`` pixels (height x width)."""
    return max(1, min(cap, INFERENCE_PIXELS // max(1, pixels_per_image)))
