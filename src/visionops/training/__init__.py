"""Training: the loop (engine) and the train stage."""
