"""Training: the loop (engine), losses, optimisers, precision, checkpoints, packaging, and the train stage."""
