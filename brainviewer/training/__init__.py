"""Training: the run configuration, data sampling, the loop, losses, augmentation, weight averaging."""
