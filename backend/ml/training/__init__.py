"""Training loop, checkpoints and the run directory writer."""
